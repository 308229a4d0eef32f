"""Pipeline: run the numbered notebooks in order with papermill into one run directory, then the report.

``make run`` and ``python -m helpers pipeline`` call :func:`run_pipeline`. Every notebook gets the same
``profile`` and ``run_dir`` parameters, so each finds what the previous one wrote there; the executed
copies land in ``<run_dir>/notebooks/``. Without a run directory, a run that starts at notebook 00 is new
(and becomes ``runs/latest-<profile>``, the run notebooks opened by hand use); one that starts later
continues the latest run of the profile. The kernel is the one the notebooks name (``KERNEL_NAME``), checked to
run this Python (:func:`kernel_for_this_python`: a spec left by another clone or environment is not used). A
notebook already executed successfully in that run directory is skipped unless ``force``; a failing one
stops the pipeline with its name, the failing cell and the path of the executed copy.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from .environment import KERNEL_NAME, find_run, repo_root, resolve_profile, start_run
from .jsonl import read_json, write_json

NOTEBOOK_DIR = repo_root() / 'notebooks'
CELL_TIMEOUT = {'tiny': 900, 'cpu': 7200, 'gpu': 6 * 3600}  # seconds one cell may run before the run is failed


class PipelineError(RuntimeError):
    """A notebook failed: names it, the failing cell and the executed copy to open."""


@dataclass
class StepResult:
    notebook: str
    seconds: float
    output: str
    status: str  # 'ok' | 'failed' | 'skipped'


def notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in order."""
    return sorted(p for p in directory.glob('[0-9][0-9]_*.ipynb'))


def _failing_cell(path: Path) -> str:
    """The source of the first cell with an error output in an executed notebook."""
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return '(executed copy unreadable)'
    for i, cell in enumerate(nb.get('cells', [])):
        for out in cell.get('outputs', []):
            if out.get('output_type') == 'error':
                src = ''.join(cell.get('source', ''))
                return f'cell {i}:\n{src[:400]}\n{out.get("ename")}: {out.get("evalue")}'
    return '(no cell recorded an error)'


def _timings(run: Path) -> dict:
    """What earlier runs in this directory recorded (nothing when the file is missing or unreadable)."""
    path = run / 'timings.json'
    try:
        timings = read_json(path) if path.exists() else {}
    except (OSError, ValueError):
        return {}
    return timings if isinstance(timings, dict) else {}


def _write_timing(run: Path, result: StepResult) -> None:
    timings = _timings(run)
    timings[result.notebook] = asdict(result)
    write_json(run / 'timings.json', timings)


def select(only: list[str] | None = None, start_from: str | None = None) -> list[Path]:
    """Notebooks by number: ``only`` these, or everything from ``start_from`` on; a number that names no
    notebook raises :class:`PipelineError`, saying which numbers there are."""
    available = {p.name[:2]: p for p in notebooks()}
    there = f'the notebooks are {", ".join(sorted(available))} ({NOTEBOOK_DIR})'
    wanted = [o.zfill(2) for o in only or []]
    unknown = [n for n in wanted + ([start_from.zfill(2)] if start_from else []) if n not in available]
    if unknown:
        raise PipelineError(f'there is no notebook {unknown[0]}: {there}')
    selected = [p for n, p in sorted(available.items()) if (not start_from or n >= start_from.zfill(2))
                and (not only or n in wanted)]
    if not selected:
        raise PipelineError(f'no notebook is both in --only {" ".join(only or [])} and from {start_from} on: {there}')
    return selected


@contextmanager
def kernel_for_this_python(kernel: str, run: Path, log=print):
    """Make the kernel named ``kernel`` run this Python while the block runs. The user's spec is used when it
    does; one whose Python no longer exists (a removed clone or environment registered it last) is registered
    again for this one, so JupyterLab finds it too; one for another existing Python is left alone and this
    Python gets a spec of that name under ``run/.kernel``, first on ``JUPYTER_PATH`` for the block."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    from .environment import install_kernel
    try:
        python = KernelSpecManager().get_kernel_spec(kernel).argv[0]
    except NoSuchKernel:
        python = None
    if python and Path(python).exists() and os.path.samefile(python, sys.executable):
        yield
        return
    if kernel != KERNEL_NAME:
        raise PipelineError(f'the Jupyter kernel {kernel!r} ' + (f'runs {python}, not this Python ({sys.executable})'
                            if python else 'does not exist') + ': register it for this Python, or run with the '
                            f'default kernel ({KERNEL_NAME})')
    if not python or not Path(python).exists():
        log(f'[pipeline] the Jupyter kernel {kernel!r} ' + (f'ran {python}, which no longer exists'
            if python else 'was not registered') + f': registered again for {sys.executable}')
        install_kernel()
        yield
        return
    private = run / '.kernel'
    install_kernel(private)
    log(f'[pipeline] the Jupyter kernel {kernel!r} runs {python}; this run uses {sys.executable} '
        f'(a spec under {private})')
    before = os.environ.get('JUPYTER_PATH')
    os.environ['JUPYTER_PATH'] = os.pathsep.join([str(private / 'share' / 'jupyter')] + ([before] if before else []))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop('JUPYTER_PATH', None)
        else:
            os.environ['JUPYTER_PATH'] = before


def run_pipeline(profile: str = 'auto', run_dir: str | Path | None = None, parameters: dict | None = None,
                 only: list[str] | None = None, start_from: str | None = None, force: bool = False,
                 kernel: str = KERNEL_NAME, log=print, live_output: bool = False,
                 report: bool = True) -> list[StepResult]:
    """Execute the notebooks and return their timings; ``live_output`` streams cell output (training and
    evaluation progress) to the log as it happens."""
    name, reason = resolve_profile(profile)
    selected = select(only, start_from)
    # a new run when notebook 00 is part of it, else the latest run of the profile (as by hand)
    run = start_run(name, run_dir) if selected[0].name.startswith('00') else find_run(name, run_dir)
    out_dir = run / 'notebooks'
    out_dir.mkdir(exist_ok=True)
    params = {'profile': name, 'run_dir': str(run), **(parameters or {})}
    if live_output:
        logging.basicConfig(format='%(message)s')
        logging.getLogger('papermill').setLevel(logging.INFO)
    log(f'[pipeline] profile {name} ({reason})\n[pipeline] run dir {run}')
    done = _timings(run)
    results = []
    total = time.time()
    import papermill as pm
    with kernel_for_this_python(kernel, run, log):
        for nb in selected:
            out = out_dir / nb.name
            if not force and done.get(nb.name, {}).get('status') == 'ok' and out.exists():
                log(f'[pipeline] {nb.name}: already done in this run dir, skipped (force to rerun)')
                results.append(StepResult(nb.name, 0.0, str(out), 'skipped'))
                continue
            start = time.time()
            log(f'[pipeline] {nb.name} …')
            try:
                pm.execute_notebook(str(nb), str(out), parameters=params, kernel_name=kernel, cwd=str(nb.parent),
                                    progress_bar=False, log_output=live_output, execution_timeout=CELL_TIMEOUT[name])
            except pm.PapermillExecutionError as e:
                secs = time.time() - start
                _write_timing(run, StepResult(nb.name, secs, str(out), 'failed'))
                raise PipelineError(f'{nb.name} failed after {secs:.0f} s in {_failing_cell(out)}\n'
                                    f'executed copy: {out}') from e
            now = time.time()
            result = StepResult(nb.name, round(now - start, 1), str(out), 'ok')
            _write_timing(run, result)
            results.append(result)
            log(f'[pipeline] {nb.name} done in {now - start:.0f} s (total {now - total:.0f} s)')
    if report:
        from .report import build_report
        html_path, _ = build_report(run)
        log(f'[pipeline] report: {html_path}')
    return results

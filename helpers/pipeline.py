"""Pipeline: run the numbered notebooks in order with papermill into one run directory.

``make run`` and ``python -m helpers pipeline`` call :func:`run_pipeline`. Every notebook gets the
same ``profile`` and ``run_dir`` parameters, so each finds what the previous one wrote there; the
executed copies land in ``<run_dir>/notebooks/``.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .environment import prepare_run_dir, repo_root, resolve_profile

NOTEBOOK_DIR = repo_root() / 'notebooks'


class PipelineError(RuntimeError):
    """A notebook failed: names it, the failing cell and the executed copy to open."""


@dataclass
class StepResult:
    notebook: str
    seconds: float
    output: str
    status: str  # 'ok' | 'failed'


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
                return f'cell {i}: {src[:300]}\n{out.get("ename")}: {out.get("evalue")}'
    return '(no cell recorded an error)'


def run_pipeline(profile: str = 'auto', run_dir: str | Path | None = None, parameters: dict | None = None,
                 only: list[str] | None = None, kernel: str = 'python3', log=print) -> list[StepResult]:
    """Execute the notebooks (or those whose number is in ``only``) and return their timings."""
    import papermill as pm

    name, reason = resolve_profile(profile)
    run = prepare_run_dir(run_dir, name)
    out_dir = run / 'notebooks'
    out_dir.mkdir(exist_ok=True)
    params = {'profile': name, 'run_dir': str(run), **(parameters or {})}
    selected = [p for p in notebooks() if not only or p.name[:2] in only]
    log(f'[pipeline] profile {name} ({reason}); run dir {run}')
    results = []
    for nb in selected:
        out = out_dir / nb.name
        start = time.time()
        log(f'[pipeline] {nb.name} …')
        try:
            pm.execute_notebook(str(nb), str(out), parameters=params, kernel_name=kernel, cwd=str(nb.parent),
                                progress_bar=False, log_output=False)
        except pm.PapermillExecutionError as e:
            secs = time.time() - start
            results.append(StepResult(nb.name, secs, str(out), 'failed'))
            _write_timings(run, results)
            raise PipelineError(f'{nb.name} failed after {secs:.0f} s in {_failing_cell(out)}\n'
                                f'executed copy: {out}') from e
        secs = time.time() - start
        results.append(StepResult(nb.name, secs, str(out), 'ok'))
        log(f'[pipeline] {nb.name} done in {secs:.1f} s')
        _write_timings(run, results)
    return results


def _write_timings(run: Path, results: list[StepResult]) -> None:
    path = run / 'timings.json'
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update({r.notebook: asdict(r) for r in results})
    path.write_text(json.dumps(old, indent=2))

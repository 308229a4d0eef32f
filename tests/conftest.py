"""Shared fixtures: the notebooks run once per session the way a learner runs them by hand in JupyterLab.

Notebooks 00 → 05 execute in order with nbclient, each in a fresh kernel of the kernel they name, with
the notebook folder as working directory and nothing changed but the ``profile`` line of the parameters
cell (``run_dir`` stays ``''``): 00 starts a run and points ``runs/latest-tiny`` at it, 01–05 find it
there. Only the runs folder is redirected to a temporary one (``AFT_RUNS``) so the test leaves the
checkout alone. The papermill batch (``make run``) is covered by tests/test_pipeline.py.

Every session starts from nothing, as on a new machine: before anything else is imported, ``HOME`` and every
cache the series or its stack writes (``AFT_CACHE``, ModelScope's, Hugging Face's, vLLM's, torch's and Triton's
compile caches, Jupyter's and IPython's folders, Matplotlib's) point into one fresh temporary folder, and the
notebooks' kernel is registered there as ``make setup`` registers it. So a suite that passes on a machine that ran
it before passes on a new one too. ``AFT_TEST_CACHES=<folder>`` reuses that folder between local sessions
(faster iteration); CI (``CI`` set) never does. ``test_fresh_machine.py`` checks that no real cache was written.
"""
import os
import re
import shutil
import time
from pathlib import Path

from fresh_machine import isolate_caches

FRESH = isolate_caches()  # first, so that every import and child process below sees the fresh folders

import nbformat  # noqa: E402
import pytest  # noqa: E402
from nbclient import NotebookClient  # noqa: E402
from nbclient.exceptions import CellExecutionError  # noqa: E402

from helpers.environment import install_kernel, latest_run_link, repo_root  # noqa: E402
from helpers.pipeline import CELL_TIMEOUT, StepResult, notebooks

ROOT = repo_root()
# Kernels started by the tests import this checkout's helpers, whatever the editable install points at.
os.environ['PYTHONPATH'] = os.pathsep.join(p for p in (str(ROOT), os.environ.get('PYTHONPATH')) if p)

# Dummy secrets set while the notebooks run: none may appear in any file of the run directory.
SECRETS = {'DASHSCOPE_API_KEY': 'sk-leaktest-dashscope-7f3a9c2e1b', 'AMAP_TOKEN': 'amap-leaktest-0c8d41f2',
           'MODELSCOPE_API_TOKEN': 'ms-leaktest-5e6f7a8b9c', 'OPENAI_API_KEY': 'sk-leaktest-openai-1a2b3c4d5e'}


def with_profile(nb, profile: str):
    """The notebook with only the ``profile = …`` line of its parameters cell changed."""
    cell = next(c for c in nb.cells if 'parameters' in c.metadata.get('tags', []))
    cell.source, n = re.subn(r"^profile = '[^']*'", f'profile = {profile!r}', cell.source, count=1, flags=re.M)
    assert n == 1, 'the parameters cell has no profile line'
    return nb


def run_by_hand(path: Path, profile: str):
    """Execute a notebook as JupyterLab does; returns (executed notebook, error or None)."""
    nb = with_profile(nbformat.read(path, as_version=4), profile)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT[profile], kernel_name=nb.metadata.kernelspec.name,
                            resources={'metadata': {'path': str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError as e:
        return nb, e
    return nb, None


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    """(run dir, {notebook: StepResult}) of notebooks 00 → 05 run by hand on the tiny profile."""
    from helpers.report import build_report
    runs = tmp_path_factory.mktemp('runs')
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in SECRETS.items():
            mp.setenv(k, v)
        mp.setenv('AFT_RUNS', str(runs))
        for path in notebooks():
            start = time.time()
            executed, error = run_by_hand(path, 'tiny')
            run_dir = latest_run_link('tiny').resolve()
            out = (run_dir if run_dir.is_dir() else runs) / 'notebooks' / path.name
            out.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(executed, out)
            results[path.name] = StepResult(path.name, round(time.time() - start, 1), str(out),
                                            'failed' if error else 'ok')
            if error:  # a learner stops at the first failing notebook
                break
    build_report(run_dir)
    return run_dir, results


install_kernel()  # what `make setup` does, into the fresh home: the notebooks' kernel, under the name they use


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the group into the node id
def pytest_collection_modifyitems(config, items):
    """With several workers (pytest-xdist, ``--dist loadgroup``), every test that needs the notebook chain runs on
    one worker, so the chain runs once per session while the other tests run beside it."""
    for item in items:
        if 'tiny_run' in getattr(item, 'fixturenames', ()):
            item.add_marker(pytest.mark.xdist_group('notebooks'))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """On a worker with ``--dist loadgroup``, every notebook-chain test must carry the group in its id (xdist tags
    it there); where it does not, the chain would run once per worker: stop instead of doubling the time."""
    if getattr(session.config.option, 'loadgroup', False):  # set on xdist's workers only
        lost = [i.nodeid for i in session.items if 'tiny_run' in getattr(i, 'fixturenames', ())
                and not i.nodeid.endswith('@notebooks')]
        if lost:
            raise pytest.UsageError(f'pytest-xdist did not group {lost[0]} with the notebook chain (pytest '
                                    f'{pytest.__version__}): install requirements/base.txt\'s pins (`make setup`)')


def pytest_sessionfinish(session, exitstatus):
    if FRESH.temporary:
        shutil.rmtree(FRESH.home, ignore_errors=True)

"""Every notebook runs top to bottom with papermill on the tiny profile, in one shared run directory;
committed notebooks carry no outputs and a tagged parameters cell; stable cells pass nbval-lax."""
import json
import os
import subprocess
import sys

import pytest

from helpers.environment import repo_root
from helpers.pipeline import notebooks

ROOT = repo_root()

NOTEBOOKS = notebooks()


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_clean(nb):
    cells = json.loads(nb.read_text())['cells']
    assert cells[0]['cell_type'] == 'markdown' and cells[0]['source'][0].startswith('# ')
    assert not [c for c in cells if c['cell_type'] == 'code' and (c.get('outputs') or c.get('execution_count'))], \
        'strip outputs before committing'
    params = [c for c in cells if 'parameters' in c.get('metadata', {}).get('tags', [])]
    assert len(params) == 1
    src = ''.join(params[0]['source'])
    assert "profile = 'auto'" in src and 'run_dir =' in src
    assert 'nohup' not in ''.join(''.join(c['source']) for c in cells)


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_tiny_profile(tiny_run, nb):
    run_dir, results = tiny_run
    assert results[nb.name].status == 'ok'
    executed = json.loads((run_dir / 'notebooks' / nb.name).read_text())
    assert not [o for c in executed['cells'] for o in c.get('outputs', []) if o.get('output_type') == 'error']


def test_stable_cells_pass_nbval(tiny_run):
    run_dir, _ = tiny_run
    checked = [run_dir / 'notebooks' / nb.name for nb in NOTEBOOKS
               if 'NBVAL_CHECK_OUTPUT' in nb.read_text()]
    assert checked, 'at least one notebook marks cells whose output must stay stable'
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    res = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '--nbval-lax',
                          '-o', 'addopts=', *map(str, checked)], capture_output=True, text=True, timeout=1800,
                         cwd=checked[0].parent, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]


def test_environment_json_written(tiny_run):
    run_dir, _ = tiny_run
    env = json.loads((run_dir / 'environment.json').read_text())
    assert env['profile'] == 'tiny' and env['model'] == 'tiny-qwen2'

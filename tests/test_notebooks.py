"""Every notebook runs top to bottom by hand on the tiny profile (see conftest.py), 00 → 05 sharing the run
00 started; committed notebooks carry no outputs and a tagged parameters cell; stable cells pass nbval-lax."""
import inspect
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import run_by_hand
from helpers.environment import KERNEL_DISPLAY_NAME, KERNEL_NAME, repo_root
from helpers.pipeline import notebooks, run_pipeline

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


def test_notebooks_name_the_kernel_set_up_registers():
    """scripts/setup.sh installs helpers editable and registers the kernel with `python -m helpers kernel`,
    whose name is KERNEL_NAME; every notebook, and the batch, must use exactly that kernel."""
    setup = (ROOT / 'scripts' / 'setup.sh').read_text()
    assert re.search(r'^"\$PY" -m helpers kernel$', setup, re.M)
    assert re.search(r'^"\$\{PIP\[@\]\}" --no-deps -e \.$', setup, re.M)
    for nb in NOTEBOOKS:
        spec = json.loads(nb.read_text())['metadata']['kernelspec']
        assert (spec['name'], spec['display_name']) == (KERNEL_NAME, KERNEL_DISPLAY_NAME), nb.name
    assert inspect.signature(run_pipeline).parameters['kernel'].default == KERNEL_NAME


def test_notebooks_import_helpers_without_touching_sys_path():
    for nb in NOTEBOOKS:
        code = ''.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code')
        assert 'sys.path' not in code and 'from helpers' in code, nb.name


def test_helpers_is_an_installable_package():
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())
    assert project['tool']['setuptools']['packages'] == ['helpers']
    assert project['tool']['setuptools']['dynamic']['dependencies']['file'] == ['requirements/base.txt']


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_tiny_profile(tiny_run, nb):
    run_dir, results = tiny_run
    assert nb.name in results, 'an earlier notebook failed, so a learner would not get here'
    executed = json.loads(Path(results[nb.name].output).read_text())
    errors = [f"{o['ename']}: {o['evalue']}" for c in executed['cells'] for o in c.get('outputs', [])
              if o.get('output_type') == 'error']
    assert results[nb.name].status == 'ok' and not errors, errors


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.name)
def test_each_notebook_prints_the_run_dir_it_uses_first(tiny_run, nb):
    run_dir, _ = tiny_run
    executed = json.loads((run_dir / 'notebooks' / nb.name).read_text())
    streams = [o for c in executed['cells'] if c['cell_type'] == 'code' for o in c['outputs']
               if o['output_type'] == 'stream']
    assert ''.join(streams[0]['text']).splitlines()[0] == f'run dir: {run_dir}'


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.name)
def test_what_the_learner_reads_has_no_warnings_widgets_or_markers(tiny_run, nb):
    run_dir, _ = tiny_run
    executed = json.loads((run_dir / 'notebooks' / nb.name).read_text())
    for cell in executed['cells']:
        assert '# NBVAL' not in ''.join(cell['source'])  # nbval reads cell tags instead
        for out in cell.get('outputs', []):
            text = ''.join(out.get('text', '')) + ''.join(out.get('data', {}).get('text/plain', ''))
            assert not re.search(r'deprecat|Warning:|UserWarning|FutureWarning', text, re.I), text[:500]
            assert 'application/vnd.jupyter.widget-view+json' not in out.get('data', {}), 'a progress widget'
            assert 'iframe' not in ''.join(out.get('data', {}).get('text/html', '')), 'an iframe of 127.0.0.1'


def test_a_later_notebook_without_a_run_says_to_run_00_first(tmp_path, monkeypatch):
    monkeypatch.setenv('AFT_RUNS', str(tmp_path))
    executed, error = run_by_hand(NOTEBOOKS[-1], 'tiny')
    assert error is not None
    out = next(o for c in executed.cells for o in c.get('outputs', []) if o.get('output_type') == 'error')
    assert out['ename'] == 'SystemExit' and 'run notebook 00 first' in out['evalue']


def test_stable_cells_pass_nbval(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    checked = [run_dir / 'notebooks' / nb.name for nb in NOTEBOOKS
               if any('nbval-check-output' in c.get('metadata', {}).get('tags', [])
                      for c in json.loads(nb.read_text())['cells'])]
    assert checked, 'at least one notebook tags cells whose output must stay stable (nbval-check-output)'
    env = {**os.environ, 'AFT_RUNS': str(tmp_path)}  # nbval executes them again: their new run goes there
    res = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '--nbval-lax',
                          '-o', 'addopts=', *map(str, checked)], capture_output=True, text=True, timeout=1800,
                         cwd=checked[0].parent, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]


def test_environment_json_written(tiny_run):
    run_dir, _ = tiny_run
    env = json.loads((run_dir / 'environment.json').read_text())
    assert env['profile'] == 'tiny' and env['model'] == 'tiny-qwen2'


def _cell_text(executed: dict, needle: str) -> tuple[str, list[str]]:
    """The stream text and the markdown outputs of the first code cell whose source holds ``needle``."""
    cell = next(c for c in executed['cells'] if c['cell_type'] == 'code' and needle in ''.join(c['source']))
    streams = ''.join(''.join(o.get('text', '')) for o in cell['outputs'] if o['output_type'] == 'stream')
    markdown = [''.join(o['data']['text/markdown']) for o in cell['outputs'] if 'text/markdown' in o.get('data', {})]
    return streams, markdown


def test_long_cells_announce_their_time_and_print_a_few_plain_lines(tiny_run):
    """Each long cell says how long it should take here before it starts, and shows progress as a few plain
    lines (not a bar redrawn per case); the generated readings are there."""
    run_dir, _ = tiny_run
    nb = {name: json.loads((run_dir / 'notebooks' / name).read_text())
          for name in ('02_training.ipynb', '04_roleplay.ipynb', '05_evaluation.ipynb')}
    train, _ = _cell_text(nb['02_training.ipynb'], 'run_training(cfg,')
    lines = train.splitlines()
    assert re.match(r'Training \d+ steps of \d+ samples — ', lines[0])
    assert 'expected to take' in lines[0] or 'no estimate' in lines[0]
    assert any(' left' in line for line in lines) and sum(line.endswith(', done') for line in lines) == 1
    evaluation, _ = _cell_text(nb['05_evaluation.ipynb'], 'evaluate_model(')
    arms = evaluation.count('Evaluating ')
    assert arms >= 3 and '\r' not in evaluation and evaluation.count('evaluating agentfabric') <= 5 * arms
    _, readings = _cell_text(nb['05_evaluation.ipynb'], 'narrate.recall_reading')
    assert len(readings) == 2 and 'Per arm' in readings[0]
    _, gallery = _cell_text(nb['04_roleplay.ipynb'], 'narrate.gallery_reading')
    assert gallery and gallery[0].startswith('Right verdicts:')

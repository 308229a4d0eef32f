"""The main job: bad parameters fail early with what to change, no secret leaks, the report, skipping."""
import json
import subprocess
import sys
from pathlib import Path

import papermill as pm
import pytest

from conftest import SECRETS
from helpers.environment import KERNEL_NAME, DiskSpaceError, ProfileError, latest_run_link, require_free_space
from helpers.pipeline import NOTEBOOK_DIR, PipelineError, run_pipeline, select


def execute(nb, tmp_path, **params):
    out = tmp_path / f'out-{nb}'
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(NOTEBOOK_DIR / nb), str(out), parameters={'profile': 'tiny', **params},
                            kernel_name=KERNEL_NAME, cwd=str(NOTEBOOK_DIR), progress_bar=False)
    return str(err.value)


def test_no_secret_appears_in_any_file_of_the_run(tiny_run):
    run_dir, _ = tiny_run
    files = [p for p in run_dir.rglob('*') if p.is_file()]
    assert len(files) > 20
    for path in files:
        data = path.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in data, f'{name} leaked into {path}'


def test_report_is_built_from_the_run(tiny_run):
    run_dir, _ = tiny_run
    html = (run_dir / 'report.html').read_text()
    for section in ('Environment', 'Data', 'Training', 'Before vs after', 'Conclusion', 'RolePlay gallery'):
        assert section in html
    assert 'data:image/png;base64,' in html  # images embedded: the page opens without a server
    assert '## Before vs after' in (run_dir / 'report.md').read_text()


def test_servers_listen_on_loopback_and_are_gone(tiny_run):
    run_dir, _ = tiny_run
    logs = list(run_dir.rglob('server*.log'))
    assert logs and all('--host 127.0.0.1' in p.read_text().splitlines()[0] for p in logs)
    ps = subprocess.run(['ps', '-eo', 'args'], capture_output=True, text=True).stdout
    assert str(run_dir) not in ps, 'a process of the run is still alive'


def test_the_batch_starts_a_run_with_the_notebooks_kernel_and_skips_what_is_done(tmp_path, monkeypatch):
    monkeypatch.setenv('AFT_RUNS', str(tmp_path))
    first = run_pipeline('tiny', only=['00'], log=lambda *a: None, report=False)
    run_dir = latest_run_link('tiny').resolve()  # a batch run is the one notebooks opened by hand find
    assert [r.status for r in first] == ['ok'] and Path(first[0].output) == run_dir / 'notebooks' / '00_environment.ipynb'
    executed = json.loads(Path(first[0].output).read_text())
    assert executed['metadata']['papermill']['parameters'] == {'profile': 'tiny', 'run_dir': str(run_dir)}
    assert executed['metadata']['kernelspec']['name'] == KERNEL_NAME
    assert json.loads((run_dir / 'timings.json').read_text())['00_environment.ipynb']['status'] == 'ok'
    again = run_pipeline('tiny', run_dir, only=['00'], log=lambda *a: None)
    assert [r.status for r in again] == ['skipped']
    assert 'Wall time per step' in (run_dir / 'report.html').read_text()  # a batch records its wall times


def test_unknown_profile_and_bad_selection():
    with pytest.raises(ProfileError, match='choose one of'):
        run_pipeline('huge', log=lambda *a: None)
    with pytest.raises(PipelineError, match='no notebook'):
        select(only=['42'])
    res = subprocess.run([sys.executable, '-m', 'helpers', 'pipeline', '--profile', 'gpux'], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and 'unknown profile' in res.stderr  # a bad argument: exit 2, one line


def test_missing_data_fails_in_the_first_cell_that_needs_it(tmp_path):
    msg = execute('02_training.ipynb', tmp_path, run_dir=str(tmp_path / 'empty-run'))
    assert 'run notebook 01 with the same run_dir first' in msg


def test_a_model_path_that_does_not_exist(tmp_path):
    msg = execute('00_environment.ipynb', tmp_path, run_dir=str(tmp_path / 'r'), model=str(tmp_path / 'nope'),
                  check_hub=False)
    assert 'Cannot get the model' in msg or 'unknown model' in msg


def test_max_length_too_small_for_the_prompts(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    scratch = tmp_path / 'run'
    scratch.mkdir()
    (scratch / 'data').symlink_to(run_dir / 'data')
    msg = execute('02_training.ipynb', tmp_path, run_dir=str(scratch), overrides={'max_length': 64})
    assert 'raise max_length' in msg


def test_gpu_profile_without_gpu_says_what_to_change(tmp_path):
    msg = execute('00_environment.ipynb', tmp_path, profile='gpu', run_dir=str(tmp_path / 'r'), check_hub=False)
    assert 'profile="cpu"' in msg


def test_disk_check_reports_the_space_needed(tmp_path):
    assert require_free_space(tmp_path, 1, 'x') > 0
    with pytest.raises(DiskSpaceError, match='needs about .* GiB free'):
        require_free_space(tmp_path / 'new', 10 ** 15, 'merging')

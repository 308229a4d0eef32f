"""Shared fixtures: one tiny-profile pipeline run (every notebook, in order) serves all notebook tests."""
import pytest

from helpers.pipeline import run_pipeline

# Dummy secrets set while the tiny pipeline runs: none may appear in any file of the run directory.
SECRETS = {'DASHSCOPE_API_KEY': 'sk-leaktest-dashscope-7f3a9c2e1b', 'AMAP_TOKEN': 'amap-leaktest-0c8d41f2',
           'MODELSCOPE_API_TOKEN': 'ms-leaktest-5e6f7a8b9c', 'OPENAI_API_KEY': 'sk-leaktest-openai-1a2b3c4d5e'}


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp('tiny-run')
    with pytest.MonkeyPatch.context() as mp:
        for k, v in SECRETS.items():
            mp.setenv(k, v)
        results = run_pipeline('tiny', run_dir, log=lambda *a: None)
    return run_dir, {r.notebook: r for r in results}

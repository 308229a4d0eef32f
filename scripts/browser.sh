#!/usr/bin/env bash
# Headless Chromium and its driver for the playground's browser test (Debian packages; no download at test time).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[browser] chromium and chromedriver are needed for tests/test_playground.py; install them with your package manager" >&2
  exit 1
fi
echo "[browser] installing chromium and chromium-driver (Debian packages)"
$SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium chromium-driver >/dev/null; }
command -v chromium >/dev/null && command -v chromedriver >/dev/null

#!/usr/bin/env bash
# Sourced by scripts/test.sh and scripts/demo.sh: makes a ready virtualenv in .venv.
# - installs the Debian package `dataset-fashion-mnist` (the offline dataset) where
#   apt is available and we are root (or have passwordless sudo);
# - creates .venv and installs this package with its [dev] extras, re-installing only
#   when setup.cfg changes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

fashion_dir=/usr/share/datasets/fashion-mnist
if [ ! -f "$fashion_dir/train-images-idx3-ubyte.gz" ] && command -v apt-get >/dev/null 2>&1; then
  sudo_cmd=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo_cmd="sudo -n"; fi
  fi
  if [ "$(id -u)" = 0 ] || [ -n "$sudo_cmd" ]; then
    echo "[setup] installing Debian package dataset-fashion-mnist (offline Fashion-MNIST)"
    $sudo_cmd apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { $sudo_cmd apt-get update -q >/dev/null 2>&1 && $sudo_cmd apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } \
      || echo "[setup] could not install dataset-fashion-mnist; tests that need it will say so"
  else
    echo "[setup] not root: install Fashion-MNIST with 'sudo apt-get install dataset-fashion-mnist'"
  fi
fi

# A C++ compiler builds the fused AWConv2D CPU kernel on first use (about a minute, then
# cached); without one AWConv2D falls back to builtin ops (slower) and says so.
if ! command -v c++ >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo -n"
    echo "[setup] installing Debian package g++ (builds the fused AWConv2D kernel)"
    $sudo_cmd apt-get install -y -q g++ >/dev/null 2>&1 \
      || { $sudo_cmd apt-get update -q >/dev/null 2>&1 && $sudo_cmd apt-get install -y -q g++ >/dev/null 2>&1; } \
      || echo "[setup] could not install g++; AWConv2D will use builtin ops (slower)"
  else
    echo "[setup] no C++ compiler: 'sudo apt-get install g++' enables the fused AWConv2D kernel"
  fi
fi

python_bin="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($python_bin --version)"
  "$python_bin" -m venv .venv
fi
stamp=.venv/.aw_keras_installed
wanted="$(sha256sum setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ] \
   || ! .venv/bin/python -c "import aw_keras.applications, aw_keras.export" >/dev/null 2>&1; then
  echo "[setup] installing aw_keras[dev] into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$wanted" > "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

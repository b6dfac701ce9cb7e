#!/usr/bin/env bash
# The main job. Sets up .venv, then runs the demo.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
python scripts/layer_demo.py "$@"

#!/usr/bin/env bash
# The main job: plain vs AW ResNet on real Fashion-MNIST, several seeds, ~15 min on
# 2 CPU cores. Prints the table (model, params, top-1 error mean +- std, train
# images/s), exports the AW model with aw-export, and writes plots under runs/demo.
# Re-running continues unfinished runs and reuses finished ones (delete runs/demo to
# start over). Extra arguments go to `python -m aw_keras.train.demo`, e.g.
#   bash scripts/demo.sh --seeds 0 1 2 3 4 --epochs 5
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
exec python -m aw_keras.train.demo --out "${AW_DEMO_OUT:-runs/demo}" "$@"

#!/usr/bin/env bash
# Runs the test suite in a self-made .venv.
#   bash scripts/test.sh          default suite (excludes tests marked slow) on TensorFlow,
#                                 then the tests marked `backends` again on JAX
#                                 (~22 + ~3.5 min on 2 cores)
#   bash scripts/test.sh slow     only the slow tests (full-size models, long training)
#   bash scripts/test.sh all      everything, then the `backends` tests on JAX
#   bash scripts/test.sh jax      only the `backends` tests, on JAX
#   bash scripts/test.sh torch    only the `backends` tests, on PyTorch (installs torch
#                                 into .venv first: the package index's build is several GB)
# Extra arguments go to pytest, e.g. `bash scripts/test.sh default -k reference`.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
target="${1:-default}"
[ $# -gt 0 ] && shift
workers="${PYTEST_WORKERS:-2}"

# Keras fixes its backend at import: each backend gets its own pytest process.
other_backend() {
  local backend="$1" marker="$2"; shift 2
  echo "[test] the tests marked 'backends' on KERAS_BACKEND=$backend"
  KERAS_BACKEND="$backend" python -m pytest tests/layers tests/applications tests/detection -m "backends and ($marker)" \
    -n "$workers" --dist worksteal --durations=5 "$@"
}

case "$target" in
  default|all)
    marker="not slow"; [ "$target" = all ] && marker="slow or not slow"
    status=0
    KERAS_BACKEND=tensorflow python -m pytest -m "$marker" -n "$workers" --dist worksteal \
      --durations=15 "$@" \
      || status=$?
    # exit status 5: the arguments selected no `backends` test (e.g. one export file)
    other_backend jax "$marker" "$@" || { code=$?; [ "$code" = 5 ] || status=$code; }
    exit "$status" ;;
  slow) exec python -m pytest -m slow -n "$workers" --durations=15 "$@" ;;
  jax) other_backend jax "slow or not slow" "$@" ;;
  torch)
    python -c "import torch" 2>/dev/null || python -m pip install -q "torch>=2.4"
    other_backend torch "slow or not slow" "$@" ;;
  *) echo "unknown target '$target': use default, slow, all, jax or torch" >&2; exit 2 ;;
esac

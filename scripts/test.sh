#!/usr/bin/env bash
# Runs the test suite in a self-made .venv.
#   bash scripts/test.sh          default suite (excludes tests marked slow), ~20-24 min on 2 cores
#   bash scripts/test.sh slow     only the slow tests (full-size models, long training)
#   bash scripts/test.sh all      everything
# Extra arguments go to pytest, e.g. `bash scripts/test.sh default -k reference`.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
target="${1:-default}"
[ $# -gt 0 ] && shift
case "$target" in
  default) marker=(-m "not slow") ;;
  slow) marker=(-m slow) ;;
  all) marker=(-m "slow or not slow") ;;
  *) echo "unknown target '$target': use default, slow or all" >&2; exit 2 ;;
esac
workers="${PYTEST_WORKERS:-2}"
exec python -m pytest "${marker[@]}" -n "$workers" --durations=15 "$@"

#!/usr/bin/env bash
# AW vs plain speed on the GPU machine: benchmarks/backend_speed.py on JAX and PyTorch,
# each in float32 and bfloat16, into one markdown file, $OUT/gpu_speed.md (plus the
# runs' stderr in $OUT/gpu_log.txt). Run from the repository root; see README.md here.
#
#   bash benchmarks/gpu/run.sh                     # on the GPU machine (carry .whl)
#   AW_GPU_SMOKE=1 OUT=/tmp/gpu_smoke PYTHON=.venv/bin/python bash benchmarks/gpu/run.sh
#                                                  # tiny sizes, here on CPU
#
# Environment:
#   OUT             where gpu_speed.md goes (the device machine sets it; default /tmp/aw_gpu_out)
#   PYTHON          the interpreter (default python3: the one with torch and jax there)
#   AW_GPU_SMOKE=1  tiny batch and sizes, 2 repeats: checks the whole script in minutes on CPU
#   AW_GPU_BUDGET_S seconds the benchmark runs may take together (default 420, smoke 1800; the pip
#                   install comes on top); each run also has its own timeout (below), so
#                   one hang cannot eat the budget, and a run with < 20 s left is skipped
#   AW_GPU_BACKENDS, AW_GPU_DTYPES  space-separated subsets (default "jax torch", "float32 bfloat16")
#
# Wheels: when .whl/*.whl exist (benchmarks/gpu/fetch_wheels.sh) and this Python is 3.12
# (what they were fetched for), they are installed into /tmp/site (AW_GPU_SITE) and
# PYTHONPATH points there; otherwise this Python's own packages are used as they are
# (e.g. the project virtualenv here, with aw_keras installed in it).
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
OUT=${OUT:-/tmp/aw_gpu_out}
PYTHON=${PYTHON:-python3}
SITE=${AW_GPU_SITE:-/tmp/site}
BACKENDS=${AW_GPU_BACKENDS:-jax torch}
DTYPES=${AW_GPU_DTYPES:-float32 bfloat16}
mkdir -p "$OUT"
REPORT="$OUT/gpu_speed.md"
LOG="$OUT/gpu_log.txt"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2

# --- packages -------------------------------------------------------------------------
py_version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || exit 1
if ls .whl/*.whl >/dev/null 2>&1 && [ "$py_version" = 3.12 ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl || exit 1
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    packages="wheels from .whl/ installed into $SITE"
else
    packages="this Python's own packages (Python $py_version; no 3.12 wheels installed)"
fi

# --- sizes ----------------------------------------------------------------------------
# full: layers at the ResNet50 stage shapes and ResNet50s at 224x224, batch 64;
# RetinaNet at 512x512 with batch 8 (batch 64 would not fit the time budget)
if [ "${AW_GPU_SMOKE:-0}" = 1 ]; then
    LAYER_ARGS=(--sections layer --batch 2 --repeats 2 --shapes 8x8x8)
    MODEL_ARGS=(--sections model --batch 2 --repeats 2 --size 32)
    DET_ARGS=(--sections retinanet --batch 1 --repeats 2 --detection-size 64)
    LAYER_TIMEOUT=300 MODEL_TIMEOUT=300 DET_TIMEOUT=300 BUDGET=${AW_GPU_BUDGET_S:-1800}
else
    LAYER_ARGS=(--sections layer --batch 64 --repeats 10)
    MODEL_ARGS=(--sections model --batch 64 --repeats 10 --size 224)
    DET_ARGS=(--sections retinanet --batch 8 --repeats 10 --detection-size 512)
    LAYER_TIMEOUT=45 MODEL_TIMEOUT=75 DET_TIMEOUT=60 BUDGET=${AW_GPU_BUDGET_S:-420}
fi

# --- report ---------------------------------------------------------------------------
device=$(nvidia-smi -L 2>/dev/null || true)
{
    echo "# AW vs plain on GPU (benchmarks/gpu/run.sh)"
    echo
    echo "Date $(date -u '+%Y-%m-%d %H:%M UTC'); device: ${device:-no nvidia-smi (CPU run)}."
    echo "Packages: $packages. Smoke sizes: ${AW_GPU_SMOKE:-0}."
    echo
} >"$REPORT"
: >"$LOG"

# run TITLE TIMEOUT ARGS...: one backend_speed.py run, its table (or why none) appended
run() {
    local title=$1 limit=$2
    shift 2
    local left=$((BUDGET - SECONDS))
    [ "$limit" -gt "$left" ] && limit=$left
    printf '## %s\n\n' "$title" >>"$REPORT"
    if [ "$limit" -lt 20 ]; then
        printf 'Skipped: %s s of the %s s budget left.\n\n' "$left" "$BUDGET" >>"$REPORT"
        return
    fi
    local table="$OUT/.table.md"
    rm -f "$table"
    echo "== $title (timeout ${limit}s): $*" | tee -a "$LOG"
    local start=$SECONDS
    timeout -k 10 "$limit" "$PYTHON" benchmarks/backend_speed.py "$@" --markdown "$table" \
        >>"$LOG" 2>&1
    local status=$?
    if [ "$status" = 0 ] && [ -s "$table" ]; then
        cat "$table" >>"$REPORT"
    elif [ "$status" = 124 ] || [ "$status" = 137 ]; then
        printf 'Timed out after %s s (no table).\n' "$limit" >>"$REPORT"
    else
        printf 'Failed (exit %s); last lines of its output:\n\n```\n%s\n```\n' "$status" \
            "$(tail -n 8 "$LOG")" >>"$REPORT"
    fi
    printf '\n(command: `python benchmarks/backend_speed.py %s`, %s s)\n\n' "$*" \
        "$((SECONDS - start))" >>"$REPORT"
    echo "   exit $status after $((SECONDS - start)) s" | tee -a "$LOG"
    rm -f "$table"
}

SECONDS=0
# in order of what matters most: float32 before bfloat16, layers and ResNet50s before
# RetinaNet; whatever the budget leaves no time for is marked skipped
for dtype in $DTYPES; do
    for backend in $BACKENDS; do
        run "$backend $dtype: layers" "$LAYER_TIMEOUT" \
            --backend "$backend" --dtype "$dtype" "${LAYER_ARGS[@]}"
        run "$backend $dtype: ResNet50" "$MODEL_TIMEOUT" \
            --backend "$backend" --dtype "$dtype" "${MODEL_ARGS[@]}"
    done
done
for dtype in $DTYPES; do
    for backend in $BACKENDS; do
        run "$backend $dtype: RetinaNet" "$DET_TIMEOUT" \
            --backend "$backend" --dtype "$dtype" "${DET_ARGS[@]}"
    done
done
echo "Total ${SECONDS} s of benchmark runs." >>"$REPORT"
echo "wrote $REPORT (${SECONDS} s)"
cat "$REPORT"

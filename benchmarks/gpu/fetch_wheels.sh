#!/usr/bin/env bash
# Downloads into .whl/ (repo root) the wheels that benchmarks/gpu/run.sh installs on
# the GPU machine, which has no network and no TensorFlow (Python 3.12, x86-64).
#
#   bash benchmarks/gpu/fetch_wheels.sh          # run here, from anywhere, with network
#
# The list is the Requires-Dist lines (`unzip -p .whl/NAME-*.whl '*/METADATA' | grep
# ^Requires-Dist`) of keras and keras-hub, less what the GPU machine already has
# (/work/.library/device/KINDS.md: absl-py, numpy, rich, h5py, ml-dtypes, packaging,
# regex, requests, pyyaml, tqdm, protobuf, sentencepiece, tokenizers,
# typing-extensions) and less tensorflow-text (it needs TensorFlow, which is not
# installed there and which nothing here needs on JAX or PyTorch). The versions are
# the ones this project's virtualenv runs. Plus this package itself, as a wheel built
# from the working tree (`pip wheel --no-deps`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST="$ROOT/.whl"
PYTHON=${PYTHON:-python3}
WHEELS=(
    keras==3.15.1        # needs namex, optree (+ absl-py numpy rich h5py ml-dtypes packaging: there)
    namex==0.1.0
    optree==0.20.0       # needs typing-extensions (there)
    keras-hub==0.32.0    # needs kagglehub, kagglesdk (+ regex sentencepiece tokenizers: there)
    kagglehub==1.0.2     # needs kagglesdk (+ packaging pyyaml requests tqdm: there)
    kagglesdk==0.1.28    # needs protobuf requests (there)
)

mkdir -p "$DEST"
grep -qxF '/.whl/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.whl/' >>"$ROOT/.git/info/exclude"
rm -f "$DEST"/*.whl  # one version of each: two stop the whole install there

"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$DEST" "${WHEELS[@]}"
"$PYTHON" -m pip wheel --no-deps -w "$DEST" "$ROOT"

echo "wheels in $DEST:"
ls -l "$DEST"
for wheel in "$DEST"/*.whl; do  # what each needs, to check against the list above
    echo "== $(basename "$wheel")"
    unzip -p "$wheel" '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' || true
done

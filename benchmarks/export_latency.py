"""Single-thread batch-1 TFLite latency: plain vs AW models (float32 and int8).

    python benchmarks/export_latency.py [--size 224] [--repeats 30] [--pairs mobilenet,resnet50]

For each pair (MobileNet vs AW-MobileNet, ResNet50 vs AW-ResNet50) exports
TFLite float32 and full-integer int8 (calibrated on a few random images: the
latency does not depend on the calibration quality; BatchNorm betas are drawn
non-zero as after training, so that no activation is identically 0 and XNNPACK
accepts the int8 graphs), runs each with
ai_edge_litert at num_threads=1 and batch 1, and prints the median latency,
the AW/plain ratio (target <= 1.15x) and the file sizes as a Markdown table.
For int8 AW-ResNet50 it also times the export without ``split_residual`` (the
faster, less faithful int8 form; see docs/export.md).
The runtime column says whether XNNPACK ran the model or LiteRT fell back to
its builtin reference kernels (see docs/export.md).
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from aw_keras.applications import get_model  # noqa: E402
from aw_keras.export import export_tflite  # noqa: E402
from aw_keras.export.verify import TFLiteRunner  # noqa: E402
from aw_keras.export.verify import measure_latency  # noqa: E402

PAIRS = {"mobilenet": ("mobilenet", "aw_mobilenet"), "resnet50": ("resnet50", "aw_resnet50")}


def give_batch_norms_offsets(model, rng):
    """Random-init BatchNorms have beta = 0, which leaves some attention
    activations identically 0 over the calibration data; their ~0 int8 ranges
    make XNNPACK refuse the graph (see docs/export.md). Trained models have
    non-zero betas: draw them here, for plain and AW models alike."""
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.center:
            layer.beta.assign(rng.uniform(0.05, 0.3, layer.beta.shape).astype("float32"))


def bench(name, size, quantization, repeats, scratch, **export_kwargs):
    keras.utils.set_random_seed(0)
    model = get_model(name, input_shape=(size, size, 3), classes=1000)
    rng = np.random.default_rng(0)
    give_batch_norms_offsets(model, rng)
    calibration = rng.random((8, size, size, 3), dtype=np.float32)
    path = os.path.join(scratch, f"{name}_{quantization or 'float32'}_{len(export_kwargs)}.tflite")
    start = time.perf_counter()
    export_tflite(model, path, quantization=quantization, representative_data=calibration,
                  **export_kwargs)
    convert_s = time.perf_counter() - start
    runner = TFLiteRunner(path, num_threads=1)
    latency = measure_latency(runner, calibration[:1], repeats=repeats, warmup=3)
    del model
    keras.backend.clear_session()
    return latency, os.path.getsize(path), convert_s, runner.note


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--pairs", default="mobilenet,resnet50")
    parser.add_argument("--quantizations", default="float32,int8")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for pair in args.pairs.split(","):
            plain, aw = PAIRS[pair]
            for q in args.quantizations.split(","):
                quantization = None if q == "float32" else q
                p = bench(plain, args.size, quantization, args.repeats, scratch)
                a = bench(aw, args.size, quantization, args.repeats, scratch)
                rows.append((plain, aw, q, p, a))
                print(f"{plain} vs {aw} {q}: {p[0]:.1f} ms vs {a[0]:.1f} ms ({a[0] / p[0]:.2f}x)", flush=True)
                if q == "int8" and pair != "mobilenet":  # AW-MobileNet has no k x k AW layers
                    a = bench(aw, args.size, quantization, args.repeats, scratch, split_residual=False)
                    rows.append((plain, aw, "int8, split_residual=False", p, a))
                    print(f"  without split_residual: {a[0]:.1f} ms ({a[0] / p[0]:.2f}x)", flush=True)
    print()
    print(f"Input {args.size}x{args.size}, batch 1, ai_edge_litert num_threads=1, median of {args.repeats}.")
    print()
    print("| model | precision | plain (ms) | AW (ms) | AW/plain | plain size (MB) | AW size (MB) | AW runtime |")
    print("|---|---|---|---|---|---|---|---|")
    for plain, aw, q, p, a in rows:
        print(f"| {plain} vs {aw} | {q} | {p[0]:.1f} | {a[0]:.1f} | {a[0] / p[0]:.2f}x | "
              f"{p[1] / 1e6:.1f} | {a[1] / 1e6:.1f} | {a[3]} |")


if __name__ == "__main__":
    main()

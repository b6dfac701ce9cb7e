"""Single-thread batch-1 TFLite latency: plain vs AW models (float32 and int8).

    python benchmarks/export_latency.py [--size 224] [--repeats 30] [--pairs mobilenet,resnet50]

For each family (MobileNet with AW-MobileNet and, as a reference for what a
standard attention block costs, SE-MobileNet; ResNet50 with AW-ResNet50) and
each precision it first exports every model to TFLite float32 or full-integer
int8 (calibrated on a few random images: the latency does not depend on the
calibration quality; BatchNorm betas are drawn non-zero and the moving
statistics set from the calibration images, as after training, so that no
activation is identically 0 and XNNPACK accepts the int8 graphs), then
runs all of them with ai_edge_litert at num_threads=1 and batch 1
*interleaved* (round-robin, one call each per round; see benchmarks/timing.py),
so machine noise hits the plain model and the AW model alike. It prints the
median latency, the ratio to the plain model (target for AW: <= 1.15x) and the
file sizes as a Markdown table. For int8 AW-ResNet50 it also times the export
with ``split_residual=True`` (conv + attention correction; see docs/export.md)
and with the taps form in every layer instead of the per-layer ``auto`` choice. The runtime column says whether XNNPACK ran the model or
LiteRT fell back to its builtin reference kernels.
"""

import argparse
import os
import platform
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from aw_keras.applications import get_model  # noqa: E402
from aw_keras.export import export_tflite  # noqa: E402
from aw_keras.export.transform import walk_layers  # noqa: E402
from aw_keras.export.verify import TFLiteRunner  # noqa: E402
from timing import time_interleaved  # noqa: E402  (benchmarks/timing.py)

# family -> [(row label, registry name, extra export_tflite arguments, precisions)]; the
# first entry is the baseline of the family.
FAMILIES = {
    "mobilenet": [
        ("mobilenet", "mobilenet", {}, ("float32", "int8")),
        ("aw_mobilenet", "aw_mobilenet", {}, ("float32", "int8")),
        ("se_mobilenet (reference)", "se_mobilenet", {}, ("float32", "int8")),
    ],
    "resnet50": [
        ("resnet50", "resnet50", {}, ("float32", "int8")),
        ("aw_resnet50", "aw_resnet50", {}, ("float32", "int8")),
        ("aw_resnet50, split_residual=True", "aw_resnet50", {"split_residual": True}, ("int8",)),
        ("aw_resnet50, taps everywhere", "aw_resnet50", {"implementation": "taps"}, ("int8",)),
    ],
}


def give_batch_norms_offsets(model, rng):
    """Random-init BatchNorms have beta = 0, which leaves some attention
    activations identically 0 over the calibration data; their ~0 int8 ranges
    make XNNPACK refuse the graph (see docs/export.md). Trained models have
    non-zero betas: draw them here, for plain and AW models alike."""
    layers = list(walk_layers(model))
    # the attention branch's own BatchNorms (AWConv2D.squeeze_bn / excite_bn) too
    layers += [getattr(layer, name) for layer in layers for name in ("squeeze_bn", "excite_bn")
               if getattr(layer, name, None) is not None]
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.center:
            layer.beta.assign(rng.uniform(0.05, 0.3, layer.beta.shape).astype("float32"))
    return [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]


def calibrate_batch_norms(model, images, rng):
    """Non-zero BatchNorm betas and moving statistics of ``images`` (one training-mode
    pass with momentum 0), as a trained model has: with the default statistics of
    a random-init model, whole attention activations are dead (AW-MobileNet's
    first squeeze ReLU is 0 for every image), and such int8 graphs make XNNPACK
    refuse them (or abort, see TFLiteRunner)."""
    batch_norms = give_batch_norms_offsets(model, rng)
    momenta = [layer.momentum for layer in batch_norms]
    for layer in batch_norms:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, momentum in zip(batch_norms, momenta):
        layer.momentum = momentum


def export(name, size, precision, path, calibration, **export_kwargs):
    keras.utils.set_random_seed(0)
    model = get_model(name, input_shape=(size, size, 3), classes=1000)
    calibrate_batch_norms(model, calibration, np.random.default_rng(0))
    quantization = None if precision == "float32" else precision
    export_tflite(model, path, quantization=quantization, representative_data=calibration,
                  **export_kwargs)
    del model
    keras.backend.clear_session()
    return os.path.getsize(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--pairs", default="mobilenet,resnet50",
                        help=f"comma-separated families, of {sorted(FAMILIES)}")
    parser.add_argument("--quantizations", default="float32,int8")
    parser.add_argument("--keep", metavar="DIR",
                        help="keep the exported .tflite files in DIR (e.g. for op_profile.py)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.pairs.split(",")) - set(FAMILIES))
    if unknown:
        parser.error(f"--pairs: unknown families {unknown}; expected some of {sorted(FAMILIES)}")
    calibration = np.random.default_rng(0).random((8, args.size, args.size, 3), dtype=np.float32)
    sample = calibration[:1]
    rows = []
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    with tempfile.TemporaryDirectory() as temporary:
        scratch = args.keep or temporary
        for family in args.pairs.split(","):
            for precision in args.quantizations.split(","):
                entries = [e for e in FAMILIES[family] if precision in e[3]]
                runners, sizes = {}, {}
                for index, (label, name, kwargs, _) in enumerate(entries):
                    path = os.path.join(scratch, f"{name}_{precision}_{index}.tflite")
                    sizes[label] = export(name, args.size, precision, path, calibration, **kwargs)
                    runners[label] = TFLiteRunner(path, num_threads=1)
                medians = time_interleaved(
                    {label: (lambda r=runner: r(sample)) for label, runner in runners.items()},
                    repeats=args.repeats, warmup=3,
                )
                baseline = medians[entries[0][0]]
                for label, _, _, _ in entries:
                    rows.append((label, precision, 1000 * medians[label], medians[label] / baseline,
                                 sizes[label] / 1e6, runners[label].note))
                    print(f"{label} {precision}: {1000 * medians[label]:.2f} ms "
                          f"({medians[label] / baseline:.2f}x)", flush=True)
                del runners
    print()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs visible. Input {args.size}x{args.size}, "
          f"batch 1, ai_edge_litert num_threads=1, median of {args.repeats} interleaved rounds.")
    print()
    print("| model | precision | latency (ms) | x plain | size (MB) | runtime |")
    print("|---|---|---|---|---|---|")
    for label, precision, ms, ratio, size_mb, note in rows:
        print(f"| {label} | {precision} | {ms:.2f} | {ratio:.2f}x | {size_mb:.1f} | {note} |")


if __name__ == "__main__":
    main()

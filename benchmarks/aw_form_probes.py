"""Builtin-op forms of one 3x3 AW convolution that the exporter does *not* use, timed against those it does.

    python benchmarks/aw_form_probes.py [--quantization float32|int8] [--stages 56,28,14,7]
        [--repeats 30]

For each ResNet50 stage shape (56x56x64 ... 7x7x512, batch 1, stride 1,
random weights, a per-sample per-tap per-output-channel scale ``S = 1 + sigmoid(.)``
computed from the input as AW's attention is) it converts one graph per form to
TFLite and prints the median latency (ai_edge_litert, XNNPACK, 1 thread,
interleaved), the ratio to the plain convolution with the same kernel, the XNNPACK
partitions and the relative error of the TFLite output against the same graph in
TensorFlow (int8: rounding; float32: ~1e-7):

- ``plain``: ``Conv2D`` (the baseline; it ignores S);
- ``taps``: `aw_kernels.taps`, the exporter's form (float32 everywhere, int8 on
  small maps);
- ``matmul``: `aw_kernels.matmul`, im2col + one BATCH_MATMUL (int8 on large maps);
- ``tap_matmul`` (probe): per tap a BATCH_MATMUL of the window with that tap's
  per-sample kernel ``S_t * K_t``, summed by ADDs: no MUL over the activations;
- ``runtime_filter`` (probe, float32 only): one ``CONV_2D`` with the per-sample
  kernel ``S * K`` (batch 1): XNNPACK never takes a runtime filter, so it runs on
  LiteRT's builtin kernel (in int8 that kernel also refuses the calibrated,
  non-zero filter zero point).

This is the evidence behind "no cheaper builtin form" in docs/export.md.
"""

import argparse
import os
import platform
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import time_interleaved  # noqa: E402

from aw_keras.export.tflite import symmetric_matmul_operands  # noqa: E402
from aw_keras.export.verify import TFLiteRunner  # noqa: E402
from aw_keras.layers import aw_kernels  # noqa: E402

STAGES = {56: 64, 28: 128, 14: 256, 7: 512}
GEOMETRY = aw_kernels.ConvGeometry((3, 3), (1, 1), (1, 1), "same")
CALIBRATION_IMAGES = 8


def form_functions(size, channels, rng):
    """{form: fn(x) -> relu(AW conv + bias)} for one stage shape."""
    kernel = tf.constant(rng.normal(0, (2 / (9 * channels)) ** 0.5, (3, 3, channels, channels)),
                         tf.float32)
    attention = tf.constant(rng.normal(0, 0.3, (channels, 9 * channels)), tf.float32)
    bias = tf.constant(rng.normal(0, 0.1, (channels,)), tf.float32)

    def scale(x):  # (N, 3, 3, 1, C2), as AWConv2D.attention_scale gives it
        pooled = tf.reduce_mean(x, axis=[1, 2])
        return tf.reshape(1.0 + tf.sigmoid(tf.matmul(pooled, attention)), [-1, 3, 3, 1, channels])

    def plain(x):
        return tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME") + bias)

    def taps(x):
        return tf.nn.relu(aw_kernels.taps(x, kernel, scale(x), GEOMETRY, add_chain=True) + bias)

    def matmul(x):
        return tf.nn.relu(aw_kernels.matmul(x, kernel, scale(x), GEOMETRY) + bias)

    def tap_matmul(x):
        tap_scales = tf.reshape(scale(x), [-1, 1, 9, channels])
        padded, _ = aw_kernels.pad_for_taps(x, GEOMETRY)
        total = None
        for j in range(3):
            for k in range(3):
                window = aw_kernels.tap_slice(padded, j, k, (size, size), GEOMETRY)
                tap = j * 3 + k
                # the tap's kernel scaled per sample by a MUL (it requantizes, so the
                # int8 operand can be made symmetric), then rank 3 for BATCH_MATMUL
                tap_kernel = tf.reshape(tap_scales[:, :, tap : tap + 1, :] * kernel[j, k][None, None],
                                        [-1, channels, channels])
                product = tf.matmul(tf.reshape(window, [-1, size * size, channels]), tap_kernel)
                total = product if total is None else total + product
        return tf.nn.relu(tf.reshape(total, [-1, size, size, channels]) + bias)

    def runtime_filter(x):
        per_sample = kernel * tf.reshape(scale(x), [3, 3, 1, channels])  # batch 1
        return tf.nn.relu(tf.nn.conv2d(x, per_sample, 1, "SAME") + bias)

    return {"plain": plain, "taps": taps, "matmul": matmul, "tap_matmul": tap_matmul,
            "runtime_filter": runtime_filter}


def convert(fn, shape, quantization, calibration):
    traced = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [traced.get_concrete_function()], traced)
    if quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        return symmetric_matmul_operands(converter.convert())[0]
    return converter.convert()


def stage_list(text):
    try:
        stages = [int(value) for value in text.split(",")]
    except ValueError:
        stages = None
    if not stages or any(stage not in STAGES for stage in stages):
        raise argparse.ArgumentTypeError(
            f"expected map sizes among {sorted(STAGES)}, comma separated, received {text!r}")
    return stages


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quantization", choices=("float32", "int8"), default="float32")
    parser.add_argument("--stages", type=stage_list, default=stage_list("56,28,14,7"))
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be positive, received {args.repeats}")
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.stages:
            channels = STAGES[size]
            shape = (1, size, size, channels)
            calibration = np.maximum(rng.normal(0, 1, (CALIBRATION_IMAGES,) + shape[1:]), 0)
            calibration = calibration.astype("float32")
            runners, errors = {}, {}
            for form, fn in form_functions(size, channels, rng).items():
                if form == "runtime_filter" and args.quantization == "int8":
                    continue
                path = os.path.join(scratch, f"{size}_{form}.tflite")
                with open(path, "wb") as handle:
                    handle.write(convert(fn, shape, args.quantization, calibration))
                runners[form] = TFLiteRunner(path, num_threads=1)
                expected = np.concatenate([fn(image[None]).numpy() for image in calibration])
                got = np.concatenate([runners[form](image[None]) for image in calibration])
                errors[form] = float(np.linalg.norm(got - expected) / np.linalg.norm(expected))
            sample = calibration[:1]
            medians = time_interleaved(
                {form: (lambda runner=runner: runner(sample)) for form, runner in runners.items()},
                repeats=args.repeats, warmup=2)
            for form, runner in runners.items():
                rows.append((size, channels, form, 1000 * medians[form],
                             medians[form] / medians["plain"], runner.partitions, errors[form]))
            print(f"[{size}x{size}x{channels}] done", flush=True)
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} CPUs visible; {args.quantization}, "
          f"batch 1, XNNPACK 1 thread, median of {args.repeats} interleaved rounds")
    print("\n| layer input | form | latency (ms) | x plain conv | XNNPACK partitions | "
          "relative error vs TensorFlow |")
    print("|---|---|---:|---:|---:|---:|")
    for size, channels, form, ms, ratio, partitions, error in rows:
        print(f"| {size}x{size}x{channels} | {form} | {ms:.3f} | {ratio:.2f}x | {partitions} | "
              f"{error:.1e} |")


if __name__ == "__main__":
    main()

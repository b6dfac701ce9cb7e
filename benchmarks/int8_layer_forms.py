"""int8 (or float32) cost and error of each AWConv2D export form, one layer at a time, at ResNet50's shapes.

    python benchmarks/int8_layer_forms.py [--size 224] [--repeats 40] [--stages 56,28,14,7]
        [--quantization int8|float32]

For the first 3x3 AW layer of each stage of AW-ResNet50 (at ``--size`` input,
BatchNorm statistics from random images as in export_latency.py) it builds a
one-layer model ``AWConv2D -> BatchNorm -> ReLU`` with that layer's weights and
exports it to int8 TFLite in each form (calibrated on the layer's real inputs),
next to the plain ``Conv2D -> BatchNorm -> ReLU`` with the same kernel:

- ``taps``: tap decomposition (``implementation="taps", split_residual=False``);
- ``split``: conv + attention taps (``implementation="taps", split_residual=True``);
- ``matmul``: im2col + batched matmul (``implementation="matmul", split_residual=False``);
- ``split_matmul``: conv + attention correction by matmul (``implementation="matmul",
  split_residual=True``).

It prints, per stage, each form's median latency (ai_edge_litert, XNNPACK,
1 thread, batch 1, interleaved), its ratio to the plain int8 conv, the XNNPACK
partition count, and the relative error of its int8 output against the float
Keras layer (``||int8 - float|| / ||float||`` over the calibration inputs). This
is the measurement behind the ``auto`` rule of `aw_keras.export.policy`.

``--quantization float32`` measures the float32 TFLite export instead (BatchNorm
folded as its target does): the plain conv, ``taps`` and ``matmul`` (the split
forms exist for int8 rounding only).
"""

import argparse
import os
import platform
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_latency import calibrate_batch_norms  # noqa: E402
from timing import time_interleaved  # noqa: E402

from aw_keras.applications import get_model  # noqa: E402
from aw_keras.export import export_tflite  # noqa: E402
from aw_keras.export.verify import TFLiteRunner  # noqa: E402
from aw_keras.layers import AWConv2D  # noqa: E402

FORMS = {
    "taps": {"implementation": "taps", "split_residual": False},
    "split": {"implementation": "taps", "split_residual": True},
    "matmul": {"implementation": "matmul", "split_residual": False},
    "split_matmul": {"implementation": "matmul", "split_residual": True},
}


def stage_model(size):
    """AW-ResNet50 at ``size`` (random weights, seed 0) and the input map size of
    the first 3x3 AW layer of each stage, largest first."""
    keras.utils.set_random_seed(0)
    model = get_model("aw_resnet50", input_shape=(size, size, 3), classes=1000)
    sizes = []
    for layer in model.layers:
        if isinstance(layer, AWConv2D) and layer.input.shape[1] not in sizes:
            sizes.append(layer.input.shape[1])
    return model, sizes


def stage_layers(model, images, stages):
    """{map size: (AWConv2D, its BatchNorm, its inputs for ``images``)}, the first
    3x3 AW layer of each stage in ``stages``, with the model's BatchNorm
    statistics calibrated on ``images`` first."""
    calibrate_batch_norms(model, images, np.random.default_rng(0))
    picked = {}
    for layer in model.layers:
        size = layer.input.shape[1] if isinstance(layer, AWConv2D) else None
        if size in stages and size not in picked:
            norm = model.get_layer(layer.name.replace("_2_conv", "_2_bn"))
            inputs = keras.Model(model.input, layer.input).predict(images, verbose=0)
            picked[size] = (layer, norm, inputs)
    return picked


def one_layer_model(layer, norm, plain):
    """``layer -> norm -> ReLU`` as its own model (``plain``: a Conv2D with the kernel)."""
    inputs = keras.Input(tuple(layer.input.shape[1:]))
    if plain:
        conv = keras.layers.Conv2D(layer.filters, layer.kernel_size, padding=layer.padding,
                                   use_bias=False)
        outputs = conv(inputs)
        conv.set_weights([layer.kernel.numpy()])
    else:
        conv = AWConv2D.from_config(layer.get_config())
        outputs = conv(inputs)
        conv.set_weights(layer.get_weights())
    copy = keras.layers.BatchNormalization.from_config(norm.get_config())
    outputs = copy(outputs)
    copy.set_weights(norm.get_weights())
    return keras.Model(inputs, keras.layers.ReLU()(outputs))


def relative_error(runner, model, inputs):
    expected = np.asarray(model(inputs, training=False))
    got = np.concatenate([runner(inputs[i : i + 1]) for i in range(len(inputs))])
    return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--calibration", type=int, default=8, help="random calibration images")
    parser.add_argument("--stages", default=None,
                        help="comma-separated map sizes to measure (default: every stage)")
    parser.add_argument("--quantization", choices=("int8", "float32"), default="int8")
    args = parser.parse_args(argv)
    int8 = args.quantization == "int8"
    forms = FORMS if int8 else {f: FORMS[f] for f in ("taps", "matmul")}
    if args.size < 32 or args.repeats < 1 or args.calibration < 1:
        parser.error(f"--size must be >= 32, --repeats and --calibration >= 1; received "
                     f"{args.size}, {args.repeats}, {args.calibration}")
    model, sizes = stage_model(args.size)
    wanted = sizes
    if args.stages:
        try:
            wanted = [int(v) for v in args.stages.split(",")]
        except ValueError:
            parser.error(f"--stages: expected comma-separated map sizes, received {args.stages!r}")
        unknown = sorted(set(wanted) - set(sizes))
        if unknown:
            parser.error(f"--stages: no stage with map size {unknown}; expected some of {sizes}")
    images = np.random.default_rng(0).random((args.calibration, args.size, args.size, 3),
                                             dtype=np.float32)
    layers = stage_layers(model, images, wanted)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for stage in wanted:
            layer, norm, inputs = layers[stage]
            runners, errors = {}, {}
            for form, kwargs in [("plain", None)] + list(forms.items()):
                layer_model = one_layer_model(layer, norm, plain=kwargs is None)
                path = os.path.join(scratch, f"{stage}_{form}.tflite")
                if int8:
                    export_tflite(layer_model, path, quantization="int8", representative_data=inputs,
                                  io_dtype="float32", **(kwargs or {}))
                else:
                    export_tflite(layer_model, path, implementation=(kwargs or {}).get("implementation"))
                runners[form] = TFLiteRunner(path, num_threads=1)
                errors[form] = relative_error(runners[form], layer_model, inputs)
            sample = inputs[:1]
            medians = time_interleaved({f: (lambda r=r: r(sample)) for f, r in runners.items()},
                                       repeats=args.repeats, warmup=3)
            for form, runner in runners.items():
                rows.append((tuple(inputs.shape[1:]), form, 1000 * medians[form],
                             medians[form] / medians["plain"], runner.partitions, errors[form]))
            print(f"stage {stage}: " + ", ".join(
                f"{f} {medians[f] / medians['plain']:.2f}x" for f in runners), flush=True)
    print()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs visible. AW-ResNet50 at "
          f"{args.size}x{args.size}, one layer (AWConv2D -> BatchNorm -> ReLU), "
          f"{'int8 with float32 io' if int8 else 'float32'}, ai_edge_litert num_threads=1, batch 1, median of {args.repeats} "
          "interleaved rounds.")
    print()
    print(f"| layer input | form | latency (ms) | x plain {args.quantization} conv | XNNPACK partitions | "
          "relative error vs float |")
    print("|---|---|---:|---:|---:|---:|")
    for shape, form, ms, ratio, partitions, error in rows:
        print(f"| {'x'.join(map(str, shape))} | {form} | {ms:.3f} | {ratio:.2f}x | "
              f"{partitions} | {error:.4f} |")


if __name__ == "__main__":
    main()

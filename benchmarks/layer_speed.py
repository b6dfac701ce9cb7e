"""AWConv2D vs Conv2D speed at ResNet50 stage shapes (a benchmark, not a test).

For each shape, Conv2D and AWConv2D with every implementation are timed
*interleaved* in one process (round-robin, one call each per round), so machine
noise hits all candidates alike; the table reports medians and the ratio
AWConv2D / Conv2D. "inference" is one forward call (training=False); "train" is
one forward + backward (gradients for the input and every trainable weight).

    python benchmarks/layer_speed.py                   # all shapes, batch 16
    python benchmarks/layer_speed.py --repeats 5 --shapes 14x14x256
    python benchmarks/layer_speed.py --markdown docs/layer_speed_cpu.md
    python benchmarks/layer_speed.py --jit-compile      # everything under XLA

With ``--jit-compile`` the baseline Conv2D is compiled by XLA too, so the ratio
answers "what does AW cost in a model compiled with ``jit_compile=True``".
"""

import argparse
import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

import keras  # noqa: E402
from aw_keras.layers import AWConv2D, fused_op  # noqa: E402
from aw_keras.layers.aw_conv2d import IMPLEMENTATIONS  # noqa: E402
from timing import time_interleaved  # noqa: E402  (benchmarks/timing.py)

RESNET50_STAGES = ["56x56x64", "28x28x128", "14x14x256", "7x7x512"]


def parse_shape(text):
    height, width, channels = (int(v) for v in text.lower().split("x"))
    return height, width, channels


def make_step_functions(layer, x, jit_compile=False):
    """Compiled inference and training-step functions for one layer."""
    if not layer.built:
        layer.build(x.shape)  # before reading its weights: the train step needs them all
    weights = [w.value for w in layer.trainable_weights]
    if not weights:
        raise RuntimeError(f"{layer.name} has no trainable weights to differentiate")

    @tf.function(jit_compile=jit_compile)
    def inference():
        return layer(x, training=False)

    @tf.function(jit_compile=jit_compile)
    def train_step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x, training=True)
            loss = tf.reduce_mean(tf.square(tf.cast(out, tf.float32)))
        grads = tape.gradient(loss, [x] + weights)
        return tf.add_n([tf.reduce_sum(tf.cast(g, tf.float32)) for g in grads])

    return {"inference": inference, "train": train_step}


def benchmark_shape(shape, batch, implementations, repeats, jit_compile=False):
    height, width, channels = shape
    x = tf.random.normal((batch, height, width, channels))
    keras.utils.set_random_seed(0)
    layers = {"Conv2D": keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)}
    for implementation in implementations:
        layers[implementation] = AWConv2D(
            channels, 3, padding="same", use_bias=False, implementation=implementation
        )
    functions = {name: make_step_functions(layer, x, jit_compile) for name, layer in layers.items()}
    results = {}
    for mode in ("inference", "train"):
        candidates = {name: fns[mode] for name, fns in functions.items()}
        results[mode] = time_interleaved(candidates, repeats, warmup=2)
    resolved = ""
    if "auto" in layers:
        picks = [layers["auto"].resolved_implementation(x.shape, training=t, xla=jit_compile)
                 for t in (False, True)]
        resolved = picks[0] if picks[0] == picks[1] else f"{picks[0]}; train: {picks[1]}"
    return results, resolved


def describe_machine():
    cpus = os.cpu_count()
    gpus = tf.config.list_physical_devices("GPU")
    device = f"GPU: {gpus[0].name}" if gpus else "CPU only"
    return f"{platform.processor() or platform.machine()}, {cpus} CPUs visible, {device}, TF {tf.__version__}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=9, help="interleaved rounds (median taken)")
    parser.add_argument("--shapes", nargs="+", default=RESNET50_STAGES, help="HxWxC, stride 1, 3x3")
    parser.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS),
                        choices=list(IMPLEMENTATIONS))
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--jit-compile", action="store_true",
                        help="compile every candidate, Conv2D included, with XLA")
    args = parser.parse_args(argv)
    if args.batch <= 0 or args.repeats <= 0:
        parser.error(f"--batch and --repeats must be positive, received {args.batch}, {args.repeats}")
    if args.jit_compile and "fused" in args.implementations:
        print("(implementation 'fused' left out: the fused CPU kernel has no XLA kernel)")
        args.implementations = [i for i in args.implementations if i != "fused"]
    elif "fused" in args.implementations and not fused_op.available():
        print(f"(implementation 'fused' left out: {fused_op.unavailable_reason()})")
        args.implementations = [i for i in args.implementations if i != "fused"]

    lines = [
        f"Machine: {describe_machine()}; batch {args.batch}, 3x3, stride 1, 'same', "
        f"median of {args.repeats} interleaved rounds, "
        f"{'XLA (jit_compile=True)' if args.jit_compile else 'graph mode (tf.function, no XLA)'}.",
        "",
        "| shape | implementation | inference ms | x Conv2D | train step ms | x Conv2D |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for text in args.shapes:
        results, resolved = benchmark_shape(
            parse_shape(text), args.batch, args.implementations, args.repeats, args.jit_compile
        )
        base_inf, base_train = results["inference"]["Conv2D"], results["train"]["Conv2D"]
        for name in results["inference"]:
            inf, train = results["inference"][name], results["train"][name]
            label = f"auto ({resolved})" if name == "auto" else name
            line = (f"| {text} | {label} | {inf * 1e3:.2f} | {inf / base_inf:.2f} | "
                    f"{train * 1e3:.2f} | {train / base_train:.2f} |")
            lines.append(line)
            print(line, flush=True)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

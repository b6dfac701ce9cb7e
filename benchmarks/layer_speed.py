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
    python benchmarks/layer_speed.py --backend jax      # AWConv2D("auto") vs Conv2D on JAX

With ``--jit-compile`` the baseline Conv2D is compiled by XLA too, so the ratio
answers "what does AW cost in a model compiled with ``jit_compile=True``".

``--backend jax`` or ``--backend torch`` (with ``--dtype float32|bfloat16``)
runs the layer section of ``backend_speed.py`` instead: ``AWConv2D`` with
implementation "auto" (and a bias, as Conv2D) against that backend's Conv2D,
one-layer models timed through ``predict_on_batch`` / ``train_on_batch``,
interleaved; ``--implementations`` and ``--jit-compile`` are TensorFlow's only.
"""

import argparse
import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import backend_speed  # noqa: E402  (benchmarks/backend_speed.py; imports no Keras)

RESNET50_STAGES = ["56x56x64", "28x28x128", "14x14x256", "7x7x512"]
OTHER_BACKENDS = ("jax", "torch")


def import_tensorflow():
    """Selects the TensorFlow backend and imports TensorFlow, Keras and the AW
    layer into this module (``--backend tensorflow``, the default; the other
    backends never import TensorFlow)."""
    global tf, keras, AWConv2D, fused_op, IMPLEMENTATIONS, time_interleaved
    from aw_keras.utils.keras_backend import select_backend

    select_backend("tensorflow")
    import tensorflow as tf

    import keras
    from aw_keras.layers import AWConv2D, fused_op
    from aw_keras.layers.aw_conv2d import IMPLEMENTATIONS
    from timing import time_interleaved  # benchmarks/timing.py


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


def chosen_backend(argv):
    """(--backend, --dtype) of ``argv`` (default tensorflow, float32), read before
    anything imports Keras; a bad value is a usage error."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--backend", choices=("tensorflow",) + OTHER_BACKENDS,
                        default="tensorflow")
    parser.add_argument("--dtype", choices=tuple(backend_speed.DTYPES), default="float32")
    known = parser.parse_known_args(argv)[0]
    return known.backend, known.dtype


def build_parser(implementations):
    """This script's parser; ``implementations``: TensorFlow's AWConv2D
    implementations (the --implementations choices), or None on another backend."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("tensorflow",) + OTHER_BACKENDS,
                        default="tensorflow",
                        help="Keras backend; jax / torch reuse backend_speed.py's layer section")
    parser.add_argument("--dtype", choices=tuple(backend_speed.DTYPES), default="float32",
                        help="jax / torch only: bfloat16 = the mixed_bfloat16 policy")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=9, help="interleaved rounds (median taken)")
    parser.add_argument("--shapes", nargs="+", default=RESNET50_STAGES, help="HxWxC, stride 1, 3x3")
    parser.add_argument("--implementations", nargs="+", default=list(implementations or ()),
                        choices=list(implementations) if implementations else None)
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--jit-compile", action="store_true",
                        help="compile every candidate, Conv2D included, with XLA")
    return parser


def main_other_backend(parser, args):
    """``--backend jax|torch``: backend_speed.py's layer section, same table format
    as backend_speed.py (ratios to that backend's Conv2D)."""
    if args.implementations or args.jit_compile:
        parser.error(f"--implementations and --jit-compile apply to --backend tensorflow only; "
                     f"received them with --backend {args.backend}")
    if args.batch <= 0 or args.repeats <= 0:
        parser.error(f"--batch and --repeats must be positive, received {args.batch}, {args.repeats}")
    try:
        shapes = [backend_speed.parse_shape(text) for text in args.shapes]
    except argparse.ArgumentTypeError as error:
        parser.error(f"argument --shapes: {error}")
    backend_speed.setup_backend(args.backend, args.dtype)
    rows = backend_speed.layer_section(shapes, args.batch, args.repeats)
    backend_speed.report(rows, args)


def main(argv=None):
    backend, dtype = chosen_backend(argv)
    if backend != "tensorflow":
        parser = build_parser(None)
        return main_other_backend(parser, parser.parse_args(argv))
    if dtype != "float32":  # before TensorFlow is imported
        build_parser(None).error(f"--dtype {dtype} applies to --backend jax or torch; "
                                 "TensorFlow's table is float32")
    import_tensorflow()
    parser = build_parser(IMPLEMENTATIONS)
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

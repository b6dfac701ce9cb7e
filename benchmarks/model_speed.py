"""Median inference and training-step time of whole models on this machine.

Models (batch 16, 224x224x3, 1000 classes, random weights, float32):
keras.applications.ResNet50, our ResNet50, AWResNet50, SEResNet50, AWSEResNet50,
keras.applications.MobileNet, our MobileNet, AWMobileNet, SEMobileNet,
AWSEMobileNet. All run in one process; each is compiled once (tf.function)
and warmed up before timing. The models of one family are held at once and
timed *interleaved* (round-robin, one call each per round), so machine noise
hits all of them alike. Ratios are to our plain ResNet50 / MobileNet.
Memory is the resident set the model added to the process by the end of its
warm-up (weights, optimizer slots, buffers TF keeps), from /proc/self/statm;
each family runs in a fresh subprocess.

Usage:
    python benchmarks/model_speed.py [--repeats 10] [--batch 16] [--size 224]
        [--models resnet50,aw_resnet50] [--output docs/speed.md]
    python benchmarks/model_speed.py --backend jax [--dtype bfloat16] [--repeats 5]

``--backend jax`` or ``--backend torch`` runs the model section of
``backend_speed.py`` instead (in this process, no memory column): AWResNet50
against ResNet50 on that backend, compiled with ``jit_compile="auto"`` and timed
interleaved through ``predict_on_batch`` / ``train_on_batch``; ``--models``
applies to TensorFlow only.
"""

import argparse
import json
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # backend_speed, timing
import backend_speed  # noqa: E402  (imports no Keras)


def _builders():
    import keras

    from aw_keras import applications

    return {
        "keras.applications.ResNet50": (
            "resnet", lambda s: keras.applications.ResNet50(weights=None, input_shape=s)),
        "ResNet50": ("resnet", lambda s: applications.ResNet50(input_shape=s)),
        "AWResNet50": ("resnet", lambda s: applications.AWResNet50(input_shape=s)),
        "SEResNet50": ("resnet", lambda s: applications.SEResNet50(input_shape=s)),
        "AWSEResNet50": ("resnet", lambda s: applications.AWSEResNet50(input_shape=s)),
        "keras.applications.MobileNet": (
            "mobilenet", lambda s: keras.applications.MobileNet(weights=None, input_shape=s)),
        "MobileNet": ("mobilenet", lambda s: applications.MobileNet(input_shape=s)),
        "AWMobileNet": ("mobilenet", lambda s: applications.AWMobileNet(input_shape=s)),
        "SEMobileNet": ("mobilenet", lambda s: applications.SEMobileNet(input_shape=s)),
        "AWSEMobileNet": ("mobilenet", lambda s: applications.AWSEMobileNet(input_shape=s)),
    }


RESULT_MARK = "MODEL_SPEED_RESULT "


def _rss_mib():
    """Current resident set size of this process in MiB (Linux)."""
    with open("/proc/self/statm") as handle:
        resident_pages = int(handle.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def step_functions(model, batch, size):
    """Compiled (inference, training step) closures over fixed random data."""
    import keras
    import numpy as np
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32))
    y = tf.constant(np.arange(batch) % 1000)
    optimizer = keras.optimizers.SGD(0.01)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=False)
    def infer(images):
        return model(images, training=False)

    @tf.function(jit_compile=False)
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return (lambda: infer(x).numpy()), (lambda: train_step(x, y).numpy())


def time_family(builders, names, batch, size, repeats, warmup=2):
    """[(name, inference s, train s, RSS added MiB)] for models held at once."""
    infers, trains, memory = {}, {}, {}
    for name in names:
        before = _rss_mib()
        model = builders[name]((size, size, 3))
        infer, train = step_functions(model, batch, size)
        for _ in range(warmup):
            infer()
            train()
        infers[name], trains[name] = infer, train
        memory[name] = _rss_mib() - before
        print(f"built and warmed up {name} (+{memory[name]:.0f} MiB)", file=sys.stderr, flush=True)
    from timing import time_interleaved  # benchmarks/timing.py

    infer_times = time_interleaved(infers, repeats)
    train_times = time_interleaved(trains, repeats)
    return [(name, infer_times[name], train_times[name], memory[name]) for name in names]


def render(results, args):
    cpu = backend_speed.cpu_model()
    import keras
    import tensorflow as tf

    lines = [
        "## Model speed",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({cpu}); load average {os.getloadavg()[0]:.2f} "
        "at the end of the run. "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python "
        f"{platform.python_version()}.",
        f"Batch {args.batch}, {args.size}x{args.size}x3, float32, median of {args.repeats} "
        "interleaved rounds after 2 warm-up runs, graph mode (tf.function, no XLA). "
        "Generated by `python benchmarks/model_speed.py`.",
        "",
        "| model | inference (ms) | ratio | training step (ms) | ratio | RSS added (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    base = {}
    for name, family, infer, train, rss in results:
        if name in ("ResNet50", "MobileNet"):
            base[family] = (infer, train)
    for name, family, infer, train, rss in results:
        b_infer, b_train = base.get(family, (float("nan"), float("nan")))
        lines.append(
            f"| {name} | {infer * 1e3:.0f} | {infer / b_infer:.2f}x | {train * 1e3:.0f} | "
            f"{train / b_train:.2f}x | {rss:.0f} |"
        )
    lines.append("")
    lines.append("Ratios are relative to our ResNet50 / MobileNet of the same family.")
    return "\n".join(lines) + "\n"


def main_other_backend(parser, args):
    """``--backend jax|torch``: backend_speed.py's model section (AWResNet50 vs
    ResNet50 on that backend), written to --output as well as stdout."""
    if args.models:
        parser.error(f"--models applies to --backend tensorflow only; --backend {args.backend} "
                     f"compares AWResNet50 with ResNet50 (received --models {args.models})")
    backend_speed.setup_backend(args.backend, args.dtype)
    rows = backend_speed.model_section(args.size, args.batch, args.repeats)
    args.markdown = args.output
    backend_speed.report(rows, args)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=backend_speed.BACKENDS, default="tensorflow",
                        help="Keras backend; jax / torch reuse backend_speed.py's model section")
    parser.add_argument("--dtype", choices=tuple(backend_speed.DTYPES), default="float32",
                        help="jax / torch only: bfloat16 = the mixed_bfloat16 policy")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", default=None, help="comma-separated subset")
    parser.add_argument("--output", default=None, help="write the markdown table here")
    parser.add_argument("--family", choices=["resnet", "mobilenet"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.backend != "tensorflow":
        if args.repeats <= 0 or args.batch <= 0 or args.size < 32:
            parser.error("--repeats and --batch must be positive and --size at least 32; "
                         f"received {args.repeats}, {args.batch}, {args.size}")
        return main_other_backend(parser, args)
    if args.dtype != "float32":
        parser.error(f"--dtype {args.dtype} applies to --backend jax or torch; TensorFlow's "
                     "table is float32")
    from aw_keras.utils.keras_backend import select_backend

    select_backend("tensorflow")
    builders = _builders()
    names = args.models.split(",") if args.models else list(builders)
    unknown = [n for n in names if n not in builders]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(builders)}")
    if args.repeats <= 0 or args.batch <= 0 or args.size < 32:
        parser.error("--repeats and --batch must be positive and --size at least 32")
    if args.family:
        family_builders = {n: builders[n][1] for n in names if builders[n][0] == args.family}
        rows = time_family(family_builders, list(family_builders), args.batch, args.size, args.repeats)
        print(RESULT_MARK + json.dumps(rows), flush=True)
        return
    results = []
    for family in ("resnet", "mobilenet"):
        members = [n for n in names if builders[n][0] == family]
        if not members:
            continue
        # one fresh process per family, so the memory column starts from a clean heap
        command = [sys.executable, os.path.abspath(__file__), "--family", family,
                   "--models", ",".join(members), "--repeats", str(args.repeats),
                   "--batch", str(args.batch), "--size", str(args.size)]
        completed = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        marked = [l for l in completed.stdout.splitlines() if l.startswith(RESULT_MARK)]
        for name, infer, train, rss in json.loads(marked[-1][len(RESULT_MARK):]):
            results.append((name, family, infer, train, rss))
            print(f"{name}: inference {infer * 1e3:.0f} ms, train step {train * 1e3:.0f} ms",
                  file=sys.stderr, flush=True)
    text = render(results, args)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()

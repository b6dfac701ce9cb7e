"""AWConv2D / AW-ResNet50 / AW-RetinaNet vs their plain baselines on one Keras backend.

The same code runs on TensorFlow, JAX and PyTorch (CPU or GPU): every
candidate is a Keras model compiled with ``model.compile(optimizer=SGD(0.01),
jit_compile="auto")`` and timed through ``model.predict_on_batch`` (inference)
and ``model.train_on_batch`` (a training step), each result materialized as a
NumPy array inside the timed call so GPU work is finished when the clock stops.
Each candidate is warmed up (compiled) first; the baseline and the AW model are
then timed *interleaved* (`timing.time_interleaved`, median of ``--repeats``
rounds), so machine noise hits both alike.

Sections (``--sections``, default all):

- ``layer``: ``AWConv2D(C, 3, padding="same")`` vs ``keras.layers.Conv2D(C, 3,
  padding="same")`` at the ResNet50 stage shapes (``--shapes``), inference and
  a training step (MSE to zeros);
- ``model``: ``applications.AWResNet50`` vs ``applications.ResNet50`` (random
  weights, 1000 classes) at ``--size``, inference and a training step;
- ``retinanet``: ``aw_keras.detection.RetinaNet`` on ``aw_resnet50_fpn`` vs
  ``resnet50_fpn`` at ``--detection-size``, a training step on synthetic images
  with a few boxes.

    python benchmarks/backend_speed.py --backend jax
    python benchmarks/backend_speed.py --backend torch --dtype bfloat16 --sections layer,model
    python benchmarks/backend_speed.py --backend jax --sections layer --shapes 14x14x256 \\
        --batch 16 --repeats 5 --markdown /tmp/layer.md

Output: one markdown table (section | shape/model | mode | baseline ms | AW ms |
AW/baseline) under a header line naming the backend, dtype, batch, versions and
device.
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys

BACKENDS = ("tensorflow", "jax", "torch")
DTYPES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}  # --dtype: Keras global policy
SECTIONS = ("layer", "model", "retinanet")
RESNET50_STAGES = ("56x56x64", "28x28x128", "14x14x256", "7x7x512")
HEADER = ("section", "shape/model", "mode", "baseline ms", "AW ms", "AW/baseline")


# --- command line ---------------------------------------------------------------------

def parse_shape(text):
    """``"HxWxC"`` -> (H, W, C) of positive ints; argparse type (ArgumentTypeError
    naming what was received and what is expected)."""
    parts = text.lower().split("x")
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) <= 0:
        raise argparse.ArgumentTypeError(
            f"received {text!r}; expected HxWxC with three positive integers, e.g. 56x56x64")
    return values


def parse_shapes(text):
    """Comma list of ``HxWxC`` -> list of (H, W, C); argparse type."""
    return [parse_shape(part) for part in text.split(",") if part.strip()] or \
        _bad(f"received {text!r}; expected a comma list of HxWxC shapes")


def parse_sections(text):
    """Comma list of section names (subset of SECTIONS, order kept); argparse type."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        _bad(f"received {text!r}; expected a comma list of {', '.join(SECTIONS)}")
    return names


def positive_int(text):
    """A positive int; argparse type."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        _bad(f"received {text!r}; expected a positive integer")
    return value


def _bad(message):
    raise argparse.ArgumentTypeError(message)


def shape_text(shape):
    """(H, W, C) -> ``"HxWxC"``."""
    return "x".join(str(v) for v in shape)


def add_common_arguments(parser, batch_default=64, backends=BACKENDS):
    """Adds --backend, --dtype, --batch, --repeats and --markdown to ``parser``
    (shared with layer_speed.py and model_speed.py)."""
    parser.add_argument("--backend", choices=backends, default=backends[0],
                        help="Keras backend, selected before Keras is imported")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                        help="bfloat16 = Keras's mixed_bfloat16 global policy")
    parser.add_argument("--batch", type=positive_int, default=batch_default)
    parser.add_argument("--repeats", type=positive_int, default=10,
                        help="interleaved rounds (median taken)")
    parser.add_argument("--markdown", help="also write the markdown table to this file")


def build_parser():
    """The argument parser of this script."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--sections", type=parse_sections, default=list(SECTIONS),
                        help=f"comma list of {','.join(SECTIONS)} (default all)")
    parser.add_argument("--shapes", type=parse_shapes, default=[parse_shape(s) for s in
                                                                 RESNET50_STAGES],
                        help="layer section: comma list of HxWxC (default the ResNet50 stages)")
    parser.add_argument("--size", type=positive_int, default=224,
                        help="model section: input height and width")
    parser.add_argument("--detection-size", type=positive_int, default=512,
                        help="retinanet section: input height and width")
    parser.add_argument("--warmup", type=positive_int, default=2,
                        help="untimed calls per candidate before timing (compilation)")
    return parser


# --- backend and timing -----------------------------------------------------------------

def setup_backend(backend, dtype):
    """Selects ``backend`` (before Keras is imported), sets the ``dtype`` policy
    (a --dtype name) and returns the keras module."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # timing.py
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from aw_keras.utils.keras_backend import select_backend

    select_backend(backend)
    import keras

    keras.config.set_dtype_policy(DTYPES[dtype])
    return keras


def materialize(value):
    """Copies a result (array, tensor, scalar, or a dict / list of them) to NumPy,
    which waits for any GPU work behind it; returns one array."""
    import keras
    import numpy as np

    leaves = keras.tree.flatten(value)
    arrays = [np.asarray(keras.ops.convert_to_numpy(leaf)) for leaf in leaves]
    return arrays[0] if arrays else np.zeros(())


def compile_model(model, loss=None, learning_rate=0.01):
    """``model.compile`` with SGD(``learning_rate``), ``loss`` (None: the model's
    own) and ``jit_compile="auto"``; returns the model."""
    import keras

    kwargs = {} if loss is None else {"loss": loss}
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), jit_compile="auto", **kwargs)
    return model


def step_functions(model, x, y, modes=("inference", "train"), train_on_batch=None):
    """{mode: fn()} of a compiled model: "inference" is ``predict_on_batch(x)``,
    "train" ``train_on_batch(x, y)`` (``train_on_batch``: another such function
    of (model, x, y), e.g. ``keras.Model.train_on_batch``); each fn returns a
    NumPy array."""
    train = train_on_batch or type(model).train_on_batch
    functions = {"inference": lambda: materialize(model.predict_on_batch(x)),
                 "train": lambda: materialize(train(model, x, y))}
    return {mode: functions[mode] for mode in modes}


def compare(baseline, aw, repeats, warmup):
    """Times two {mode: fn} dicts interleaved, per mode; returns
    [(mode, baseline s, AW s)]. Each fn is called ``warmup`` times first."""
    from timing import time_interleaved  # benchmarks/timing.py

    rows = []
    for mode in baseline:
        times = time_interleaved({"baseline": baseline[mode], "aw": aw[mode]}, repeats,
                                 warmup=warmup)
        rows.append((mode, times["baseline"], times["aw"]))
    return rows


def log(message):
    """A progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


# --- sections ---------------------------------------------------------------------------

def layer_model(layer, shape):
    """A functional model of one layer on inputs of ``shape`` (H, W, C)."""
    import keras

    inputs = keras.Input(shape)
    return keras.Model(inputs, layer(inputs))


def layer_section(shapes, batch, repeats, warmup=2):
    """Rows ("layer", "HxWxC", mode, Conv2D s, AWConv2D s) for each shape: the two
    layers as one-layer models, inference and a training step (MSE to zeros)."""
    import keras
    import numpy as np

    from aw_keras.layers import AWConv2D

    rows = []
    for shape in shapes:
        channels = shape[-1]
        keras.utils.set_random_seed(0)
        x = np.random.default_rng(0).normal(size=(batch, *shape)).astype("float32")
        y = np.zeros((batch, *shape), "float32")
        models = [compile_model(layer_model(layer, shape), loss="mse") for layer in (
            keras.layers.Conv2D(channels, 3, padding="same"),
            AWConv2D(channels, 3, padding="same"))]
        fns = [step_functions(model, x, y) for model in models]
        for mode, base, aw in compare(fns[0], fns[1], repeats, warmup):
            rows.append(("layer", shape_text(shape), mode, base, aw))
            log(f"layer {shape_text(shape)} {mode}: {base * 1e3:.2f} / {aw * 1e3:.2f} ms")
    return rows


def model_section(size, batch, repeats, warmup=2):
    """Rows ("model", "AWResNet50 vs ResNet50", mode, ResNet50 s, AWResNet50 s):
    random weights, 1000 classes, ``size`` x ``size`` x 3, sparse cross-entropy."""
    import keras
    import numpy as np

    from aw_keras import applications

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)
    y = (np.arange(batch) % 1000).astype("int32")
    models = [compile_model(builder(input_shape=(size, size, 3), classes=1000),
                            loss="sparse_categorical_crossentropy")
              for builder in (applications.ResNet50, applications.AWResNet50)]
    fns = [step_functions(model, x, y) for model in models]
    rows = []
    for mode, base, aw in compare(fns[0], fns[1], repeats, warmup):
        rows.append(("model", f"AWResNet50 vs ResNet50 {size}x{size}", mode, base, aw))
        log(f"model {mode}: {base * 1e3:.1f} / {aw * 1e3:.1f} ms")
    return rows


def detection_batch(batch, size, num_classes=3, boxes=3):
    """Synthetic (images, targets): uniform images in [0, 255) and ``boxes`` xyxy
    pixel boxes per image, the last one per image padded with -1."""
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    corners = rng.uniform(0, size / 2, (batch, boxes, 2))
    sides = rng.uniform(size / 8, size / 2, (batch, boxes, 2))
    xyxy = np.concatenate([corners, corners + sides], axis=-1).astype("float32")
    labels = rng.integers(0, num_classes, (batch, boxes)).astype("int32")
    xyxy[:, -1], labels[:, -1] = -1, -1  # padding, as a loader would write it
    return images, {"boxes": xyxy, "labels": labels}


def retinanet_section(size, batch, repeats, warmup=2, body="resnet50"):
    """Rows ("retinanet", ..., "train", plain s, AW s): a RetinaNet training step
    on ``aw_<body>_fpn`` vs ``<body>_fpn`` at ``size`` x ``size``.

    The step is ``keras.Model.train_on_batch``: keras-hub 0.32's own override
    (``PipelineModel.train_on_batch``) passes the targets dict to
    ``ops.convert_to_tensor``, which fails on PyTorch; the detector has no
    preprocessor, so skipping that override changes nothing else. The SGD
    learning rate is 0: the step does the same work, but repeating it on one
    batch cannot diverge (at 0.01 the logits went NaN within a few steps, which
    PyTorch's binary cross-entropy rejects with an error)."""
    import keras

    from aw_keras import applications
    from aw_keras.detection import RetinaNet

    images, targets = detection_batch(batch, size)
    fns = []
    for name in (f"{body}_fpn", f"aw_{body}_fpn"):
        keras.utils.set_random_seed(0)
        backbone = applications.get_model(name, input_shape=(size, size, 3))
        model = compile_model(RetinaNet(backbone, num_classes=3), learning_rate=0.0)
        fns.append(step_functions(model, images, targets, modes=("train",),
                                  train_on_batch=keras.Model.train_on_batch))
    rows = []
    for mode, base, aw in compare(fns[0], fns[1], repeats, warmup):
        rows.append(("retinanet", f"aw_{body}_fpn vs {body}_fpn {size}x{size}", mode, base, aw))
        log(f"retinanet {mode}: {base * 1e3:.1f} / {aw * 1e3:.1f} ms")
    return rows


# --- report -----------------------------------------------------------------------------

def backend_version(backend):
    """Version string of the library behind ``backend``."""
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    return f"{module} {__import__(module).__version__}"


def cpu_model():
    """The CPU's model name (/proc/cpuinfo; the platform's name elsewhere)."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            models = [l.split(":", 1)[1].strip() for l in handle if l.startswith("model name")]
        name = models[0] if models else name
    except OSError:
        pass
    return name


def cpu_line():
    """CPU model name and core count."""
    return f"{cpu_model()}, {os.cpu_count()} CPU cores"


def device_line():
    """``nvidia-smi -L`` (joined) when the command exists and answers, else the CPU
    line; plus whether the running Keras backend computes on a GPU."""
    from aw_keras.utils.keras_backend import gpu_available

    text = ""
    if shutil.which("nvidia-smi"):
        try:
            done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                  timeout=30)
            text = "; ".join(done.stdout.split("\n")).strip("; ") if done.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError):
            text = ""
    where = "GPU" if gpu_available() else "CPU"
    return f"{text or cpu_line()} (backend computes on {where})"


def header_line(args):
    """The line above the table: backend, dtype, batch, versions, device, repeats."""
    import keras

    return (f"Backend {args.backend} ({backend_version(args.backend)}), Keras "
            f"{keras.__version__}, dtype {args.dtype} (policy {DTYPES[args.dtype]}), batch "
            f"{args.batch}, median of {args.repeats} interleaved rounds after warm-up, "
            f"jit_compile=\"auto\". Device: {device_line()}.")


def render(rows, args):
    """Markdown: the header line, a blank line, and the table of ``rows``
    (section, name, mode, baseline s, AW s)."""
    lines = [header_line(args), "", "| " + " | ".join(HEADER) + " |",
             "|" + "---|" * len(HEADER)]
    for section, name, mode, base, aw in rows:
        lines.append(f"| {section} | {name} | {mode} | {base * 1e3:.2f} | {aw * 1e3:.2f} | "
                     f"{aw / base:.2f}x |")
    return "\n".join(lines) + "\n"


def run_sections(args):
    """Rows of every section in ``args.sections`` (Keras already set up)."""
    rows = []
    for section in args.sections:
        if section == "layer":
            rows += layer_section(args.shapes, args.batch, args.repeats, args.warmup)
        elif section == "model":
            rows += model_section(args.size, args.batch, args.repeats, args.warmup)
        else:
            rows += retinanet_section(args.detection_size, args.batch, args.repeats, args.warmup)
    return rows


def report(rows, args):
    """Prints the markdown of ``rows`` and writes it to ``args.markdown`` if set."""
    text = render(rows, args)
    sys.stdout.write(text)
    sys.stdout.flush()
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(text)
    return text


def main(argv=None):
    """Command line entry: parse, select the backend and dtype, run, report."""
    args = build_parser().parse_args(argv)
    setup_backend(args.backend, args.dtype)
    report(run_sections(args), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

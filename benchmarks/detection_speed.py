"""Median time of the FPN backbones and of RetinaNet on them, plain FPN vs the Table 2 variants.

For each FPN variant (plain, AW, SE, CBAM, AW-SE, AW-CBAM) on one ResNet body
(default ResNet50, 512x512, batch 2, float32, random weights), four numbers:

- backbone inference: ``backbone(images, training=False)`` (body + FPN);
- backbone training step: gradient of the mean square of every pyramid level
  and an SGD update;
- detector inference: RetinaNet's network, ``detector(images, training=False)``
  (backbone and heads, the raw box deltas and class logits). Box decoding and
  NMS are left out: their cost depends on how many anchors score above the
  0.05 threshold, which with random weights depends on the variant's output
  scale (SE/CBAM gates made NMS 7-11x slower here), not on the backbone;
- detector training step: RetinaNet's own loss (focal + Huber through its label
  encoder) on fixed boxes, gradient and an AdamW update.

With ``--faster-rcnn`` (the paper's detector) a second table times
`aw_keras.detection.FasterRCNN` (torchvision's defaults: 2000/1000 proposals,
512 RoIs, two FC-1024) on the plain and the AW FPN (``levels="two_stage"``,
P2..P6): its training step (``train_on_batch``: RPN and head losses, SGD) and
``predict_on_batch`` (proposals, RoIAlign, box head, per-class NMS: all of
Faster R-CNN's inference is the model).

With ``--torchvision-python PATH`` (needs ``--faster-rcnn`` and the resnet50
body) a peer row is added: torchvision's ``fasterrcnn_resnet50_fpn`` (random
weights, same size, batch, classes, images and boxes), run by
``benchmarks/torchvision_peer.py`` under the Python at PATH (a virtualenv with
torch and torchvision, which are not project dependencies) and timed in the same
interleaved rounds as the Keras models, so both see the same machine load.

All models are held at once in one process, compiled (tf.function, no XLA),
warmed up, and timed *interleaved* (round-robin, one call each per round), so
machine noise hits every variant alike; ratios are to the plain FPN.

Usage:
    python benchmarks/detection_speed.py [--body resnet50] [--size 512] [--batch 2]
        [--repeats 5] [--variants plain,aw,se] [--output docs/detection_speed.md]
        [--faster-rcnn plain,aw [--torchvision-python /path/to/venv/bin/python]]
"""

import argparse
import os
import platform
import sys
import time

VARIANTS = ("plain", "aw", "se", "cbam", "aw_se", "aw_cbam")
BODIES = ("resnet50", "resnet101", "resnet_small")
NUM_CLASSES = 80


def model_name(variant, body):
    return f"{body}_fpn" if variant == "plain" else f"{variant}_{body}_fpn"


def step_functions(variant, body, batch, size):
    """(backbone inference, backbone train step, detector inference, detector
    train step) closures over fixed random data, each compiled once."""
    import keras
    import numpy as np
    import tensorflow as tf

    from aw_keras import applications
    from aw_keras.detection import RetinaNet

    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32))
    # two boxes per image, in the detector's xyxy pixel format
    corners = np.array([[0.1, 0.1, 0.45, 0.5], [0.4, 0.35, 0.9, 0.95]], np.float32) * size
    targets = {"boxes": tf.constant(np.broadcast_to(corners, (batch, 2, 4)).copy()),
               "labels": tf.constant(np.broadcast_to(np.array([3, 17], np.int32), (batch, 2)))}

    backbone = applications.get_model(model_name(variant, body), input_shape=(size, size, 3))
    detector = RetinaNet(backbone, num_classes=NUM_CLASSES)  # shares the backbone's weights
    sgd = keras.optimizers.SGD(0.01)
    sgd.build(backbone.trainable_variables)

    @tf.function(jit_compile=False)
    def backbone_infer(x):
        return tf.add_n([tf.reduce_sum(level) for level in backbone(x, training=False).values()])

    @tf.function(jit_compile=False)
    def backbone_train(x):
        with tf.GradientTape() as tape:
            levels = backbone(x, training=True)
            loss = tf.add_n([tf.reduce_mean(tf.square(level)) for level in levels.values()])
        grads = tape.gradient(loss, backbone.trainable_variables)
        sgd.apply_gradients(zip(grads, backbone.trainable_variables))
        return loss

    adamw = keras.optimizers.AdamW(1e-4)
    detector.compile(optimizer=adamw)
    adamw.build(detector.trainable_variables)

    @tf.function(jit_compile=False)
    def detector_infer(x):
        outputs = detector(x, training=False)
        return tf.reduce_sum(outputs["cls_logits"]) + tf.reduce_sum(outputs["bbox_regression"])

    @tf.function(jit_compile=False)
    def detector_train(x, y):
        with tf.GradientTape() as tape:
            predictions = detector(x, training=True)
            loss = detector.compute_loss(x, y, predictions, None)
        grads = tape.gradient(loss, detector.trainable_variables)
        adamw.apply_gradients(zip(grads, detector.trainable_variables))
        return loss

    return (
        lambda: backbone_infer(images),
        lambda: backbone_train(images),
        lambda: detector_infer(images),
        lambda: detector_train(images, targets),
    )


def faster_rcnn_functions(variant, body, batch, size):
    """(train step, inference) closures of a FasterRCNN on ``variant``'s FPN."""
    import keras
    import numpy as np

    from aw_keras import applications
    from aw_keras.detection import FasterRCNN

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    corners = np.array([[0.1, 0.1, 0.45, 0.5], [0.4, 0.35, 0.9, 0.95]], np.float32) * size
    targets = {"boxes": np.broadcast_to(corners, (batch, 2, 4)).copy(),
               "labels": np.broadcast_to(np.array([3, 17], np.int32), (batch, 2)).copy()}
    backbone = applications.get_model(model_name(variant, body), input_shape=(size, size, 3),
                                      levels="two_stage")
    detector = FasterRCNN(backbone, num_classes=NUM_CLASSES)
    detector.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    return (lambda: detector.train_on_batch(images, targets),
            lambda: detector.predict_on_batch(images)["boxes"])


PEER = "torchvision"
PEER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torchvision_peer.py")


class PeerError(RuntimeError):
    """The torchvision peer process failed to start or to run a step."""


class TorchvisionPeer:
    """benchmarks/torchvision_peer.py in a subprocess; ``step("train")`` runs one
    step there and returns after its answer (the round-trip is one short line
    each way: well under a millisecond against seconds of work)."""

    def __init__(self, python, size, batch, num_classes, threads):
        import subprocess

        self.process = subprocess.Popen(
            [python, PEER_SCRIPT, "--size", str(size), "--batch", str(batch),
             "--num-classes", str(num_classes), "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        words = self._read().split()
        if not words or words[0] != "ready":
            raise PeerError(f"{python} {PEER_SCRIPT}: expected 'ready', got {' '.join(words)!r}")
        self.versions = tuple(words[1:3])

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise PeerError(f"the torchvision peer exited (code {code}); its error is above")
        return line.strip()

    def step(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer = self._read()
        if not answer.startswith("ok "):
            raise PeerError(f"the torchvision peer's {command!r} step failed: {answer}")
        return float(answer.split()[1])

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except Exception:  # noqa: BLE001 - best effort; kill below
                self.process.kill()


def time_columns(build, label, variants, body, batch, size, repeats, warmup=1, extra=None):
    """{variant: (seconds of each closure build(...) returns)}: every variant built
    and warmed up first, then each column timed interleaved across variants.
    ``extra``: {name: closures} timed in the same rounds (e.g. a peer's)."""
    from timing import time_interleaved  # benchmarks/timing.py

    def warm_up(closures):
        for fn in closures:
            for _ in range(warmup):
                fn()
        return closures

    functions = {name: warm_up(closures) for name, closures in (extra or {}).items()}
    for variant in variants:
        start = time.perf_counter()
        functions[variant] = warm_up(build(variant, body, batch, size))
        print(f"built and warmed up {label}{model_name(variant, body)} "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    names = [*variants, *(extra or {})]
    count = len(functions[variants[0]])
    columns = []
    for index in range(count):
        columns.append(time_interleaved({v: functions[v][index] for v in names}, repeats))
        print(f"timed column {index + 1} of {count}", file=sys.stderr, flush=True)
    return {v: tuple(column[v] for column in columns) for v in names}


def measure_faster_rcnn(variants, body, batch, size, repeats, peer=None):
    """{variant: (train step s, inference s)} of FasterRCNN, interleaved; with a
    `TorchvisionPeer`, its train step and inference under the key ``PEER``."""
    extra = None
    if peer is not None:
        extra = {PEER: (lambda: peer.step("train"), lambda: peer.step("infer"))}
    return time_columns(faster_rcnn_functions, "FasterRCNN on ", variants, body, batch, size,
                        repeats, extra=extra)


def measure(variants, body, batch, size, repeats):
    """{variant: (backbone infer s, backbone train s, detector infer s, detector train s)}."""
    return time_columns(step_functions, "", variants, body, batch, size, repeats)


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def render_faster_rcnn(results, args, peer_versions=None):
    base = results["plain"]
    lines = ["", "### Faster R-CNN", "",
             "| FPN | Faster R-CNN train step (ms) | ratio | Faster R-CNN inference (ms) | ratio |",
             "|---|---:|---:|---:|---:|"]
    for variant, times in results.items():
        cells = ([f"torchvision {peer_versions[1]} fasterrcnn_resnet50_fpn (peer)"]
                 if variant == PEER else [model_name(variant, args.body)])
        for index, value in enumerate(times):
            cells += [f"{value * 1e3:.0f}", f"{value / base[index]:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "FasterRCNN with torchvision's defaults, levels=\"two_stage\"; inference is "
              "predict_on_batch (proposals, RoIAlign, head, NMS)."]
    if PEER in results:
        peer = results[PEER]
        lines += ["", f"Peer: torch {peer_versions[0]}, torchvision {peer_versions[1]}, "
                  "random weights, min_size = max_size = the image size, SGD 0.01 momentum 0.9, "
                  f"{os.cpu_count()} threads, timed in the same interleaved rounds. Our plain "
                  f"Faster R-CNN as a ratio to it: train step {base[0] / peer[0]:.2f}x, "
                  f"inference {base[1] / peer[1]:.2f}x."]
    return "\n".join(lines) + "\n"


def render(results, args, seconds):
    import keras
    import tensorflow as tf

    base = results.get("plain")
    lines = [
        "## Detection speed",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({_cpu_name()}); load average "
        f"{os.getloadavg()[0]:.2f} at the end of the run ({seconds / 60:.0f} min). "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python "
        f"{platform.python_version()}.",
        f"{args.body} FPN, {args.size}x{args.size}x3, batch {args.batch}, float32, "
        f"{NUM_CLASSES} classes, median of {args.repeats} interleaved rounds after one "
        f"warm-up, graph mode (tf.function, no XLA). Generated by "
        f"`python benchmarks/detection_speed.py {' '.join(args.argv)}`.",
        "",
        "| FPN | backbone inference (ms) | ratio | backbone train step (ms) | ratio "
        "| RetinaNet network inference (ms) | ratio | RetinaNet train step (ms) | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, times in results.items():
        cells = [model_name(variant, args.body)]
        for index, value in enumerate(times):
            ratio = value / base[index] if base else float("nan")
            cells += [f"{value * 1e3:.0f}", f"{ratio:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Ratios are to the plain FPN on the same body, measured interleaved. RetinaNet "
              "inference is the network (backbone and heads) without box decoding and NMS."]
    return "\n".join(lines) + "\n"


def variant_list(parser, option, text):
    """The comma-separated variants of ``option``, plain first (every ratio's
    baseline); a usage error for unknown ones."""
    variants = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        parser.error(f"{option}: unknown {unknown or variants!r}; choose from "
                     f"{','.join(VARIANTS)}")
    return variants if "plain" in variants else ["plain", *variants]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", default="resnet50", choices=BODIES)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of " + ",".join(VARIANTS))
    parser.add_argument("--output", default=None, help="write the markdown table here")
    parser.add_argument("--faster-rcnn", default=None, metavar="VARIANTS",
                        help="also time FasterRCNN on these FPN variants (comma-separated, "
                             "e.g. plain,aw; plain is always included)")
    parser.add_argument("--torchvision-python", default=None, metavar="PATH",
                        help="a Python with torch and torchvision: adds torchvision's "
                             "fasterrcnn_resnet50_fpn as a peer row to the Faster R-CNN table")
    args = parser.parse_args(argv)
    args.argv = argv
    variants = variant_list(parser, "--variants", args.variants)
    if args.repeats < 1 or args.batch < 1:
        parser.error(f"--repeats and --batch must be positive, got {args.repeats} and "
                     f"{args.batch}")
    if args.size < 32:
        parser.error(f"--size must be at least 32 (the C5 stride), got {args.size}")
    two_stage = (variant_list(parser, "--faster-rcnn", args.faster_rcnn)
                 if args.faster_rcnn is not None else None)
    peer = None
    if args.torchvision_python is not None:
        if not two_stage:
            parser.error("--torchvision-python needs --faster-rcnn (the peer is a Faster R-CNN)")
        if args.body != "resnet50":
            parser.error(f"--torchvision-python: the peer is torchvision's ResNet50-FPN; "
                         f"--body must be resnet50, got {args.body!r}")
        if not (os.path.isfile(args.torchvision_python)
                and os.access(args.torchvision_python, os.X_OK)):
            parser.error(f"--torchvision-python: {args.torchvision_python!r} is not an "
                         "executable file (expected a virtualenv's bin/python with torch and "
                         "torchvision)")
        try:
            peer = TorchvisionPeer(args.torchvision_python, args.size, args.batch, NUM_CLASSES,
                                   os.cpu_count())
        except PeerError as error:
            parser.error(f"--torchvision-python: {error}")
    start = time.perf_counter()
    try:
        results = measure(variants, args.body, args.batch, args.size, args.repeats)
        two_stage_results = (measure_faster_rcnn(two_stage, args.body, args.batch, args.size,
                                                 args.repeats, peer) if two_stage else None)
    finally:
        if peer is not None:
            peer.close()
    text = render(results, args, time.perf_counter() - start)
    if two_stage_results:
        text += render_faster_rcnn(two_stage_results, args,
                                   peer.versions if peer is not None else None)
    if args.output:
        tmp = args.output + ".tmp"
        with open(tmp, "w") as handle:
            handle.write(text)
        os.replace(tmp, args.output)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()

"""Run an exported artifact in its own runtime and compare it with Keras.

Runtimes: ``tf.saved_model.load`` (and ``saved_model_cli run`` on request) for
SavedModel directories, ``ai_edge_litert`` for .tflite, ``onnxruntime`` for
.onnx. Each artifact runs the inputs at every batch size in ``batch_sizes``
(resizing the TFLite input each time, so a frozen batch fails here).

Reported: max abs error, relative error (max abs error / max |Keras output|),
top-1 agreement, batch-1 latency (median, ms) and artifact size. The check
applied is the artifact's target's in `aw_keras.export.policy` (max abs error
<= 1e-4 for float32 artifacts, <= 1e-2 for float16, top-1 agreement >= 0.95 for
dynamic-range and int8).

Detectors (`aw_keras.export.detection`) are verified by `verify_detection`: raw
outputs of the TFLite / ONNX against the network, and decoded detections (the
SavedModel's, or the raw outputs decoded in Python) against ``detector.predict``;
`format_table` gives them their own columns.

Example:

>>> result = verify("model.tflite", model, images)             # doctest: +SKIP
>>> print(format_table([result]))                              # doctest: +SKIP
"""

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from aw_keras.export import common
from aw_keras.export import detection
from aw_keras.export.policy import artifact_target
from aw_keras.export.policy import policy_for
from aw_keras.utils import tf_quiet



@dataclasses.dataclass
class VerificationResult:
    format: str
    path: str
    precision: str
    size_bytes: int
    batch_sizes: tuple
    samples: int
    max_abs_error: float
    max_rel_error: float
    top1_agreement: float
    latency_ms: float
    check: str
    passed: bool
    runtime: str = ""
    # detectors only (`verify_detection`): raw_max_abs_error, boxes_max_abs_error
    # (pixels), scores_max_abs_error, images_matching, images, detections
    detection: dict = None

    def as_dict(self):
        return dataclasses.asdict(self)


def artifact_size(path):
    if os.path.isdir(path):
        return sum(
            os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(path)
            for name in names
        )
    return os.path.getsize(path)


def artifact_format(path):
    path = os.fspath(path)
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "saved_model.pb")):
        return "saved_model"
    if path.endswith(".tflite"):
        return "tflite"
    if path.endswith(".onnx"):
        return "onnx"
    if not os.path.exists(path):
        raise FileNotFoundError(f"No artifact at {path!r}.")
    raise ValueError(
        f"Cannot tell the format of {path!r}: expected a SavedModel directory "
        "(with saved_model.pb), a .tflite or an .onnx file."
    )


# ------------------------------------------------------------------- runners


class SavedModelRunner:
    precision = "float32"
    note = "tf.saved_model.load"

    def __init__(self, path, signature="serving_default"):
        import tensorflow as tf

        self._tf = tf
        self.loaded = tf.saved_model.load(path)
        self.function = self.loaded.signatures[signature]
        self.input_name = list(self.function.structured_input_signature[1])[0]

    def __call__(self, batch):
        outputs = self.function(**{self.input_name: self._tf.constant(batch)})
        return next(iter(outputs.values())).numpy()

    @property
    def output_names(self):
        return list(self.function.structured_outputs)

    def run_outputs(self, batch):
        """Every output of the signature, {name: array}."""
        outputs = self.function(**{self.input_name: self._tf.constant(batch)})
        return {name: value.numpy() for name, value in outputs.items()}


class TFLiteRunner:
    """Runs a .tflite with ai_edge_litert: ``runner(batch)`` -> float outputs.

    ``note`` says how it runs (XNNPACK and its number of partitions, or LiteRT's
    builtin kernels and why); ``partitions`` is XNNPACK's partition count (1: the
    whole graph delegated, 0: not delegated), see `tflite.xnnpack_partitions`.
    """

    def __init__(self, path, num_threads=1, allow_reference_kernels=True):
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_litert.interpreter import OpResolverType

        from aw_keras.export import tflite

        self.note = "ai_edge_litert (XNNPACK)"
        with open(path, "rb") as handle:
            flat = tflite.near_constant_activations(handle.read())
        try:
            if flat:
                # XNNPACK refuses such int8 graphs, and on some (an AW-MobileNet
                # with a dead attention ReLU, ai_edge_litert 2.1) its failure path
                # aborts the whole process ("free(): double free detected")
                # instead of raising: never hand it one.
                raise RuntimeError(f"not tried: {len(flat)} int8 activation tensor(s) with a "
                                   f"~0 calibrated range, e.g. {flat[0]!r}")
            with tf_quiet.filtered_stderr():  # LiteRT's "Created ... XNNPACK delegate" line
                self.interpreter = Interpreter(model_path=os.fspath(path),
                                               num_threads=num_threads)
                self.interpreter.allocate_tensors()
            self.partitions = tflite.xnnpack_partitions(self.interpreter)
            self.note = (f"ai_edge_litert (XNNPACK, {self.partitions} partition"
                         f"{'' if self.partitions == 1 else 's'})")
        except RuntimeError as error:
            # Seen here: full-int8 AWConv2D with padding="same" (PAD feeding
            # strided slices) fails XNNPACK's prepare; the builtin reference
            # kernels run it. Reported in the result instead of hidden.
            if not allow_reference_kernels:
                raise
            self.note = f"ai_edge_litert builtin kernels (XNNPACK: {str(error)[:120]})"
            self.partitions = 0
            self.interpreter = Interpreter(
                model_path=os.fspath(path),
                num_threads=num_threads,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            )
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = None
        io_dtype = np.dtype(self.input["dtype"])
        if io_dtype in (np.int8, np.uint8):
            self.precision = "int8"
        else:
            ops, types = tflite.list_ops(path), tflite.tensor_types(path)
            if "QUANTIZE" in ops:
                self.precision = "int8"
            elif "FLOAT16" in types:
                self.precision = "float16"
            elif "INT8" in types:
                self.precision = "dynamic_range"
            else:
                self.precision = "float32"

    def __call__(self, batch):
        it = self.interpreter
        if self.batch != batch.shape:
            it.resize_tensor_input(self.input["index"], list(batch.shape))
            it.allocate_tensors()
            self.batch = batch.shape
        dtype = np.dtype(self.input["dtype"])
        if dtype in (np.int8, np.uint8):
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            batch = np.clip(np.round(batch / scale + zero), info.min, info.max).astype(dtype)
        it.set_tensor(self.input["index"], batch.astype(dtype, copy=False))
        it.invoke()
        return self._read(self.output)

    def _read(self, details):
        out = self.interpreter.get_tensor(details["index"])
        if np.dtype(details["dtype"]) in (np.int8, np.uint8):
            scale, zero = details["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        return out

    def _named_outputs(self):
        """{signature output name: output details}, in the signature's order."""
        by_index = {d["index"]: d for d in self.interpreter.get_output_details()}
        signatures = self.interpreter._get_full_signature_list()  # names -> tensor indices
        if "serving_default" in signatures:
            outputs = signatures["serving_default"]["outputs"]
            return {name: by_index[index] for name, index in outputs.items()}
        return {d["name"]: d for d in self.interpreter.get_output_details()}

    @property
    def output_names(self):
        return list(self._named_outputs())

    def run_outputs(self, batch):
        """Every output, {signature output name: array} (dequantized)."""
        self(batch)
        return {name: self._read(details) for name, details in self._named_outputs().items()}


class OnnxRunner:
    precision = "float32"
    note = "onnxruntime (CPU)"

    def __init__(self, path, num_threads=1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.fspath(path), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch):
        return self.session.run(None, {self.input_name: batch})[0]

    @property
    def output_names(self):
        return [output.name for output in self.session.get_outputs()]

    def run_outputs(self, batch):
        """Every output, {name: array}."""
        return dict(zip(self.output_names, self.session.run(None, {self.input_name: batch})))


def make_runner(path, num_threads=1):
    kind = artifact_format(path)
    if kind == "saved_model":
        return SavedModelRunner(path)
    if kind == "tflite":
        return TFLiteRunner(path, num_threads)
    return OnnxRunner(path, num_threads)


# ------------------------------------------------------------------ checking


def keras_reference(model, inputs, batch_size=16):
    return np.concatenate(
        [
            np.asarray(model(inputs[i : i + batch_size], training=False))
            for i in range(0, len(inputs), batch_size)
        ]
    )


def measure_latency(runner, sample, repeats=10, warmup=2):
    """Median wall time of ``runner(sample)`` in milliseconds."""
    for _ in range(warmup):
        runner(sample)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner(sample)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def compare(outputs, reference):
    """(max abs error, max abs error / max |reference|, top-1 agreement)."""
    outputs = np.asarray(outputs, dtype=np.float64).reshape(reference.shape)
    reference = np.asarray(reference, dtype=np.float64)
    abs_error = float(np.max(np.abs(outputs - reference)))
    rel_error = abs_error / max(float(np.max(np.abs(reference))), 1e-12)
    agreement = float(np.mean(np.argmax(outputs, -1) == np.argmax(reference, -1)))
    return abs_error, rel_error, agreement


def _judge(kind, precision, abs_error, agreement, tolerance=None):
    metric, bound = policy_for(artifact_target(kind, precision)).check
    if tolerance is not None:
        bound = tolerance
    if metric == "max_abs_error":
        return f"max_abs_error <= {bound:g}", bool(abs_error <= bound)
    return f"top1_agreement >= {bound:g}", bool(agreement >= bound)


def verify(
    artifact,
    model,
    inputs,
    batch_sizes=(1, 4),
    num_threads=1,
    latency_repeats=10,
    reference=None,
    tolerance=None,
    runtime=None,
):
    """Runs ``artifact`` in its runtime on ``inputs`` and compares with ``model``.

    A detector (`aw_keras.export.detection.is_detector`) is verified by
    `verify_detection` instead (same arguments).

    Args:
        artifact: SavedModel directory, .tflite or .onnx path.
        model: the Keras model (run with ``training=False``) as the reference.
        inputs: float32 array (N, H, W, C) of model inputs.
        batch_sizes: the inputs are run in chunks of each of these sizes.
        num_threads: TFLite / onnxruntime threads (latency is per batch-1 call).
        latency_repeats: timed batch-1 runs (0 to skip latency).
        reference: precomputed Keras outputs for ``inputs`` (optional).
        tolerance: overrides the default bound of the check.
        runtime: None (the artifact's own) or ``"saved_model_cli"`` to run a
            SavedModel through ``saved_model_cli run`` in a subprocess.

    Returns:
        A `VerificationResult`.
    """
    path = os.fspath(artifact)
    inputs = np.asarray(inputs, dtype=np.float32)
    if detection.is_detector(model):
        if runtime is not None:
            raise ValueError(f"`runtime` must be None for a detector, received {runtime!r}.")
        return verify_detection(path, model, inputs, batch_sizes=batch_sizes,
                                num_threads=num_threads, latency_repeats=latency_repeats,
                                reference=reference, tolerance=tolerance)
    if reference is None:
        reference = keras_reference(model, inputs)
    if runtime == "saved_model_cli":
        return _verify_saved_model_cli(path, inputs, reference, tolerance)
    if runtime is not None:
        raise ValueError(f"`runtime` must be None or 'saved_model_cli', received {runtime!r}.")
    kind = artifact_format(path)
    runner = make_runner(path, num_threads)
    abs_error, rel_error, agreement = 0.0, 0.0, 1.0
    agreements = []
    for batch_size in batch_sizes:
        outputs = np.concatenate(
            [runner(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
        )
        a, r, g = compare(outputs, reference)
        abs_error, rel_error = max(abs_error, a), max(rel_error, r)
        agreements.append(g)
    agreement = float(min(agreements)) if agreements else 1.0
    latency = measure_latency(runner, inputs[:1], latency_repeats) if latency_repeats else float("nan")
    check, passed = _judge(kind, runner.precision, abs_error, agreement, tolerance)
    return VerificationResult(
        format=kind,
        path=path,
        precision=runner.precision,
        size_bytes=artifact_size(path),
        batch_sizes=tuple(batch_sizes),
        samples=len(inputs),
        max_abs_error=abs_error,
        max_rel_error=rel_error,
        top1_agreement=agreement,
        latency_ms=latency,
        check=check,
        passed=passed,
        runtime=runner.note,
    )


def saved_model_cli_command():
    """The ``saved_model_cli`` next to this Python, else the module form."""
    candidate = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if os.path.isfile(candidate):
        return [candidate]
    found = shutil.which("saved_model_cli")
    if found:
        return [found]
    return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def saved_model_cli(*args, timeout=300):
    """Runs ``saved_model_cli ARGS``; returns its stdout, raises on failure."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        saved_model_cli_command() + list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if done.returncode != 0:
        raise common.ExportError(
            f"saved_model_cli {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}"
        )
    return done.stdout


def _verify_saved_model_cli(path, inputs, reference, tolerance):
    with tempfile.TemporaryDirectory(prefix="aw_export_cli_") as scratch:
        np.save(os.path.join(scratch, "images.npy"), inputs)
        out_dir = os.path.join(scratch, "out")
        saved_model_cli(
            "run",
            "--dir", path,
            "--tag_set", "serve",
            "--signature_def", "serving_default",
            "--inputs", f"images={os.path.join(scratch, 'images.npy')}",
            "--outdir", out_dir,
        )
        files = sorted(os.listdir(out_dir))
        if len(files) != 1:
            raise common.ExportError(f"saved_model_cli wrote {files}, expected one output.")
        outputs = np.load(os.path.join(out_dir, files[0]))
    abs_error, rel_error, agreement = compare(outputs, reference)
    check, passed = _judge("saved_model", "float32", abs_error, agreement, tolerance)
    return VerificationResult(
        format="saved_model_cli",
        path=path,
        precision="float32",
        size_bytes=artifact_size(path),
        batch_sizes=(len(inputs),),
        samples=len(inputs),
        max_abs_error=abs_error,
        max_rel_error=rel_error,
        top1_agreement=agreement,
        latency_ms=float("nan"),
        check=check,
        passed=passed,
        runtime="saved_model_cli run",
    )


# ------------------------------------------------------------------ detectors


def detection_reference(detector, inputs, batch_size=16):
    """Keras's answers for ``inputs``: ``{"raw": {"bbox_regression", "cls_logits"}
    (the network, ``training=False``), "detections": detector.predict(inputs)}``."""
    inputs = np.asarray(inputs, dtype=np.float32)
    raw = {name: [] for name in detection.RAW_OUTPUTS}
    for i in range(0, len(inputs), batch_size):
        outputs = detector(inputs[i : i + batch_size], training=False)
        for name in raw:
            raw[name].append(np.asarray(outputs[name]))
    raw = {name: np.concatenate(parts) for name, parts in raw.items()}
    predicted = detector.predict(inputs, batch_size=batch_size, verbose=0)
    detections = {key: np.asarray(predicted[key]) for key in detection.PREDICT_KEYS}
    return {"raw": raw, "detections": detections}


def compare_detections(got, reference):
    """Decoded detections (``detector.predict``'s keys) against Keras's.

    Returns {"boxes_max_abs_error" (pixels), "scores_max_abs_error" over the
    detections both report, "images_matching": images with the same number of
    detections and the same classes in the same order, "images", "detections":
    Keras's total}."""
    boxes_error = scores_error = 0.0
    matching = 0
    count_got = np.asarray(got["num_detections"]).reshape(-1)
    count_ref = np.asarray(reference["num_detections"]).reshape(-1)
    for i in range(len(count_ref)):
        n = int(min(count_got[i], count_ref[i]))
        if n:
            boxes_error = max(boxes_error, float(np.max(np.abs(
                np.asarray(got["boxes"][i, :n], np.float64) - reference["boxes"][i, :n]))))
            scores_error = max(scores_error, float(np.max(np.abs(
                np.asarray(got["confidence"][i, :n], np.float64) - reference["confidence"][i, :n]))))
        same_classes = np.array_equal(np.asarray(got["labels"][i, :n]), reference["labels"][i, :n])
        matching += int(count_got[i] == count_ref[i] and same_classes)
    return {"boxes_max_abs_error": boxes_error, "scores_max_abs_error": scores_error,
            "images_matching": matching, "images": int(len(count_ref)),
            "detections": int(count_ref.sum())}


def _as_predict_keys(outputs):
    """SavedModel signature outputs (boxes, scores, classes, num_detections)
    under ``detector.predict``'s keys."""
    return {key: np.asarray(outputs[name])
            for key, name in zip(detection.PREDICT_KEYS, detection.SIGNATURE_OUTPUTS)}


def _concatenate(parts):
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def verify_detection(artifact, detector, inputs, batch_sizes=(1, 4), num_threads=1,
                     latency_repeats=10, reference=None, tolerance=None):
    """Runs a detector's artifact on ``inputs`` and compares it with Keras.

    - SavedModel (``serving_default`` returns ``boxes``, ``scores``, ``classes``,
      ``num_detections``): its detections against ``detector.predict``;
    - TFLite / ONNX (outputs ``bbox_regression``, ``cls_logits``): the raw outputs
      against the detector's network (max abs error), then the detections
      `aw_keras.export.detection.decode_raw_outputs` makes of them against
      ``detector.predict``.

    Passes when, with ``bound`` the artifact target's max-abs-error bound in
    `aw_keras.export.policy` (1e-4 for float32) or ``tolerance``: the raw error
    <= bound, the scores' error <= bound, the boxes' error <= bound x the
    image's longer side in pixels (1e-4 of the image), and every image has the
    same number of detections with the same classes in the same order.

    Args and returns as `verify`; in the result, ``max_abs_error`` is the
    largest of the raw error, the scores' error and the boxes' error divided by
    the image's longer side; ``max_rel_error`` the raw error / max |raw output|
    (NaN for the SavedModel, which has no raw outputs); ``top1_agreement`` the
    fraction of images whose detections match; ``detection`` the details.
    ``reference`` is `detection_reference`'s result (computed when None).
    """
    path = os.fspath(artifact)
    inputs = np.asarray(inputs, dtype=np.float32)
    if reference is None:
        reference = detection_reference(detector, inputs)
    kind = artifact_format(path)
    runner = make_runner(path, num_threads)
    names = set(runner.output_names)
    if set(detection.SIGNATURE_OUTPUTS) <= names:
        raw_artifact = False
    elif set(detection.RAW_OUTPUTS) <= names:
        raw_artifact = True
    else:
        raise common.ExportError(
            f"{path!r} is not a detector's artifact: its outputs are {sorted(names)}, expected "
            f"{list(detection.SIGNATURE_OUTPUTS)} (SavedModel) or {list(detection.RAW_OUTPUTS)} "
            "(TFLite / ONNX)."
        )
    decoder = detection.DetectionDecoder.get(detector)
    raw_error, raw_relative = None, float("nan")
    comparisons = []
    for batch_size in batch_sizes:
        chunks = [runner.run_outputs(inputs[i : i + batch_size])
                  for i in range(0, len(inputs), batch_size)]
        if raw_artifact:
            raw = _concatenate([{n: c[n] for n in detection.RAW_OUTPUTS} for c in chunks])
            for name in detection.RAW_OUTPUTS:
                expected = reference["raw"][name]
                error = float(np.max(np.abs(np.asarray(raw[name], np.float64).reshape(expected.shape)
                                            - expected)))
                raw_error = max(raw_error or 0.0, error)
                raw_relative = max(0.0 if np.isnan(raw_relative) else raw_relative,
                                   error / max(float(np.max(np.abs(expected))), 1e-12))
            decoded = decoder(raw["bbox_regression"], raw["cls_logits"])
        else:
            decoded = _concatenate([_as_predict_keys(c) for c in chunks])
        comparisons.append(compare_detections(decoded, reference["detections"]))
    side = float(max(decoder.image_shape[:2]))
    details = {
        "raw_max_abs_error": raw_error,
        "boxes_max_abs_error": max((c["boxes_max_abs_error"] for c in comparisons), default=0.0),
        "scores_max_abs_error": max((c["scores_max_abs_error"] for c in comparisons), default=0.0),
        "images_matching": min((c["images_matching"] for c in comparisons), default=len(inputs)),
        "images": len(inputs),
        "detections": comparisons[0]["detections"] if comparisons else 0,
    }
    metric, bound = policy_for(artifact_target(kind, runner.precision)).check
    if tolerance is not None:
        bound = tolerance
    if metric != "max_abs_error":
        raise common.ExportError(
            f"{path!r} is a {runner.precision} detector artifact; detectors are verified at "
            "float32 only (see aw_keras.export.detection)."
        )
    error = max(details["boxes_max_abs_error"] / side, details["scores_max_abs_error"],
                raw_error or 0.0)
    passed = bool(error <= bound and details["images_matching"] == details["images"])
    check = (f"{'raw, ' if raw_artifact else ''}scores max_abs_error <= {bound:g}, "
             f"boxes <= {bound:g} x {side:g} px, same detections")
    latency = (measure_latency(runner, inputs[:1], latency_repeats) if latency_repeats
               else float("nan"))
    return VerificationResult(
        format=kind,
        path=path,
        precision=runner.precision,
        size_bytes=artifact_size(path),
        batch_sizes=tuple(batch_sizes),
        samples=len(inputs),
        max_abs_error=error,
        max_rel_error=raw_relative,
        top1_agreement=details["images_matching"] / max(details["images"], 1),
        latency_ms=latency,
        check=check,
        passed=passed,
        runtime=runner.note,
        detection=details,
    )


def format_detection_table(results):
    """A Markdown table of detector `VerificationResult`s."""
    header = (
        "| artifact | format | precision | size (MB) | raw max abs err | boxes max abs err (px) | "
        "scores max abs err | images matching | detections | batch-1 latency (ms) | check | "
        "result | runtime |"
    )
    lines = [header, "|" + "---|" * 13]
    for r in results:
        d = r.detection
        raw = "-" if d["raw_max_abs_error"] is None else f"{d['raw_max_abs_error']:.2e}"
        lines.append(
            f"| {os.path.basename(r.path.rstrip(os.sep))} | {r.format} | {r.precision} | "
            f"{r.size_bytes / 1e6:.2f} | {raw} | {d['boxes_max_abs_error']:.2e} | "
            f"{d['scores_max_abs_error']:.2e} | {d['images_matching']}/{d['images']} | "
            f"{d['detections']} | {r.latency_ms:.2f} | {r.check} | "
            f"{'PASS' if r.passed else 'FAIL'} | {r.runtime} |"
        )
    return "\n".join(lines)


def format_table(results):
    """A Markdown table of `VerificationResult`s (detectors' results get
    `format_detection_table`'s columns, in a table of their own)."""
    detections = [r for r in results if r.detection is not None]
    others = [r for r in results if r.detection is None]
    if detections:
        tables = [format_detection_table(detections)]
        if others:
            tables.append(format_table(others))
        return "\n\n".join(tables)
    header = (
        "| artifact | format | precision | size (MB) | max abs err | max rel err | "
        "top-1 agree | batch-1 latency (ms) | check | result | runtime |"
    )
    lines = [header, "|" + "---|" * 11]
    for r in results:
        lines.append(
            f"| {os.path.basename(r.path.rstrip(os.sep))} | {r.format} | {r.precision} | "
            f"{r.size_bytes / 1e6:.2f} | {r.max_abs_error:.2e} | {r.max_rel_error:.2e} | "
            f"{r.top1_agreement:.3f} | {r.latency_ms:.2f} | {r.check} | "
            f"{'PASS' if r.passed else 'FAIL'} | {r.runtime} |"
        )
    return "\n".join(lines)

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
from aw_keras.export.policy import artifact_target
from aw_keras.export.policy import policy_for



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


class TFLiteRunner:
    def __init__(self, path, num_threads=1, allow_reference_kernels=True):
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_litert.interpreter import OpResolverType

        from aw_keras.export import tflite

        self.note = "ai_edge_litert (XNNPACK)"
        self.interpreter = Interpreter(model_path=os.fspath(path), num_threads=num_threads)
        try:
            self.interpreter.allocate_tensors()
        except RuntimeError as error:
            # Seen here: full-int8 AWConv2D with padding="same" (PAD feeding
            # strided slices) fails XNNPACK's prepare; the builtin reference
            # kernels run it. Reported in the result instead of hidden.
            if not allow_reference_kernels:
                raise
            self.note = f"ai_edge_litert builtin kernels (XNNPACK failed: {str(error)[:80]})"
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
        out = it.get_tensor(self.output["index"])
        if np.dtype(self.output["dtype"]) in (np.int8, np.uint8):
            scale, zero = self.output["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        return out


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


def format_table(results):
    """A Markdown table of `VerificationResult`s."""
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

"""``aw-export``: export a registry model or a .keras file and verify every artifact.

    aw-export MODEL_OR_PATH --formats saved_model,tflite,onnx \\
        --quantization none,float16,dynamic_range,int8 --out DIR [--weights FILE]

Writes ``DIR/saved_model/<version>/``, ``DIR/<name>_<precision>.tflite``,
``DIR/<name>.onnx`` (each written to a temp path first, then moved), runs each in
its runtime against the Keras model and writes the table to stdout and to
``DIR/verification.md`` / ``verification.json``. ``<name>`` is the .keras file's
stem (``best`` for ``best.keras``) or the registry name, unless ``--name`` is given.

Class names: from ``--class-names FILE`` (one name per line, line i = label i)
or else the ``"class_names"`` of the ``run.json`` next to the .keras file (what
``aw-train`` writes). They must number the model's classes; they are written as
``DIR/labels.txt`` and ``DIR/saved_model/<version>/assets.extra/labels.txt``.
Without either source the report says so and the export goes on.

Exit status: 0 all checks passed; 1 a check failed or an export failed;
2 bad arguments (unknown model or format, missing file, a file that is not a
.keras archive, class names that do not fit the model, unwritable --out); a
refused command leaves nothing in --out.

Inputs: every artifact takes what the Keras model takes. Models written by
``aw-train`` and detectors take raw images, pixel values 0-255 (float32; channels
last, the size the model was built for) and normalise them inside the graph;
verification and int8 calibration then use random integer pixel values 0-255. A
model without a ``Rescaling`` / ``Normalization`` layer (e.g. a registry model)
gets uniform random images in [0, 1) instead. ``--verify-data FILE.npy`` and
``--calibration-data FILE.npy`` replace the random images. With a randomly
initialized model and random inputs the quantized top-1 check is often not
meaningful: pass real data and trained weights for that.

A saved detector (``.keras`` of an `aw_keras.detection.RetinaNet`) gives
``DIR/saved_model/<version>/`` serving decoded detections (``images`` ->
``boxes``, ``scores``, ``classes``, ``num_detections``), ``DIR/<name>_float32.tflite``
and ``DIR/<name>.onnx`` holding the raw heads (``bbox_regression``,
``cls_logits``), and ``DIR/<name>_decoder.json`` for
`aw_keras.export.detection.decode_raw_outputs`; each artifact is verified
against ``detector.predict`` (`aw_keras.export.verify.verify_detection`) on random
images (integer pixel values 0-255) unless ``--verify-data`` is given. Quantized
TFLite (``--quantization`` other than none) is refused for detectors (exit 2).

A saved two-stage detector (``.keras`` of an `aw_keras.detection.FasterRCNN`)
exports as a SavedModel only, with the same ``serving_default`` signature
(`aw_keras.export.detection.export_two_stage_saved_model`), verified against
``detector.predict``. Its graph has no TFLite builtin / ONNX form (RoIAlign's
CropAndResize, DynamicPartition/DynamicStitch, CombinedNonMaxSuppression;
docs/faster_rcnn.md): without ``--formats`` only the SavedModel is written; an
explicit ``--formats`` naming tflite or onnx is refused (exit 2).
"""

import argparse
import json
import os
import sys

from aw_keras.utils import keras_backend
from aw_keras.utils import tf_quiet

FORMATS = ("saved_model", "tflite", "onnx")
DEFAULT_FORMATS = "saved_model,tflite,onnx"
QUANTIZATION_NAMES = {"none": None, "float32": None, "float16": "float16",
                      "dynamic_range": "dynamic_range", "int8": "int8"}


class UsageError(Exception):
    """Bad command-line input; exit status 2."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="aw-export",
        description="Export an aw_keras model to SavedModel (TF Serving), TFLite and ONNX, "
        "and verify each artifact in its runtime against Keras.",
    )
    parser.add_argument("model", metavar="MODEL_OR_PATH",
                        help="a registry name (see aw_keras.applications.list_models()) or a .keras file")
    parser.add_argument("--formats", default=DEFAULT_FORMATS,
                        help=f"comma-separated subset of {','.join(FORMATS)} (default: all; "
                        "saved_model only for a FasterRCNN, which has no TFLite/ONNX form)")
    parser.add_argument("--quantization", default="none",
                        help="TFLite variants, comma-separated: none,float16,dynamic_range,int8 (default: none)")
    parser.add_argument("--out", required=True, help="output directory (created if missing)")
    parser.add_argument("--name", default=None,
                        help="base name of the artifact files (default: the .keras file's stem, "
                             "e.g. best for best.keras, or the registry name)")
    parser.add_argument("--class-names", metavar="FILE", default=None,
                        help="class names, one per line (line i = label i); default: "
                             "\"class_names\" of the run.json next to the .keras file")
    parser.add_argument("--weights", help="weights file for a registry model (model.save_weights)")
    parser.add_argument("--input-size", type=int, default=None,
                        help="square input size for a registry model (default: the builder's, 224)")
    parser.add_argument("--channels", type=int, default=3, help="input channels for a registry model")
    parser.add_argument("--classes", type=int, default=None, help="classes for a registry model")
    parser.add_argument("--version", type=int, default=None, help="SavedModel version (default: next)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--io-dtype", choices=("int8", "uint8", "float32"), default="int8",
                        help="int8 TFLite input/output type (default int8)")
    parser.add_argument("--implementation", choices=("taps", "matmul", "auto"), default=None,
                        help="form of the AWConv2D layers in the artifacts (default: each "
                             "target's policy, taps; auto, per layer by shape, for int8 TFLite)")
    parser.add_argument("--split-residual", action=argparse.BooleanOptionalAction, default=None,
                        help="int8 TFLite: trace residual k x k AWConv2D layers as conv + "
                             "attention correction (default: off, the policy's choice; "
                             "docs/export.md has what it costs and buys)")
    parser.add_argument("--verify-data", help=".npy of images (N, H, W, C) for verification, "
                        "as the model takes them (raw pixel values 0-255 for aw-train's models)")
    parser.add_argument("--calibration-data", help=".npy of images for int8 calibration "
                        "(as --verify-data)")
    parser.add_argument("--verify-samples", type=int, default=8,
                        help="random verification images when --verify-data is not given (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _parse_list(text, allowed, what):
    items = [item.strip().lower() for item in text.split(",") if item.strip()]
    if not items:
        raise UsageError(f"--{what} is empty; choose from {', '.join(allowed)}.")
    unknown = [item for item in items if item not in allowed]
    if unknown:
        raise UsageError(f"unknown {what} {unknown}; choose from {', '.join(allowed)}.")
    return list(dict.fromkeys(items))


def _check_file(path, what):
    if not os.path.isfile(path):
        raise UsageError(f"{what} {path!r} does not exist (or is not a file).")
    return path


def _looks_like_path(text):
    return os.sep in text or text.endswith((".keras", ".h5")) or os.path.exists(text)


def _check_model_argument(args):
    if _looks_like_path(args.model):
        _check_file(args.model, "model file")
        if not args.model.endswith(".keras"):
            raise UsageError(f"model file {args.model!r} must be a .keras file saved with model.save().")
        if args.weights:
            raise UsageError("--weights applies to registry models; a .keras file carries its weights.")
        from aw_keras.utils.keras_files import check_keras_archive

        try:
            check_keras_archive(args.model, "model file")
        except ValueError as error:
            raise UsageError(str(error)) from None
        return
    import_tensorflow()  # the registry imports Keras and TensorFlow
    from aw_keras import applications

    if not applications.is_model(args.model.lower()):
        import difflib

        close = difflib.get_close_matches(args.model.lower(), applications.list_models(), n=5, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(
            f"unknown model {args.model!r}: neither an existing .keras file nor a registry name.{hint} "
            "List names with: python -c \"import aw_keras.applications as a; print(a.list_models())\""
        )
    if args.weights:
        _check_file(args.weights, "weights file")


def load_model(args):
    import keras

    import aw_keras.layers  # noqa: F401  (registers custom layers for loading)
    from aw_keras import applications

    if _looks_like_path(args.model):
        try:
            import aw_keras.detection  # noqa: F401  (registers RetinaNet, so detectors load)
        except ImportError:  # keras-hub (the "detection" extra) is not installed
            pass
        import zipfile

        try:
            return keras.saving.load_model(args.model)
        except (zipfile.BadZipFile, EOFError) as error:  # a damaged member of the archive
            raise UsageError(f"model file {args.model!r} is not a valid .keras archive: "
                             f"{error}. Save the model with model.save('name.keras') and pass "
                             "that file.") from None
    kwargs = {}
    if args.input_size is not None:
        kwargs["input_shape"] = (args.input_size, args.input_size, args.channels)
    if args.classes is not None:
        kwargs["classes"] = args.classes
    if args.weights:
        kwargs["weights"] = args.weights
    return applications.get_model(args.model.lower(), **kwargs)


def _artifact_name(args):
    """The base name of the artifact files: --name, the .keras file's stem, or
    the registry name."""
    if args.name is not None:
        name = args.name.strip()
        if not name or os.sep in name or (os.altsep and os.altsep in name) or name in (".", ".."):
            raise UsageError(f"--name {args.name!r} is not a file name; expected a plain name "
                             "such as best (no directory part).")
        return name
    if _looks_like_path(args.model):
        return os.path.splitext(os.path.basename(args.model))[0]
    return args.model.lower()


def random_images(shape, count, seed, raw):
    """``count`` random float32 images of ``shape`` (H, W, C): integer pixel
    values 0-255 when ``raw``, else uniform in [0, 1)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if raw:
        return rng.integers(0, 256, (count,) + tuple(shape)).astype(np.float32)
    return rng.random((count,) + tuple(shape), dtype=np.float32)


def _images(path, model, count, seed, raw):
    import numpy as np

    if path:
        images = np.load(_check_file(path, "data file")).astype("float32")
        expected = tuple(model.inputs[0].shape[1:])
        if images.ndim != 4 or any(e is not None and e != s for e, s in zip(expected, images.shape[1:])):
            raise UsageError(f"{path!r} holds shape {images.shape}; the model takes (N,) + {expected}.")
        return images
    shape = tuple(d if d is not None else 224 for d in model.inputs[0].shape[1:])
    return random_images(shape, count, seed, raw)


def _class_names(args, model):
    """(names or None, a dict for the report): --class-names, else the run.json
    next to the .keras file; checked against the model's number of classes."""
    from aw_keras.export import labels

    if args.class_names:
        source = f"--class-names {args.class_names!r}"
        try:
            names = labels.read_labels(args.class_names)
        except ValueError as error:
            raise UsageError(str(error)) from None
    elif _looks_like_path(args.model):
        source = f"\"class_names\" of {os.path.join(os.path.dirname(args.model), labels.RUN_FILE)!r}"
        try:
            names = labels.class_names_from_run(args.model)
        except ValueError as error:
            raise UsageError(f"{error} Pass --class-names FILE instead.") from None
    else:
        names = None
    count = labels.class_count(model)
    if names is None:
        return None, {"source": None, "names": None, "classes": count, "passed": None,
                      "check": "no class names given (--class-names FILE, or \"class_names\" in "
                               "the run.json next to the .keras file): no labels.txt written"}
    try:
        labels.check_class_names(model, names, source)
    except ValueError as error:
        raise UsageError(f"{error} Pass a --class-names file with one name per class.") from None
    check = (f"{len(names)} class names for {count} classes" if count is not None else
             f"{len(names)} class names (the model's number of classes is unknown: not compared)")
    return names, {"source": source, "names": names, "classes": count,
                   "passed": True if count is not None else None, "check": check}


def _input_report(model, inputs, given):
    """The inputs the artifacts were verified on, for the report."""
    from aw_keras.export import common

    layers = common.preprocessing_layers(model)
    if common.takes_raw_images(model):
        contract = ("raw images: float32 pixel values 0-255, channels last; normalised inside "
                    "the model" + (f" ({', '.join(layers)})" if layers else ""))
    else:
        contract = ("as the Keras model takes them: it has no Rescaling / Normalization layer, "
                    "so inputs must be normalised as in training")
    return {"contract": contract, "shape": [None] + list(inputs.shape[1:]), "dtype": "float32",
            "min": float(inputs.min()), "max": float(inputs.max()),
            "source": given or "random"}


def run(args):
    formats = _parse_list(args.formats, FORMATS, "formats")
    quantizations = _parse_list(args.quantization, tuple(QUANTIZATION_NAMES), "quantization")
    _check_model_argument(args)
    for path, what in ((args.verify_data, "verification data"), (args.calibration_data, "calibration data"),
                       (args.class_names, "class names file")):
        if path:
            _check_file(path, what)
    _artifact_name(args)  # a bad --name is refused before anything is written
    out = os.path.abspath(args.out)
    created = not os.path.exists(out)
    try:
        return _run(args, formats, quantizations, out)
    except BaseException:
        # a refused (or crashed) command leaves no empty --out behind
        if created and os.path.isdir(out) and not os.listdir(out):
            os.rmdir(out)
        raise


def _run(args, formats, quantizations, out):
    """`run` once the arguments are checked: creates ``out``, exports, verifies."""
    import_tensorflow()
    from aw_keras.export import common
    from aw_keras.export import detection
    from aw_keras.export import onnx as onnx_export
    from aw_keras.export import saved_model as sm_export
    from aw_keras.export import tflite as tflite_export
    from aw_keras.export.verify import detection_reference
    from aw_keras.export.verify import keras_reference
    from aw_keras.export.verify import verify

    try:
        out = common.check_writable_dir(out)
    except common.ExportError as error:
        raise UsageError(str(error)) from None

    model = load_model(args)
    name = _artifact_name(args)
    class_names, labels_report = _class_names(args, model)
    if detection.is_two_stage_detector(model):
        return _run_two_stage(args, model, formats, out, class_names, labels_report)
    is_detector = detection.is_detector(model)
    if is_detector and "tflite" in formats:
        quantized = [q for q in quantizations if QUANTIZATION_NAMES[q] is not None]
        if quantized:
            raise UsageError(
                f"--quantization {','.join(quantized)} is not supported for detectors "
                f"({name!r}): the TFLite export of a detector is the float32 network (raw "
                "outputs bbox_regression, cls_logits), verified by decoding it against "
                "detector.predict; quantized detectors have no such check. Use --quantization none."
            )
    # raw pixel values 0-255 for a model that normalises inside (aw-train's, detectors)
    raw = common.takes_raw_images(model)
    inputs = _images(args.verify_data, model, args.verify_samples, args.seed, raw)
    common.log(f"inputs: {_input_report(model, inputs, args.verify_data)['contract']}")
    reference = detection_reference(model, inputs) if is_detector else keras_reference(model, inputs)
    artifacts, failures = [], []

    def attempt(label, fn):
        try:
            artifacts.append(fn())
        except Exception as error:  # report every format, then exit non-zero
            failures.append(f"{label}: {error}")
            print(f"aw-export: {label} failed: {error}", file=sys.stderr)

    # Every artifact is written from the model through its target's export policy
    # (aw_keras.export.policy), exactly as the Python API writes it.
    if "saved_model" in formats:
        attempt("saved_model", lambda: sm_export.export_saved_model(
            model, os.path.join(out, "saved_model"), version=args.version,
            implementation=args.implementation, overwrite=args.version is not None,
            class_names=class_names))
    if "tflite" in formats:
        for q in quantizations:
            quantization = QUANTIZATION_NAMES[q]
            label = quantization or "float32"
            representative = None
            if quantization == "int8":
                representative = _images(args.calibration_data, model, 32, args.seed + 1, raw)
            attempt(f"tflite {label}", lambda q=quantization, r=representative, l=label: (
                tflite_export.export_tflite(
                    model, os.path.join(out, f"{name}_{l}.tflite"), quantization=q,
                    representative_data=r, io_dtype=args.io_dtype,
                    implementation=args.implementation,
                    split_residual=args.split_residual if q == "int8" else None)))
    if "onnx" in formats:
        attempt("onnx", lambda: onnx_export.export_onnx(
            model, os.path.join(out, f"{name}.onnx"), opset=args.opset,
            implementation=args.implementation))
    if is_detector and {"tflite", "onnx"} & set(formats):
        # the decode step of the raw TFLite / ONNX outputs (decode_raw_outputs)
        try:
            path = detection.save_decoder_config(model, os.path.join(out, f"{name}_decoder.json"))
            common.log(f"wrote detection decoder config {path}")
        except Exception as error:
            failures.append(f"decoder config: {error}")
            print(f"aw-export: decoder config failed: {error}", file=sys.stderr)

    results = []
    for path in artifacts:
        try:
            results.append(verify(path, model, inputs, reference=reference))
        except Exception as error:
            failures.append(f"verify {path}: {error}")
    _write_labels(out, class_names, artifacts, labels_report, failures)
    write_report(out, results, failures, labels=labels_report,
                 inputs=_input_report(model, inputs, args.verify_data))
    failed = [r for r in results if not r.passed]
    for r in failed:
        print(f"aw-export: check failed for {r.path}: {r.check}", file=sys.stderr)
    return 1 if failed or failures else 0


def _write_labels(out, class_names, artifacts, labels_report, failures):
    """``out/labels.txt`` next to the artifacts, when there are names and artifacts."""
    from aw_keras.export import labels

    if class_names is None or not artifacts:
        return
    try:
        labels_report["path"] = labels.write_labels(os.path.join(out, labels.LABELS_FILE),
                                                    class_names)
    except Exception as error:
        labels_report["passed"] = False
        failures.append(f"labels: {error}")
        print(f"aw-export: labels failed: {error}", file=sys.stderr)


def _run_two_stage(args, model, formats, out, class_names, labels_report):
    """aw-export of a two-stage detector (FasterRCNN): the SavedModel only."""
    import numpy as np


    from aw_keras.export import common
    from aw_keras.export import detection

    refused = [f for f in formats if f != "saved_model"]
    if refused and args.formats != DEFAULT_FORMATS:
        try:
            detection.check_two_stage_format(model, refused[0])
        except common.ExportError as error:
            raise UsageError(f"--formats {args.formats}: {error}") from None
    if refused:
        common.log(f"{type(model).__name__} {model.name!r}: exporting saved_model only "
                   f"(no {'/'.join(refused)} form; see docs/faster_rcnn.md)")
    shape = tuple(model.image_shape)
    if args.verify_data:
        inputs = np.load(_check_file(args.verify_data, "data file")).astype("float32")
        if inputs.ndim != 4 or inputs.shape[1:] != shape:
            raise UsageError(f"{args.verify_data!r} holds shape {inputs.shape}; the model takes "
                             f"(N,) + {shape}.")
    else:
        inputs = random_images(shape, args.verify_samples, args.seed, raw=True)
    predicted = model.predict(inputs, batch_size=4, verbose=0)
    reference = {key: np.asarray(predicted[key]) for key in detection.PREDICT_KEYS}
    results, failures, artifacts = [], [], []
    try:
        path = detection.export_two_stage_saved_model(
            model, os.path.join(out, "saved_model"), version=args.version,
            overwrite=args.version is not None, class_names=class_names)
        artifacts.append(path)
        results.append(detection.verify_two_stage_saved_model(path, model, inputs,
                                                              reference=reference))
    except Exception as error:  # report it, exit 1
        failures.append(f"saved_model: {error}")
        print(f"aw-export: saved_model failed: {error}", file=sys.stderr)
    _write_labels(out, class_names, artifacts, labels_report, failures)
    write_report(out, results, failures, labels=labels_report,
                 inputs=_input_report(model, inputs, args.verify_data))
    failed = [r for r in results if not r.passed]
    for r in failed:
        print(f"aw-export: check failed for {r.path}: {r.check}", file=sys.stderr)
    return 1 if failed or failures else 0


def write_report(out, results, failures, labels=None, inputs=None):
    """Prints the verification table and writes verification.md / .json
    atomically (standard JSON: a NaN, e.g. a latency not measured, is null).
    ``labels`` / ``inputs``: the class-name check and the verification inputs,
    reported under the table and as keys of the JSON."""
    from aw_keras.export import common
    from aw_keras.export.verify import format_table

    table = format_table(results)
    notes = []
    if inputs is not None:
        notes.append(f"inputs: {inputs['contract']}; verified on {inputs['source']} images, "
                     f"values {inputs['min']:g}..{inputs['max']:g}")
    if labels is not None:
        verdict = {True: "PASS", False: "FAIL", None: "not checked"}[labels["passed"]]
        notes.append(f"class names: {labels['check']}"
                     + (f" (from {labels['source']})" if labels["source"] else "")
                     + f": {verdict}")
    text = "\n\n".join([table] + notes)
    print(text)
    with common.atomic_path(os.path.join(out, "verification.md")) as temp:
        with open(temp, "w") as handle:
            handle.write(text + "\n")
    report = {"results": [r.as_dict() for r in results], "failures": failures}
    if inputs is not None:
        report["inputs"] = inputs
    if labels is not None:
        report["labels"] = labels
    with common.atomic_path(os.path.join(out, "verification.json")) as temp:
        with open(temp, "w") as handle:
            json.dump(common.json_safe(report), handle, indent=2, allow_nan=False)


def import_tensorflow():
    """TensorFlow without its start-up lines (AW_KERAS_TF_LOGS=1 shows them); a
    UsageError saying what to install where it is missing."""
    try:
        return tf_quiet.import_tensorflow(
            "aw-export (SavedModel, TFLite and ONNX come from TensorFlow)")
    except ImportError as error:
        raise UsageError(str(error)) from None


def use_tensorflow_backend():
    """Exports are TensorFlow's (SavedModel, TFLite, ONNX through tf2onnx): the
    command runs Keras on TensorFlow whatever ``KERAS_BACKEND`` says, so a
    ``.keras`` file trained on JAX or PyTorch exports as it is. Raises
    UsageError when Keras already runs on another backend in this process."""
    try:
        keras_backend.select_backend("tensorflow")
    except ValueError as error:
        raise UsageError(f"aw-export needs Keras on TensorFlow: {error} Run aw-export as a "
                         "command.") from None


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        use_tensorflow_backend()
        return run(args)
    except UsageError as error:
        print(f"aw-export: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

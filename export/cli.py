"""``aw-export``: export a registry model or a .keras file and verify every artifact.

    aw-export MODEL_OR_PATH --formats saved_model,tflite,onnx \\
        --quantization none,float16,dynamic_range,int8 --out DIR [--weights FILE]

Writes ``DIR/saved_model/<version>/``, ``DIR/<name>_<precision>.tflite``,
``DIR/<name>.onnx`` (each written to a temp path first, then moved), runs each in
its runtime against the Keras model and writes the table to stdout and to
``DIR/verification.md`` / ``verification.json``.

Exit status: 0 all checks passed; 1 a check failed or an export failed;
2 bad arguments (unknown model or format, missing file, unwritable --out).

Verification inputs are uniform random images in [0, 1) unless
``--verify-data FILE.npy`` is given; int8 calibration likewise uses
``--calibration-data FILE.npy`` or random images. With a randomly initialized
model and random inputs the quantized top-1 check is often not meaningful:
pass real data and trained weights for that.

A saved detector (``.keras`` of an `aw_keras.detection.RetinaNet`) gives
``DIR/saved_model/<version>/`` serving decoded detections (``images`` ->
``boxes``, ``scores``, ``classes``, ``num_detections``), ``DIR/<name>_float32.tflite``
and ``DIR/<name>.onnx`` holding the raw heads (``bbox_regression``,
``cls_logits``), and ``DIR/<name>_decoder.json`` for
`aw_keras.export.detection.decode_raw_outputs`; each artifact is verified
against ``detector.predict`` (`aw_keras.export.verify.verify_detection`) on random
images with values in [0, 255) unless ``--verify-data`` is given. Quantized
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
    parser.add_argument("--verify-data", help=".npy of float32 images (N, H, W, C) for verification")
    parser.add_argument("--calibration-data", help=".npy of float32 images for int8 calibration")
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
        return
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
        return keras.saving.load_model(args.model)
    kwargs = {}
    if args.input_size is not None:
        kwargs["input_shape"] = (args.input_size, args.input_size, args.channels)
    if args.classes is not None:
        kwargs["classes"] = args.classes
    if args.weights:
        kwargs["weights"] = args.weights
    return applications.get_model(args.model.lower(), **kwargs)


def _images(path, model, count, seed, scale=1.0):
    import numpy as np

    if path:
        images = np.load(_check_file(path, "data file")).astype("float32")
        expected = tuple(model.inputs[0].shape[1:])
        if images.ndim != 4 or any(e is not None and e != s for e, s in zip(expected, images.shape[1:])):
            raise UsageError(f"{path!r} holds shape {images.shape}; the model takes (N,) + {expected}.")
        return images
    shape = tuple(d if d is not None else 224 for d in model.inputs[0].shape[1:])
    return np.random.default_rng(seed).random((count,) + shape, dtype=np.float32) * np.float32(scale)


def run(args):
    formats = _parse_list(args.formats, FORMATS, "formats")
    quantizations = _parse_list(args.quantization, tuple(QUANTIZATION_NAMES), "quantization")
    _check_model_argument(args)
    for path, what in ((args.verify_data, "verification data"), (args.calibration_data, "calibration data")):
        if path:
            _check_file(path, what)

    from aw_keras.export import common
    from aw_keras.export import detection
    from aw_keras.export import onnx as onnx_export
    from aw_keras.export import saved_model as sm_export
    from aw_keras.export import tflite as tflite_export
    from aw_keras.export.verify import detection_reference
    from aw_keras.export.verify import keras_reference
    from aw_keras.export.verify import verify

    try:
        out = common.check_writable_dir(os.path.abspath(args.out))
    except common.ExportError as error:
        raise UsageError(str(error)) from None

    model = load_model(args)
    name = model.name
    if detection.is_two_stage_detector(model):
        return _run_two_stage(args, model, formats, out)
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
    # a detector takes pixel values (0-255), a classifier here images in [0, 1)
    inputs = _images(args.verify_data, model, args.verify_samples, args.seed,
                     scale=255.0 if is_detector else 1.0)
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
            implementation=args.implementation, overwrite=args.version is not None))
    if "tflite" in formats:
        for q in quantizations:
            quantization = QUANTIZATION_NAMES[q]
            label = quantization or "float32"
            representative = None
            if quantization == "int8":
                representative = _images(args.calibration_data, model, 32, args.seed + 1)
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
    write_report(out, results, failures)
    failed = [r for r in results if not r.passed]
    for r in failed:
        print(f"aw-export: check failed for {r.path}: {r.check}", file=sys.stderr)
    return 1 if failed or failures else 0


def _run_two_stage(args, model, formats, out):
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
        inputs = np.random.default_rng(args.seed).random(
            (args.verify_samples,) + shape, dtype=np.float32) * np.float32(255.0)
    predicted = model.predict(inputs, batch_size=4, verbose=0)
    reference = {key: np.asarray(predicted[key]) for key in detection.PREDICT_KEYS}
    results, failures = [], []
    try:
        path = detection.export_two_stage_saved_model(
            model, os.path.join(out, "saved_model"), version=args.version,
            overwrite=args.version is not None)
        results.append(detection.verify_two_stage_saved_model(path, model, inputs,
                                                              reference=reference))
    except Exception as error:  # report it, exit 1
        failures.append(f"saved_model: {error}")
        print(f"aw-export: saved_model failed: {error}", file=sys.stderr)
    write_report(out, results, failures)
    failed = [r for r in results if not r.passed]
    for r in failed:
        print(f"aw-export: check failed for {r.path}: {r.check}", file=sys.stderr)
    return 1 if failed or failures else 0


def write_report(out, results, failures):
    """Prints the verification table and writes verification.md / .json atomically."""
    from aw_keras.export import common
    from aw_keras.export.verify import format_table

    table = format_table(results)
    print(table)
    with common.atomic_path(os.path.join(out, "verification.md")) as temp:
        with open(temp, "w") as handle:
            handle.write(table + "\n")
    with common.atomic_path(os.path.join(out, "verification.json")) as temp:
        with open(temp, "w") as handle:
            json.dump({"results": [r.as_dict() for r in results], "failures": failures}, handle,
                      indent=2)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UsageError as error:
        print(f"aw-export: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

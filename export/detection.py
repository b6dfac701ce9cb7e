"""Detector export: a SavedModel that serves decoded boxes, and TFLite / ONNX of the raw heads.

A RetinaNet (`aw_keras.detection.RetinaNet`, or keras-hub's
``RetinaNetObjectDetector``) is a functional network ``images -> {"bbox_regression":
(B, A, 4), "cls_logits": (B, A, num_classes)}`` followed by a decode step in Python
(``detector.decode_predictions``: deltas clamped and decoded against the anchors of
its ``anchor_generator``, boxes clipped to the image, NMS by its
``prediction_decoder``). The exporters treat the two parts separately:

- `export_model` (``aw_keras.export.transform``) rewrites the network (AWConv2D ->
  AWConvExport; the user's detector is only read) and attaches the detector's
  decode step as a `DetectionDecoder`;
- **SavedModel** (`aw_keras.export.export_saved_model`): the ``serving_default``
  signature runs the rewritten network, then the decoder, in one graph:
  ``images`` float32 (-1, H, W, 3), pixel values 0-255 -> ``boxes`` float32
  (B, max_detections, 4) xyxy pixels, ``scores`` float32 (B, max_detections),
  ``classes`` int32 (B, max_detections), ``num_detections`` int32 (B,); rows past
  ``num_detections`` are -1 (keras-hub's padding);
- **TFLite / ONNX** (`export_tflite`, `export_onnx`): the network only, outputs
  ``bbox_regression`` and ``cls_logits``. keras-hub's NMS does not convert to
  TFLite builtins (Keras's TensorFlow ``argmax`` emits ``tf.BitwiseAnd``, a Flex op,
  and the tiled NMS becomes ``WHILE`` loops), so the decode step stays in Python:
  `decode_raw_outputs` (with the detector, or the JSON config `save_decoder_config`
  writes next to the artifacts) gives the same detections as ``detector.predict``.

Example:

>>> from aw_keras.export import export_saved_model, export_tflite, detection
>>> export_saved_model(detector, "/models/retinanet")                 # doctest: +SKIP
>>> export_tflite(detector, "retinanet.tflite")                       # doctest: +SKIP
>>> detection.save_decoder_config(detector, "retinanet_decoder.json") # doctest: +SKIP
>>> # later, anywhere with aw_keras and keras-hub installed:
>>> outputs = interpreter.get_signature_runner()(images=images)      # doctest: +SKIP
>>> detection.decode_raw_outputs("retinanet_decoder.json", outputs["bbox_regression"],
...                              outputs["cls_logits"])              # doctest: +SKIP
{'boxes': ..., 'confidence': ..., 'labels': ..., 'num_detections': ...}
"""

import functools
import json
import os
import types

import keras
import numpy as np
import tensorflow as tf

from aw_keras.export import common

RAW_OUTPUTS = ("bbox_regression", "cls_logits")
SIGNATURE_OUTPUTS = ("boxes", "scores", "classes", "num_detections")
PREDICT_KEYS = ("boxes", "confidence", "labels", "num_detections")
CONFIG_FORMAT = "aw_keras.export.detection/1"
# the attribute of an `export_model` result that carries the detector's decode step
DECODER_ATTRIBUTE = "_aw_detection_decoder"
# TFLite targets a detector exports to: the float32 raw heads are verified
# against ``detector.predict`` after decoding; the quantized ones are not.
SUPPORTED_TFLITE = ("tflite_float32",)


# ------------------------------------------------------------------ recognition


def _output_keys(model):
    try:
        output = model.output
    except (AttributeError, ValueError):
        return ()
    return tuple(output) if isinstance(output, dict) else ()


def is_detector(model):
    """True for a RetinaNet-style detector: a Keras model with dict outputs
    ``bbox_regression`` and ``cls_logits``, an ``anchor_generator``, a
    ``prediction_decoder`` and a ``decode_predictions`` method."""
    if not isinstance(model, keras.Model):
        return False
    needed = ("anchor_generator", "prediction_decoder", "decode_predictions", "bounding_box_format")
    if not all(hasattr(model, name) for name in needed):
        return False
    return set(RAW_OUTPUTS) <= set(_output_keys(model))


def decoder_of(model):
    """The `DetectionDecoder` attached to an `export_model` result, or None."""
    return getattr(model, DECODER_ATTRIBUTE, None)


def check_target(model, target):
    """Raises `ExportError` when a detector is exported for a target whose
    check cannot be applied to detections (quantized TFLite)."""
    if target.startswith("tflite_") and target not in SUPPORTED_TFLITE:
        quantization = target[len("tflite_"):]
        raise common.ExportError(
            f"quantization={quantization!r} is not supported for detectors ({model.name!r}): "
            "their TFLite export is the float32 network (raw outputs bbox_regression and "
            "cls_logits), verified by decoding it and comparing the detections with "
            "detector.predict; quantized detectors have no such check yet (it would need a "
            "detection metric such as mAP against Keras). Export float32 (quantization=None; "
            "aw-export --quantization none) and quantize it yourself if you need to."
        )


# ------------------------------------------------------------------ the decode step


class _DecodeContext:
    """Stands in for the detector when its decode method runs from a config:
    carries the attributes ``decode_predictions`` reads (the decode layers, the
    box format...) and binds the detector class's other methods and properties
    to itself, so helper methods ``decode_predictions`` calls work too."""

    def __init__(self, detector_class, **attributes):
        self.__dict__["_detector_class"] = detector_class
        self.__dict__.update(attributes)

    def __getattr__(self, name):
        attribute = getattr(self.__dict__["_detector_class"], name)
        if isinstance(attribute, property):
            return attribute.fget(self)
        if callable(attribute) and not isinstance(attribute, type):
            return types.MethodType(attribute, self)
        return attribute


def _decoder_layer(value):
    if isinstance(value, dict):
        return keras.layers.deserialize(value)
    return value


def _resolve_detector_class(name):
    """The registered detector class ``name`` ("aw_keras>RetinaNet", ...)."""
    if name.startswith("aw_keras>"):
        import aw_keras.detection  # noqa: F401  (registers RetinaNet)
    try:
        import keras_hub  # noqa: F401  (registers keras-hub's detectors and layers)
    except ImportError as error:
        raise ImportError(
            "Decoding detections needs keras-hub (its anchor generator and NMS layer): "
            "pip install 'aw_keras[detection]'."
        ) from error
    cls = keras.saving.get_registered_object(name)
    if cls is None or not hasattr(cls, "decode_predictions"):
        raise common.ExportError(
            f"Unknown detector class {name!r} in the decoder config: import the module that "
            "registers it (keras.saving.register_keras_serializable) first."
        )
    return cls


class DetectionDecoder:
    """A detector's decode step: raw outputs -> NMS-ed boxes, as ``detector.predict``.

    Built from a detector (`from_detector`: calls its own ``decode_predictions``,
    with its own ``anchor_generator`` and ``prediction_decoder``) or from the JSON
    config `get_config` / `save_decoder_config` write (`from_config`: the same
    method of the same registered class, on layers rebuilt from their configs).

    Attributes:
        image_shape: (height, width, channels) the detector takes.
        num_anchors, num_classes: A and K of the raw outputs (B, A, 4), (B, A, K).
        max_detections: rows of the decoded outputs.
    """

    def __init__(self, decode, image_shape, num_anchors, num_classes, max_detections, config):
        self._decode = decode
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_anchors = int(num_anchors)
        self.num_classes = int(num_classes)
        self.max_detections = int(max_detections)
        self._config = config
        self._function = None

    @classmethod
    def from_detector(cls, detector):
        if not is_detector(detector):
            raise TypeError(
                "`detector` must be a RetinaNet-style detector (dict outputs bbox_regression and "
                f"cls_logits, anchor_generator, prediction_decoder), received {type(detector).__name__}."
            )
        image_shape = tuple(detector.inputs[0].shape[1:])
        if None in image_shape:
            raise common.ExportError(
                f"The detector {detector.name!r} takes images of shape {image_shape}; export "
                "needs a fixed height and width (its anchors depend on them)."
            )
        num_anchors = detector.output["bbox_regression"].shape[1]
        num_classes = detector.output["cls_logits"].shape[-1]
        decoder = detector.prediction_decoder
        config = {
            "format": CONFIG_FORMAT,
            "class_name": keras.saving.get_registered_name(type(detector)),
            "image_shape": list(image_shape),
            "input": {"name": "images", "dtype": "float32",
                      "values": "pixels as the detector takes them (0-255 for the FPN backbones)"},
            "raw_outputs": {"bbox_regression": [None, num_anchors, 4],
                            "cls_logits": [None, num_anchors, num_classes]},
            "num_anchors": num_anchors,
            "num_classes": num_classes,
            "bounding_box_format": detector.bounding_box_format,
            "box_delta_clip": getattr(detector, "box_delta_clip", None),
            "max_detections": decoder.max_detections,
            "anchor_generator": keras.layers.serialize(detector.anchor_generator),
            "prediction_decoder": keras.layers.serialize(decoder),
        }
        return cls(detector.decode_predictions, image_shape, num_anchors, num_classes,
                   decoder.max_detections, config)

    @classmethod
    def from_config(cls, config):
        """From a config dict or the path of a JSON file holding one."""
        if isinstance(config, (str, os.PathLike)):
            with open(config) as handle:
                config = json.load(handle)
        if not isinstance(config, dict) or config.get("format") != CONFIG_FORMAT:
            raise ValueError(
                f"Not a detection decoder config (expected format {CONFIG_FORMAT!r}); write one "
                "with aw_keras.export.detection.save_decoder_config(detector, path)."
            )
        detector_class = _resolve_detector_class(config["class_name"])
        attributes = dict(
            anchor_generator=_decoder_layer(config["anchor_generator"]),
            prediction_decoder=_decoder_layer(config["prediction_decoder"]),
            bounding_box_format=config["bounding_box_format"],
            num_classes=config["num_classes"],
        )
        if config.get("box_delta_clip") is not None:
            attributes["box_delta_clip"] = float(config["box_delta_clip"])
        context = _DecodeContext(detector_class, **attributes)
        decode = functools.partial(detector_class.decode_predictions, context)
        return cls(decode, config["image_shape"], config["num_anchors"], config["num_classes"],
                   config["max_detections"], dict(config))

    @classmethod
    def get(cls, detector_or_config):
        """A decoder from a detector, a `DetectionDecoder`, an `export_model`
        result, a config dict or a JSON path."""
        if isinstance(detector_or_config, DetectionDecoder):
            return detector_or_config
        if decoder_of(detector_or_config) is not None:
            return decoder_of(detector_or_config)
        if isinstance(detector_or_config, keras.Model):
            return cls.from_detector(detector_or_config)
        return cls.from_config(detector_or_config)

    def get_config(self):
        """A JSON-serializable dict `from_config` rebuilds this decoder from."""
        return json.loads(json.dumps(self._config))

    def decode(self, predictions, images):
        """The detector's ``decode_predictions`` on tensors: ``predictions`` a dict
        with ``bbox_regression`` and ``cls_logits``; ``images`` (B, H, W, C), or
        zeros of that shape: only its shape is read. Returns keras-hub's dict
        ``boxes``, ``confidence``, ``labels``, ``num_detections``."""
        return self._decode({name: predictions[name] for name in RAW_OUTPUTS}, images)

    def serving_outputs(self, predictions, images):
        """The SavedModel signature's outputs: ``boxes``, ``scores``, ``classes``
        (int32), ``num_detections`` (int32)."""
        decoded = self.decode(predictions, images)
        return {
            "boxes": tf.cast(decoded["boxes"], tf.float32),
            "scores": tf.cast(decoded["confidence"], tf.float32),
            "classes": tf.cast(decoded["labels"], tf.int32),
            "num_detections": tf.cast(decoded["num_detections"], tf.int32),
        }

    def _shape_carrier(self, batch=1):
        """Zeros (batch, H, W, C): decoding reads the image size from a tensor
        of the images' shape (the decode step may map over it image by image)."""
        return tf.zeros(tf.concat([tf.reshape(batch, [1]), self.image_shape], 0), tf.float32)

    def _decode_function(self):
        if self._function is None:
            a, k = self.num_anchors, self.num_classes

            def run(bbox_regression, cls_logits):
                predictions = {"bbox_regression": bbox_regression, "cls_logits": cls_logits}
                carrier = self._shape_carrier(tf.shape(bbox_regression)[0])
                decoded = self.decode(predictions, carrier)
                return {key: decoded[key] for key in PREDICT_KEYS}

            self._function = tf.function(run, input_signature=[
                tf.TensorSpec((None, a, 4), tf.float32), tf.TensorSpec((None, a, k), tf.float32)])
        return self._function

    def __call__(self, bbox_regression, cls_logits):
        """Decodes raw outputs (arrays (B, A, 4) and (B, A, K)) to numpy arrays
        with the keys and dtypes of ``detector.predict``."""
        bbox_regression = np.asarray(bbox_regression, np.float32)
        cls_logits = np.asarray(cls_logits, np.float32)
        expected = ((self.num_anchors, 4), (self.num_anchors, self.num_classes))
        for name, value, shape in zip(RAW_OUTPUTS, (bbox_regression, cls_logits), expected):
            if value.ndim != 3 or value.shape[1:] != shape:
                raise ValueError(
                    f"`{name}` must have shape (batch,) + {shape}, received {value.shape}."
                )
        if len(bbox_regression) != len(cls_logits):
            raise ValueError(
                f"`bbox_regression` and `cls_logits` have different batch sizes "
                f"({len(bbox_regression)} and {len(cls_logits)})."
            )
        decoded = self._decode_function()(tf.constant(bbox_regression), tf.constant(cls_logits))
        result = {key: np.asarray(value) for key, value in decoded.items()}
        result["labels"] = result["labels"].astype(np.int32)
        result["num_detections"] = result["num_detections"].astype(np.int32)
        return result

    def anchors(self):
        """The anchors (A, 4) in the anchor generator's box format (xyxy pixels
        for the RetinaNets here), concatenated over the levels as the raw
        outputs are."""
        layer = _decoder_layer(self._config["anchor_generator"])
        anchors = layer(self._shape_carrier())
        return np.concatenate([np.asarray(value) for value in anchors.values()], axis=0)


def decode_raw_outputs(detector_or_config, bbox_regression, cls_logits):
    """Decodes the raw outputs of a detector's TFLite / ONNX export.

    Args:
        detector_or_config: the detector, a `DetectionDecoder`, a config dict or
            the path of the JSON file `save_decoder_config` wrote (``aw-export``
            writes ``<name>_decoder.json`` next to the artifacts).
        bbox_regression: (B, A, 4) box deltas (center_xywh) of the artifact.
        cls_logits: (B, A, num_classes) class logits of the artifact.

    Returns:
        What ``detector.predict(images)`` returns for the same images: numpy
        ``boxes`` float32 (B, max_detections, 4) in the detector's box format
        (xyxy pixels), ``confidence`` float32 (B, max_detections), ``labels``
        int32 (B, max_detections), ``num_detections`` int32 (B,); rows past
        ``num_detections`` are -1.
    """
    return DetectionDecoder.get(detector_or_config)(bbox_regression, cls_logits)


def save_decoder_config(detector_or_config, path):
    """Writes the decode step's config as JSON to ``path`` (atomically); returns ``path``."""
    config = DetectionDecoder.get(detector_or_config).get_config()
    with common.atomic_path(path) as temp:
        with open(temp, "w") as handle:
            json.dump(config, handle, indent=2)
    return os.fspath(path)


# ------------------------------------------------------------------ SavedModel writing


def serving_function(model):
    """images -> {boxes, scores, classes, num_detections} for an `export_model`
    result of a detector (its network, then its decode step)."""
    decoder = decoder_of(model)

    def serve(images):
        return decoder.serving_outputs(model(images, training=False), images)

    return tf.function(serve)


def raw_serving_function(model):
    """images -> {bbox_regression, cls_logits}: the network alone (what the
    TFLite and ONNX converters get)."""

    def serve(images):
        outputs = model(images, training=False)
        return {name: outputs[name] for name in RAW_OUTPUTS}

    return tf.function(serve)


def write_raw_saved_model(model, path):
    """Writes a SavedModel whose ``serving_default`` returns the raw outputs of
    ``model`` (an `export_model` result of a detector) at ``path``."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", raw_serving_function(model),
                         input_signature=[common.image_spec(model)])
    archive.write_out(os.fspath(path), verbose=False)
    return os.fspath(path)


def attach_decoder(exported, detector):
    """Attaches ``detector``'s decode step to ``exported`` (its `export_model`
    result), so the SavedModel exporter serves decoded detections."""
    object.__setattr__(exported, DECODER_ATTRIBUTE, DetectionDecoder.from_detector(detector))
    return exported


# ------------------------------------------------------------------ artifacts


def artifact_kind(path):
    """"detections" for a SavedModel serving decoded detections, "raw" for a
    TFLite / ONNX / SavedModel with outputs bbox_regression and cls_logits,
    None for anything else."""
    from aw_keras.export.verify import artifact_format

    names = set(artifact_output_names(path, artifact_format(path)))
    if {"boxes", "scores", "num_detections"} <= names:
        return "detections"
    if set(RAW_OUTPUTS) <= names:
        return "raw"
    return None


def artifact_output_names(path, kind):
    path = os.fspath(path)
    if kind == "saved_model":
        loaded = tf.saved_model.load(path)
        if "serving_default" not in loaded.signatures:
            return []
        return list(loaded.signatures["serving_default"].structured_outputs)
    if kind == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        signatures = Interpreter(model_path=path).get_signature_list()
        return list(signatures.get("serving_default", {}).get("outputs", []))
    import onnx

    return [output.name for output in onnx.load(path, load_external_data=False).graph.output]


# ------------------------------------------------------------------ two-stage detectors
#
# A two-stage detector (`aw_keras.detection.FasterRCNN`) is a subclassed model whose
# call already returns decoded detections ({"boxes", "confidence", "labels",
# "num_detections"}); there is no raw-heads network to rewrite. It exports as a
# SavedModel only: its graph holds ops with no TFLite builtin and no usable ONNX
# form (measured with TF 2.21 / tf2onnx 1.17 / onnxruntime 1.32, docs/faster_rcnn.md).

TWO_STAGE_REFUSED = {
    "tflite": (
        "its graph needs ops with no TFLite builtin kernel: CropAndResize (RoIAlign), "
        "DynamicPartition / DynamicStitch (multi-level RoI routing) and "
        "CombinedNonMaxSuppression (proposal and detection NMS); the converter with "
        "TFLITE_BUILTINS only fails with 'op is neither a custom op nor a flex op'"),
    "onnx": (
        "tf2onnx has no ONNX form for its class-specific CombinedNonMaxSuppression "
        "('only currently implemented for boxes shared across classes') and the model it "
        "writes does not load in onnxruntime ('No Op registered for "
        "CombinedNonMaxSuppression')"),
}


def is_two_stage_detector(model):
    """True for a two-stage detector (`aw_keras.detection.FasterRCNN`): a Keras
    model whose call returns decoded detections and that has no raw-heads network."""
    try:
        from aw_keras.detection.faster_rcnn import FasterRCNN
    except ImportError:  # keras-hub is not installed: no FasterRCNN can exist
        return False
    return isinstance(model, FasterRCNN)


def check_two_stage_format(model, fmt):
    """Raises `ExportError` when a two-stage detector is exported to ``fmt``
    ("tflite", "onnx" or a ``tflite_*`` target): only the SavedModel works."""
    key = "tflite" if fmt.startswith("tflite") else fmt
    if key in TWO_STAGE_REFUSED:
        label = {"tflite": "TFLite", "onnx": "ONNX"}[key]
        raise common.ExportError(
            f"{type(model).__name__} {model.name!r} cannot be exported to {label}: "
            f"{TWO_STAGE_REFUSED[key]}. Export it as a SavedModel (aw_keras.export.detection."
            "export_two_stage_saved_model; aw-export --formats saved_model), which serves "
            "images -> boxes, scores, classes, num_detections.")


def two_stage_serving_function(model):
    """images -> {boxes, scores, classes, num_detections} of a two-stage detector."""

    def serve(images):
        detections = model(images, training=False)
        return {
            "boxes": tf.cast(detections["boxes"], tf.float32),
            "scores": tf.cast(detections["confidence"], tf.float32),
            "classes": tf.cast(detections["labels"], tf.int32),
            "num_detections": tf.cast(detections["num_detections"], tf.int32),
        }

    return tf.function(serve)


def export_two_stage_saved_model(model, path, version=None, overwrite=False, class_names=None):
    """Exports a two-stage detector as ``path/<version>/`` for TF Serving.

    The ``serving_default`` signature is RetinaNet's (`export_saved_model` of a
    RetinaNet): ``images`` float32 (-1, H, W, 3), pixel values 0-255 ->
    ``boxes`` float32 (B, max_detections, 4) xyxy pixels, ``scores`` float32
    (B, max_detections), ``classes`` int32 (B, max_detections),
    ``num_detections`` int32 (B,); rows past ``num_detections`` are -1. The
    model's own graph is traced as it is (AWConv2D layers are not rewritten to
    their export form: the model is subclassed, not functional).
    ``class_names`` (optional, one per class, checked) are written as
    ``<version>/assets.extra/labels.txt`` (line i = the name of label i).

    Returns:
        The version directory written.
    """
    from aw_keras.export.saved_model import version_directory

    if not is_two_stage_detector(model):
        raise TypeError("`model` must be an aw_keras.detection.FasterRCNN, received "
                        f"{type(model).__name__}.")
    from aw_keras.export import labels

    if class_names is not None:
        labels.check_class_names(model, class_names, "`class_names`")
    image_shape = tuple(model.image_shape)
    target = version_directory(path, version, overwrite)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default", two_stage_serving_function(model),
        input_signature=[tf.TensorSpec((None,) + image_shape, tf.float32, name="images")])
    with common.atomic_path(target) as temp:
        archive.write_out(temp, verbose=False)
        if class_names is not None:
            labels.write_saved_model_labels(temp, class_names)
    common.log(f"wrote SavedModel {target}")
    return target


def verify_two_stage_saved_model(path, model, inputs, reference=None, batch_sizes=(1, 4),
                                 tolerance=1e-4):
    """Runs a two-stage detector's SavedModel on ``inputs`` and compares its
    detections with ``model.predict`` (the criteria of `verify_detection`:
    scores and boxes / image side within ``tolerance``, every image the same
    number of detections with the same classes in the same order). ``reference``:
    ``model.predict(inputs)`` (computed when None). Returns a `VerificationResult`."""
    import time

    from aw_keras.export.verify import VerificationResult
    from aw_keras.export.verify import artifact_size
    from aw_keras.export.verify import compare_detections

    inputs = np.asarray(inputs, np.float32)
    if reference is None:
        predicted = model.predict(inputs, batch_size=max(batch_sizes), verbose=0)
        reference = {key: np.asarray(predicted[key]) for key in PREDICT_KEYS}
    serve = tf.saved_model.load(os.fspath(path)).signatures["serving_default"]
    comparisons = []
    for batch_size in batch_sizes:
        chunks = []
        for i in range(0, len(inputs), batch_size):
            outputs = serve(images=tf.constant(inputs[i:i + batch_size]))
            chunks.append({key: np.asarray(outputs[name])
                           for key, name in zip(PREDICT_KEYS, SIGNATURE_OUTPUTS)})
        got = {key: np.concatenate([c[key] for c in chunks]) for key in PREDICT_KEYS}
        comparisons.append(compare_detections(got, reference))
    side = float(max(model.image_shape[:2]))
    details = {
        "raw_max_abs_error": None,
        "boxes_max_abs_error": max(c["boxes_max_abs_error"] for c in comparisons),
        "scores_max_abs_error": max(c["scores_max_abs_error"] for c in comparisons),
        "images_matching": min(c["images_matching"] for c in comparisons),
        "images": len(inputs),
        "detections": comparisons[0]["detections"],
    }
    error = max(details["boxes_max_abs_error"] / side, details["scores_max_abs_error"])
    passed = error <= tolerance and details["images_matching"] == len(inputs)
    sample = tf.constant(inputs[:1])
    serve(images=sample)
    start = time.perf_counter()
    for _ in range(5):
        serve(images=sample)
    latency = (time.perf_counter() - start) / 5 * 1000.0
    return VerificationResult(
        format="saved_model", path=os.fspath(path), precision="float32",
        size_bytes=artifact_size(path), batch_sizes=tuple(batch_sizes),
        samples=len(inputs), max_abs_error=error, max_rel_error=float("nan"),
        top1_agreement=details["images_matching"] / max(len(inputs), 1),
        latency_ms=latency,
        check=(f"detections vs predict: max(|scores|, |boxes|/{side:g}) = {error:.3g} <= "
               f"{tolerance:g}, {details['images_matching']}/{len(inputs)} images matching"),
        passed=passed, runtime="tf.saved_model.load", detection=details)

"""Export to SavedModel (TF Serving), TFLite/LiteRT and ONNX, with verification.

Installed as ``aw_keras.export``. `export_model` rewrites a model into a new
one in a target's export form (`aw_keras.export.policy`); the exporters call
it and write the artifact; `verify` runs an artifact in its runtime.

>>> from aw_keras.export import export_saved_model, export_tflite, export_onnx, verify

Detectors (a RetinaNet) go through the same functions: the SavedModel serves
decoded boxes, TFLite / ONNX hold the raw heads, which `decode_raw_outputs`
decodes (`aw_keras.export.detection`).

Class names travel as ``labels.txt`` (line i = the name of label i;
`aw_keras.export.labels`); `check_keras_archive` tells a damaged ``.keras`` file
from a missing one. A saved export model (its `AWConvExport` / `Absorbed` layers)
loads after ``import aw_keras``: the package registers those names with Keras and
imports `aw_keras.export.layers` when one is loaded.
"""

import importlib

# Each public name and the module that defines it, imported on first use, so that
# `aw-export --help` and its usage errors need no TensorFlow.
_PUBLIC = {
    "ExportError": "aw_keras.export.common",
    "check_keras_archive": "aw_keras.export.common",
    "DetectionDecoder": "aw_keras.export.detection",
    "decode_raw_outputs": "aw_keras.export.detection",
    "is_detector": "aw_keras.export.detection",
    "save_decoder_config": "aw_keras.export.detection",
    "check_class_names": "aw_keras.export.labels",
    "class_names_from_run": "aw_keras.export.labels",
    "read_labels": "aw_keras.export.labels",
    "write_labels": "aw_keras.export.labels",
    "AWConvExport": "aw_keras.export.layers",
    "export_onnx": "aw_keras.export.onnx",
    "ExportPolicy": "aw_keras.export.policy",
    "policy_for": "aw_keras.export.policy",
    "ImagePreprocessing": "aw_keras.export.saved_model",
    "export_saved_model": "aw_keras.export.saved_model",
    "count_ops": "aw_keras.export.tflite",
    "export_tflite": "aw_keras.export.tflite",
    "list_ops": "aw_keras.export.tflite",
    "export_model": "aw_keras.export.transform",
    "VerificationResult": "aw_keras.export.verify",
    "format_table": "aw_keras.export.verify",
    "verify": "aw_keras.export.verify",
    "verify_detection": "aw_keras.export.verify",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        from aw_keras.utils.optional import require_tensorflow

        require_tensorflow(f"aw_keras.export.{name} (export runs on TensorFlow)")
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aw_keras.export' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))

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
from a missing one.
"""

import importlib
import importlib.abc
import importlib.util
import sys

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
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aw_keras.export' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))


# The export layers (AWConvExport, Absorbed) are registered with Keras as soon as
# both this package and Keras are imported, in either order, so that a saved
# export model loads after `import aw_keras.export`.
_LAYERS = "aw_keras.export.layers"


class _RegisterAfterKeras(importlib.abc.Loader):
    """Keras's loader, then the import of the export layers."""

    def __init__(self, loader, hook):
        self._loader = loader
        self._hook = hook

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        if self._hook in sys.meta_path:
            sys.meta_path.remove(self._hook)
        importlib.import_module(_LAYERS)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _KerasImportHook(importlib.abc.MetaPathFinder):
    """Wraps Keras's loader when Keras is imported (a mere `find_spec("keras")`,
    as TensorFlow makes, leaves the hook in place)."""

    _busy = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras" or self._busy:
            return None
        self._busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy = False
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _RegisterAfterKeras(spec.loader, self)
        return spec


if "keras" in sys.modules:
    importlib.import_module(_LAYERS)
elif not any(isinstance(finder, _KerasImportHook) for finder in sys.meta_path):
    sys.meta_path.insert(0, _KerasImportHook())

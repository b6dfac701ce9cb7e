"""aw_keras: the AW-convolution attention module for Keras 3 / TensorFlow.

Zhu, Hofstee, Lee, Al-Ars, "An Attention Module for Convolutional Neural
Networks", ICANN 2021.

Example:

>>> import keras, aw_keras
>>> layer = aw_keras.layers.AWConv2D(64, 3, padding="same")
>>> model = keras.saving.load_model("runs/aw/best.keras")   # doctest: +SKIP

``import aw_keras`` is light (it imports no TensorFlow): the subpackages
(`layers`, `optimizers`, `utils`, `applications`, `detection`, `data`, `export`,
`train`) are imported on first use, e.g. ``aw_keras.layers``. Every class that
aw_keras registers with Keras (AWConv2D, SGDL2, the FPN backbones, RetinaNet,
FasterRCNN, the export layers) is known to ``keras.saving.load_model`` after
``import aw_keras``, whether Keras is imported before or after it; loading one
imports the subpackage that defines it.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

_SUBPACKAGES = ("layers", "optimizers", "utils", "applications", "detection", "data", "export",
                "train")

# Every name aw_keras registers with keras.saving.register_keras_serializable, and
# the module whose import registers it (tests check this table against the modules).
SERIALIZABLE = {
    "aw_keras>AWConv2D": "aw_keras.layers",
    "aw_keras>SqueezeExcite": "aw_keras.layers",
    "aw_keras>CBAM": "aw_keras.layers",
    "aw_keras>SGDL2": "aw_keras.optimizers",
    "aw_keras>CropToMatch": "aw_keras.applications",
    "aw_keras>ReverseChannels": "aw_keras.applications",
    "aw_keras>FPNBackbone": "aw_keras.applications",
    "aw_keras>RetinaNet": "aw_keras.detection",
    "aw_keras>FasterRCNN": "aw_keras.detection.faster_rcnn",
    "aw_keras>AWConvExport": "aw_keras.export.layers",
    "aw_keras>Absorbed": "aw_keras.export.layers",
}


def __getattr__(name):
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"aw_keras.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'aw_keras' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBPACKAGES))


def _placeholder(registered_name, module_name):
    """A stand-in Keras finds under ``registered_name`` until ``module_name`` is
    imported: its ``from_config`` imports the module (which registers the real
    class in its place) and builds the real object."""

    def from_config(cls, config, *args, **kwargs):
        try:
            importlib.import_module(module_name)
        except ImportError as error:
            extra = {"aw_keras.detection": " (pip install 'aw_keras[detection]')",
                     "aw_keras.detection.faster_rcnn": " (pip install 'aw_keras[detection]' "
                                                       "tensorflow)",
                     "aw_keras.export": " (pip install 'aw_keras[export]')"}.get(module_name, "")
            raise ImportError(f"Loading {registered_name!r} needs {module_name}, which failed "
                              f"to import: {error}{extra}") from error
        import keras

        # The global registry itself: while a model loads, Keras looks names up in a
        # copy of it taken before the load, which still holds this placeholder.
        real = keras.saving.get_custom_objects().get(registered_name)
        if real is None or real is cls:
            raise TypeError(f"{module_name} did not register {registered_name!r}.")
        return real.from_config(config, *args, **kwargs)

    def get_config(self):  # Keras requires it of registered classes; never called
        return {}

    class_name = registered_name.split(">", 1)[1]
    return type(class_name, (), {"from_config": classmethod(from_config),
                                 "get_config": get_config,
                                 "__module__": module_name, "__qualname__": class_name})


def _register_placeholders():
    import keras

    registered = keras.saving.get_custom_objects()
    for registered_name, module_name in SERIALIZABLE.items():
        if registered_name not in registered:
            registered[registered_name] = _placeholder(registered_name, module_name)


class _LoaderThenRegister(importlib.abc.Loader):
    """Keras's own loader, plus the placeholders once ``keras`` is executed."""

    def __init__(self, loader, hook):
        self._loader, self._hook = loader, hook

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self._loader
        if self._hook in sys.meta_path:
            sys.meta_path.remove(self._hook)
        _register_placeholders()

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _KerasImportHook(importlib.abc.MetaPathFinder):
    """Registers the placeholders when ``keras`` is imported; stays in place
    until then (TensorFlow looks Keras up with find_spec before importing it)."""

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
            spec.loader = _LoaderThenRegister(spec.loader, self)
        return spec


if "keras" in sys.modules:
    _register_placeholders()
elif not any(isinstance(finder, _KerasImportHook) for finder in sys.meta_path):
    sys.meta_path.insert(0, _KerasImportHook())

"""The keras.applications ImageNet weight files, found offline, for ``weights="imagenet"``.

aw_keras ships no pretrained weights and never downloads. ``weights="imagenet"`` on
a ResNet50/101/152 or MobileNet builder means: take the keras.applications ImageNet
file of the *plain* architecture from the Keras cache (``$KERAS_HOME/models/``, by
default ``~/.keras/models/``; keras.applications puts it there the first time it
downloads it), build the plain ``keras.applications`` model with it, and convert
that model into the requested one with `aw_keras.applications.pretrained.transplant`.
A missing file is a ValueError that names the file, the directory and how to get it.

Example (after ``keras.applications.ResNet50(weights="imagenet")`` cached the file once):

>>> from aw_keras import applications
>>> model = applications.AWResNet50(weights="imagenet")   # = ResNet50 at initialisation
"""

import dataclasses
import os
import re

RESNET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
MOBILENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/"
MOBILENET_ALPHAS = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}
MOBILENET_ROWS = (128, 160, 192, 224)
KERAS_BUILDERS = {"resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152",
                  "mobilenet": "MobileNet"}

# Every file name keras.applications uses for these architectures.
_FILE_NAME = re.compile(
    r"^(resnet(50|101|152)_weights_tf_dim_ordering_tf_kernels(_notop)?"
    r"|mobilenet_(1_0|7_5|5_0|2_5)_(128|160|192|224)_tf(_no_top)?)\.h5$")


def is_imagenet_file(path):
    """True when ``path`` is named like a keras.applications ImageNet weights file
    of ResNet50/101/152 or MobileNet (e.g. ``resnet50_weights_tf_dim_ordering_tf_kernels.h5``)."""
    return isinstance(path, (str, os.PathLike)) and bool(
        _FILE_NAME.match(os.path.basename(os.fspath(path))))


def keras_cache_dir():
    """Where keras.applications caches downloaded weights: ``$KERAS_HOME/models`` when
    KERAS_HOME is set, else ``~/.keras/models`` (``/tmp/.keras/models`` when the home
    directory is not writable, as Keras does). Read at call time."""
    home = os.environ.get("KERAS_HOME")
    if home:
        return os.path.join(os.path.expanduser(home), "models")
    base = os.path.expanduser("~")
    if not os.access(base, os.W_OK):
        base = "/tmp"
    return os.path.join(base, ".keras", "models")


@dataclasses.dataclass
class ImageNetSource:
    """The plain keras.applications model whose ImageNet weights a builder converts.

    ``architecture`` is "resnet50", "resnet101", "resnet152" or "mobilenet"; the
    other fields are the builder's resolved arguments. ``path``: an explicit file
    (named as keras.applications names it), else the Keras cache is searched.
    """

    architecture: str
    include_top: bool
    input_shape: tuple
    pooling: str = None
    classes: int = 1000
    classifier_activation: str = "softmax"
    alpha: float = 1.0
    depth_multiplier: int = 1
    dropout: float = 1e-3
    path: str = None

    def __post_init__(self):
        if self.architecture not in KERAS_BUILDERS:
            raise ValueError(
                f"No keras.applications ImageNet weights exist for {self.architecture!r}; "
                f"`weights='imagenet'` works for {sorted(KERAS_BUILDERS)} (and their SE / "
                "CBAM / AW variants). Pass `weights=None` or the path to a weights file.")
        self.input_shape = tuple(self.input_shape)
        if self.input_shape[-1] != 3:
            raise ValueError(
                "`weights='imagenet'` needs 3 input channels (RGB, as the keras.applications "
                f"ImageNet models), got input_shape={self.input_shape}.")
        if self.include_top and self.classes != 1000:
            raise ValueError(
                "`weights='imagenet'` with `include_top=True` needs `classes=1000` (the "
                f"ImageNet classifier), got classes={self.classes}. Use include_top=False "
                "and a head of your own for another number of classes.")
        if self.architecture == "mobilenet":
            if self.alpha not in MOBILENET_ALPHAS:
                raise ValueError(
                    "`weights='imagenet'` for MobileNet needs `alpha` in "
                    f"{sorted(MOBILENET_ALPHAS)}, got alpha={self.alpha!r}.")
            if self.depth_multiplier != 1:
                raise ValueError(
                    "`weights='imagenet'` for MobileNet needs `depth_multiplier=1`, got "
                    f"{self.depth_multiplier!r}.")

    # ------------------------------------------------------------------ files

    def rows(self):
        """MobileNet's file resolution: the input size if square and one of 128, 160,
        192, 224, else 224 (keras.applications' rule)."""
        height, width = self.input_shape[:2]
        return height if height == width and height in MOBILENET_ROWS else 224

    def file_name(self):
        if self.architecture == "mobilenet":
            top = "" if self.include_top else "_no_top"
            return f"mobilenet_{MOBILENET_ALPHAS[self.alpha]}_{self.rows()}_tf{top}.h5"
        top = "" if self.include_top else "_notop"
        return f"{self.architecture}_weights_tf_dim_ordering_tf_kernels{top}.h5"

    def accepted_file_names(self):
        """File names whose weights fit this model (MobileNet: any resolution)."""
        if self.architecture != "mobilenet":
            return [self.file_name()]
        top = "" if self.include_top else "_no_top"
        return [f"mobilenet_{MOBILENET_ALPHAS[self.alpha]}_{rows}_tf{top}.h5"
                for rows in MOBILENET_ROWS]

    def url(self):
        base = MOBILENET_URL if self.architecture == "mobilenet" else RESNET_URL
        return base + self.file_name()

    def keras_call(self):
        """The keras.applications call that downloads and caches the file."""
        args = ["weights='imagenet'"]
        if not self.include_top:
            args.append("include_top=False")
        if self.architecture == "mobilenet":
            args += [f"alpha={self.alpha}", f"input_shape=({self.rows()}, {self.rows()}, 3)"]
        return f"keras.applications.{KERAS_BUILDERS[self.architecture]}({', '.join(args)})"

    def resolve_path(self):
        """The weights file: ``path`` if given (checked by name), else the cached file.

        Raises:
            ValueError: the file is not there (the message says which file to put
                where, and how), or ``path`` is named for another architecture.
        """
        if self.path is not None:
            path = os.fspath(self.path)
            name = os.path.basename(path)
            if name not in self.accepted_file_names():
                raise ValueError(
                    f"`weights={path!r}` is a keras.applications ImageNet file for another "
                    f"model; this {self.architecture} (include_top={self.include_top}"
                    + (f", alpha={self.alpha}" if self.architecture == "mobilenet" else "")
                    + f") needs {self.file_name()!r}.")
            if not os.path.isfile(path):
                raise ValueError(f"`weights` file {path!r} does not exist.")
            return path
        directory = keras_cache_dir()
        for name in self.accepted_file_names():
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                return path
        raise ValueError(
            f"`weights='imagenet'` needs the keras.applications pretrained ImageNet weights "
            f"file {self.file_name()!r} in {directory!r} (the Keras cache: $KERAS_HOME/models "
            "when KERAS_HOME is set, else ~/.keras/models), and it is not there. aw_keras "
            f"never downloads. Put it there with `python -c \"import keras; "
            f"{self.keras_call()}\"` (keras.applications downloads and caches it) or download "
            f"{self.url()} into that directory, or pass the file's path as `weights=`.")

    # ------------------------------------------------------------------ model

    def build_plain(self):
        """The plain keras.applications model loaded with the ImageNet file."""
        import keras

        path = self.resolve_path()
        builder = getattr(keras.applications, KERAS_BUILDERS[self.architecture])
        kwargs = dict(include_top=self.include_top, weights=path, input_shape=self.input_shape,
                      pooling=self.pooling, classes=self.classes,
                      classifier_activation=self.classifier_activation)
        if self.architecture == "mobilenet":
            kwargs.update(alpha=self.alpha, depth_multiplier=self.depth_multiplier,
                          dropout=self.dropout)
        try:
            return builder(**kwargs)
        except Exception as error:  # noqa: BLE001 - re-raised with the file named
            arguments = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "weights")
            raise ValueError(
                f"Could not load {path!r} into keras.applications."
                f"{KERAS_BUILDERS[self.architecture]}({arguments}): "
                f"{type(error).__name__}: {error}") from error

"""The keras.applications ImageNet weight files for ``weights="imagenet"``.

aw_keras ships no pretrained weights of its own. ``weights="imagenet"`` on a
ResNet50/101/152 or MobileNet builder means: take the keras.applications ImageNet
file of the *plain* architecture, build the plain ``keras.applications`` model with
it, and convert that model into the requested one with
`aw_keras.applications.pretrained.transplant`. The file is found as
keras.applications finds it: in the Keras cache (``$KERAS_HOME/models/``, by default
``~/.keras/models/``) if it is there (no network), else downloaded once into that
cache with ``keras.utils.get_file`` from keras.applications' URL, checked against
keras.applications' published hash (ResNets; keras.applications publishes none for
MobileNet). An explicit path to the file works offline too. A failed download is a
ValueError that names the file, the URL, the directory and the offline ways to
provide it.

Example:

>>> from aw_keras import applications
>>> model = applications.AWResNet50(weights="imagenet")   # = ResNet50 at initialisation
"""

import dataclasses
import os
import re

from aw_keras.utils import cache

RESNET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
MOBILENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/"
# keras.applications' MD5 hashes of the ResNet files (keras/src/applications/resnet.py):
# (with the classifier, without).
RESNET_HASHES = {
    "resnet50": ("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
    "resnet101": ("f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21"),
    "resnet152": ("100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
}
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
    (named as keras.applications names it), else the Keras cache is searched, else
    the file is downloaded into it (`download`).
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
                "and a head of your own for another number of classes, or "
                "aw_keras.applications.from_pretrained('imagenet', MODEL_NAME, "
                f"classes={self.classes}) for the ImageNet body with a freshly initialised "
                "classifier.")
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

    def file_hash(self):
        """keras.applications' hash of `file_name` (None for MobileNet: none is published)."""
        if self.architecture == "mobilenet":
            return None
        return RESNET_HASHES[self.architecture][0 if self.include_top else 1]

    def download(self):
        """Downloads `file_name` into the Keras cache as keras.applications does
        (``keras.utils.get_file`` with its URL, ``cache_subdir="models"`` and its
        hash); returns the path. Raises ValueError (naming the file, the URL, the
        directory and the offline ways) when the download or the hash check fails."""
        import keras

        directory = keras_cache_dir()
        try:
            return keras.utils.get_file(
                self.file_name(), self.url(), cache_subdir="models",
                file_hash=self.file_hash(), cache_dir=os.path.dirname(directory))
        except Exception as error:  # noqa: BLE001 - re-raised with the offline ways
            raise ValueError(
                f"`weights='imagenet'` needs the keras.applications pretrained ImageNet "
                f"weights file {self.file_name()!r}. It is not in {directory!r} (the Keras "
                "cache: $KERAS_HOME/models when KERAS_HOME is set, else ~/.keras/models), "
                f"and downloading it from {self.url()} failed ({type(error).__name__}: "
                f"{error}). On a machine with network, `python -c \"import keras; "
                f"{self.keras_call()}\"` puts it into that cache; copy it into {directory!r} "
                "here, or pass the file's path as `weights=`.") from error

    def keras_call(self):
        """The keras.applications call that downloads and caches the file."""
        args = ["weights='imagenet'"]
        if not self.include_top:
            args.append("include_top=False")
        if self.architecture == "mobilenet":
            args += [f"alpha={self.alpha}", f"input_shape=({self.rows()}, {self.rows()}, 3)"]
        return f"keras.applications.{KERAS_BUILDERS[self.architecture]}({', '.join(args)})"

    def resolve_path(self):
        """The weights file: ``path`` if given (checked by name), else the cached
        file, else the file `download` fetches into the cache.

        Raises:
            ValueError: ``path`` does not exist or is named for another
                architecture, or the file is not cached and cannot be downloaded
                (the message says which file to put where, and how).
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
        downloaded = getattr(self, "_downloaded", None)
        if downloaded is not None and os.path.isfile(downloaded):
            return downloaded
        directory = keras_cache_dir()
        # Under the entry's lock (`aw_keras.utils.cache`): keras.utils.get_file writes
        # straight to the cached path, so a file another process is downloading is
        # neither read half-written nor downloaded twice.
        with cache.entry_lock(os.path.join(directory, self.file_name())):
            for name in self.accepted_file_names():
                path = os.path.join(directory, name)
                if os.path.isfile(path):
                    return path
            self._downloaded = self.download()
        return self._downloaded

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

"""Dataset sources: where images and labels come from, before any pipeline.

A source gives, per split, either in-memory uint8 arrays, a list of image files,
or a tensorflow-datasets split; `aw_keras.data.pipeline` turns it into `tf.data`.

Dataset specs understood by `get_source`:

- ``fashion_mnist`` (the offline default): real Fashion-MNIST (70k 28x28 grey
  images, MIT) from the Debian package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``), ``$AW_KERAS_FASHION_MNIST_DIR``, or
  Keras's cache (``$KERAS_HOME/datasets/fashion-mnist``, default ``~/.keras``).
  The last 5,000 training images are held out as the validation split.
- ``folder:PATH`` (or an existing directory): ``PATH/<split>/<class>/*.png|jpg``
  with splits ``train`` and ``val``/``validation`` (and optionally ``test``).
- ``tfds:NAME`` with ``data_dir``: an already prepared tensorflow-datasets
  dataset. Nothing is downloaded: prepare it first with
  ``tfds build NAME --data_dir DIR`` on a machine with network access.

Errors are `DataError`s. Their messages name the Python argument at fault in
single backticks, e.g. "`data_dir` '/x' does not exist", so that a command-line
tool can write its own option name there.
"""

import dataclasses
import gzip
import logging
import os

import numpy as np

FASHION_MNIST_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_VALIDATION = 5000
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
HOW_TO_GET_DATA = (
    "To get data: install the offline Fashion-MNIST with "
    "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; files land in "
    "/usr/share/datasets/fashion-mnist) or copy the four *-idx*-ubyte.gz files into "
    "~/.keras/datasets/fashion-mnist (or $AW_KERAS_FASHION_MNIST_DIR); or use the "
    "dataset 'folder:PATH' with PATH/train/<class>/*.png and PATH/val/<class>/*.png; "
    "or 'tfds:NAME' with `data_dir` DIR for a dataset prepared with "
    "`tfds build NAME --data_dir DIR`."
)


class DataError(ValueError):
    """A dataset spec that cannot be served; the message says how to fix it."""


@dataclasses.dataclass
class Split:
    """One split. Exactly one of ``images`` (uint8 N,H,W,C), ``files`` (paths) or
    ``tfds_split`` is set; ``labels`` is int32 (N,) except for tfds."""

    num_examples: int
    labels: np.ndarray = None
    images: np.ndarray = None
    files: np.ndarray = None
    tfds_split: str = None

    def take(self, count):
        """The first ``count`` examples (all when ``count`` is None)."""
        if count is None or count >= self.num_examples:
            return self
        if self.tfds_split is not None:
            return dataclasses.replace(self, num_examples=count,
                                       tfds_split=f"{self.tfds_split}[:{count}]")
        return Split(
            num_examples=count,
            labels=self.labels[:count],
            images=None if self.images is None else self.images[:count],
            files=None if self.files is None else self.files[:count],
        )


@dataclasses.dataclass
class Source:
    """A dataset: splits ``train``, ``validation``, ``test`` plus metadata.

    ``image_shape`` is (H, W, C) when every image has that shape, else
    (None, None, C). ``mean``/``std`` are per-channel statistics on the 0-1 scale
    (None: use the preset's defaults).
    """

    name: str
    splits: dict
    num_classes: int
    image_shape: tuple
    class_names: tuple = ()
    mean: tuple = None
    std: tuple = None
    tfds_builder: object = None
    # The test split is the validation split (the dataset has no test split of its
    # own): a model chosen on validation is then scored on the images it was chosen on.
    test_is_validation: bool = False
    # Files left out because they are not images: {path: reason}.
    skipped_files: dict = dataclasses.field(default_factory=dict)

    def label_names(self):
        """The name of each label 0..num_classes-1 (``str(i)`` where unknown)."""
        names = tuple(self.class_names or ())
        if len(names) == self.num_classes:
            return [str(n) for n in names]
        return [str(i) for i in range(self.num_classes)]

    @property
    def channels(self):
        return self.image_shape[-1]

    def split(self, name):
        if name not in self.splits:
            raise DataError(f"Dataset {self.name!r} has no {name!r} split "
                            f"(it has {sorted(self.splits)}).")
        return self.splits[name]


# ------------------------------------------------------------------ Fashion-MNIST


def fashion_mnist_dirs():
    """Directories searched for the Fashion-MNIST idx files, in order."""
    dirs = []
    if os.environ.get("AW_KERAS_FASHION_MNIST_DIR"):
        dirs.append(os.environ["AW_KERAS_FASHION_MNIST_DIR"])
    dirs.append("/usr/share/datasets/fashion-mnist")
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    dirs.append(os.path.join(keras_home, "datasets", "fashion-mnist"))
    return dirs


def find_fashion_mnist():
    """The first directory holding all four files, or None."""
    names = [f for pair in FASHION_MNIST_FILES.values() for f in pair]
    for directory in fashion_mnist_dirs():
        if all(os.path.isfile(os.path.join(directory, n)) for n in names):
            return directory
    return None


def _read_idx(path, header_bytes, expected_magic):
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:
        raise DataError(f"Cannot read {path}: {error}. The file is damaged; reinstall it. "
                        + HOW_TO_GET_DATA) from error
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path} is not an idx file (magic {magic}, expected {expected_magic}).")
    return np.frombuffer(data, dtype=np.uint8, offset=header_bytes)


def load_fashion_mnist(directory=None):
    """Fashion-MNIST as a `Source` (train 55k, validation 5k, test 10k), from
    ``directory`` or, when None, the first of `fashion_mnist_dirs` holding it."""
    if directory is None:
        directory = find_fashion_mnist()
        if directory is None:
            raise DataError(
                "Fashion-MNIST was not found in any of "
                f"{fashion_mnist_dirs()}. " + HOW_TO_GET_DATA
            )
    names = [f for pair in FASHION_MNIST_FILES.values() for f in pair]
    missing = [n for n in names if not os.path.isfile(os.path.join(directory, n))]
    if missing:
        raise DataError(f"The Fashion-MNIST files {missing} are not in {directory!r}. "
                        + HOW_TO_GET_DATA)
    arrays = {}
    for split, (images_name, labels_name) in FASHION_MNIST_FILES.items():
        images = _read_idx(os.path.join(directory, images_name), 16, 2051)
        labels = _read_idx(os.path.join(directory, labels_name), 8, 2049)
        if images.size != labels.size * 28 * 28:
            raise DataError(f"{directory}: {split} images and labels disagree in count "
                            "(truncated file?). " + HOW_TO_GET_DATA)
        arrays[split] = (images.reshape(-1, 28, 28, 1), labels.astype(np.int32))
    train_x, train_y = arrays["train"]
    # The last 5,000 of the 60,000 training images; a smaller copy holds out a sixth.
    cut = len(train_y) - min(FASHION_MNIST_VALIDATION, len(train_y) // 6)
    splits = {
        "train": Split(cut, labels=train_y[:cut], images=train_x[:cut]),
        "validation": Split(len(train_y) - cut, labels=train_y[cut:], images=train_x[cut:]),
        "test": Split(len(arrays["test"][1]), labels=arrays["test"][1], images=arrays["test"][0]),
    }
    return Source("fashion_mnist", splits, 10, (28, 28, 1), FASHION_MNIST_CLASSES,
                  mean=(0.2860,), std=(0.3530,))


# ------------------------------------------------------------------ image folders

_SPLIT_DIRS = {"train": ("train",), "validation": ("val", "validation", "valid"),
               "test": ("test",)}


def load_image_folder(root):
    """``root/<split>/<class>/*.png|jpg`` as a `Source` of files.

    Class indices follow the sorted class-directory names of the train split.
    Without a test split, test is the validation split (``test_is_validation``).
    A file named like an image whose content is not a PNG, JPEG, GIF or BMP image
    is left out and listed in ``skipped_files`` (with a warning naming it); a class
    directory of the train split without images is refused (`DataError` naming it).
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataError(f"Image folder {root!r} does not exist. Expected "
                        "ROOT/train/<class>/*.png and ROOT/val/<class>/*.png.")
    found = {}
    for split, candidates in _SPLIT_DIRS.items():
        for candidate in candidates:
            if os.path.isdir(os.path.join(root, candidate)):
                found[split] = os.path.join(root, candidate)
                break
    if "train" not in found or "validation" not in found:
        raise DataError(
            f"Image folder {root!r} needs the subdirectories train/ and val/ (or "
            f"validation/), each with one directory per class; found {sorted(os.listdir(root))}."
        )
    class_names = tuple(sorted(
        d for d in os.listdir(found["train"]) if os.path.isdir(os.path.join(found["train"], d))
    ))
    if len(class_names) < 2:
        raise DataError(f"{found['train']!r} must hold at least two class directories, "
                        f"found {list(class_names)}.")
    index = {name: i for i, name in enumerate(class_names)}
    splits = {}
    skipped = {}
    for split, directory in found.items():
        files, labels = [], []
        for name in sorted(os.listdir(directory)):
            class_dir = os.path.join(directory, name)
            if not os.path.isdir(class_dir):
                continue
            if name not in index:
                raise DataError(f"Class directory {class_dir!r} is not a class of the "
                                f"train split {list(class_names)}.")
            count = 0
            for file in sorted(os.listdir(class_dir)):
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    path = os.path.join(class_dir, file)
                    reason = _not_an_image(path)
                    if reason:
                        skipped[path] = reason
                        continue
                    files.append(path)
                    labels.append(index[name])
                    count += 1
            if split == "train" and not count:
                raise DataError(
                    f"Class directory {class_dir!r} holds no *.png/*.jpg images"
                    + (f" ({sum(1 for p in skipped if p.startswith(class_dir + os.sep))} "
                       "file(s) that are not images were left out)" if skipped else "")
                    + "; it would be a class without training examples. Add images to "
                    "it or remove it.")
        if not files:
            raise DataError(f"No *.png/*.jpg images under {directory!r}.")
        splits[split] = Split(len(files), labels=np.asarray(labels, np.int32),
                              files=np.asarray(files))
    if skipped:
        shown = ", ".join(f"{path!r} ({reason})" for path, reason in
                          list(skipped.items())[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        logging.getLogger("aw_keras.data").warning(
            "Image folder %r: left out %d file(s) that are not images: %s%s.",
            root, len(skipped), shown, more)
    test_is_validation = "test" not in splits
    splits.setdefault("test", splits["validation"])
    image_shape = _probe_image_shape(splits["train"].files[0])
    return Source(f"folder:{root}", splits, len(class_names), image_shape, class_names,
                  test_is_validation=test_is_validation, skipped_files=skipped)


def _not_an_image(path):
    """Why ``path`` is not a PNG, JPEG, GIF or BMP file (from its first bytes), or
    None when it is one."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as error:
        return f"unreadable: {error.strerror or error}"
    if not head:
        return "empty file"
    if (head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff")
            or head[:6] in (b"GIF87a", b"GIF89a") or head.startswith(b"BM")):
        return None
    return "not a PNG/JPEG/GIF/BMP image"


def _probe_image_shape(path):
    import tensorflow as tf

    try:
        image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    except Exception as error:  # noqa: BLE001 - tf raises several types here
        raise DataError(f"Cannot decode image {path!r}: {error}") from error
    height, width, channels = image.shape
    channels = 1 if channels == 1 else 3
    return (int(height), int(width), channels)


# ------------------------------------------------------------ tensorflow-datasets


def load_tfds(name, data_dir=None):
    """A prepared tensorflow-datasets dataset as a `Source`; never downloads.

    Split sizes come from the builder's metadata (``builder.info.splits``). A
    builder without split metadata is asked for the splits ``train``,
    ``validation`` and ``test`` with ``builder.as_dataset`` and their examples are
    counted; those it cannot serve are absent.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise DataError("'tfds:NAME' datasets need tensorflow-datasets: "
                        "pip install 'aw_keras[data]'.") from error
    if data_dir is not None and not os.path.isdir(data_dir):
        raise DataError(f"`data_dir` {data_dir!r} does not exist. " + HOW_TO_GET_DATA)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # noqa: BLE001 - tfds raises DatasetNotFoundError & co
        raise DataError(f"Unknown tensorflow-datasets name {name!r} ({_first_line(error)}). "
                        "See `tfds.list_builders()`.") from error
    info = builder.info
    available, failure = _tfds_split_sizes(builder)
    if not available:
        raise DataError(
            f"tensorflow-datasets {name!r} is not prepared in "
            f"{data_dir or '~/tensorflow_datasets'} ({failure}); nothing is downloaded. "
            f"Run `tfds build {name} --data_dir DIR` where there is network, then pass DIR "
            "as `data_dir`. " + HOW_TO_GET_DATA
        )
    if not info.supervised_keys:
        raise DataError(f"tensorflow-datasets {name!r} has no (image, label) supervised keys.")
    image_key, label_key = info.supervised_keys
    num_classes = info.features[label_key].num_classes
    image_shape = tuple(info.features[image_key].shape)
    if "train" not in available:
        raise DataError(f"tensorflow-datasets {name!r} has no 'train' split ({sorted(available)}).")
    splits = {"train": Split(available["train"], tfds_split="train")}
    for split, candidates in (("validation", ("validation", "test")), ("test", ("test", "validation"))):
        for candidate in candidates:
            if candidate in available:
                splits[split] = Split(available[candidate], tfds_split=candidate)
                break
    if "validation" not in splits:
        raise DataError(f"tensorflow-datasets {name!r} has no validation or test split.")
    names = tuple(getattr(info.features[label_key], "names", ()) or ())
    return Source(f"tfds:{name}", splits, num_classes, image_shape, names, tfds_builder=builder,
                  test_is_validation=(splits["test"].tfds_split
                                      == splits["validation"].tfds_split))


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _tfds_split_sizes(builder):
    """({split: number of examples} of the splits ``builder`` serves, why none
    could be read or None)."""
    import tensorflow as tf

    sizes = {split: info.num_examples for split, info in dict(builder.info.splits).items()}
    if sizes:
        return sizes, None
    failure = None
    for split in ("train", "validation", "test"):
        try:
            dataset = builder.as_dataset(split=split, shuffle_files=False)
        except Exception as error:  # noqa: BLE001 - tfds raises AssertionError, ValueError & co
            failure = failure or _first_line(error)
            continue
        count = int(dataset.cardinality())
        if count == tf.data.INFINITE_CARDINALITY:
            raise DataError(f"The {split!r} split of tensorflow-datasets {builder.name!r} "
                            "is infinite.")
        if count == tf.data.UNKNOWN_CARDINALITY:
            count = int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
        sizes[split] = count
    return sizes, failure


# ------------------------------------------------------------------------ entry


def get_source(spec, data_dir=None):
    """A `Source` from a dataset spec (see the module docstring); ``data_dir`` is
    the Fashion-MNIST directory or the tensorflow-datasets ``data_dir``."""
    if not isinstance(spec, str) or not spec:
        raise DataError(f"`spec` must be a non-empty string, got {spec!r}.")
    if data_dir is not None and not os.path.isdir(data_dir):
        raise DataError(f"`data_dir` {data_dir!r} does not exist. " + HOW_TO_GET_DATA)
    lowered = spec.lower()
    if lowered in ("fashion_mnist", "fashion-mnist"):
        return load_fashion_mnist(data_dir)
    if lowered.startswith("tfds:"):
        name = spec[5:]
        if not name:
            raise DataError(f"`spec` {spec!r} needs a dataset name after 'tfds:', "
                            "e.g. 'tfds:cifar10'.")
        return load_tfds(name, data_dir)
    if lowered.startswith("folder:"):
        return load_image_folder(spec[7:])
    if os.path.isdir(spec):
        return load_image_folder(spec)
    raise DataError(
        f"Unknown dataset {spec!r}. Use 'fashion_mnist' (offline default), "
        "'folder:PATH' (PATH/train/<class>/*.png, PATH/val/<class>/*.png) or "
        "'tfds:NAME' with `data_dir`. " + HOW_TO_GET_DATA
    )

"""An offline detection dataset: real Fashion-MNIST objects pasted on textured canvases.

Each canvas (RGB, ``image_size`` x ``image_size``) holds 1 to ``max_objects``
Fashion-MNIST images, each scaled to a random size in ``object_sizes``, tinted,
and pasted at a random position over a low-contrast background of stripes and
noise. Objects may overlap (a later object hides part of an earlier one, which
keeps most of its pixels visible); an object's box is the tight box of its
visible pixels. The 10 categories have ids 1..10 and Fashion-MNIST's class names.

The set is written in the COCO layout that `aw_keras.data.coco` reads::

    DIR/annotations/instances_train.json   DIR/train/000000.png ...
    DIR/annotations/instances_val.json     DIR/val/000000.png ...

Train canvases use Fashion-MNIST training images and val canvases its test
images, so no object appears in both. The files are a pure function of the
arguments (same arguments, same bytes). Typical use::

    from aw_keras.data import coco, fashion_detection

    directory = fashion_detection.fashion_detection_dir(seed=0)   # cached
    train = coco.load_coco(directory, "train")
    val = coco.load_coco(directory, "val")

The Fashion-MNIST files are found as `aw_keras.data.load_fashion_mnist` finds
them (the Debian package ``dataset-fashion-mnist`` puts them in
``/usr/share/datasets/fashion-mnist``).
"""

import json
import os
import struct
import zlib

import numpy as np

from aw_keras.data.sources import FASHION_MNIST_CLASSES
from aw_keras.data.sources import DataError
from aw_keras.data.sources import load_fashion_mnist
from aw_keras.utils import cache

# Bump when the generated pixels or annotations change, so caches are rebuilt.
GENERATOR_VERSION = 1
CACHE_ENV = cache.CACHE_ENV
CATEGORIES = tuple({"id": i + 1, "name": name, "supercategory": "fashion"}
                   for i, name in enumerate(FASHION_MNIST_CLASSES))
# A resized Fashion-MNIST pixel belongs to the object when it is above this value.
MASK_THRESHOLD = 16
# A pasted object may hide at most this fraction of an earlier object's pixels.
MAX_HIDDEN_FRACTION = 0.4
PLACEMENT_ATTEMPTS = 20
_SPLITS = (("train", "train", 0), ("val", "test", 1))  # (split, Fashion-MNIST split, stream)


def default_cache_dir():
    """``$AW_KERAS_CACHE_DIR/fashion_detection``, else
    ``$XDG_CACHE_HOME/aw_keras/fashion_detection`` (``~/.cache`` when unset)."""
    return os.path.join(cache.cache_root(), "fashion_detection")


def _object_sizes(object_sizes, image_size):
    """``object_sizes``, or by default 20-64 pixels scaled by ``image_size`` / 128."""
    if object_sizes is None:
        return (max(8, round(image_size * 20 / 128)), max(8, round(image_size * 64 / 128)))
    return tuple(object_sizes)


def _check_arguments(train_images, val_images, image_size, seed, object_sizes, max_objects):
    for name, value in (("train_images", train_images), ("val_images", val_images),
                        ("image_size", image_size), ("max_objects", max_objects)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}.")
    if image_size < 16:
        raise ValueError(f"`image_size` must be at least 16, got {image_size}.")
    if (len(object_sizes) != 2 or not all(isinstance(v, int) for v in object_sizes)
            or not 8 <= object_sizes[0] <= object_sizes[1] or object_sizes[1] > image_size):
        raise ValueError(f"`object_sizes` must be (smallest, largest) with 8 <= smallest <= "
                         f"largest <= `image_size` ({image_size}), got {object_sizes!r}.")


# ----------------------------------------------------------------------- drawing


def _resize(image, size):
    """Bilinear resize of a square 2-D uint8 image to ``size`` x ``size`` (float32)."""
    n = image.shape[0]
    coords = np.clip((np.arange(size) + 0.5) * (n / size) - 0.5, 0, n - 1)
    low = np.floor(coords).astype(np.int64)
    high = np.minimum(low + 1, n - 1)
    frac = (coords - low).astype(np.float32)
    source = image.astype(np.float32)
    rows = source[low] * (1 - frac)[:, None] + source[high] * frac[:, None]
    return rows[:, low] * (1 - frac)[None, :] + rows[:, high] * frac[None, :]


def _background(rng, size):
    """Low-contrast stripes at a random angle and period, plus noise and a tint."""
    level = rng.uniform(30, 90)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6, 24)
    amplitude = rng.uniform(4, 14)
    tint = rng.uniform(0.85, 1.15, size=3)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = (x * np.cos(angle) + y * np.sin(angle)) * (2 * np.pi / period)
    grey = level + amplitude * np.sin(phase) + rng.normal(0, 5, (size, size))
    return np.clip(grey[..., None] * tint, 0, 255).astype(np.float32)


def render_canvases(images, labels, count, rng, image_size=128, object_sizes=None,
                    max_objects=4):
    """Yield ``count`` canvases drawn from the uint8 (N, 28, 28[, 1]) ``images``
    and their int ``labels`` with the NumPy generator ``rng``, each as
    ``(canvas uint8 (S, S, 3), objects, owner)``: ``objects`` a list of dicts
    ``label`` (0..9), ``box`` ``[x1, y1, x2, y2]`` (ints, exclusive ends) and
    ``area`` (visible pixels); ``owner`` int32 (S, S) the index into ``objects``
    of the object visible at each pixel, -1 for background. ``object_sizes``:
    as in `write_fashion_detection`."""
    object_sizes = _object_sizes(object_sizes, image_size)
    images = np.asarray(images).reshape(len(images), 28, 28)
    order = rng.permutation(len(images))
    cursor = 0
    for _ in range(count):
        canvas = _background(rng, image_size)
        owner = np.full((image_size, image_size), -1, np.int32)
        totals, object_labels = [], []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            index = order[cursor % len(order)]
            cursor += 1
            size = int(rng.integers(object_sizes[0], object_sizes[1] + 1))
            pixels = _resize(images[index], size)
            mask = pixels > MASK_THRESHOLD
            color = pixels[..., None] * rng.uniform(0.55, 1.0, size=3)
            for _ in range(PLACEMENT_ATTEMPTS):
                y, x = (int(v) for v in rng.integers(0, image_size - size + 1, size=2))
                below = owner[y:y + size, x:x + size][mask]
                hidden = np.bincount(below[below >= 0], minlength=len(totals))
                if np.all(hidden <= MAX_HIDDEN_FRACTION * np.asarray(totals, np.float64)):
                    break
            else:
                continue  # no placement keeps the earlier objects visible enough
            if not mask.any():
                continue
            canvas[y:y + size, x:x + size][mask] = color[mask]
            owner[y:y + size, x:x + size][mask] = len(totals)
            totals.append(int(mask.sum()))
            object_labels.append(int(labels[index]))
        objects = []
        for k, label in enumerate(object_labels):
            ys, xs = np.nonzero(owner == k)
            objects.append({"label": label, "area": int(len(ys)),
                            "box": [int(xs.min()), int(ys.min()),
                                    int(xs.max()) + 1, int(ys.max()) + 1]})
        yield np.clip(np.round(canvas), 0, 255).astype(np.uint8), objects, owner


def png_bytes(image):
    """A uint8 (H, W, 3) image as PNG bytes (zlib level 1, no metadata)."""
    height, width, _ = image.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8),
                           np.ascontiguousarray(image).reshape(height, width * 3)], axis=1)

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)) + chunk(b"IEND", b""))


# ------------------------------------------------------------------------ writing


def _write_split(root, split, images, labels, count, rng, image_size, object_sizes,
                 max_objects, info):
    folder = os.path.join(root, split)
    os.makedirs(folder)
    entries, annotations = [], []
    canvases = render_canvases(images, labels, count, rng, image_size, object_sizes,
                               max_objects)
    for number, (canvas, objects, _) in enumerate(canvases):
        file_name = f"{number:06d}.png"
        with open(os.path.join(folder, file_name), "wb") as handle:
            handle.write(png_bytes(canvas))
        entries.append({"id": number + 1, "file_name": file_name, "width": image_size,
                        "height": image_size})
        for item in objects:
            x1, y1, x2, y2 = item["box"]
            annotations.append({
                "id": len(annotations) + 1, "image_id": number + 1,
                "category_id": item["label"] + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": item["area"], "iscrowd": 0,
            })
    content = {"info": info, "images": entries, "annotations": annotations,
               "categories": [dict(c) for c in CATEGORIES]}
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as handle:
        json.dump(content, handle, sort_keys=True, separators=(",", ":"))


def _has_splits(directory):
    return all(os.path.isfile(os.path.join(directory, "annotations", f"instances_{s}.json"))
               and os.path.isdir(os.path.join(directory, s)) for s, _, _ in _SPLITS)


def _complete_check(key):
    """Complete: the cache marker for ``key``, or (a set written before markers
    existed, always by an atomic rename) no marker and both splits present."""
    def check(directory):
        if cache.is_complete(directory, key):
            return True
        return (os.path.isdir(directory) and _has_splits(directory)
                and not os.path.exists(os.path.join(directory, cache.MARKER)))
    return check


def _write(directory, train_images, val_images, image_size, seed, object_sizes,
           max_objects, fashion_mnist_dir):
    """Generate the set into ``directory`` through `aw_keras.utils.cache`
    (locked, built in a temporary sibling, renamed when complete)."""
    info = {"description": "Fashion-MNIST objects on textured canvases (aw_keras)",
            "generator_version": GENERATOR_VERSION, "seed": seed,
            "image_size": image_size, "object_sizes": list(object_sizes),
            "max_objects": max_objects}
    counts = {"train": train_images, "val": val_images}
    key = dict(info, train_images=train_images, val_images=val_images)
    del key["description"]

    def build(temp):
        source = load_fashion_mnist(fashion_mnist_dir)
        os.makedirs(temp)
        for split, source_split, stream in _SPLITS:
            part = source.split(source_split)
            rng = np.random.default_rng([seed, stream])
            _write_split(temp, split, part.images, part.labels, counts[split], rng,
                         image_size, object_sizes, max_objects, info)

    return cache.get_or_build(directory, build, key=key, complete_check=_complete_check(key))


def write_fashion_detection(directory, train_images=512, val_images=128, image_size=128,
                            seed=0, object_sizes=None, max_objects=4,
                            fashion_mnist_dir=None):
    """Generate the dataset into ``directory`` (which must not exist, or be empty)
    and return its path.

    ``train_images``/``val_images`` canvases of ``image_size`` pixels square, each
    with 1 to ``max_objects`` objects whose scaled size is drawn from
    ``object_sizes`` (smallest, largest) in pixels (default: 20 to 64 for 128-pixel
    canvases, in proportion for other sizes). ``fashion_mnist_dir``: where
    the Fashion-MNIST files are (default: found as `load_fashion_mnist` finds
    them). The files are written into a temporary sibling directory that is
    renamed to ``directory`` when complete (`aw_keras.utils.cache.get_or_build`),
    so ``directory`` only ever appears complete, and processes that write the
    same set into the same ``directory`` at once all return it, written once.
    """
    object_sizes = _object_sizes(object_sizes, image_size)
    _check_arguments(train_images, val_images, image_size, seed, object_sizes, max_objects)
    directory = os.path.abspath(os.fspath(directory))
    if os.path.isdir(directory) and os.listdir(directory):
        raise DataError(f"`directory` {directory!r} already exists and is not empty; "
                        "choose a new directory or delete it.")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise DataError(f"`directory` {directory!r} exists and is not a directory.")
    try:
        return _write(directory, train_images, val_images, image_size, seed, object_sizes,
                      max_objects, fashion_mnist_dir)
    except cache.CacheEntryError as error:  # another process wrote something else there
        raise DataError(f"`directory` {directory!r} already exists and is not empty; "
                        "choose a new directory or delete it.") from error


def fashion_detection_dir(seed=0, train_images=512, val_images=128, image_size=128,
                          cache_dir=None, fashion_mnist_dir=None):
    """The directory of the dataset for these arguments, generated on first use.

    It is ``<cache_dir>/v<version>-seed<seed>-train<N>-val<M>-size<S>``, with
    ``cache_dir`` defaulting to `default_cache_dir` (``$AW_KERAS_CACHE_DIR`` moves
    it). A directory of that name exists only complete (see
    `write_fashion_detection`), so a generation that was interrupted is
    redone, never read. Any number of processes may ask for the same set at
    once: one generates it, the others wait for it and return the same
    directory (`aw_keras.utils.cache`).
    """
    _check_arguments(train_images, val_images, image_size, seed,
                     _object_sizes(None, image_size), 4)
    cache_dir = os.path.abspath(os.fspath(cache_dir or default_cache_dir()))
    name = (f"v{GENERATOR_VERSION}-seed{seed}-train{train_images}-val{val_images}"
            f"-size{image_size}")
    directory = os.path.join(cache_dir, name)
    try:
        return _write(directory, train_images, val_images, image_size, seed,
                      _object_sizes(None, image_size), 4, fashion_mnist_dir)
    except cache.CacheEntryError as error:
        raise DataError(f"The cache entry {directory!r} is incomplete (it was not written "
                        "by aw_keras); delete it and call again.") from error

"""COCO-format object-detection data: a checked reader and `tf.data` pipelines.

A detection dataset spec ``coco:DIR`` (or just ``DIR``) names a directory laid out
like COCO 2017::

    DIR/annotations/instances_<split>.json     one file per split
    DIR/<split>/<file_name>                    the images the file lists

with any ``train*``/``val*`` pair of splits (``train2017``/``val2017``,
``train``/``val``, ...). Typical use::

    from aw_keras.data import coco

    train_split, val_split = coco.find_coco_splits("coco:/data/coco")
    train = coco.load_coco("/data/coco", train_split)     # logs a one-line report
    val = coco.load_coco("/data/coco", val_split)
    train_ds = coco.detection_dataset(train, image_size=512, batch_size=8,
                                      training=True, seed=0)
    val_ds = coco.detection_dataset(val, image_size=512, batch_size=8,
                                    with_metadata=True)
    ground_truth = val.ground_truth()   # for pycocotools' COCO() / COCOeval

The annotation files are read with `json` and checked: problems that make the
whole split unusable raise `DataError` (messages name the Python argument in
backticks); a bad image or annotation is dropped or repaired, counted in
`CocoSplit.skipped` under one of the `SKIP_REASONS` keys, and summarised in one
log line (logger ``aw_keras.data``, see `CocoSplit.report`).

Boxes are kept as float32 ``[x1, y1, x2, y2]`` in absolute pixels: of the
original image in `CocoImage.boxes`, of the resized image in the pipelines'
targets. Categories keep their COCO ids in `CocoSplit.ground_truth`; models see
contiguous labels ``0..K-1`` in the order of the sorted category ids
(`CocoSplit.label_of` and `CocoSplit.category_id_of` convert).
"""

import collections
import dataclasses
import json
import logging
import math
import os
import struct

import numpy as np

from aw_keras.data.sources import DataError

logger = logging.getLogger("aw_keras.data")

SPEC_PREFIX = "coco:"

# What happened to each counted item; the keys of `CocoSplit.skipped`, in report order.
SKIP_REASONS = {
    "malformed_image": "image entry without an integer `id`, a `file_name` or positive "
                       "`width`/`height`: the image is dropped",
    "missing_image": "image file not found: the image and its annotations are dropped",
    "unreadable_image": "image file that is not a PNG/JPEG/GIF/BMP image: the image and "
                        "its annotations are dropped",
    "size_mismatch": "image file whose size differs from the entry's `width`/`height`: "
                     "the image and its annotations are dropped",
    "malformed_annotation": "annotation without an `image_id`, a `category_id` or a `bbox` "
                            "of 4 finite numbers: dropped",
    "unknown_image": "annotation whose `image_id` is not an image of the file: dropped",
    "unknown_category": "annotation whose `category_id` is not in `categories`: dropped",
    "empty_box": "box with zero or negative width or height (after clipping to the "
                 "image): dropped",
    "clipped": "box reaching outside the image: clipped to the image and kept",
    "crowd": "`iscrowd` 1 annotation: kept in `ground_truth()` (with iscrowd 1, as COCO "
             "evaluation expects) and in `CocoImage.crowd_boxes`, not in training targets",
}
_DROPPED = ("malformed_image", "missing_image", "unreadable_image", "size_mismatch",
            "malformed_annotation", "unknown_image", "unknown_category", "empty_box")


@dataclasses.dataclass
class CocoImage:
    """One image and its boxes.

    ``boxes`` is float32 (N, 4) ``[x1, y1, x2, y2]`` in pixels of the original
    image, ``labels`` int32 (N,) contiguous labels; both exclude crowd
    annotations, which are in ``crowd_boxes`` (float32 (M, 4), same format) and
    ``crowd_labels``. An image without boxes is a negative example and is kept.
    """

    id: int
    file_name: str
    path: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    crowd_boxes: np.ndarray
    crowd_labels: np.ndarray


@dataclasses.dataclass
class CocoSplit:
    """A checked split of a COCO-format dataset; see the module docstring.

    ``categories`` is a list of ``{"id", "name"}`` dicts (plus ``supercategory``
    when the file has it) sorted by id; ``category_ids`` the sorted ids;
    ``label_of`` maps a COCO category id to its contiguous label; ``images`` the
    kept `CocoImage`s in file order; ``skipped`` a `collections.Counter` keyed by
    `SKIP_REASONS`.
    """

    directory: str
    split: str
    annotation_file: str
    categories: list
    category_ids: list
    label_of: dict
    images: list
    skipped: collections.Counter
    annotations: list = dataclasses.field(default_factory=list, repr=False)

    @property
    def num_classes(self):
        return len(self.category_ids)

    @property
    def class_names(self):
        """Category names in label order."""
        return tuple(category["name"] for category in self.categories)

    @property
    def num_boxes(self):
        """Boxes used for training (crowd annotations excluded)."""
        return int(sum(len(image.labels) for image in self.images))

    def truncated_boxes(self, max_boxes):
        """How many boxes `detection_dataset` leaves out of the targets with
        ``max_boxes`` boxes per image (each image keeps its first ``max_boxes``)."""
        _check_positive("max_boxes", max_boxes)
        return int(sum(max(0, len(image.labels) - max_boxes) for image in self.images))

    def category_id_of(self, label):
        """The COCO category id of a contiguous label (an int or an array of them)."""
        ids = np.asarray(self.category_ids, np.int64)
        labels = np.asarray(label)
        if labels.size and (labels.min() < 0 or labels.max() >= len(ids)):
            raise ValueError(f"`label` must be in [0, {len(ids)}), got {label!r}.")
        result = ids[labels.astype(np.int64)]
        return int(result) if result.ndim == 0 else result

    def ground_truth(self):
        """The kept data as a COCO dict (``info``, ``images``, ``annotations``,
        ``categories``) for pycocotools::

            from pycocotools.coco import COCO
            gt = COCO()
            gt.dataset = split.ground_truth()
            gt.createIndex()

        Annotations are the ones kept after the checks, with clipped boxes
        (``bbox`` ``[x, y, w, h]``), the original ``area`` (the clipped box's area
        when the file has none or the box was clipped), ``iscrowd`` and ids
        renumbered 1..M in file order. Images dropped by the checks are absent.
        """
        images = [{"id": image.id, "file_name": image.file_name, "width": image.width,
                   "height": image.height} for image in self.images]
        return {
            "info": {"description": f"{self.annotation_file} as read by aw_keras.data.coco"},
            "images": images,
            "annotations": [dict(annotation) for annotation in self.annotations],
            "categories": [dict(category) for category in self.categories],
        }

    def report(self):
        """One line: what was read and what was skipped or repaired."""
        negatives = sum(1 for image in self.images if len(image.labels) == 0)
        text = (f"{self.annotation_file}: {len(self.images)} images ({negatives} without "
                f"boxes), {self.num_boxes} boxes, {self.num_classes} categories")
        dropped = [f"{self.skipped[key]} {key}" for key in _DROPPED if self.skipped[key]]
        adjusted = [f"{self.skipped[key]} {key}" for key in SKIP_REASONS
                    if key not in _DROPPED and self.skipped[key]]
        text += "; dropped: " + (", ".join(dropped) if dropped else "nothing")
        if adjusted:
            text += "; kept: " + ", ".join(adjusted)
        return text + "."


# ------------------------------------------------------------------------ splits


def _root(directory):
    """``directory`` without a ``coco:`` prefix, checked to exist."""
    if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
        raise DataError(f"`directory` must be a directory path or 'coco:DIR', got "
                        f"{directory!r}.")
    root = os.fspath(directory)
    if root.lower().startswith(SPEC_PREFIX):
        root = root[len(SPEC_PREFIX):]
    if not os.path.isdir(root):
        raise DataError(f"`directory` {root!r} does not exist. Expected a COCO-style "
                        "directory: annotations/instances_<split>.json and <split>/ "
                        "image folders.")
    return root


def _annotated_splits(root):
    folder = os.path.join(root, "annotations")
    if not os.path.isdir(folder):
        return []
    names = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("instances_") and name.endswith(".json"):
            names.append(name[len("instances_"):-len(".json")])
    return [name for name in names if name]


def find_coco_splits(directory):
    """``(train_split, val_split)`` of a COCO-style directory (or ``coco:DIR``).

    The splits are the ``<split>`` names of ``annotations/instances_<split>.json``.
    A ``train<X>``/``val<X>`` pair with the same suffix is preferred (the last in
    sorted order when there are several, e.g. ``train2017``/``val2017`` over
    ``train2014``/``val2014``); otherwise the only ``train*`` and the only ``val*``
    split. Anything else raises `DataError`.
    """
    root = _root(directory)
    splits = _annotated_splits(root)
    train = [s for s in splits if s.startswith("train")]
    val = [s for s in splits if s.startswith("val")]
    pairs = [(t, "val" + t[len("train"):]) for t in train if "val" + t[len("train"):] in val]
    if pairs:
        return pairs[-1]
    if len(train) == 1 and len(val) == 1:
        return train[0], val[0]
    found = [f"instances_{s}.json" for s in splits]
    raise DataError(
        f"`directory` {root!r} has no train/val pair of annotation files: found "
        f"{found or 'none'} in {os.path.join(root, 'annotations')!r}. Expected "
        "annotations/instances_train<X>.json and annotations/instances_val<X>.json "
        "(e.g. instances_train2017.json and instances_val2017.json) next to the image "
        "folders train<X>/ and val<X>/."
    )


def _resolve_split(root, split):
    if not isinstance(split, str) or not split:
        raise DataError(f"`split` must be a split name such as 'train2017', got {split!r}.")
    path = os.path.join(root, "annotations", f"instances_{split}.json")
    if os.path.isfile(path):
        return split, path
    aliases = {"train": 0, "val": 1, "validation": 1}
    if split in aliases:
        try:
            resolved = find_coco_splits(root)[aliases[split]]
        except DataError:
            resolved = None
        if resolved is not None:
            return resolved, os.path.join(root, "annotations", f"instances_{resolved}.json")
    raise DataError(
        f"`split` {split!r}: the annotation file {path!r} does not exist (splits with "
        f"annotation files in `directory`: {_annotated_splits(root) or 'none'})."
    )


# ------------------------------------------------------------------ image headers


def image_size_of(path):
    """``(width, height)`` of a PNG, JPEG, GIF or BMP file from its header, or
    None when the file is none of those (or is cut short)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(32)
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                return struct.unpack(">II", head[16:24])
            if head[:6] in (b"GIF87a", b"GIF89a"):
                return struct.unpack("<HH", head[6:10])
            if head[:2] == b"BM" and len(head) >= 26:
                width, height = struct.unpack("<ii", head[18:26])
                return width, abs(height)
            if head[:2] == b"\xff\xd8":
                handle.seek(2)
                return _jpeg_size(handle)
    except (OSError, struct.error):
        return None
    return None


def _jpeg_size(handle):
    while True:
        byte = handle.read(1)
        while byte and byte != b"\xff":
            byte = handle.read(1)
        while byte == b"\xff":
            byte = handle.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            continue  # markers without a length
        if marker == 0xD9:
            return None
        length_bytes = handle.read(2)
        if len(length_bytes) < 2:
            return None
        length = struct.unpack(">H", length_bytes)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            frame = handle.read(5)
            if len(frame) < 5:
                return None
            height, width = struct.unpack(">HH", frame[1:5])
            return width, height
        handle.seek(length - 2, os.SEEK_CUR)


# ------------------------------------------------------------------------ reading


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _read_json(path):
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise DataError(f"The annotation file {path!r} is not valid JSON ({error}). "
                        "Regenerate or re-download it.") from error
    except UnicodeDecodeError as error:
        raise DataError(f"The annotation file {path!r} is not valid JSON (not UTF-8 "
                        f"text: {error}).") from error
    except OSError as error:
        raise DataError(f"Cannot read the annotation file {path!r}: {error}") from error


def _categories(content, path):
    categories = content.get("categories")
    if not isinstance(categories, list) or not categories:
        raise DataError(f"The annotation file {path!r} has no `categories` list; a COCO "
                        "instances file lists {'id': ..., 'name': ...} for every category.")
    kept = {}
    for category in categories:
        if not isinstance(category, dict) or not _is_int(category.get("id")):
            raise DataError(f"The annotation file {path!r} has a category without an "
                            f"integer id: {category!r}.")
        if category["id"] in kept:
            raise DataError(f"The annotation file {path!r} lists category id "
                            f"{category['id']} twice.")
        entry = {"id": category["id"], "name": str(category.get("name", category["id"]))}
        if "supercategory" in category:
            entry["supercategory"] = category["supercategory"]
        kept[category["id"]] = entry
    return [kept[key] for key in sorted(kept)]


def load_coco(directory, split, check_images=True):
    """Read and check ``directory/annotations/instances_<split>.json``.

    ``directory`` may be given as ``coco:DIR``; ``split`` is a split name such as
    ``"val2017"`` (``"train"``, ``"val"`` and ``"validation"`` also select the
    pair `find_coco_splits` finds). Images are ``directory/<split>/<file_name>``.
    With ``check_images`` every image file's header is read to confirm that it is
    a PNG, JPEG, GIF or BMP image of the listed width and height (the pixels are
    only decoded by the pipeline).

    Raises `DataError` when the annotation file or the image folder is missing,
    the file is not JSON or has no ``images``/``annotations``/``categories``
    lists, a category id is listed twice, or two image entries share an id (the
    annotations could not be assigned). Everything else is counted (see
    `SKIP_REASONS`): images without a file are dropped with their annotations;
    boxes are clipped to the image, then dropped when empty; annotations with an
    unknown category are dropped; crowd boxes are kept for evaluation only;
    images without boxes are kept as negatives. Returns a `CocoSplit` and logs
    its `CocoSplit.report` line.
    """
    root = _root(directory)
    split, path = _resolve_split(root, split)
    image_folder = os.path.join(root, split)
    if not os.path.isdir(image_folder):
        raise DataError(f"`directory` {root!r} has the annotation file "
                        f"{os.path.basename(path)!r} but not its image folder "
                        f"{image_folder!r}.")
    content = _read_json(path)
    if not isinstance(content, dict):
        raise DataError(f"The annotation file {path!r} is not a COCO instances file "
                        f"(a JSON object with `images`, `annotations`, `categories`).")
    for key in ("images", "annotations"):
        if not isinstance(content.get(key), list):
            raise DataError(f"The annotation file {path!r} has no `{key}` list; it is not "
                            "a COCO instances file.")
    categories = _categories(content, path)
    category_ids = [category["id"] for category in categories]
    label_of = {category_id: label for label, category_id in enumerate(category_ids)}
    skipped = collections.Counter()

    entries = {}
    order = []
    seen = {}
    for entry in content["images"]:
        if not isinstance(entry, dict):
            skipped["malformed_image"] += 1
            continue
        image_id, file_name = entry.get("id"), entry.get("file_name")
        width, height = entry.get("width"), entry.get("height")
        if _is_int(image_id):
            if image_id in seen:
                raise DataError(
                    f"The annotation file {path!r} lists image id {image_id} twice "
                    f"({seen[image_id]!r} and {file_name!r}); its annotations cannot be "
                    "assigned. Give every image a unique id."
                )
            seen[image_id] = file_name
        if not (_is_int(image_id) and isinstance(file_name, str) and file_name
                and _is_int(width) and _is_int(height) and width > 0 and height > 0):
            skipped["malformed_image"] += 1
            continue
        entries[image_id] = {"file_name": file_name, "width": width, "height": height,
                             "path": os.path.join(image_folder, file_name), "usable": True}
        order.append(image_id)
    for image_id in order:
        entry = entries[image_id]
        if not os.path.isfile(entry["path"]):
            reason = "missing_image"
        elif check_images:
            size = image_size_of(entry["path"])
            reason = (None if size == (entry["width"], entry["height"])
                      else "unreadable_image" if size is None else "size_mismatch")
        else:
            reason = None
        if reason:
            skipped[reason] += 1
            entry["usable"] = False

    boxes = {image_id: [] for image_id in order}
    crowd = {image_id: [] for image_id in order}
    annotations = []
    for annotation in content["annotations"]:
        kept = _check_annotation(annotation, entries, label_of, skipped)
        if kept is None:
            continue
        image_id, xyxy, label, area, iscrowd = kept
        (crowd if iscrowd else boxes)[image_id].append((xyxy, label))
        x1, y1, x2, y2 = xyxy
        annotations.append({
            "id": len(annotations) + 1, "image_id": image_id,
            "category_id": annotation["category_id"],
            "bbox": [x1, y1, x2 - x1, y2 - y1], "area": area, "iscrowd": iscrowd,
        })

    images = []
    for image_id in order:
        entry = entries[image_id]
        if not entry["usable"]:
            continue
        images.append(CocoImage(
            id=image_id, file_name=entry["file_name"], path=entry["path"],
            width=entry["width"], height=entry["height"],
            boxes=_box_array([b for b, _ in boxes[image_id]]),
            labels=np.asarray([lab for _, lab in boxes[image_id]], np.int32),
            crowd_boxes=_box_array([b for b, _ in crowd[image_id]]),
            crowd_labels=np.asarray([lab for _, lab in crowd[image_id]], np.int32),
        ))
    result = CocoSplit(directory=root, split=split, annotation_file=path,
                       categories=categories, category_ids=category_ids, label_of=label_of,
                       images=images, skipped=skipped, annotations=annotations)
    dropped = any(skipped[key] for key in _DROPPED)
    logger.log(logging.WARNING if dropped else logging.INFO, "%s", result.report())
    return result


def _box_array(boxes):
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def _check_annotation(annotation, entries, label_of, skipped):
    """(image_id, clipped xyxy, label, area, iscrowd) or None (counted)."""
    if not isinstance(annotation, dict):
        skipped["malformed_annotation"] += 1
        return None
    image_id, category_id = annotation.get("image_id"), annotation.get("category_id")
    bbox = annotation.get("bbox")
    if not (_is_int(image_id) and _is_int(category_id) and isinstance(bbox, list)
            and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        skipped["malformed_annotation"] += 1
        return None
    if image_id not in entries:
        skipped["unknown_image"] += 1
        return None
    entry = entries[image_id]
    if not entry["usable"]:
        return None  # the image was dropped, and counted, with its annotations
    if category_id not in label_of:
        skipped["unknown_category"] += 1
        return None
    x, y, w, h = (float(v) for v in bbox)
    raw = (x, y, x + w, y + h)
    x1, x2 = (min(max(v, 0.0), float(entry["width"])) for v in (raw[0], raw[2]))
    y1, y2 = (min(max(v, 0.0), float(entry["height"])) for v in (raw[1], raw[3]))
    iscrowd = 1 if annotation.get("iscrowd") else 0
    if x2 <= x1 or y2 <= y1:
        skipped["empty_box"] += 1
        return None
    clipped = (x1, y1, x2, y2) != raw
    if clipped:
        skipped["clipped"] += 1
    if iscrowd:
        skipped["crowd"] += 1
    box_area = (x2 - x1) * (y2 - y1)
    area = annotation.get("area")
    if not _is_number(area) or area <= 0:
        area = box_area
    elif clipped:
        area = min(float(area), box_area)
    return image_id, (x1, y1, x2, y2), label_of[category_id], float(area), iscrowd


# ----------------------------------------------------------------------- tf.data


def _check_positive(name, value):
    if not _is_int(value) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def detection_dataset(split, image_size, batch_size, training=False, seed=0, max_boxes=100,
                      shuffle_buffer=None, with_metadata=False):
    """A `tf.data.Dataset` of ``(images, targets)`` batches from a `CocoSplit`.

    ``images``: float32 (B, S, S, 3) with values in [0, 255], S = ``image_size``;
    each image is decoded to RGB (grey images are repeated to 3 channels),
    resized with its aspect ratio kept so that its longer side is S, and padded
    with zeros at the bottom and right. ``targets``: ``{"boxes": float32
    (B, max_boxes, 4) [x1, y1, x2, y2] in pixels of the resized image, "labels":
    int32 (B, max_boxes)}``, the unused rows padded with -1 (the format
    keras-hub's ``RetinaNetObjectDetector.fit`` takes with
    ``bounding_box_format="xyxy"``). An image with more than ``max_boxes`` boxes
    keeps its first ``max_boxes``; a warning logs how many boxes are left out
    (`CocoSplit.truncated_boxes` counts them). ``split`` is not modified.

    With ``with_metadata``, batches are ``(images, targets, metadata)`` with
    ``metadata = {"image_id": int64 (B,), "scale": float32 (B,)}``: a box of the
    resized image divided by ``scale`` (= S / max(height, width)) is in pixels of
    the original image, as `CocoSplit.ground_truth` wants. Use it for evaluation
    loops, not ``fit`` (Keras reads a third element as sample weights).

    ``training=False`` (evaluation): every image once, in file order, the last
    batch partial. ``training=True``: images shuffled (a buffer of
    ``shuffle_buffer`` images, default all) and flipped left-right with their
    boxes with probability 0.5, a new order and new flips each time the dataset
    is iterated (each epoch of ``fit``), the sequence fixed by ``seed`` (and by
    TensorFlow's global seed when one is set, e.g. by
    ``keras.utils.set_random_seed``);
    incomplete last batches are dropped, so every batch has B images.
    Decoding runs in parallel (``num_parallel_calls=tf.data.AUTOTUNE``) with the
    order kept, and batches are prefetched.
    """
    import tensorflow as tf

    if not isinstance(split, CocoSplit):
        raise ValueError(f"`split` must be a CocoSplit from `load_coco`, got "
                         f"{type(split).__name__}.")
    for name, value in (("image_size", image_size), ("batch_size", batch_size),
                        ("max_boxes", max_boxes)):
        _check_positive(name, value)
    if shuffle_buffer is not None:
        _check_positive("shuffle_buffer", shuffle_buffer)
    if not _is_int(seed):
        raise ValueError(f"`seed` must be an integer, got {seed!r}.")
    if not split.images:
        raise DataError(f"The split {split.split!r} of {split.directory!r} has no usable "
                        f"images ({split.report()})")
    if training and len(split.images) < batch_size:
        raise DataError(f"`batch_size` {batch_size} is larger than the {len(split.images)} "
                        f"images of the split {split.split!r}; training batches are full.")

    truncated = split.truncated_boxes(max_boxes)
    if truncated:
        crowded = sum(1 for image in split.images if len(image.labels) > max_boxes)
        logger.warning("%s: %d images have more than `max_boxes`=%d boxes; their %d extra "
                       "boxes are not in the targets.", split.annotation_file, crowded,
                       max_boxes, truncated)

    boxes = [image.boxes[:max_boxes] for image in split.images]
    lengths = np.asarray([len(b) for b in boxes], np.int64)
    flat_boxes = np.concatenate(boxes, axis=0) if boxes else np.zeros((0, 4), np.float32)
    flat_labels = np.concatenate([image.labels[:max_boxes] for image in split.images])
    base = tf.data.Dataset.from_tensor_slices((
        np.asarray([image.path for image in split.images]),
        np.asarray([image.id for image in split.images], np.int64),
        tf.RaggedTensor.from_row_lengths(flat_boxes.astype(np.float32), lengths),
        tf.RaggedTensor.from_row_lengths(flat_labels.astype(np.int32), lengths),
    ))
    size = float(image_size)

    def load(path, image_id, boxes, labels, flip_seed=None):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                                   expand_animations=False)
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = size / tf.reduce_max(shape)
        new_shape = tf.clip_by_value(tf.cast(tf.round(shape * scale), tf.int32), 1,
                                     image_size)
        image = tf.image.resize(image, new_shape, method="bilinear", antialias=True)
        image = tf.clip_by_value(image, 0.0, 255.0)
        # The resized image's extent before rounding to pixels: boxes clipped to it,
        # and mirrored in it, keep their width and height (a box is never emptied).
        height, width = shape[0] * scale, shape[1] * scale
        boxes = tf.reshape(tf.cast(boxes, tf.float32), (-1, 4)) * scale
        x1, y1, x2, y2 = tf.unstack(boxes, 4, axis=1)
        x1, x2 = tf.clip_by_value(x1, 0.0, width), tf.clip_by_value(x2, 0.0, width)
        y1, y2 = tf.clip_by_value(y1, 0.0, height), tf.clip_by_value(y2, 0.0, height)
        if flip_seed is not None:
            flip = tf.random.stateless_uniform([], flip_seed) < 0.5
            image = tf.cond(flip, lambda: image[:, ::-1, :], lambda: image)
            x1, x2 = (tf.where(flip, width - x2, x1), tf.where(flip, width - x1, x2))
        boxes = tf.stack([x1, y1, x2, y2], axis=1)
        image = tf.image.pad_to_bounding_box(image, 0, 0, image_size, image_size)
        image = tf.ensure_shape(image, (image_size, image_size, 3))
        pad = max_boxes - tf.shape(boxes)[0]
        boxes = tf.ensure_shape(tf.pad(boxes, [[0, pad], [0, 0]], constant_values=-1.0),
                                (max_boxes, 4))
        labels = tf.ensure_shape(tf.pad(tf.reshape(tf.cast(labels, tf.int32), (-1,)),
                                        [[0, pad]], constant_values=-1), (max_boxes,))
        targets = {"boxes": boxes, "labels": labels}
        if with_metadata:
            return image, targets, {"image_id": image_id, "scale": scale}
        return image, targets

    if training:
        buffer = len(split.images) if shuffle_buffer is None else shuffle_buffer
        shuffled = base.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        stream = tf.data.Dataset.zip((shuffled, draws))

        def train_map(element, draw):
            flip_seed = tf.stack([tf.constant(seed, tf.int64), draw])
            return load(*element, flip_seed=flip_seed)

        ds = stream.map(train_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size, drop_remainder=True)
    else:
        ds = base.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)

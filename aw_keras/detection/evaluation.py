"""COCO box mAP of detector outputs, computed by pycocotools' ``COCOeval``.

`coco_metrics` scores a list of COCO-format detections against COCO-format
ground truth, in memory. `detections_from_predictions` turns a batch of
keras-hub style predictions (``{"boxes", "confidence", "labels",
"num_detections"}``, boxes in the resized input image) into that list, and
`CocoEvaluator` does both over a whole evaluation set, batch by batch.

Example:

>>> evaluator = CocoEvaluator(ground_truth, category_id_of=category_ids)  # doctest: +SKIP
>>> for images, image_ids, scales in batches:
...     evaluator.update(detector.predict_on_batch(images), image_ids, scales)
>>> evaluator.result()["map"]
0.3642...

``ground_truth`` is a COCO annotation file's dict (``json.load`` of
``instances_val2017.json``): ``images`` (each with an ``id``), ``categories``
(each with an ``id``) and ``annotations`` (``id`` > 0, ``image_id``,
``category_id``, ``bbox`` as ``[x, y, width, height]`` in pixels of the original
image, ``area`` and ``iscrowd``). ``scales`` are the factors the pipeline
resized each image by: ``resized = original * scale``.
"""

import contextlib
import copy
import io
import math
import numbers
from collections.abc import Mapping

import numpy as np

METRIC_NAMES = ("map", "map50", "map75", "map_small", "map_medium", "map_large")
BOX_FORMATS = ("xyxy", "yxyx")


def coco_metrics(ground_truth, detections, verbose=False):
    """COCO box mAP of ``detections`` against ``ground_truth`` (pycocotools' COCOeval).

    Args:
        ground_truth: COCO-format dict with ``images``, ``annotations`` and
            ``categories`` (see the module docstring). Not modified.
        detections: list of ``{"image_id", "category_id", "bbox": [x, y, w, h],
            "score"}`` in pixels of the original images, e.g. from
            `detections_from_predictions`. Not modified. May be empty.
        verbose: print COCOeval's 12-line summary (pycocotools' other output is
            always silenced).

    Returns:
        ``{"map", "map50", "map75", "map_small", "map_medium", "map_large"}``,
        floats in [0, 1]: COCOeval's ``stats[0:6]``, i.e. AP averaged over IoU
        0.50:0.05:0.95 (``map``), at IoU 0.5 and 0.75, and over IoU 0.50:0.95
        for objects of ``area`` (the annotation's field) at most 32**2, between
        32**2 and 96**2, and at least 96**2 (both bounds inclusive, as in
        COCOeval), with at most 100 detections per image and category. An
        entry is NaN where COCOeval reports -1: no ground-truth object (non-crowd)
        in that size range, or none at all. Every image of ``ground_truth``
        counts, with or without detections; with no detections every defined
        entry is 0.0.

    Raises:
        ValueError: malformed ``ground_truth``; a detection whose image or
            category is not in ``ground_truth``, whose box is not 4 finite
            numbers with width and height >= 0, or whose score is not finite.
        TypeError: ``ground_truth`` is not a dict or ``detections`` not a list.
        ImportError: pycocotools is not installed.
    """
    gt = _checked_ground_truth(ground_truth)
    dets = _checked_detections(detections, gt)
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as error:
        raise ImportError(
            "coco_metrics needs pycocotools: pip install 'aw_keras[detection]' "
            "(or pip install pycocotools)."
        ) from error

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if dets:
            coco_dt = coco_gt.loadRes(dets)
        else:
            # loadRes([]) fails (it reads anns[0]); an empty result set scores 0
            # wherever there is ground truth and -1 where there is none.
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(gt["images"]),
                               "categories": copy.deepcopy(gt["categories"]),
                               "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    if verbose:
        evaluator.summarize()
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.summarize()
    stats = evaluator.stats
    return {name: (math.nan if stats[i] == -1 else float(stats[i]))
            for i, name in enumerate(METRIC_NAMES)}


def detections_from_predictions(predictions, image_ids, scales, category_id_of,
                                score_threshold=0.0, bounding_box_format="xyxy"):
    """COCO detection list from a batch of keras-hub style detector predictions.

    Args:
        predictions: dict (what ``RetinaNet.predict`` returns) of
            ``"boxes"`` (B, K, 4) in pixels of the resized input image,
            ``"confidence"`` or ``"scores"`` (B, K), ``"labels"`` (B, K) integer
            class indices (0 .. num_classes - 1, -1 for padding) and optionally
            ``"num_detections"`` (B,). Entries at or beyond ``num_detections``
            and entries labelled -1 are padding and skipped. Arrays or tensors;
            B may span several concatenated batches.
        image_ids: the B ground-truth image ids, in batch order.
        scales: resize factor per image, ``resized = original * scale``: a
            number (all images), shape (B,), or (B, 2) as ``(scale_x, scale_y)``
            when the aspect ratio was not kept. Boxes are divided by it; the
            resized image must start at the original's top-left corner (padding
            only at the right and bottom).
        category_id_of: maps a class index to its COCO ``category_id``: a
            callable, a dict, or a sequence (``category_id_of[label]``).
        score_threshold: keep detections with score >= this.
        bounding_box_format: ``"xyxy"`` (default) or ``"yxyx"`` (keras-hub's
            own default for RetinaNetObjectDetector).

    Returns:
        list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
        (Python numbers), in batch order, for `coco_metrics`.

    Raises:
        ValueError: missing keys, inconsistent shapes, non-positive scales, a
            kept box that is not finite or has x2 < x1 or y2 < y1, or a label
            that ``category_id_of`` does not map.
        TypeError: ``predictions`` is not a dict or ``category_id_of`` is
            neither a callable, a dict nor a sequence.
    """
    if not isinstance(predictions, Mapping):
        raise TypeError("`predictions` must be a dict with keys 'boxes', 'confidence' (or "
                        f"'scores') and 'labels', received {type(predictions).__name__}.")
    _check_options(score_threshold, bounding_box_format)
    score_key = "confidence" if "confidence" in predictions else "scores"
    missing = [k for k in ("boxes", score_key, "labels") if k not in predictions]
    if missing:
        raise ValueError(f"`predictions` lacks {missing}: expected keys 'boxes', 'confidence' "
                         f"(or 'scores'), 'labels' and optionally 'num_detections', received "
                         f"{sorted(predictions)}.")
    boxes = _to_numpy(predictions["boxes"]).astype(np.float64)
    scores = _to_numpy(predictions[score_key]).astype(np.float64)
    labels = _to_numpy(predictions["labels"])
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"`predictions['boxes']` must have shape (B, K, 4), received "
                         f"{boxes.shape}.")
    batch, k = boxes.shape[:2]
    for name, array in ((score_key, scores), ("labels", labels)):
        if array.shape != (batch, k):
            raise ValueError(f"`predictions[{name!r}]` must have shape (B, K) = {(batch, k)} "
                             f"like 'boxes', received {array.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError("`predictions['labels']` must hold integer class indices, received "
                             f"non-integer values of dtype {labels.dtype}.")
    labels = labels.astype(np.int64)
    if "num_detections" in predictions and predictions["num_detections"] is not None:
        counts = _to_numpy(predictions["num_detections"]).astype(np.int64).reshape(-1)
        if counts.shape != (batch,):
            raise ValueError(f"`predictions['num_detections']` must have shape (B,) = ({batch},), "
                             f"received {counts.shape}.")
    else:
        counts = np.full((batch,), k, dtype=np.int64)
    image_ids = _to_list(image_ids, "image_ids")
    if len(image_ids) != batch:
        raise ValueError(f"`image_ids` must have one id per image, B = {batch}, received "
                         f"{len(image_ids)}.")
    scale_xy = _scales_xy(scales, batch)
    lookup = _category_lookup(category_id_of)

    detections = []
    for b in range(batch):
        for j in range(min(int(counts[b]), k)):
            label = int(labels[b, j])
            score = float(scores[b, j])
            if label < 0 or score < score_threshold:
                continue
            box = boxes[b, j]
            if bounding_box_format == "yxyx":
                box = box[[1, 0, 3, 2]]
            x1, y1, x2, y2 = (box / np.tile(scale_xy[b], 2)).tolist()
            if not (all(math.isfinite(v) for v in (x1, y1, x2, y2)) and math.isfinite(score)):
                raise ValueError(f"Prediction {j} of image {image_ids[b]!r} (batch index {b}) is "
                                 f"not finite: box {boxes[b, j].tolist()}, score {score}.")
            if x2 < x1 or y2 < y1:
                raise ValueError(
                    f"Prediction {j} of image {image_ids[b]!r} (batch index {b}) has box "
                    f"{boxes[b, j].tolist()} with x2 < x1 or y2 < y1 read as "
                    f"{bounding_box_format!r}: expected `bounding_box_format` {BOX_FORMATS}.")
            detections.append({"image_id": image_ids[b], "category_id": lookup(label),
                               "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    return detections


class CocoEvaluator:
    """COCO box mAP accumulated over batches of detector predictions.

    Example:

    >>> evaluator = CocoEvaluator(ground_truth, category_id_of=[1, 2, 3])  # doctest: +SKIP
    >>> evaluator.update(detector.predict_on_batch(images), image_ids, scales)
    >>> evaluator.result()            # {"map", "map50", ...}, see coco_metrics
    >>> evaluator.reset()             # start the next evaluation

    Args:
        ground_truth: COCO-format dict, as for `coco_metrics` (checked here, copied).
        category_id_of, score_threshold, bounding_box_format: as for
            `detections_from_predictions`.
    """

    def __init__(self, ground_truth, category_id_of, score_threshold=0.0,
                 bounding_box_format="xyxy"):
        self.ground_truth = _checked_ground_truth(ground_truth)
        _category_lookup(category_id_of)
        _check_options(score_threshold, bounding_box_format)
        self.category_id_of = category_id_of
        self.score_threshold = score_threshold
        self.bounding_box_format = bounding_box_format
        self.detections = []

    def update(self, predictions, image_ids, scales):
        """Converts one batch (see `detections_from_predictions`) and keeps it.
        Returns the number of detections added."""
        new = detections_from_predictions(
            predictions, image_ids, scales, self.category_id_of,
            score_threshold=self.score_threshold,
            bounding_box_format=self.bounding_box_format)
        _checked_detections(new, self.ground_truth)
        self.detections.extend(new)
        return len(new)

    def result(self, verbose=False):
        """`coco_metrics` of every detection added since the last `reset`."""
        return coco_metrics(self.ground_truth, self.detections, verbose=verbose)

    def reset(self):
        """Forgets the detections added so far (the ground truth stays)."""
        self.detections = []


def _check_options(score_threshold, bounding_box_format):
    if bounding_box_format not in BOX_FORMATS:
        raise ValueError(f"`bounding_box_format` must be one of {BOX_FORMATS}, received "
                         f"{bounding_box_format!r}.")
    if (isinstance(score_threshold, bool) or not isinstance(score_threshold, numbers.Real)
            or math.isnan(score_threshold)):
        raise ValueError(f"`score_threshold` must be a number, received {score_threshold!r}.")


def _checked_ground_truth(ground_truth):
    """A deep copy of ``ground_truth`` with the fields COCOeval reads checked."""
    if not isinstance(ground_truth, Mapping):
        raise TypeError("`ground_truth` must be a COCO-format dict, received "
                        f"{type(ground_truth).__name__}.")
    missing = [k for k in ("images", "annotations", "categories") if k not in ground_truth]
    if missing:
        raise ValueError(f"`ground_truth` lacks {missing}: a COCO-format dict has 'images', "
                         f"'annotations' and 'categories', received keys {sorted(ground_truth)}.")
    gt = copy.deepcopy(dict(ground_truth))
    image_ids = _ids(gt["images"], "images")
    category_ids = _ids(gt["categories"], "categories")
    if not isinstance(gt["annotations"], list):
        raise ValueError("`ground_truth['annotations']` must be a list, received "
                         f"{type(gt['annotations']).__name__}.")
    seen = set()
    for i, ann in enumerate(gt["annotations"]):
        where = f"`ground_truth['annotations'][{i}]`"
        if not isinstance(ann, Mapping):
            raise ValueError(f"{where} must be a dict, received {ann!r}.")
        missing = [k for k in ("id", "image_id", "category_id", "bbox", "area", "iscrowd")
                   if k not in ann]
        if missing:
            raise ValueError(f"{where} lacks {missing} (received {ann!r}); without segmentation "
                             "use area = width * height and iscrowd = 0.")
        ann_id = ann["id"]
        # COCOeval records matches by annotation id and treats id 0 as "unmatched".
        if isinstance(ann_id, bool) or not isinstance(ann_id, numbers.Integral) or ann_id < 1:
            raise ValueError(f"{where} has id {ann_id!r}: annotation ids must be integers >= 1.")
        if ann_id in seen:
            raise ValueError(f"{where} repeats annotation id {ann_id!r}: ids must be unique.")
        seen.add(ann_id)
        if ann["image_id"] not in image_ids:
            raise ValueError(f"{where} has image_id {ann['image_id']!r}, which is not in "
                             "`ground_truth['images']`.")
        if ann["category_id"] not in category_ids:
            raise ValueError(f"{where} has category_id {ann['category_id']!r}, which is not in "
                             f"`ground_truth['categories']` (ids {sorted(category_ids)}).")
        ann["bbox"] = _checked_box(ann["bbox"], where)
        if not isinstance(ann["area"], numbers.Real) or not ann["area"] >= 0:
            raise ValueError(f"{where} has area {ann['area']!r}: expected a number >= 0.")
    return gt


def _checked_detections(detections, gt):
    """A checked copy of ``detections`` (loadRes writes into the dicts it gets)."""
    if not isinstance(detections, list):
        raise TypeError("`detections` must be a list of dicts with 'image_id', 'category_id', "
                        f"'bbox' and 'score', received {type(detections).__name__}.")
    image_ids = {image["id"] for image in gt["images"]}
    category_ids = {category["id"] for category in gt["categories"]}
    checked = []
    for i, det in enumerate(detections):
        where = f"`detections[{i}]`"
        if not isinstance(det, Mapping):
            raise ValueError(f"{where} must be a dict, received {det!r}.")
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in det]
        if missing:
            raise ValueError(f"{where} lacks {missing}, received {det!r}.")
        if det["image_id"] not in image_ids:
            raise ValueError(f"{where} = {det!r} has image_id {det['image_id']!r}, which is not "
                             "in `ground_truth['images']`.")
        if det["category_id"] not in category_ids:
            raise ValueError(f"{where} = {det!r} has category_id {det['category_id']!r}, which "
                             f"is not in `ground_truth['categories']` (ids "
                             f"{sorted(category_ids)}).")
        score = det["score"]
        if (isinstance(score, bool) or not isinstance(score, numbers.Real)
                or not math.isfinite(score)):
            raise ValueError(f"{where} = {det!r} has score {score!r}: expected a finite number.")
        checked.append({"image_id": det["image_id"], "category_id": det["category_id"],
                        "bbox": _checked_box(det["bbox"], f"{where} = {det!r}"),
                        "score": float(score)})
    return checked


def _checked_box(bbox, where):
    try:
        values = [float(v) for v in bbox]
    except (TypeError, ValueError):
        values = None
    if values is None or len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where} has bbox {bbox!r}: expected 4 finite numbers [x, y, w, h].")
    if values[2] < 0 or values[3] < 0:
        raise ValueError(f"{where} has bbox {bbox!r} with negative width or height: expected "
                         "[x, y, w, h] with w, h >= 0 (not [x1, y1, x2, y2]).")
    return values


def _ids(entries, key):
    if not isinstance(entries, list):
        raise ValueError(f"`ground_truth[{key!r}]` must be a list, received "
                         f"{type(entries).__name__}.")
    ids = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or "id" not in entry:
            raise ValueError(f"`ground_truth[{key!r}][{i}]` must be a dict with an 'id', "
                             f"received {entry!r}.")
        if entry["id"] in ids:
            raise ValueError(f"`ground_truth[{key!r}][{i}]` repeats id {entry['id']!r}: ids must "
                             "be unique.")
        ids.add(entry["id"])
    return ids


def _scales_xy(scales, batch):
    """Per-image (scale_x, scale_y), shape (batch, 2)."""
    array = np.asarray(_to_numpy(scales), dtype=np.float64)
    if array.ndim == 0:
        array = np.full((batch, 2), float(array))
    elif array.shape == (batch,):
        array = np.stack([array, array], axis=-1)
    elif array.shape != (batch, 2):
        raise ValueError(f"`scales` must be a number, shape (B,) or (B, 2) with B = {batch}, "
                         f"received shape {array.shape}.")
    if not np.all(np.isfinite(array) & (array > 0)):
        raise ValueError(f"`scales` must be finite and > 0, received {array.tolist()}.")
    return array


def _category_lookup(category_id_of):
    """A function from class index to category id that raises ValueError when it cannot."""
    if isinstance(category_id_of, Mapping):
        def lookup(label):
            if label not in category_id_of:
                raise ValueError(f"Label {label} is not a key of `category_id_of` (keys "
                                 f"{sorted(category_id_of)}).")
            return _python_scalar(category_id_of[label])
    elif callable(category_id_of):
        def lookup(label):
            return _python_scalar(category_id_of(label))
    elif isinstance(category_id_of, (list, tuple, np.ndarray)):
        def lookup(label):
            if not 0 <= label < len(category_id_of):
                raise ValueError(f"Label {label} is out of range for `category_id_of`, a sequence "
                                 f"of {len(category_id_of)} category ids.")
            return _python_scalar(category_id_of[label])
    else:
        raise TypeError("`category_id_of` must be a callable, a dict or a sequence mapping class "
                        f"index to COCO category id, received {type(category_id_of).__name__}.")
    return lookup


def _to_numpy(x):
    """NumPy array of an array, list, number or backend tensor."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except (TypeError, ValueError, RuntimeError):  # e.g. a torch tensor on a GPU
        import keras

        return keras.ops.convert_to_numpy(x)


def _to_list(values, name):
    """Python list of Python scalars from a 1-D sequence, array or tensor."""
    if isinstance(values, (list, tuple)):
        return [_python_scalar(v) for v in values]
    if isinstance(values, (str, bytes, Mapping)) or np.ndim(_to_numpy(values)) != 1:
        raise TypeError(f"`{name}` must be a 1-D sequence, received {values!r}.")
    return _to_numpy(values).tolist()


def _python_scalar(value):
    return value.item() if isinstance(value, np.generic) else value

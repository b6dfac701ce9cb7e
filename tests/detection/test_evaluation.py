"""COCO mAP of detections (pycocotools' COCOeval) against values derived by hand."""

import copy
import math

import numpy as np
import pytest

from aw_keras.detection import CocoEvaluator
from aw_keras.detection import coco_metrics
from aw_keras.detection import detections_from_predictions

RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # COCO's 101 recall points 0, 0.01, ..., 1


def coco_ap(hits, num_gt):
    """COCO average precision of one category at one IoU threshold, in plain numpy.

    ``hits``: for each detection in descending score order, True if it is a true
    positive. Precision is made non-increasing from the right (the interpolated
    precision), then read at the first rank whose recall reaches each of the
    101 recall thresholds (0 where recall never reaches it) and averaged.
    """
    hits = np.asarray(hits, dtype=bool)
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    recall = tp / num_gt
    precision = tp / (tp + fp)
    interpolated = np.maximum.accumulate(precision[::-1])[::-1]
    points = []
    for r in RECALL_THRESHOLDS:
        reached = np.flatnonzero(recall >= r)
        points.append(interpolated[reached[0]] if reached.size else 0.0)
    return float(np.mean(points))


def gt_dict(image_ids, annotations, category_ids=(1, 2, 3)):
    """COCO ground truth from (image_id, category_id, [x, y, w, h]) and optional area."""
    anns = []
    for i, ann in enumerate(annotations):
        image_id, category_id, bbox = ann[:3]
        area = ann[3] if len(ann) > 3 else bbox[2] * bbox[3]
        anns.append({"id": i + 1, "image_id": image_id, "category_id": category_id,
                     "bbox": list(bbox), "area": area, "iscrowd": 0})
    return {"images": [{"id": i, "width": 300, "height": 300} for i in image_ids],
            "annotations": anns,
            "categories": [{"id": c, "name": f"c{c}"} for c in category_ids]}


def det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": list(bbox), "score": score}


def assert_metrics(metrics, expected):
    assert set(metrics) == {"map", "map50", "map75", "map_small", "map_medium", "map_large"}
    for name, value in expected.items():
        if math.isnan(value):
            assert math.isnan(metrics[name]), (name, metrics[name])
        else:
            assert metrics[name] == pytest.approx(value, abs=1e-9), (name, metrics[name])


def test_numpy_ap_helper_on_known_curves():
    # One object found first: precision 1 up to recall 1 -> AP 1.
    assert coco_ap([True], 1) == pytest.approx(1.0)
    # Two objects, hit then miss: recall 0.5 -> the 51 points r = 0 .. 0.50 get 1, the rest 0.
    assert coco_ap([True, False], 2) == pytest.approx(51 / 101)
    # Miss then hit: precision 1/2 at recall 1 -> every point 0.5.
    assert coco_ap([False, True], 1) == pytest.approx(0.5)


# Ground truth for perfect / zero detections: objects of all three sizes.
SIZED_GT = gt_dict([1, 2, 3], [
    (1, 1, [10, 10, 20, 20]),     # area 400: small
    (1, 2, [100, 100, 60, 60]),   # area 3600: medium
    (2, 1, [0, 0, 150, 120]),     # area 18000: large
    (3, 3, [50, 60, 30, 40]),     # area 1200: medium
])


def test_perfect_detections_score_one():
    detections = [det(a["image_id"], a["category_id"], a["bbox"], 0.5 + 0.1 * i)
                  for i, a in enumerate(SIZED_GT["annotations"])]
    metrics = coco_metrics(SIZED_GT, detections)
    assert_metrics(metrics, {"map": 1.0, "map50": 1.0, "map75": 1.0, "map_small": 1.0,
                             "map_medium": 1.0, "map_large": 1.0})
    assert all(isinstance(v, float) for v in metrics.values())


def test_zero_detections_score_zero_and_nan_without_ground_truth():
    assert_metrics(coco_metrics(SIZED_GT, []),
                   {"map": 0.0, "map50": 0.0, "map75": 0.0, "map_small": 0.0,
                    "map_medium": 0.0, "map_large": 0.0})
    only_small = gt_dict([1], [(1, 1, [0, 0, 10, 10])])
    assert_metrics(coco_metrics(only_small, []),
                   {"map": 0.0, "map50": 0.0, "map75": 0.0, "map_small": 0.0,
                    "map_medium": math.nan, "map_large": math.nan})
    # No ground-truth objects at all: COCOeval's -1 everywhere, returned as NaN.
    empty = gt_dict([1], [])
    for value in coco_metrics(empty, [det(1, 1, [0, 0, 5, 5], 0.9)]).values():
        assert math.isnan(value)


def test_hand_made_case_with_false_positive_and_shifted_box():
    # Category 1: image 1 has A = [0, 0, 10, 10], image 2 has B = [0, 0, 10, 10].
    # Category 2: image 2 has C = [50, 50, 30, 30]. All areas <= 32**2: all "small".
    gt = gt_dict([1, 2], [(1, 1, [0, 0, 10, 10]), (2, 1, [0, 0, 10, 10]),
                          (2, 2, [50, 50, 30, 30])])
    detections = [
        det(1, 1, [0, 0, 10, 10], 0.9),    # d1: exactly A, IoU 1
        det(1, 1, [60, 60, 10, 10], 0.8),  # d2: false positive, IoU 0 with A
        det(2, 1, [2, 0, 10, 10], 0.7),    # d3: B shifted 2 px right
        det(2, 2, [50, 50, 30, 30], 0.6),  # d4: exactly C
    ]
    # d3 vs B: intersection 8 * 10 = 80, union 100 + 100 - 80 = 120, IoU = 2/3.
    iou_d3 = 80 / 120
    iou_thresholds = np.linspace(0.5, 0.95, 10)          # 0.50, 0.55, ..., 0.95
    # Category 1, 2 objects, detections by score d1, d2, d3:
    # - IoU threshold 0.50 .. 0.65 (d3 matches B): TP, FP, TP
    #     precision 1, 1/2, 2/3; recall 1/2, 1/2, 1; interpolated precision 1, 2/3, 2/3
    #     -> recall points 0 .. 0.50 (51 of them) read 1, 0.51 .. 1 (50) read 2/3:
    #     AP = (51 + 50 * 2/3) / 101 = 0.83498...
    # - IoU threshold 0.70 .. 0.95 (d3 misses): TP, FP, FP
    #     precision 1, 1/2, 1/3; recall 1/2, 1/2, 1/2 -> 51 points read 1, the
    #     50 above recall 1/2 are never reached and read 0: AP = 51 / 101 = 0.50495...
    ap_match = (51 + 50 * 2 / 3) / 101
    ap_miss = 51 / 101
    cat1 = [coco_ap([True, False, iou_d3 >= t], 2) for t in iou_thresholds]
    assert cat1 == pytest.approx([ap_match] * 4 + [ap_miss] * 6)
    # Category 2: one object found with IoU 1 at every threshold: AP 1.
    cat2 = [coco_ap([True], 1) for _ in iou_thresholds]
    # mAP: mean over the two categories of the mean over the 10 thresholds.
    expected_map = (np.mean(cat1) + np.mean(cat2)) / 2
    assert expected_map == pytest.approx(((4 * ap_match + 6 * ap_miss) / 10 + 1) / 2)
    metrics = coco_metrics(gt, detections)
    assert_metrics(metrics, {
        "map": expected_map,
        "map50": (cat1[0] + 1) / 2,
        "map75": (cat1[5] + 1) / 2,
        "map_small": expected_map,
        "map_medium": math.nan,
        "map_large": math.nan,
    })


def test_area_ranges_small_medium_large():
    # 32**2 = 1024 and 96**2 = 9216 split the ranges (by the annotation's area).
    gt = gt_dict([1], [
        (1, 1, [0, 0, 20, 20]),        # area 400: small, detected
        (1, 1, [100, 0, 50, 50]),      # area 2500: medium, missed
        (1, 1, [0, 150, 120, 120]),    # area 14400: large, detected
    ])
    detections = [det(1, 1, [0, 0, 20, 20], 0.9), det(1, 1, [0, 150, 120, 120], 0.8)]
    # All sizes: 2 of 3 objects found first: recall 2/3 -> points 0 .. 0.66 (67) read 1.
    assert coco_ap([True, True], 3) == pytest.approx(67 / 101)
    assert_metrics(coco_metrics(gt, detections), {
        "map": 67 / 101, "map50": 67 / 101, "map75": 67 / 101,
        "map_small": 1.0,    # the large detection matches an out-of-range object: ignored
        "map_medium": 0.0,   # the one medium object is missed
        "map_large": 1.0,
    })


def test_area_bounds_are_inclusive_and_use_the_area_field():
    # COCOeval keeps an object when lo <= area <= hi: 32**2 exactly is small AND medium.
    boundary = gt_dict([1], [(1, 1, [0, 0, 32, 32])])
    assert_metrics(coco_metrics(boundary, [det(1, 1, [0, 0, 32, 32], 0.9)]),
                   {"map": 1.0, "map_small": 1.0, "map_medium": 1.0, "map_large": math.nan})
    # A 40x40 box whose (segmentation) area is 500 counts as small, not medium.
    by_area = gt_dict([1], [(1, 1, [0, 0, 40, 40], 500.0)])
    assert_metrics(coco_metrics(by_area, [det(1, 1, [0, 0, 40, 40], 0.9)]),
                   {"map": 1.0, "map_small": 1.0, "map_medium": math.nan,
                    "map_large": math.nan})


def test_inputs_are_not_modified_and_verbose_prints_summary(capsys):
    gt = copy.deepcopy(SIZED_GT)
    detections = [det(1, 1, [10, 10, 20, 20], 0.9)]
    before = (copy.deepcopy(gt), copy.deepcopy(detections))
    coco_metrics(gt, detections)
    assert (gt, detections) == before
    assert capsys.readouterr().out == ""
    coco_metrics(gt, detections, verbose=True)
    out = capsys.readouterr().out
    assert "Average Precision" in out and "Loading" not in out


def predictions_batch():
    """Two images, K = 3; scales 0.5 and 2.0 (resized = original * scale)."""
    boxes = np.array([
        [[10, 20, 50, 60], [0, 0, 8, 4], [0, 0, 0, 0]],      # third entry: padding
        [[4, 4, 24, 14], [9, 9, 9, 9], [2, 2, 6, 6]],        # second entry: label -1
    ], dtype=np.float32)
    confidence = np.array([[0.9, 0.3, 0.0], [0.8, -1.0, 0.05]], dtype=np.float32)
    labels = np.array([[0, 2, 0], [1, -1, 0]])
    return {"boxes": boxes, "confidence": confidence, "labels": labels,
            "num_detections": np.array([2, 3])}


EXPECTED_DETECTIONS = [
    # image 42, scale 0.5: xyxy [10, 20, 50, 60] / 0.5 = [20, 40, 100, 120] -> xywh [20, 40, 80, 80]
    {"image_id": 42, "category_id": 1, "bbox": [20.0, 40.0, 80.0, 80.0], "score": 0.9},
    {"image_id": 42, "category_id": 7, "bbox": [0.0, 0.0, 16.0, 8.0], "score": 0.3},
    # image 7, scale 2: [4, 4, 24, 14] / 2 = [2, 2, 12, 7] -> [2, 2, 10, 5]
    {"image_id": 7, "category_id": 3, "bbox": [2.0, 2.0, 10.0, 5.0], "score": 0.8},
    {"image_id": 7, "category_id": 1, "bbox": [1.0, 1.0, 2.0, 2.0], "score": 0.05},
]


def assert_detections(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a["image_id"] == e["image_id"] and a["category_id"] == e["category_id"]
        assert type(a["image_id"]) is int and type(a["category_id"]) is int
        assert a["bbox"] == pytest.approx(e["bbox"]) and a["score"] == pytest.approx(e["score"])
        assert all(type(v) is float for v in a["bbox"]) and type(a["score"]) is float


def test_detections_from_predictions_conversion():
    image_ids = np.array([42, 7])
    scales = [0.5, 2.0]
    for category_id_of in ([1, 3, 7], {0: 1, 1: 3, 2: 7}, lambda label: (1, 3, 7)[label]):
        assert_detections(
            detections_from_predictions(predictions_batch(), image_ids, scales, category_id_of),
            EXPECTED_DETECTIONS)
    # "scores" instead of "confidence", and a score threshold.
    renamed = predictions_batch()
    renamed["scores"] = renamed.pop("confidence")
    assert_detections(
        detections_from_predictions(renamed, [42, 7], scales, [1, 3, 7], score_threshold=0.1),
        EXPECTED_DETECTIONS[:3])
    # yxyx boxes (keras-hub's default format) give the same detections.
    yxyx = predictions_batch()
    yxyx["boxes"] = yxyx["boxes"][..., [1, 0, 3, 2]]
    assert_detections(detections_from_predictions(yxyx, [42, 7], scales, [1, 3, 7],
                                                  bounding_box_format="yxyx"),
                      EXPECTED_DETECTIONS)


def test_detections_from_predictions_tensors_and_per_axis_scales():
    import keras

    predictions = {k: keras.ops.convert_to_tensor(v) for k, v in predictions_batch().items()}
    # (scale_x, scale_y) per image: x / 0.5 and y / 0.25 for image 42.
    detections = detections_from_predictions(predictions, keras.ops.convert_to_tensor([42, 7]),
                                             np.array([[0.5, 0.25], [2.0, 2.0]]), [1, 3, 7])
    assert detections[0]["bbox"] == pytest.approx([20.0, 80.0, 80.0, 160.0])
    assert_detections(detections[2:], EXPECTED_DETECTIONS[2:])
    # Without num_detections every entry counts except those labelled -1.
    predictions = predictions_batch()
    del predictions["num_detections"]
    detections = detections_from_predictions(predictions, [42, 7], 1.0, [1, 3, 7])
    assert len(detections) == 5 and detections[2]["bbox"] == [0.0, 0.0, 0.0, 0.0]


EVAL_GT = gt_dict([1, 2, 3], [
    (1, 1, [20, 20, 40, 40]), (1, 2, [100, 100, 100, 80]),
    (2, 1, [0, 0, 30, 30]), (3, 3, [10, 50, 60, 60]), (3, 1, [200, 200, 50, 50]),
], category_ids=(1, 2, 3))


def eval_batches():
    """Predictions in a 2x-resized image, two batches; category_id_of = [1, 2, 3]."""
    first = {"boxes": np.array([[[40, 40, 120, 120], [200, 200, 400, 360], [0, 0, 50, 50]],
                                [[2, 0, 62, 60], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32),
             "confidence": np.array([[0.9, 0.7, 0.6], [0.8, 0, 0]], np.float32),
             "labels": np.array([[0, 1, 0], [0, -1, -1]]),
             "num_detections": np.array([3, 1])}
    second = {"boxes": np.array([[[20, 110, 140, 220], [400, 400, 500, 500], [0, 0, 9, 9]]],
                                np.float32),
              "confidence": np.array([[0.95, 0.4, 0.3]], np.float32),
              "labels": np.array([[2, 0, 1]]),
              "num_detections": np.array([3])}
    return [(first, [1, 2], [2.0, 2.0]), (second, [3], [2.0])]


def test_evaluator_accumulation_equals_one_shot():
    evaluator = CocoEvaluator(EVAL_GT, category_id_of=[1, 2, 3])
    detections = []
    for predictions, image_ids, scales in eval_batches():
        added = evaluator.update(predictions, image_ids, scales)
        batch = detections_from_predictions(predictions, image_ids, scales, [1, 2, 3])
        assert added == len(batch)
        detections += batch
    accumulated = evaluator.result()
    one_shot = coco_metrics(EVAL_GT, detections)
    assert 0.0 < one_shot["map"] < 1.0
    assert accumulated == one_shot
    # The same batches concatenated into one.
    (first, ids1, s1), (second, ids2, s2) = eval_batches()
    together = {k: np.concatenate([first[k], second[k]]) for k in first}
    assert coco_metrics(EVAL_GT, detections_from_predictions(
        together, ids1 + ids2, s1 + s2, [1, 2, 3])) == one_shot
    evaluator.reset()
    assert evaluator.result()["map"] == 0.0
    for predictions, image_ids, scales in eval_batches():
        evaluator.update(predictions, image_ids, scales)
    assert evaluator.result() == one_shot


GOOD_GT = gt_dict([1, 2], [(1, 1, [0, 0, 10, 10])], category_ids=(1, 2))


@pytest.mark.parametrize("detections, match", [
    ([det(1, 1, [0, 0, 5, 5], 0.9), det(99, 1, [0, 0, 5, 5], 0.8)],
     r"detections\[1\].*image_id 99.*not in `ground_truth\['images'\]`"),
    ([det(2, 5, [0, 0, 5, 5], 0.9)], r"detections\[0\].*category_id 5.*ids \[1, 2\]"),
    ([det(1, 1, [10, 10, 5, -2], 0.9)], r"detections\[0\].*negative width or height"),
    ([det(1, 1, [0, 0, 5], 0.9)], r"detections\[0\].*expected 4 finite numbers"),
    ([det(1, 1, [0, 0, 5, 5], float("nan"))], r"detections\[0\].*expected a finite number"),
    ([{"image_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9}], r"detections\[0\]` lacks"),
])
def test_bad_detections_raise(detections, match):
    with pytest.raises(ValueError, match=match):
        coco_metrics(GOOD_GT, detections)


def test_bad_ground_truth_raises():
    with pytest.raises(TypeError, match="`ground_truth` must be a COCO-format dict"):
        coco_metrics([], [])
    with pytest.raises(TypeError, match="`detections` must be a list"):
        coco_metrics(GOOD_GT, {"image_id": 1})
    with pytest.raises(ValueError, match=r"lacks \['categories'\]"):
        coco_metrics({"images": [], "annotations": []}, [])
    cases = [
        ({"id": 0}, r"annotations'\]\[0\]` has id 0: annotation ids must be integers >= 1"),
        ({"image_id": 5}, r"image_id 5, which is not in `ground_truth\['images'\]`"),
        ({"category_id": 9}, r"category_id 9, which is not in"),
        ({"bbox": [0, 0, -1, 3]}, "negative width or height"),
    ]
    for change, match in cases:
        gt = copy.deepcopy(GOOD_GT)
        gt["annotations"][0].update(change)
        with pytest.raises(ValueError, match=match):
            coco_metrics(gt, [])
    gt = copy.deepcopy(GOOD_GT)
    del gt["annotations"][0]["area"]
    with pytest.raises(ValueError, match=r"lacks \['area'\].*area = width \* height"):
        coco_metrics(gt, [])


def test_bad_predictions_raise():
    ids, scales, cats = [42, 7], [0.5, 2.0], [1, 3, 7]
    with pytest.raises(ValueError, match="Label 2 is out of range for `category_id_of`"):
        detections_from_predictions(predictions_batch(), ids, scales, [1, 3])
    with pytest.raises(ValueError, match="Label 2 is not a key of `category_id_of`"):
        detections_from_predictions(predictions_batch(), ids, scales, {0: 1, 1: 3})
    with pytest.raises(TypeError, match="`category_id_of` must be a callable, a dict or a seq"):
        detections_from_predictions(predictions_batch(), ids, scales, "abc")
    with pytest.raises(ValueError, match=r"`image_ids` must have one id per image, B = 2, "
                                         r"received 3"):
        detections_from_predictions(predictions_batch(), [1, 2, 3], scales, cats)
    with pytest.raises(ValueError, match=r"`scales` must be a number, shape \(B,\) or \(B, 2\)"):
        detections_from_predictions(predictions_batch(), ids, [1.0, 2.0, 3.0], cats)
    with pytest.raises(ValueError, match="`scales` must be finite and > 0"):
        detections_from_predictions(predictions_batch(), ids, [0.0, 1.0], cats)
    with pytest.raises(ValueError, match=r"lacks \['labels'\]"):
        detections_from_predictions({"boxes": np.zeros((1, 1, 4)), "scores": np.zeros((1, 1))},
                                    [1], 1.0, cats)
    with pytest.raises(ValueError, match=r"`predictions\['boxes'\]` must have shape \(B, K, 4\)"):
        detections_from_predictions({**predictions_batch(), "boxes": np.zeros((2, 3))},
                                    ids, scales, cats)
    with pytest.raises(ValueError, match="`bounding_box_format` must be one of"):
        detections_from_predictions(predictions_batch(), ids, scales, cats,
                                    bounding_box_format="xywh")
    swapped = predictions_batch()
    swapped["boxes"][0, 0] = [50, 60, 10, 20]
    with pytest.raises(ValueError, match=r"Prediction 0 of image 42 .* x2 < x1"):
        detections_from_predictions(swapped, ids, scales, cats)
    with pytest.raises(ValueError, match="`score_threshold` must be a number"):
        CocoEvaluator(GOOD_GT, category_id_of=cats, score_threshold="0.5")
    evaluator = CocoEvaluator(GOOD_GT, category_id_of=[1, 2, 2])
    with pytest.raises(ValueError, match=r"image_id 42, which is not in"):
        evaluator.update(predictions_batch(), ids, scales)

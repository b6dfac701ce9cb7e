"""aw_keras.data.coco: the checked COCO reader and the detection tf.data pipeline,
on small hand-written COCO directories (tiny PNGs written with Pillow)."""

import json
import logging
import os

import numpy as np
import pytest

from aw_keras.data import DataError
from aw_keras.data import coco

Image = pytest.importorskip("PIL.Image", reason="the tests write their images with Pillow")


def _image(path, width, height, value=(200, 100, 50), mode="RGB", fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    pixels = np.empty((height, width, channels), np.uint8)
    pixels[:] = np.asarray(value, np.uint8)[:channels]
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(path, format=fmt)


def _write_json(root, split, images, annotations, categories):
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    os.makedirs(os.path.join(root, split), exist_ok=True)
    with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def _ann(image_id, category_id, bbox, iscrowd=0, **extra):
    return dict(image_id=image_id, category_id=category_id, bbox=bbox, iscrowd=iscrowd,
                **extra)


CATEGORIES = [{"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}]


# -------------------------------------------------------------------- split discovery


def _empty_split(root, split):
    _write_json(root, split, [], [], CATEGORIES)


@pytest.mark.parametrize("splits, expected", [
    (("train2017", "val2017"), ("train2017", "val2017")),
    (("train", "val"), ("train", "val")),
    (("train2014", "val2014", "train2017", "val2017"), ("train2017", "val2017")),
    (("train_small", "val"), ("train_small", "val")),
])
def test_find_coco_splits(tmp_path, splits, expected):
    for split in splits:
        _empty_split(tmp_path, split)
    assert coco.find_coco_splits(str(tmp_path)) == expected
    assert coco.find_coco_splits(f"coco:{tmp_path}") == expected


def test_find_coco_splits_errors(tmp_path):
    with pytest.raises(DataError, match=r"`directory` '.*nothing' does not exist"):
        coco.find_coco_splits(str(tmp_path / "nothing"))
    with pytest.raises(DataError, match="no train/val pair.*found none"):
        coco.find_coco_splits(str(tmp_path))
    _empty_split(tmp_path, "train2017")
    _empty_split(tmp_path, "test2017")
    with pytest.raises(DataError, match=r"no train/val pair.*instances_test2017.json"):
        coco.find_coco_splits(str(tmp_path))


def test_split_aliases_resolve_to_the_found_pair(tmp_path):
    _empty_split(tmp_path, "train2017")
    _empty_split(tmp_path, "val2017")
    assert coco.load_coco(str(tmp_path), "train").split == "train2017"
    assert coco.load_coco(f"coco:{tmp_path}", "validation").split == "val2017"


# ------------------------------------------------------------- whole-file errors


def test_missing_annotation_file_names_its_path(tmp_path):
    _empty_split(tmp_path, "train2017")
    expected = os.path.join(str(tmp_path), "annotations", "instances_val2017.json")
    with pytest.raises(DataError, match=f"`split` 'val2017'.*{expected}.*'train2017'"):
        coco.load_coco(str(tmp_path), "val2017")


def test_non_json_annotation_file(tmp_path):
    _empty_split(tmp_path, "val")
    with open(tmp_path / "annotations" / "instances_val.json", "w") as f:
        f.write("{'images': [")
    with pytest.raises(DataError, match="instances_val.json' is not valid JSON"):
        coco.load_coco(str(tmp_path), "val")
    with open(tmp_path / "annotations" / "instances_val.json", "w") as f:
        json.dump([1, 2], f)
    with pytest.raises(DataError, match="not a COCO instances file"):
        coco.load_coco(str(tmp_path), "val")


def test_missing_image_folder(tmp_path):
    _empty_split(tmp_path, "val")
    os.rmdir(tmp_path / "val")
    with pytest.raises(DataError, match="not its image folder"):
        coco.load_coco(str(tmp_path), "val")


def test_duplicate_image_ids_are_an_error(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "width": 8, "height": 8},
              {"id": 1, "file_name": "b.png", "width": 8, "height": 8}]
    _write_json(tmp_path, "val", images, [], CATEGORIES)
    with pytest.raises(DataError, match="image id 1 twice .'a.png' and 'b.png'"):
        coco.load_coco(str(tmp_path), "val")


def test_duplicate_category_ids_are_an_error(tmp_path):
    _write_json(tmp_path, "val", [], [], CATEGORIES + [{"id": 5, "name": "again"}])
    with pytest.raises(DataError, match="category id 5 twice"):
        coco.load_coco(str(tmp_path), "val")


# ----------------------------------------------------------- bad annotations


@pytest.fixture
def messy(tmp_path):
    """Every kind of bad image and annotation, next to good ones."""
    root = str(tmp_path)
    for name, (w, h) in {"a.png": (100, 50), "b.png": (40, 80), "empty.png": (10, 10),
                         "wrong_size.png": (20, 20)}.items():
        _image(os.path.join(root, "val", name), w, h)
    with open(os.path.join(root, "val", "not_an_image.png"), "w") as f:
        f.write("hello")
    images = [
        {"id": 1, "file_name": "a.png", "width": 100, "height": 50},
        {"id": 7, "file_name": "b.png", "width": 40, "height": 80},
        {"id": 3, "file_name": "missing.png", "width": 10, "height": 10},
        {"id": 4, "file_name": "empty.png", "width": 10, "height": 10},
        {"id": 5, "file_name": "wrong_size.png", "width": 30, "height": 20},
        {"id": 6, "file_name": "not_an_image.png", "width": 5, "height": 5},
        {"id": 8, "file_name": "no_size.png"},
    ]
    annotations = [
        _ann(1, 5, [10, 10, 20, 20], area=300.0),       # kept
        _ann(1, 9, [90, 40, 30, 30]),                   # clipped to [90, 40, 100, 50]
        _ann(1, 9, [-5, 20, 10, 10], area=100.0),       # clipped to [0, 20, 5, 30]
        _ann(7, 5, [0, 0, 0, 10]),                      # zero width: empty_box
        _ann(7, 5, [5, 5, 10, -3]),                     # negative height: empty_box
        _ann(7, 9, [50, 0, 10, 10]),                    # outside the image: empty_box
        _ann(7, 2, [0, 0, 5, 10]),                      # unknown_category
        _ann(7, 9, [1, 2, 5, 10], iscrowd=1),           # crowd
        _ann(7, 5, [3, 4, 10, 20]),                     # kept
        _ann(7, 5, [1, 2, 3]),                          # malformed_annotation
        _ann(7, 5, [1, 2, float("nan"), 3]),            # malformed_annotation
        {"image_id": 7, "bbox": [1, 2, 3, 4]},          # malformed_annotation
        _ann(99, 5, [1, 1, 2, 2]),                      # unknown_image
        _ann(3, 5, [1, 1, 2, 2]),                       # image missing: dropped with it
    ]
    _write_json(root, "val", images, annotations, CATEGORIES)
    return root


def test_bad_annotations_are_counted_and_kept_boxes_exact(messy, caplog):
    with caplog.at_level(logging.INFO, logger="aw_keras.data"):
        split = coco.load_coco(messy, "val")
    assert dict(split.skipped) == {
        "missing_image": 1, "size_mismatch": 1, "unreadable_image": 1,
        "malformed_image": 1, "clipped": 2, "empty_box": 3, "unknown_category": 1,
        "crowd": 1, "malformed_annotation": 3, "unknown_image": 1,
    }
    assert [image.id for image in split.images] == [1, 7, 4]
    a, b, empty = split.images
    np.testing.assert_array_equal(a.boxes, [[10, 10, 30, 30], [90, 40, 100, 50],
                                            [0, 20, 5, 30]])
    np.testing.assert_array_equal(a.labels, [0, 1, 1])
    assert a.boxes.dtype == np.float32 and a.labels.dtype == np.int32
    np.testing.assert_array_equal(b.boxes, [[3, 4, 13, 24]])
    np.testing.assert_array_equal(b.crowd_boxes, [[1, 2, 6, 12]])
    np.testing.assert_array_equal(b.crowd_labels, [1])
    assert empty.boxes.shape == (0, 4) and empty.labels.shape == (0,)  # a negative
    assert a.path == os.path.join(messy, "val", "a.png") and (a.width, a.height) == (100, 50)

    report = split.report()
    assert "3 images (1 without boxes), 4 boxes, 2 categories" in report
    assert "1 missing_image" in report and "3 empty_box" in report
    assert "kept: 2 clipped, 1 crowd" in report
    records = [r for r in caplog.records if r.name == "aw_keras.data"]
    assert [r.getMessage() for r in records] == [report]
    assert records[0].levelno == logging.WARNING


def test_ground_truth_holds_the_cleaned_annotations(messy):
    split = coco.load_coco(messy, "val")
    truth = split.ground_truth()
    assert [image["id"] for image in truth["images"]] == [1, 7, 4]
    assert truth["categories"] == CATEGORIES
    rows = [(a["id"], a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"])
            for a in truth["annotations"]]
    assert rows == [
        (1, 1, 5, [10, 10, 20, 20], 300.0, 0),
        (2, 1, 9, [90, 40, 10, 10], 100.0, 0),     # clipped: the clipped box's area
        (3, 1, 9, [0, 20, 5, 10], 50.0, 0),        # clipped: min(file area, box area)
        (4, 7, 9, [1, 2, 5, 10], 50.0, 1),         # crowd stays for evaluation
        (5, 7, 5, [3, 4, 10, 20], 200.0, 0),
    ]


def test_ground_truth_evaluates_perfect_detections_with_pycocotools(messy):
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    from pycocotools.coco import COCO

    split = coco.load_coco(messy, "val")
    truth = COCO()
    truth.dataset = split.ground_truth()
    truth.createIndex()
    detections = []
    for image in split.images:
        for box, label in zip(image.boxes, image.labels):
            x1, y1, x2, y2 = (float(v) for v in box)
            detections.append({"image_id": image.id,
                               "category_id": split.category_id_of(int(label)),
                               "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 0.9})
    evaluation = cocoeval.COCOeval(truth, truth.loadRes(detections), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_non_contiguous_category_ids(tmp_path):
    root = str(tmp_path)
    _image(os.path.join(root, "val", "a.png"), 20, 20)
    categories = [{"id": 90, "name": "toothbrush"}, {"id": 3, "name": "car"},
                  {"id": 7, "name": "train", "supercategory": "vehicle"}]
    annotations = [_ann(1, 90, [0, 0, 5, 5]), _ann(1, 3, [1, 1, 5, 5]),
                   _ann(1, 7, [2, 2, 5, 5])]
    _write_json(root, "val", [{"id": 1, "file_name": "a.png", "width": 20, "height": 20}],
                annotations, categories)
    split = coco.load_coco(root, "val")
    assert split.category_ids == [3, 7, 90]
    assert split.label_of == {3: 0, 7: 1, 90: 2}
    assert split.class_names == ("car", "train", "toothbrush")
    assert split.categories[1] == {"id": 7, "name": "train", "supercategory": "vehicle"}
    assert split.num_classes == 3
    np.testing.assert_array_equal(split.images[0].labels, [2, 0, 1])
    assert split.category_id_of(2) == 90
    np.testing.assert_array_equal(split.category_id_of(np.array([0, 1, 2])), [3, 7, 90])
    with pytest.raises(ValueError, match="`label` must be in"):
        split.category_id_of(3)


@pytest.mark.parametrize("fmt, suffix", [("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif"),
                                         ("BMP", "bmp")])
def test_image_size_of_reads_headers(tmp_path, fmt, suffix):
    path = str(tmp_path / f"x.{suffix}")
    _image(path, 37, 23, fmt=fmt)
    assert coco.image_size_of(path) == (37, 23)


# ------------------------------------------------------------------ tf.data


@pytest.fixture
def small(tmp_path):
    """a.png 100x50 (left half 10, right half 250), b.png 40x80 grey, c.png 60x60 RGBA,
    d.jpg 30x30 without boxes."""
    root = str(tmp_path)
    pixels = np.full((50, 100, 3), 10, np.uint8)
    pixels[:, 50:] = 250
    os.makedirs(os.path.join(root, "val"))
    Image.fromarray(pixels).save(os.path.join(root, "val", "a.png"))
    _image(os.path.join(root, "val", "b.png"), 40, 80, value=(120,), mode="L")
    _image(os.path.join(root, "val", "c.png"), 60, 60, value=(1, 2, 3, 4), mode="RGBA")
    _image(os.path.join(root, "val", "d.jpg"), 30, 30, value=(128, 128, 128))
    images = [{"id": 11, "file_name": "a.png", "width": 100, "height": 50},
              {"id": 12, "file_name": "b.png", "width": 40, "height": 80},
              {"id": 13, "file_name": "c.png", "width": 60, "height": 60},
              {"id": 14, "file_name": "d.jpg", "width": 30, "height": 30}]
    annotations = [_ann(11, 5, [10, 10, 20, 20]), _ann(11, 9, [60, 0, 40, 25]),
                   _ann(12, 9, [0, 40, 20, 40])]
    annotations += [_ann(13, 5, [i, i, 10, 10]) for i in range(5)]
    _write_json(root, "val", images, annotations, CATEGORIES)
    return coco.load_coco(root, "val")


def test_eval_batches_shapes_padding_and_geometry(small):
    ds = coco.detection_dataset(small, image_size=64, batch_size=3, max_boxes=6)
    batches = list(ds)
    assert len(batches) == 2  # 4 images: the last, partial batch is kept
    (images, targets), (last_images, last_targets) = batches
    assert images.dtype.name == "float32" and images.shape == (3, 64, 64, 3)
    assert last_images.shape == (1, 64, 64, 3)
    assert targets["boxes"].dtype.name == "float32" and targets["boxes"].shape == (3, 6, 4)
    assert targets["labels"].dtype.name == "int32" and targets["labels"].shape == (3, 6)
    images, boxes, labels = images.numpy(), targets["boxes"].numpy(), targets["labels"].numpy()

    # a.png 100x50 -> 64x32 (scale 0.64), padded with zeros below.
    np.testing.assert_allclose(boxes[0, :2], [[6.4, 6.4, 19.2, 19.2], [38.4, 0, 64, 16]],
                               rtol=1e-6)
    np.testing.assert_array_equal(labels[0], [0, 1, -1, -1, -1, -1])
    np.testing.assert_array_equal(boxes[0, 2:], -1)
    assert np.all(images[0, 32:] == 0)
    np.testing.assert_allclose(images[0, :32, :30], 10, atol=1e-3)
    np.testing.assert_allclose(images[0, :32, 34:], 250, atol=1e-3)
    # b.png 40x80 grey -> 32x64 (scale 0.8), three equal channels, padded right.
    np.testing.assert_allclose(boxes[1, 0], [0, 32, 16, 64], rtol=1e-6)
    np.testing.assert_allclose(images[1, :, :32], 120, atol=1e-3)
    assert np.all(images[1, :, 32:] == 0)
    # c.png RGBA: alpha dropped; 5 boxes, all within max_boxes.
    np.testing.assert_allclose(images[2, 0, 0], [1, 2, 3], atol=1e-3)
    np.testing.assert_array_equal(labels[2], [0, 0, 0, 0, 0, -1])
    # d.jpg: a negative, all padding.
    np.testing.assert_array_equal(last_targets["labels"].numpy(), -1)
    np.testing.assert_array_equal(last_targets["boxes"].numpy(), -1)
    assert small.truncated_boxes(6) == 0


def test_metadata_maps_boxes_back_to_the_original_image(small):
    ds = coco.detection_dataset(small, image_size=64, batch_size=4, with_metadata=True)
    images, targets, metadata = next(iter(ds))
    assert metadata["image_id"].dtype.name == "int64"
    assert metadata["scale"].dtype.name == "float32"
    np.testing.assert_array_equal(metadata["image_id"].numpy(), [11, 12, 13, 14])
    np.testing.assert_allclose(metadata["scale"].numpy(), [0.64, 0.8, 64 / 60, 64 / 30],
                               rtol=1e-6)
    boxes = targets["boxes"].numpy()
    for row, image in enumerate(small.images):
        count = len(image.boxes)
        np.testing.assert_allclose(boxes[row, :count] / metadata["scale"].numpy()[row],
                                   image.boxes, rtol=1e-5, atol=1e-4)


def test_more_boxes_than_max_boxes_are_truncated_and_counted(small, caplog):
    skipped, report = dict(small.skipped), small.report()
    with caplog.at_level(logging.WARNING, logger="aw_keras.data"):
        ds = coco.detection_dataset(small, image_size=64, batch_size=4, max_boxes=3)
    assert small.truncated_boxes(3) == 2 and small.truncated_boxes(100) == 0
    assert "1 images have more than `max_boxes`=3 boxes; their 2 extra" in caplog.text
    # the split the user passed is not modified
    assert dict(small.skipped) == skipped and small.report() == report
    with pytest.raises(ValueError, match="max_boxes"):
        small.truncated_boxes(0)
    _, targets = next(iter(ds))
    scale = 64 / 60
    np.testing.assert_allclose(targets["boxes"].numpy()[2],
                               [[i * scale, i * scale, (i + 10) * scale, (i + 10) * scale]
                                for i in range(3)], rtol=1e-5)


def _epochs(ds, count):
    return [[tuple(np.asarray(t) for t in (images, targets["boxes"], targets["labels"]))
             for images, targets in ds] for _ in range(count)]


def test_training_flip_moves_boxes_with_the_image(small):
    ds = coco.detection_dataset(small, image_size=64, batch_size=1, training=True, seed=3)
    seen = set()
    for epoch in _epochs(ds, 6):
        for images, boxes, labels in epoch:
            if labels[0, 1] != 1 or labels[0, 0] != 0 or boxes[0, 0, 3] > 20:
                continue  # not a.png
            flipped = images[0, 10, 5, 0] > 200  # the bright half is on the left
            seen.add(bool(flipped))
            expected = ([[64 - 19.2, 6.4, 64 - 6.4, 19.2], [0, 0, 64 - 38.4, 16]] if flipped
                        else [[6.4, 6.4, 19.2, 19.2], [38.4, 0, 64, 16]])
            np.testing.assert_allclose(boxes[0, :2], expected, rtol=1e-5, atol=1e-5)
            assert np.all(images[0, 32:] == 0)  # padding stays at the bottom
    assert seen == {True, False}


def test_training_is_deterministic_given_the_seed(small):
    def run(seed):
        ds = coco.detection_dataset(small, image_size=32, batch_size=2, training=True,
                                    seed=seed)
        return _epochs(ds, 3)

    first, again, other = run(0), run(0), run(1)
    assert len(first[0]) == 2  # 4 images, full batches of 2
    for epoch_a, epoch_b in zip(first, again):
        for batch_a, batch_b in zip(epoch_a, epoch_b):
            for a, b in zip(batch_a, batch_b):
                np.testing.assert_array_equal(a, b)

    def same(runs_a, runs_b):
        return all(np.array_equal(a, b) for ea, eb in zip(runs_a, runs_b)
                   for ba, bb in zip(ea, eb) for a, b in zip(ba, bb))

    assert not same(first, other)
    assert not same(first[:1], first[1:2])  # each epoch has its own order and flips


def test_dataset_argument_errors(small):
    with pytest.raises(DataError, match="`batch_size` 8 is larger than the 4 images"):
        coco.detection_dataset(small, image_size=32, batch_size=8, training=True)
    with pytest.raises(ValueError, match="`image_size` must be a positive integer"):
        coco.detection_dataset(small, image_size=0, batch_size=2)
    with pytest.raises(ValueError, match="`split` must be a CocoSplit"):
        coco.detection_dataset("coco:/x", image_size=32, batch_size=2)
    assert len(list(coco.detection_dataset(small, image_size=32, batch_size=8))) == 1

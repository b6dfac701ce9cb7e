"""aw_keras.data.fashion_detection: the offline synthetic detection set written in
the COCO layout. Tests that need the real Fashion-MNIST files skip, with the
reason, when they are not installed."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from aw_keras.data import DataError
from aw_keras.data import coco
from aw_keras.data import fashion_detection
from aw_keras.data import sources
from aw_keras.utils import cache

SMALL = dict(train_images=10, val_images=6, image_size=64)


@pytest.fixture(scope="module")
def fashion():
    directory = sources.find_fashion_mnist()
    if directory is None:
        pytest.skip("Fashion-MNIST not found in any of "
                    f"{sources.fashion_mnist_dirs()} (install the Debian package "
                    "dataset-fashion-mnist)")
    return sources.load_fashion_mnist(directory)


def _files(root):
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = handle.read()
    return found


def test_same_seed_same_bytes_other_seed_other_bytes(fashion, tmp_path):
    first = fashion_detection.write_fashion_detection(tmp_path / "a", seed=0, **SMALL)
    again = fashion_detection.write_fashion_detection(tmp_path / "b", seed=0, **SMALL)
    other = fashion_detection.write_fashion_detection(tmp_path / "c", seed=1, **SMALL)
    files = _files(first)
    assert sorted(files) == sorted(
        ["annotations/instances_train.json", "annotations/instances_val.json", cache.MARKER]
        + [f"train/{i:06d}.png" for i in range(10)] + [f"val/{i:06d}.png" for i in range(6)])
    assert files == _files(again)
    other_files = _files(other)
    assert sorted(other_files) == sorted(files)
    assert all(files[name] != other_files[name] for name in files)


def test_written_images_and_boxes_match_the_rendered_objects(fashion, tmp_path):
    """Re-render with the generator's own streams: the PNGs hold the canvases and
    every box is the tight box of its object's visible pixels."""
    Image = pytest.importorskip("PIL.Image")
    root = fashion_detection.write_fashion_detection(tmp_path / "set", seed=4, **SMALL)
    for split, source_split, stream in (("train", "train", 0), ("val", "test", 1)):
        part = fashion.split(source_split)
        canvases = fashion_detection.render_canvases(
            part.images, part.labels, SMALL[f"{split}_images"],
            np.random.default_rng([4, stream]), image_size=64)
        with open(os.path.join(root, "annotations", f"instances_{split}.json")) as f:
            content = json.load(f)
        by_image = {}
        for annotation in content["annotations"]:
            by_image.setdefault(annotation["image_id"], []).append(annotation)
        for number, (canvas, objects, owner) in enumerate(canvases):
            stored = np.asarray(Image.open(os.path.join(root, split, f"{number:06d}.png")))
            np.testing.assert_array_equal(stored, canvas)
            assert 1 <= len(objects) <= 4
            annotations = by_image[number + 1]
            assert len(annotations) == len(objects)
            for k, (item, annotation) in enumerate(zip(objects, annotations)):
                x1, y1, x2, y2 = item["box"]
                assert annotation["bbox"] == [x1, y1, x2 - x1, y2 - y1]
                assert annotation["category_id"] == item["label"] + 1
                assert annotation["area"] == item["area"] == np.sum(owner == k)
                mask = owner == k
                assert mask[y1:y2, x1:x2].sum() == mask.sum()  # every pixel inside
                # tight: each edge row and column holds a visible pixel of the object
                assert mask[y1, x1:x2].any() and mask[y2 - 1, x1:x2].any()
                assert mask[y1:y2, x1].any() and mask[y1:y2, x2 - 1].any()
                size = max(x2 - x1, y2 - y1)
                assert size <= 32  # object_sizes default to 10..32 on 64-pixel canvases


def test_coco_loader_reads_the_generated_set(fashion, tmp_path):
    root = fashion_detection.write_fashion_detection(tmp_path / "set", seed=0, **SMALL)
    assert coco.find_coco_splits(root) == ("train", "val")
    train = coco.load_coco(root, "train")
    val = coco.load_coco(root, "val")
    assert not train.skipped and not val.skipped
    assert len(train.images) == 10 and len(val.images) == 6
    assert train.category_ids == list(range(1, 11))
    assert train.class_names == sources.FASHION_MNIST_CLASSES
    assert all(1 <= len(image.labels) <= 4 for image in train.images)
    images, targets = next(iter(coco.detection_dataset(train, image_size=64, batch_size=4,
                                                       training=True, max_boxes=8)))
    assert images.shape == (4, 64, 64, 3) and targets["boxes"].shape == (4, 8, 4)
    assert float(images.numpy().max()) <= 255.0


def test_cache_is_atomic_and_reused(fashion, tmp_path, monkeypatch):
    monkeypatch.setenv("AW_KERAS_CACHE_DIR", str(tmp_path))
    cache_dir = tmp_path / "fashion_detection"
    name = "v1-seed0-train10-val6-size64"
    # What a killed generation leaves: a temporary directory with part of a set.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = cache_dir / f".{name}.tmp-{dead.pid}-deadbeef"
    (leftover / "annotations").mkdir(parents=True)
    (leftover / "annotations" / "instances_train.json").write_text("{}")

    # A generation interrupted after the train split leaves nothing behind.
    real_write_split = fashion_detection._write_split

    def interrupted(root, split, *args):
        if split == "val":
            raise KeyboardInterrupt
        return real_write_split(root, split, *args)

    monkeypatch.setattr(fashion_detection, "_write_split", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fashion_detection.fashion_detection_dir(seed=0, **SMALL)
    # Neither the interrupted set nor the dead writer's leftover remains; the lock stays.
    assert sorted(os.listdir(cache_dir)) == [f".{name}.lock"]
    monkeypatch.setattr(fashion_detection, "_write_split", real_write_split)

    directory = fashion_detection.fashion_detection_dir(seed=0, **SMALL)
    assert directory == str(cache_dir / name)
    assert len(coco.load_coco(directory, "train").images) == 10
    stamp = os.path.getmtime(os.path.join(directory, "annotations", "instances_val.json"))

    def must_not_generate(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(fashion_detection, "write_fashion_detection", must_not_generate)
    assert fashion_detection.fashion_detection_dir(seed=0, **SMALL) == directory
    assert os.path.getmtime(
        os.path.join(directory, "annotations", "instances_val.json")) == stamp


def test_cache_entry_not_written_by_aw_keras_is_an_error(tmp_path):
    entry = tmp_path / "v1-seed0-train10-val6-size64"
    entry.mkdir()
    (entry / "stray.txt").write_text("x")
    with pytest.raises(DataError, match="is incomplete"):
        fashion_detection.fashion_detection_dir(seed=0, cache_dir=str(tmp_path), **SMALL)


def test_writer_errors(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(DataError, match="`directory` '.*full' already exists"):
        fashion_detection.write_fashion_detection(tmp_path / "full")
    with pytest.raises(DataError, match="Fashion-MNIST files"):
        fashion_detection.write_fashion_detection(
            tmp_path / "new", fashion_mnist_dir=str(tmp_path / "nothing"), **SMALL)
    assert not os.path.exists(tmp_path / "new")
    with pytest.raises(ValueError, match="`object_sizes` must be"):
        fashion_detection.write_fashion_detection(tmp_path / "new", object_sizes=(4, 200))
    with pytest.raises(ValueError, match="`train_images` must be a positive integer"):
        fashion_detection.write_fashion_detection(tmp_path / "new", train_images=0)


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AW_KERAS_CACHE_DIR", str(tmp_path))
    assert fashion_detection.default_cache_dir() == str(tmp_path / "fashion_detection")
    monkeypatch.delenv("AW_KERAS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fashion_detection.default_cache_dir() == str(
        tmp_path / "xdg" / "aw_keras" / "fashion_detection")


def test_a_set_written_before_markers_existed_is_reused(fashion, tmp_path, monkeypatch):
    directory = fashion_detection.fashion_detection_dir(seed=0, cache_dir=str(tmp_path),
                                                        **SMALL)
    os.remove(os.path.join(directory, cache.MARKER))

    def must_not_generate(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(fashion_detection, "_write_split", must_not_generate)
    assert fashion_detection.fashion_detection_dir(seed=0, cache_dir=str(tmp_path),
                                                   **SMALL) == directory


# Worker processes import aw_keras.data.fashion_detection without the package
# __init__ files (which import TensorFlow), so three start in about a second.
# argv: repository root, go file, "kill" to stop for good before the val split.
WORKER = textwrap.dedent("""
    import json, os, sys, time, types
    root, go, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    for name in ("aw_keras", "aw_keras.data"):
        package = types.ModuleType(name)
        package.__path__ = [os.path.join(root, *name.split("."))]
        sys.modules[name] = package
    from aw_keras.data import fashion_detection
    if mode == "kill":
        write_split = fashion_detection._write_split
        def stalled(temp, split, *args):
            if split == "val":
                time.sleep(120)
            return write_split(temp, split, *args)
        fashion_detection._write_split = stalled
    while not os.path.exists(go):
        time.sleep(0.005)
    path = fashion_detection.fashion_detection_dir(seed=0, train_images=8, val_images=4,
                                                   image_size=64)
    print(json.dumps(path))
""")
TINY = dict(train_images=8, val_images=4, image_size=64)
TINY_NAME = "v1-seed0-train8-val4-size64"


def _start_workers(tmp_path, mode, count):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, AW_KERAS_CACHE_DIR=str(tmp_path / "cache"))
    return [subprocess.Popen([sys.executable, "-c", WORKER, root, str(tmp_path / "go"), mode],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(count)]


def _leftovers(directory):
    return [entry for entry in os.listdir(directory) if ".tmp-" in entry]


def test_three_processes_generating_the_set_at_once_all_get_it(fashion, tmp_path):
    workers = _start_workers(tmp_path, "run", 3)
    (tmp_path / "go").write_text("")
    paths = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err[-3000:]
        paths.append(json.loads(out.strip().splitlines()[-1]))
    cache_dir = tmp_path / "cache" / "fashion_detection"
    assert paths == [str(cache_dir / TINY_NAME)] * 3
    assert _leftovers(cache_dir) == []
    assert len(coco.load_coco(paths[0], "train").images) == 8
    assert len(coco.load_coco(paths[0], "val").images) == 4


def test_generation_killed_then_a_normal_run_rebuilds(fashion, tmp_path, monkeypatch):
    (tmp_path / "go").write_text("")
    [worker] = _start_workers(tmp_path, "kill", 1)
    cache_dir = tmp_path / "cache" / "fashion_detection"
    deadline = time.time() + 60
    while not (cache_dir.is_dir() and any(
            (cache_dir / t / "annotations" / "instances_train.json").exists()
            for t in _leftovers(cache_dir))):
        assert worker.poll() is None, worker.communicate()[1][-3000:]
        assert time.time() < deadline, "the worker never wrote the train split"
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    assert not (cache_dir / TINY_NAME).exists()

    monkeypatch.setenv("AW_KERAS_CACHE_DIR", str(tmp_path / "cache"))
    directory = fashion_detection.fashion_detection_dir(seed=0, **TINY)
    assert directory == str(cache_dir / TINY_NAME)
    assert len(coco.load_coco(directory, "train").images) == 8
    assert len(coco.load_coco(directory, "val").images) == 4
    assert _leftovers(cache_dir) == []

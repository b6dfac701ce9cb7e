"""aw-train for detection (an FPN backbone name means detection): usage errors,
a tiny end-to-end run on a COCO-layout set (files, metrics, plots, best model by
validation mAP), and kill -9 + --resume losing no finished epoch."""

import json
import os
import subprocess

import pytest

pytest.importorskip("keras_hub", reason="keras-hub (the 'detection' extra) is not installed")

from aw_keras.train import cli  # noqa: E402
from train_helpers import kill_after_epochs
from train_helpers import read_history  # noqa: E402
from train_helpers import run_main  # noqa: E402
from train_helpers import subprocess_env  # noqa: E402
from train_helpers import train_command  # noqa: E402
from train_helpers import write_detection_set  # noqa: E402


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    return write_detection_set(tmp_path_factory, train_images=16, val_images=8)


@pytest.mark.parametrize("argv, message", [
    (["aw_resnet_cifar", "--detector", "retinanet"], "--detector applies to detection"),
    (["aw_resnet_cifar", "--image-size", "64"], "--image-size applies to detection"),
    (["aw_resnet_cifar", "--detector-kwargs", '{"a": 1}'], "--detector-kwargs applies"),
    (["aw_resnet_small_fpn", "--dataset", "fashion_mnist"], "not a detection dataset"),
    (["aw_resnet_small_fpn", "--dataset", "coco:/no/such/dir"], "does not exist"),
    (["aw_resnet_small_fpn", "--preset", "small"], "--preset is not supported for detection"),
    (["aw_resnet_small_fpn", "--strategy", "multiworker"], "Use --strategy 'mirrored'"),
])
def test_usage_errors(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_main(capsys, cli.main, *argv, "--out", str(out))
    assert code == 2 and message in err, err
    assert not out.exists()


def _hand_written_set(root, annotations_of, splits=("train", "val"), images=4):
    """A COCO directory of ``images`` grey 64 px PNGs per split, categories 1 'cat'
    and 2 'dog', annotations ``annotations_of(image_id)``."""
    image_module = pytest.importorskip("PIL.Image", reason="the test writes PNGs with Pillow")
    import numpy as np

    os.makedirs(os.path.join(root, "annotations"))
    for split in splits:
        os.makedirs(os.path.join(root, split))
        entries, annotations = [], []
        for image_id in range(1, images + 1):
            name = f"{image_id}.png"
            image_module.fromarray(np.full((64, 64, 3), 40 * image_id, np.uint8)).save(
                os.path.join(root, split, name))
            entries.append({"id": image_id, "file_name": name, "width": 64, "height": 64})
            annotations += [dict(image_id=image_id, **a) for a in annotations_of(image_id)]
        with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as f:
            json.dump({"images": entries, "annotations": annotations,
                       "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}, f)
    return root


def test_training_split_without_boxes_is_a_usage_error(tmp_path, capsys):
    # every annotation has a category the file does not list: all dropped
    root = _hand_written_set(str(tmp_path / "coco"), lambda i: [
        {"category_id": 7, "bbox": [4, 4, 20, 20]}, {"category_id": 8, "bbox": [30, 30, 9, 9]}])
    out = tmp_path / "out"
    code, _, err = run_main(capsys, cli.main, "aw_resnet_small_fpn", "--dataset", f"coco:{root}",
                            "--image-size", "64", "--out", str(out))
    assert code == 2, err
    assert "--dataset" in err and "no usable training box" in err, err
    assert "8 unknown_category" in err, err  # the skip counts say why
    assert not out.exists()
    # the library refuses it too, and leaves the caller's config as it was
    from aw_keras.train.detection import train_detector
    from aw_keras.train.run import RunConfig
    from aw_keras.train.run import UsageError

    config = RunConfig(model="aw_resnet_small_fpn", dataset=f"coco:{root}", out=str(out),
                       detector="retinanet")
    with pytest.raises(UsageError, match="no usable training box"):
        train_detector(config)
    assert config.epochs is None and config.image_size is None


def test_coco_folder_without_a_val_file_names_the_dataset_option(tmp_path, capsys):
    root = _hand_written_set(str(tmp_path / "coco"), lambda i: [], splits=("train",))
    out = tmp_path / "out"
    code, _, err = run_main(capsys, cli.main, "aw_resnet_small_fpn", "--dataset", f"coco:{root}",
                            "--out", str(out))
    assert code == 2, err
    assert f"--dataset 'coco:{root}'" in err and "no train/val pair" in err, err
    assert "`directory`" not in err and "--directory" not in err, err
    assert not out.exists()


def test_unknown_detector_argument_is_a_usage_error_naming_detector_kwargs(tmp_path, capsys):
    root = _hand_written_set(str(tmp_path / "coco"), lambda i: [
        {"category_id": 1 + i % 2, "bbox": [4, 4, 20, 20]}])
    out = tmp_path / "out"
    code, _, err = run_main(capsys, cli.main, "resnet_small_fpn", "--dataset", f"coco:{root}",
                            "--image-size", "64", "--batch-size", "2",
                            "--model-kwargs", '{"fpn_channels": 16}',
                            "--detector-kwargs", '{"anchr_size": 2}', "--out", str(out))
    assert code == 2, err
    assert "--detector-kwargs" in err and "'anchr_size'" in err, err
    assert "did you mean 'anchor_size'" in err, err
    assert "--model-kwargs" not in err, err
    assert not out.exists()


def _command(coco_dir, out, epochs, model="aw_resnet_small_fpn"):
    return train_command(
        model, "--dataset", f"coco:{coco_dir}", "--image-size", "64", "--epochs", str(epochs),
        "--batch-size", "4", "--model-kwargs", '{"fpn_channels": 16}', "--attention-images", "2",
        "--detector-kwargs", '{"pre_logits_num_conv_layers": 1}',
        "--verbose", "2", "--out", out)


def test_end_to_end_files_metrics_and_plots(coco_dir, tmp_path):
    out = str(tmp_path / "run")
    done = subprocess.run(_command(coco_dir, out, 2), env=subprocess_env(), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    for key in ("map", "map50", "map75", "map_small", "map_medium", "map_large", "params",
                "train_images_per_second", "best_epoch"):
        assert key in metrics, key
    assert 0.0 <= metrics["map"] <= metrics["map50"] <= 1.0
    assert metrics["detector"] == "retinanet" and metrics["epochs"] == 2
    names = [c["name"] for c in json.load(open(
        os.path.join(coco_dir, "annotations", "instances_val.json")))["categories"]]
    assert len(names) > 1 and metrics["class_names"] == names  # name of label 0, 1, ...
    run = json.load(open(os.path.join(out, "run.json")))
    assert run["class_names"] == names and run["backend"] == "tensorflow"
    # Keras's progress shows the run's epochs, one fit per epoch notwithstanding
    assert "Epoch 1/2" in done.stdout and "Epoch 2/2" in done.stdout, done.stdout[-2000:]
    history = read_history(out)
    assert [h["epoch"] for h in history] == [1, 2]
    assert all("val_map" in h and "val_loss" in h for h in history)
    best = max(history, key=lambda h: h["val_map"])
    assert metrics["best_epoch"] == best["epoch"]
    for name in ("best.keras", "last.keras", "run.json", "history.json",
                 "plots/curves.png", "plots/predictions.png", "plots/fpn_attention.png"):
        assert os.path.isfile(os.path.join(out, name)) and os.path.getsize(
            os.path.join(out, name)) > 0, name
    assert "validation mAP" in done.stdout
    assert "shuffle=True" not in done.stderr  # the dataset shuffles itself; fit is told so
    # best.keras holds no optimizer, and loads without a warning about one
    import warnings
    import zipfile

    import keras

    import aw_keras  # noqa: F401 - registers the detector classes

    with zipfile.ZipFile(os.path.join(out, "best.keras")) as archive:
        assert not any("optimizer" in name for name in archive.namelist()), archive.namelist()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = keras.saving.load_model(os.path.join(out, "best.keras"))
    assert type(model).__name__ == "RetinaNet"
    assert not [w for w in caught if "optimizer" in str(w.message)], [str(w.message) for w in caught]


@pytest.mark.slow
def test_kill_9_then_resume_loses_no_finished_epoch(coco_dir, tmp_path):
    out = str(tmp_path / "run")
    epochs = 4
    command = _command(coco_dir, out, epochs, model="resnet_small_fpn")
    env = subprocess_env()
    kill_after_epochs(command, env, out, 2, timeout=600)
    before = read_history(out)
    assert 2 <= len(before) < epochs
    assert not os.path.exists(os.path.join(out, "metrics.json"))
    resumed = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(epoch {len(before)}," in resumed.stdout, resumed.stdout[-2000:]
    assert "already done" not in resumed.stdout, resumed.stdout[-2000:]  # it trained the rest
    after = read_history(out)
    assert [h["epoch"] for h in after] == list(range(1, epochs + 1))
    assert after[:len(before)] == before
    assert json.load(open(os.path.join(out, "metrics.json")))["epochs"] == epochs

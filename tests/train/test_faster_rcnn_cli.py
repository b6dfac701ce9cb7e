"""aw-train --detector faster_rcnn: a tiny end-to-end run through the CLI's main
(run.json, metrics.json, best/last .keras that load and predict, plots), an
interrupted run resumed with --resume, kill -9 + --resume (slow), and the
retinanet-levels backbone usage error."""

import json
import os
import subprocess

import numpy as np
import pytest

pytest.importorskip("keras_hub", reason="keras-hub (the 'detection' extra) is not installed")

from aw_keras.train import cli  # noqa: E402
from train_helpers import kill_after_epochs
from train_helpers import read_history  # noqa: E402
from train_helpers import run_main  # noqa: E402
from train_helpers import subprocess_env  # noqa: E402
from train_helpers import train_command  # noqa: E402
from train_helpers import write_detection_set  # noqa: E402

# FasterRCNN's small-image settings (64 px): anchors 16..256 px, few proposals and RoIs
SMALL = {"anchor_size": 4, "rpn_pre_nms_top_k_train": 200, "rpn_post_nms_top_k_train": 100,
         "rpn_pre_nms_top_k_test": 100, "rpn_post_nms_top_k_test": 50,
         "roi_samples_per_image": 64, "representation_size": 64, "seed": 0}


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    return write_detection_set(tmp_path_factory, train_images=8, val_images=4)


def _argv(coco_dir, out, epochs, model="aw_resnet_small_fpn", model_kwargs=None):
    return [model, "--detector", "faster_rcnn", "--dataset", f"coco:{coco_dir}",
            "--image-size", "64", "--epochs", str(epochs), "--batch-size", "4",
            "--model-kwargs", json.dumps(model_kwargs or {"fpn_channels": 16}),
            "--detector-kwargs", json.dumps(SMALL), "--attention-images", "2",
            "--verbose", "2", "--out", out]


def test_retinanet_levels_backbone_is_a_usage_error(coco_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = _argv(coco_dir, str(out), 1, model_kwargs={"fpn_channels": 16, "levels": "retinanet"})
    code, _, err = run_main(capsys, cli.main, *argv)
    assert code == 2, err
    assert "faster_rcnn" in err and "retinanet" in err and "levels" in err, err
    assert not out.exists()


def test_build_detector_refuses_retinanet_levels():
    from aw_keras.train.detection import build_detector
    from aw_keras.train.run import RunConfig
    from aw_keras.train.run import UsageError

    config = RunConfig(model="resnet_small_fpn", model_kwargs={"levels": "retinanet"},
                       detector="faster_rcnn", image_size=64)
    with pytest.raises(UsageError, match="levels='two_stage'.*'retinanet'"):
        build_detector(config, 2)


def test_bn_momentum_reaches_the_backbone_inside_faster_rcnn():
    import keras

    from aw_keras.train.detection import BN_MOMENTUM
    from aw_keras.train.detection import build_detector
    from aw_keras.train.run import RunConfig
    from aw_keras.train.run import all_layers
    from aw_keras.train.run import set_bn_momentum

    config = RunConfig(model="aw_resnet_small_fpn", model_kwargs={"fpn_channels": 16},
                       detector="faster_rcnn", detector_kwargs=SMALL, image_size=64)
    model = build_detector(config, 2)
    assert (model.backbone.min_level, model.backbone.max_level) == (2, 6)
    norms = [layer for layer in all_layers(model.backbone)
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) > 5 and any(layer.momentum == 0.99 for layer in norms)
    assert set_bn_momentum(model, BN_MOMENTUM) >= len(norms)
    assert all(layer.momentum == BN_MOMENTUM == 0.9 for layer in norms)


def test_end_to_end_files_metrics_models_and_plots(coco_dir, tmp_path, capsys):
    import keras

    from aw_keras.detection import FasterRCNN

    out = str(tmp_path / "run")
    code, stdout, err = run_main(capsys, cli.main, *_argv(coco_dir, out, 2))
    assert code == 0, stdout[-2000:] + err[-3000:]
    run = json.load(open(os.path.join(out, "run.json")))
    assert run["config"]["detector"] == "faster_rcnn"
    assert run["identity"]["detector_kwargs"] == SMALL
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    for key in ("map", "map50", "map75", "map_small", "params", "backbone_params",
                "train_images_per_second", "best_epoch", "best_val_map"):
        assert key in metrics, key
    assert metrics["detector"] == "faster_rcnn" and metrics["epochs"] == 2
    assert 0.0 <= metrics["map"] <= metrics["map50"] <= 1.0
    history = read_history(out)
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        for key in ("loss", "rpn_objectness_loss", "rpn_box_loss", "classification_loss",
                    "box_loss", "val_loss", "val_map", "val_map50", "val_map75"):
            assert key in h and np.isfinite(h[key]), (key, h)
    for name in ("best.keras", "last.keras", "run.json", "history.json", "plots/curves.png",
                 "plots/predictions.png", "plots/fpn_attention.png"):
        path = os.path.join(out, name)
        assert os.path.isfile(path) and os.path.getsize(path) > 0, name
    assert "validation mAP" in stdout
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    for name in ("best.keras", "last.keras"):
        model = keras.saving.load_model(os.path.join(out, name))
        assert isinstance(model, FasterRCNN)
        assert model.backbone.min_level == 2 and model.backbone.max_level == 6
        assert model.anchor_size == 4 and model.roi_samples_per_image == 64
        predictions = model.predict(images, verbose=0)
        assert predictions["boxes"].shape == (2, 100, 4)
        assert predictions["labels"].dtype == np.int32
        assert predictions["num_detections"].shape == (2,)


def test_interrupted_run_resumes(coco_dir, tmp_path, capsys, monkeypatch):
    """An exception after epoch 1's checkpoint (as a crash would leave it), then --resume."""
    from aw_keras.train import run as classification

    out = str(tmp_path / "run")
    original = classification.RunKeeper.on_epoch_end

    def crash_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 0:
            raise RuntimeError("simulated crash after epoch 1")

    monkeypatch.setattr(classification.RunKeeper, "on_epoch_end", crash_after_first_epoch)
    argv = _argv(coco_dir, out, 2, model="resnet_small_fpn")
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli.main(argv)
    capsys.readouterr()
    monkeypatch.setattr(classification.RunKeeper, "on_epoch_end", original)
    before = read_history(out)
    assert [h["epoch"] for h in before] == [1]
    assert not os.path.exists(os.path.join(out, "metrics.json"))
    code, stdout, err = run_main(capsys, cli.main, *argv, "--resume")
    assert code == 0, stdout[-2000:] + err[-3000:]
    assert "epochs 1->2" in stdout, stdout[-2000:]
    assert "already done" not in stdout, stdout[-2000:]  # it trained epoch 2
    after = read_history(out)
    assert [h["epoch"] for h in after] == [1, 2]
    assert after[:1] == before
    assert json.load(open(os.path.join(out, "metrics.json")))["epochs"] == 2


@pytest.mark.slow
def test_kill_9_then_resume_loses_no_finished_epoch(coco_dir, tmp_path):
    out = str(tmp_path / "run")
    epochs = 3
    command = train_command(*_argv(coco_dir, out, epochs, model="resnet_small_fpn"))
    env = subprocess_env()
    kill_after_epochs(command, env, out, 1, timeout=600)
    before = read_history(out)
    assert 1 <= len(before) < epochs
    assert not os.path.exists(os.path.join(out, "metrics.json"))
    resumed = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"epochs {len(before)}->{epochs}" in resumed.stdout, resumed.stdout[-2000:]
    after = read_history(out)
    assert [h["epoch"] for h in after] == list(range(1, epochs + 1))
    assert after[:len(before)] == before
    assert json.load(open(os.path.join(out, "metrics.json")))["epochs"] == epochs

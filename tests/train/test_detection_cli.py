"""aw-train for detection (an FPN backbone name means detection): usage errors,
a tiny end-to-end run on a COCO-layout set (files, metrics, plots, best model by
validation mAP), and kill -9 + --resume losing no finished epoch."""

import json
import os
import signal
import subprocess
import time

import pytest

pytest.importorskip("keras_hub", reason="keras-hub (the 'detection' extra) is not installed")

from aw_keras.train import cli  # noqa: E402
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


@pytest.mark.slow
def test_kill_9_then_resume_loses_no_finished_epoch(coco_dir, tmp_path):
    out = str(tmp_path / "run")
    epochs = 4
    command = _command(coco_dir, out, epochs, model="resnet_small_fpn")
    env = subprocess_env()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while len(read_history(out)) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    before = read_history(out)
    assert 2 <= len(before) < epochs
    assert not os.path.exists(os.path.join(out, "metrics.json"))
    resumed = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(epoch {len(before)}," in resumed.stdout, resumed.stdout[-2000:]
    after = read_history(out)
    assert [h["epoch"] for h in after] == list(range(1, epochs + 1))
    assert after[:len(before)] == before
    assert json.load(open(os.path.join(out, "metrics.json")))["epochs"] == epochs

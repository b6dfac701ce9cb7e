"""aw-train on Keras's JAX backend (`--backend jax`): a classification run killed
with SIGKILL and resumed, its run.json naming the backend, its best.keras giving
the reported error when loaded on TensorFlow and exported by aw-export (which runs
on TensorFlow whatever KERAS_BACKEND says); a RetinaNet run in mixed precision
killed and resumed (slow); and the usage errors for what runs on TensorFlow only."""

import json
import os
import subprocess

import numpy as np
import pytest

from aw_keras.train import cli
from train_helpers import kill_after_epochs
from train_helpers import TINY_KWARGS, read_history, run_main, subprocess_env, train_command
from train_helpers import write_detection_set

pytest.importorskip("jax", reason="JAX is not installed (pip install 'aw_keras[jax]')")


def test_jax_run_killed_resumed_and_loaded_on_tensorflow(tmp_path, tiny_folder):
    import keras

    import aw_keras  # noqa: F401 - registers the custom layers
    from aw_keras import data

    out = str(tmp_path / "run")
    epochs = 8
    command = train_command(
        "aw_resnet_cifar", "--backend", "jax", "--dataset", f"folder:{tiny_folder}",
        "--epochs", str(epochs), "--batch-size", "4", "--checkpoint-steps", "3",
        "--model-kwargs", TINY_KWARGS, "--attention-images", "1", "--verbose", "2",
        "--out", out)
    env = subprocess_env()
    env.pop("KERAS_BACKEND", None)
    kill_after_epochs(command, env, out, 2, timeout=300)
    before = read_history(out)
    done = len(before)
    assert 2 <= done < epochs and not os.path.exists(os.path.join(out, "metrics.json"))

    resumed = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    after = read_history(out)
    assert [h["epoch"] for h in after] == list(range(1, epochs + 1))
    assert after[:done] == before  # the epochs before the kill were kept
    run = json.load(open(os.path.join(out, "run.json")))
    assert run["backend"] == "jax"
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["epochs"] == epochs
    for name in ("best.keras", "last.keras", "plots/curves.png", "plots/attention_maps.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name

    # best.keras, trained on JAX, on TensorFlow (this process): the reported error on
    # the test split (= validation here) from the pipeline's raw pixels.
    assert keras.backend.backend() == "tensorflow"
    best = keras.saving.load_model(os.path.join(out, "best.keras"), compile=False)
    source = data.get_source(f"folder:{tiny_folder}")
    images, labels = [], []
    for x, y in data.eval_dataset(source, "test", data.get_preset("small"), 4):
        images.append(np.asarray(x))
        labels.append(np.asarray(y))
    predictions = best.predict(np.concatenate(images), verbose=0)
    error = float(np.mean(predictions.argmax(-1) != np.concatenate(labels)))
    assert error == pytest.approx(metrics["best_top1_error"], abs=1e-6)

    # aw-export takes the JAX-trained file on TensorFlow whatever KERAS_BACKEND says,
    # and verifies every artifact in its runtime.
    exported = tmp_path / "exported"
    done = subprocess.run(
        [*train_command()[:2], "aw_keras.export.cli", os.path.join(out, "best.keras"),
         "--out", str(exported)],
        env=dict(env, KERAS_BACKEND="jax"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads((exported / "verification.json").read_text())
    assert report["failures"] == [] and report["results"]
    assert all(r["passed"] for r in report["results"]), report["results"]


@pytest.mark.slow  # ~4 min on 2 cores: JAX compiles the detector's steps in each process
def test_jax_retinanet_run_in_mixed_precision_killed_and_resumed(tmp_path_factory, tmp_path):
    """aw-train --detector retinanet on JAX under mixed_bfloat16: killed after an
    epoch, resumed, its files complete, and best.keras loading on TensorFlow."""
    import keras

    import aw_keras  # noqa: F401 - registers the detector classes

    coco_dir = write_detection_set(tmp_path_factory, train_images=16, val_images=8)
    out = str(tmp_path / "run")
    epochs = 3
    command = train_command(
        "aw_resnet_small_fpn", "--backend", "jax", "--mixed-precision", "--dataset",
        f"coco:{coco_dir}", "--image-size", "64", "--epochs", str(epochs), "--batch-size", "4",
        "--model-kwargs", '{"fpn_channels": 16}', "--attention-images", "2",
        "--detector-kwargs", '{"pre_logits_num_conv_layers": 1}', "--verbose", "2",
        "--out", out)
    env = subprocess_env()
    env.pop("KERAS_BACKEND", None)
    kill_after_epochs(command, env, out, 1, timeout=900)
    before = read_history(out)
    assert 1 <= len(before) < epochs and not os.path.exists(os.path.join(out, "metrics.json"))
    resumed = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "policy mixed_bfloat16" in resumed.stdout, resumed.stdout[-2000:]
    after = read_history(out)
    assert [h["epoch"] for h in after] == list(range(1, epochs + 1))
    assert after[:len(before)] == before
    assert all("val_map" in h for h in after)
    assert json.load(open(os.path.join(out, "run.json")))["backend"] == "jax"
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["detector"] == "retinanet" and metrics["epochs"] == epochs
    for name in ("plots/curves.png", "plots/predictions.png", "plots/fpn_attention.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    best = keras.saving.load_model(os.path.join(out, "best.keras"))
    assert type(best).__name__ == "RetinaNet"


@pytest.mark.parametrize("argv, message", [
    (["aw_resnet_cifar", "--strategy", "mirrored"], "--strategy mirrored is tf.distribute"),
    (["aw_resnet_small_fpn", "--detector", "faster_rcnn"],
     "--detector faster_rcnn runs on --backend tensorflow only"),
])
def test_what_runs_on_tensorflow_only_is_a_usage_error(capsys, tmp_path, argv, message):
    out = tmp_path / "run"
    status, _, err = run_main(capsys, cli.main, argv[0], "--backend", "jax",
                              "--out", str(out), *argv[1:])
    assert status == 2 and message in err, err
    assert not out.exists()


def test_another_backend_than_the_running_one_is_a_usage_error(capsys, tmp_path):
    status, _, err = run_main(capsys, cli.main, "aw_resnet_cifar", "--backend", "torch",
                              "--out", str(tmp_path / "run"))
    assert status == 2 and "Keras is already running on tensorflow" in err, err


def test_faster_rcnn_on_another_backend_is_a_usage_error_in_that_process(tmp_path):
    """An FPN backbone with P2..P6 and --detector faster_rcnn, checked in a JAX
    process once the registry is imported: refused before anything is written."""
    out = tmp_path / "run"
    env = subprocess_env()
    env["KERAS_BACKEND"] = "jax"
    done = subprocess.run(train_command("aw_resnet_small_fpn", "--detector", "faster_rcnn",
                                        "--out", str(out)),
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "--detector faster_rcnn runs on --backend tensorflow only" in done.stderr, \
        done.stderr[-2000:]
    assert not out.exists()

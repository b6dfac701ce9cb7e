"""aw-train on Keras's JAX backend (`--backend jax`): a classification run killed
with SIGKILL and resumed, its run.json naming the backend, its best.keras giving
the reported error when loaded on TensorFlow and exported by aw-export (which runs
on TensorFlow whatever KERAS_BACKEND says); and the usage errors for what runs on
TensorFlow only."""

import json
import os
import subprocess

import numpy as np
import pytest

from aw_keras.train import cli
from train_helpers import kill_after_epochs
from train_helpers import TINY_KWARGS, read_history, run_main, subprocess_env, train_command

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


@pytest.mark.parametrize("argv, message", [
    (["--strategy", "mirrored"], "--strategy mirrored is tf.distribute"),
    (["--detector", "retinanet"], "detection runs on --backend tensorflow only"),
])
def test_what_runs_on_tensorflow_only_is_a_usage_error(capsys, tmp_path, argv, message):
    out = tmp_path / "run"
    status, _, err = run_main(capsys, cli.main, "aw_resnet_cifar", "--backend", "jax",
                              "--out", str(out), *argv)
    assert status == 2 and message in err, err
    assert not out.exists()


def test_another_backend_than_the_running_one_is_a_usage_error(capsys, tmp_path):
    status, _, err = run_main(capsys, cli.main, "aw_resnet_cifar", "--backend", "torch",
                              "--out", str(tmp_path / "run"))
    assert status == 2 and "Keras is already running on tensorflow" in err, err


def test_an_fpn_backbone_on_another_backend_is_a_usage_error(tmp_path):
    """Without --detector the registry says the model is a detection backbone;
    on JAX that is refused before anything is written."""
    out = tmp_path / "run"
    done = subprocess.run(train_command("aw_resnet_small_fpn", "--backend", "jax", "--out",
                                        str(out)),
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "detection runs on --backend tensorflow only" in done.stderr, done.stderr[-2000:]
    assert not out.exists()

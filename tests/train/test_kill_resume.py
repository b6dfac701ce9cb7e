"""`kill -9` during aw-train, then --resume: no completed epoch lost or redone, the
directory stays consistent; a truncated checkpoint is detected and the previous
one used. Runs the real CLI in subprocesses on a tiny AW model and image folder."""

import importlib.util
import json
import os
import subprocess

import numpy as np

from train_helpers import kill_after_epochs
from train_helpers import TINY_KWARGS, read_history, subprocess_env, train_command


def test_kill_9_then_resume_then_corrupt_checkpoint(tmp_path, tiny_folder):
    out = str(tmp_path / "run")
    epochs = 12
    command = train_command(
        "aw_resnet_cifar", "--dataset", f"folder:{tiny_folder}", "--epochs", str(epochs),
        "--batch-size", "4", "--checkpoint-steps", "3", "--model-kwargs", TINY_KWARGS,
        "--attention-images", "2", "--verbose", "2", "--out", out)
    env = subprocess_env()

    kill_after_epochs(command, env, out, 2, timeout=240)
    before = read_history(out)
    done = len(before)
    assert 2 <= done < epochs
    assert not os.path.exists(os.path.join(out, "metrics.json"))

    resumed = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(epoch {done}," in resumed.stdout, resumed.stdout[-2000:]
    after = read_history(out)
    assert [h["epoch"] for h in after] == list(range(1, epochs + 1))
    # The epochs completed before the kill were kept, not trained again.
    assert after[:done] == before
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["epochs"] == epochs and metrics["model"] == "aw_resnet_cifar"
    assert 0.0 <= metrics["top1_error"] <= 1.0
    assert metrics["top5_error"] is None  # 2 classes: top-5 is not reported
    assert metrics["params"] > 0 and metrics["train_images_per_second"] > 0
    for name in ("best.keras", "last.keras", "plots/curves.png", "plots/attention_maps.png",
                 "run.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    if importlib.util.find_spec("tensorboard"):
        assert os.listdir(os.path.join(out, "tensorboard"))
    leftovers = [n for _, dirs, files in os.walk(out) for n in dirs + files if n.startswith(".tmp-")]
    assert leftovers == []

    # Truncate the newest checkpoint: the next --resume says so, uses the previous
    # one and still finishes all epochs.
    checkpoints = sorted(n for n in os.listdir(os.path.join(out, "checkpoints"))
                         if n.startswith("ckpt-") and not n.endswith(".corrupt"))
    newest = os.path.join(out, "checkpoints", checkpoints[-1], "model.weights.h5")
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)
    again = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"checkpoint {checkpoints[-1]} is corrupt" in again.stdout
    assert os.path.isdir(os.path.join(out, "checkpoints", checkpoints[-1] + ".corrupt"))
    final = read_history(out)
    assert [h["epoch"] for h in final] == list(range(1, epochs + 1))

    import keras

    import aw_keras  # noqa: F401 - registers AWConv2D for loading

    model = keras.models.load_model(os.path.join(out, "last.keras"), compile=False)
    probs = model.predict(np.zeros((1, 8, 8, 1), "float32"), verbose=0)
    assert probs.shape == (1, 2)
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)

"""aw-train --mixed-precision and --jit: the run finishes, learns, and what it
writes is honest about the policy (mixed_bfloat16 on CPU, float32 variables)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from train_helpers import TINY_KWARGS, subprocess_env, train_command


# --jit (XLA) is slow: ~45 s on 2 cores; the layer's XLA fit tests run by default
@pytest.mark.parametrize("flags,policy", [
    (["--mixed-precision"], "mixed_bfloat16"),
    pytest.param(["--jit"], "float32", marks=pytest.mark.slow)])
def test_aw_train_with_mixed_precision_or_xla(tmp_path, tiny_folder, flags, policy):
    out = str(tmp_path / "run")
    command = train_command(
        "aw_resnet_cifar", "--dataset", f"folder:{tiny_folder}", "--epochs", "2",
        "--batch-size", "4", "--model-kwargs", TINY_KWARGS, "--attention-images", "1",
        "--verbose", "2", "--seed", "3", "--out", out, *flags)
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.load(open(os.path.join(out, "history.json")))
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in history)
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert 0.0 <= metrics["top1_error"] <= 1.0 and metrics["train_images_per_second"] > 0
    run = json.load(open(os.path.join(out, "run.json")))
    assert run["config"]["mixed_precision"] == ("--mixed-precision" in flags)
    assert run["config"]["jit"] == ("--jit" in flags)

    # The saved model carries the policy it was trained with; weights stay float32.
    check = (
        "import keras, aw_keras, json\n"
        f"m = keras.saving.load_model({os.path.join(out, 'last.keras')!r})\n"
        "aw = [l for l in m._flatten_layers() if isinstance(l, aw_keras.layers.AWConv2D)]\n"
        "print(json.dumps({'policy': aw[0].dtype_policy.name, "
        "'kernel': str(aw[0].kernel.dtype), 'count': len(aw)}))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", check], env=subprocess_env(), capture_output=True,
                            text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    info = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert info["count"] >= 1
    assert info["policy"] == policy
    assert info["kernel"] == "float32"

"""aw-train --strategy mirrored with two replicas (two logical CPUs): trains,
survives kill -9 and resumes from its checkpoint without losing or redoing an
epoch; a bad AW_TRAIN_CPU_REPLICAS is a clear usage error."""

import json
import os
import signal
import subprocess
import time

import numpy as np

from train_helpers import TINY_KWARGS, read_history, subprocess_env, train_command


def test_mirrored_two_replicas_kill_and_resume(tmp_path, tiny_folder):
    out = str(tmp_path / "run")
    epochs = 5  # killed after 2 or more: the resumed run still has epochs to add
    command = train_command(
        "aw_resnet_cifar", "--dataset", f"folder:{tiny_folder}", "--batch-size", "4",
        "--epochs", str(epochs), "--checkpoint-steps", "3", "--model-kwargs", TINY_KWARGS,
        "--attention-images", "1", "--verbose", "2", "--strategy", "mirrored",
        "--seed", "1", "--out", out)
    env = subprocess_env(AW_TRAIN_CPU_REPLICAS="2")

    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 300
    while len(read_history(out)) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    first_output = process.communicate()[0]
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert "2 replica(s)" in first_output
    assert "8 steps/epoch of 4" in first_output  # 32 training images, global batch 4
    before = read_history(out)
    done = len(before)
    assert 2 <= done < epochs

    resumed = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True,
                             timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "2 replica(s)" in resumed.stdout
    after = read_history(out)
    assert [h["epoch"] for h in after] == list(range(1, epochs + 1))
    assert after[:done] == before
    assert all(np.isfinite(h["loss"]) for h in after)
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["epochs"] == epochs and 0.0 <= metrics["top1_error"] <= 1.0


def test_bad_cpu_replicas_is_a_usage_error(tmp_path, tiny_folder):
    out = str(tmp_path / "run")
    bad = subprocess.run(
        train_command("aw_resnet_cifar", "--dataset", f"folder:{tiny_folder}", "--epochs", "1",
                      "--batch-size", "4", "--model-kwargs", TINY_KWARGS,
                      "--strategy", "mirrored", "--out", out),
        env=subprocess_env(AW_TRAIN_CPU_REPLICAS="two"), capture_output=True, text=True,
        timeout=200)
    assert bad.returncode == 2
    assert "AW_TRAIN_CPU_REPLICAS must be a positive integer" in bad.stderr + bad.stdout
    assert not os.path.exists(out)

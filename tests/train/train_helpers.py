"""Helpers shared by the aw-train tests (imported by path, see conftest.py)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A tiny registered model: a 3-stage bottleneck ResNet of width 2 on 8x8 images.
TINY_KWARGS = '{"blocks": [1, 1, 1], "width": 2}'


def write_folder(root, train=16, val=8, size=8):
    """Two learnable classes of grey PNGs: bright top half vs bright bottom half."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        for label, name in enumerate(("top", "bottom")):
            directory = os.path.join(root, split, name)
            os.makedirs(directory)
            for i in range(count):
                pixels = rng.integers(0, 60, (size, size, 1)).astype(np.uint8)
                half = slice(0, size // 2) if label == 0 else slice(size // 2, size)
                pixels[half] += 150
                with open(os.path.join(directory, f"{i}.png"), "wb") as f:
                    f.write(tf.io.encode_png(pixels).numpy())
    return root


def train_command(*args):
    return [sys.executable, "-m", "aw_keras.train.cli", *args]


def subprocess_env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
               CUDA_VISIBLE_DEVICES="", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    env.update(extra)
    return env


def kill_after_epochs(command, env, history_dir, epochs, timeout=600):
    """Starts ``command`` and SIGKILLs it as soon as ``history_dir``'s history.json
    holds ``epochs`` epochs; fails when it ended before that. Returns the history
    at the kill."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while (len(read_history(history_dir)) < epochs and process.poll() is None
           and time.time() < deadline):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    return read_history(history_dir)


def read_history(out):
    """The run's history.json as a list, or [] while it does not exist or is being written."""
    try:
        with open(os.path.join(out, "history.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return []


def run_main(capsys, main, *argv):
    """(exit status, stdout, stderr) of a CLI ``main(argv)``, argparse exits included."""
    try:
        status = main(list(argv))
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def snapshot(root):
    """{path: bytes} of every file under ``root`` (to assert nothing was touched)."""
    found = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                found[path] = f.read()
    return found


def write_detection_set(tmp_path_factory, train_images, val_images):
    """A small offline detection set (COCO layout, 64 px) in a fresh temporary
    directory; skips the test, with the data's own reason, when it cannot be written."""
    import pytest

    from aw_keras.data import write_fashion_detection

    directory = str(tmp_path_factory.mktemp("coco") / "fashion")
    try:
        write_fashion_detection(directory, train_images=train_images, val_images=val_images,
                                image_size=64, seed=3)
    except Exception as error:  # noqa: BLE001 - the data's own error says what is missing
        pytest.skip(f"cannot write the detection set: {error}")
    return directory

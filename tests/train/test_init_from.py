"""aw-train --init-from: fine-tuning an AW model from a trained plain model.

The converted model's first evaluation (before any training) equals the plain
model's, and training continues from there; bad --init-from values exit 2 and
write nothing.
"""

import hashlib
import json
import os

import numpy as np
import pytest

from aw_keras.train import cli
from train_helpers import run_main

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def common(width=4):
    return ["--dataset", "fashion_mnist", "--train-examples", "1024", "--val-examples", "256",
            "--batch-size", "32", "--model-kwargs", f'{{"blocks": [1, 1, 1], "width": {width}}}',
            "--verbose", "0", "--attention-images", "0", "--checkpoint-steps", "0"]


def _run(capsys, *argv):
    status, _, err = run_main(capsys, cli.main, *argv)
    return status, err


def _read(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.parametrize("value, message", [
    ("weights.txt", "--init-from must be 'imagenet' or a .keras / .weights.h5 file"),
    ("/nonexistent/plain.keras", "--init-from file '/nonexistent/plain.keras' does not exist"),
])
def test_bad_init_from_exits_2_and_writes_nothing(capsys, tmp_path, value, message):
    out = tmp_path / "out"
    status, err = _run(capsys, "aw_resnet_cifar", "--init-from", value, "--out", str(out))
    assert status == 2 and message in err, err
    assert not out.exists()


def test_damaged_init_from_file_is_a_usage_error_naming_it(capsys, tmp_path):
    damaged = tmp_path / "plain.keras"
    damaged.write_bytes(b"PK\x03\x04 truncated")  # a zip header, nothing after it
    out = tmp_path / "out"
    status, err = _run(capsys, "aw_resnet_cifar", "--init-from", str(damaged), "--out", str(out))
    assert status == 2, err
    assert f"--init-from file {str(damaged)!r} is not a valid .keras archive" in err, err
    assert "File not found" not in err
    assert not out.exists()


def test_fine_tune_aw_from_a_trained_plain_model(capsys, tmp_path):
    if not os.path.isdir(FASHION_MNIST):
        pytest.skip(f"Fashion-MNIST not found at {FASHION_MNIST}")
    import keras

    plain, aw = str(tmp_path / "plain"), str(tmp_path / "aw")
    # Two short epochs: ~35 % test accuracy, so that equal accuracies mean something.
    status, err = _run(capsys, "resnet_cifar", *common(), "--epochs", "2", "--out", plain)
    assert status == 0, err
    source = os.path.join(plain, "last.keras")

    # An architecture mismatch is a usage error naming the layer; nothing is written.
    status, err = _run(capsys, "aw_resnet_cifar", *common(width=8), "--init-from", source,
                       "--out", aw)
    assert status == 2 and "from --init-from" in err and "'conv1_conv'" in err, err
    assert not os.path.exists(aw)

    status, err = _run(capsys, "aw_resnet_cifar", *common(), "--epochs", "1",
                       "--init-from", source, "--out", aw)
    assert status == 0, err

    plain_history, plain_metrics = (_read(os.path.join(plain, "history.json")),
                                    _read(os.path.join(plain, "metrics.json")))
    metrics = _read(os.path.join(aw, "metrics.json"))
    init = metrics["init_eval"]
    assert plain_metrics["top1_error"] < 0.8  # the source learned something (chance: 0.9)
    # Fashion-MNIST's class names, label i first; 10 classes: top-5 is reported.
    from aw_keras.data.sources import FASHION_MNIST_CLASSES

    for record in (plain_metrics, _read(os.path.join(plain, "run.json"))):
        assert record["class_names"] == list(FASHION_MNIST_CLASSES)
        assert record["test_is_validation"] is False
    assert 0.0 <= plain_metrics["top5_error"] < plain_metrics["top1_error"]
    # The first evaluation is the source's, on validation and on test.
    assert init["val_accuracy"] == pytest.approx(plain_history[-1]["val_accuracy"], abs=1e-9)
    assert init["val_loss"] == pytest.approx(plain_history[-1]["val_loss"], rel=1e-4)
    assert init["top1_error"] == pytest.approx(plain_metrics["top1_error"], abs=1e-9)
    # ... and training continues from there: the fine-tuning epoch starts from the trained
    # function (mean training loss below that of the plain model's last epoch) and learns
    # the attention (excite_bn gamma starts at 0).
    history = _read(os.path.join(aw, "history.json"))
    assert [h["epoch"] for h in history] == [1]
    assert history[0]["loss"] < plain_history[-1]["loss"]
    tuned = keras.saving.load_model(os.path.join(aw, "last.keras"), compile=False)
    gamma = tuned.get_layer("conv2_block1_2_conv").excite_bn.gamma.numpy()
    assert np.any(gamma != 0)

    run = _read(os.path.join(aw, "run.json"))
    assert run["config"]["init_from"] == source and run["identity"]["init_from"] == source
    assert run["init_from_sha256"] == hashlib.sha256(open(source, "rb").read()).hexdigest()
    assert metrics["init_from"] == source

    # Resuming with another --init-from is refused.
    other = os.path.join(plain, "best.keras")
    status, err = _run(capsys, "aw_resnet_cifar", *common(), "--epochs", "1",
                       "--init-from", other, "--out", aw, "--resume")
    assert status == 2 and "init_from:" in err, err

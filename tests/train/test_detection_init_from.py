"""aw-train detection runs with --init-from (issue #17): the backbone starts from a
trained plain FPN backbone or detector (`from_pretrained`), the run records where it
started from. The run itself is in the slow suite; the model it builds is checked
through `build_detector` (fast)."""

import hashlib
import json
import os

import numpy as np
import pytest

pytest.importorskip("keras_hub", reason="keras-hub (the 'detection' extra) is not installed")

import keras  # noqa: E402

from aw_keras import applications  # noqa: E402
from aw_keras.train import cli  # noqa: E402
from aw_keras.train import detection  # noqa: E402
from aw_keras.train.run import RunConfig  # noqa: E402
from aw_keras.train.run import UsageError  # noqa: E402
from train_helpers import run_main  # noqa: E402

SIZE = 64


def _plain_backbone(seed=0):
    keras.utils.set_random_seed(seed)
    backbone = applications.get_model("resnet_small_fpn", input_shape=(SIZE, SIZE, 3),
                                      fpn_channels=16)
    rng = np.random.default_rng(seed)
    for weight in backbone.weights:  # move biases and BN parameters off their init
        if weight.path.split("/")[-1] in ("bias", "beta", "moving_mean"):
            weight.assign(rng.normal(0.0, 0.2, weight.shape).astype("float32"))
    return backbone


def _pyramid(backbone, x):
    return {k: keras.ops.convert_to_numpy(v) for k, v in backbone(x, training=False).items()}


def _assert_same_pyramid(expected, got):
    assert sorted(expected) == sorted(got)
    scale = max(1.0, max(float(np.abs(v).max()) for v in expected.values()))
    for key in expected:
        assert np.abs(expected[key] - got[key]).max() <= 1e-5 * scale, key


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A plain backbone saved as .keras, and a detector on it saved as .keras."""
    from aw_keras.detection import RetinaNet

    directory = tmp_path_factory.mktemp("sources")
    backbone = _plain_backbone()
    backbone.save(directory / "backbone.keras")
    detector = RetinaNet(backbone, num_classes=3, pre_logits_num_conv_layers=1)
    detector.save(directory / "detector.keras")
    x = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    return {"backbone": str(directory / "backbone.keras"),
            "detector": str(directory / "detector.keras"), "x": x,
            "pyramid": _pyramid(backbone, x)}


@pytest.mark.parametrize("kind", ["backbone", "detector"])
def test_build_detector_starts_the_backbone_from_init_from(sources, kind):
    config = RunConfig(model="aw_resnet_small_fpn", detector="retinanet", image_size=SIZE,
                       init_from=sources[kind],
                       detector_kwargs={"pre_logits_num_conv_layers": 1})
    model = detection.build_detector(config, num_classes=2)
    assert model.backbone.variant == "aw" and model.backbone.fpn_channels == 16
    _assert_same_pyramid(sources["pyramid"], _pyramid(model.backbone, sources["x"]))


def test_build_detector_init_from_errors_are_usage_errors(sources):
    config = RunConfig(model="aw_resnet_small_fpn", detector="retinanet", image_size=SIZE,
                       init_from="imagenet")
    with pytest.raises(UsageError, match="from `init_from` 'imagenet'.*no keras.applications "
                                         "ImageNet weights exist for the 'resnet_small' body"):
        detection.build_detector(config, num_classes=2)
    config = RunConfig(model="aw_resnet_small_fpn", detector="retinanet", image_size=SIZE,
                       init_from=sources["backbone"], model_kwargs={"fpn_channels": 8})
    with pytest.raises(UsageError, match="layer 'fpn_\\w+': weight 'kernel' has shape"):
        detection.build_detector(config, num_classes=2)


@pytest.mark.slow
def test_cli_run_from_a_plain_backbone_records_init_from(sources, tmp_path, capsys):
    from aw_keras.data import write_fashion_detection

    data = str(tmp_path / "fashion")
    try:
        write_fashion_detection(data, train_images=8, val_images=4, image_size=SIZE, seed=3)
    except Exception as error:  # noqa: BLE001 - the data's own error says what is missing
        pytest.skip(f"cannot write the detection set: {error}")
    out = str(tmp_path / "run")
    code, stdout, err = run_main(
        capsys, cli.main, "aw_resnet_small_fpn", "--dataset", f"coco:{data}", "--image-size",
        str(SIZE), "--epochs", "1", "--batch-size", "4", "--init-from", sources["backbone"],
        "--detector-kwargs", '{"pre_logits_num_conv_layers": 1}', "--attention-images", "0",
        "--verbose", "0", "--out", out)
    assert code == 0, err[-3000:]
    run = json.load(open(os.path.join(out, "run.json")))
    assert run["identity"]["init_from"] == sources["backbone"]
    with open(sources["backbone"], "rb") as f:
        assert run["init_from_sha256"] == hashlib.sha256(f.read()).hexdigest()
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["init_from"] == sources["backbone"] and metrics["epochs"] == 1
    assert "initialised from" in stdout

"""RetinaNet on the FPN backbones: keras-hub's defects fixed (prior bias on the
classification head, clamped and clipped box decoding, evaluation NMS
settings), a fit step + predict for every Table 2 variant, and a .keras round
trip in a fresh process."""

import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

pytest.importorskip("keras_hub", reason="keras-hub (the 'detection' extra) is not installed")

from aw_keras import applications  # noqa: E402
from aw_keras.detection.retinanet import BOX_DELTA_CLIP  # noqa: E402
from aw_keras.detection.retinanet import RetinaNet  # noqa: E402

SIZE = 64
VARIANTS = ("", "se_", "cbam_", "aw_", "aw_se_", "aw_cbam_")


def detector(prefix="aw_", num_classes=3, **kwargs):
    keras.utils.set_random_seed(0)
    backbone = applications.get_model(f"{prefix}resnet_small_fpn", input_shape=(SIZE, SIZE, 3),
                                      fpn_channels=32)
    return RetinaNet(backbone, num_classes=num_classes, **kwargs)


def batch():
    images = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    targets = {
        "boxes": np.array([[[4, 6, 30, 40], [-1, -1, -1, -1]],
                           [[10, 10, 60, 50], [20, 0, 40, 20]]], "float32"),
        "labels": np.array([[1, -1], [0, 2]], "int32"),
    }
    return images, targets


def test_prior_probability_bias_is_on_the_classification_head():
    model = detector(classification_head_prior_probability=0.02)
    expected = -math.log((1 - 0.02) / 0.02)
    np.testing.assert_allclose(model.classification_head.prediction_layer.bias.numpy(), expected,
                               rtol=1e-6)
    np.testing.assert_array_equal(model.box_head.prediction_layer.bias.numpy(), 0.0)
    # at initialisation every class probability is near the prior
    logits = model(batch()[0], training=False)["cls_logits"]
    assert abs(float(np.mean(keras.ops.sigmoid(logits))) - 0.02) < 0.01


def test_decoded_boxes_are_clamped_and_clipped():
    model = detector()
    images = batch()[0]
    outputs = model(images, training=False)
    anchors = outputs["bbox_regression"].shape[1]
    wild = {
        "bbox_regression": np.concatenate([
            np.full((2, anchors, 2), 50.0, "float32"),     # centres far outside the image
            np.full((2, anchors, 2), 1e4, "float32"),      # exp() overflows unclamped
        ], axis=-1),
        "cls_logits": np.asarray(outputs["cls_logits"]),
    }
    decoded = model.decode_predictions(wild, images)
    boxes = np.asarray(decoded["boxes"])
    valid = np.arange(boxes.shape[1])[None] < np.asarray(decoded["num_detections"])[:, None]
    assert np.isfinite(boxes).all()
    assert (boxes[valid] >= 0).all() and (boxes[valid] <= SIZE).all()
    assert BOX_DELTA_CLIP == pytest.approx(math.log(1000 / 16))


def test_nms_decoder_uses_evaluation_settings():
    decoder = detector().prediction_decoder
    assert (decoder.confidence_threshold, decoder.iou_threshold, decoder.max_detections) == (
        0.05, 0.5, 100)


@pytest.mark.parametrize("prefix", [
    prefix if prefix in ("", "aw_") else pytest.param(prefix, marks=pytest.mark.slow)
    for prefix in VARIANTS])
def test_fit_step_and_predict_for_every_variant(prefix):
    model = detector(prefix)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images, targets = batch()
    history = model.fit(images, targets, epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    predictions = model.predict(images, verbose=0)
    assert predictions["boxes"].shape == (2, 100, 4)
    assert np.isfinite(predictions["boxes"]).all()
    assert predictions["boxes"].max() <= SIZE


def test_predict_with_a_partial_last_batch():
    """Keras retraces predict with an unknown batch size for a last, smaller batch;
    keras-hub's NMS needs a static one, so RetinaNet suppresses image by image then."""
    import tensorflow as tf

    model = detector()
    images = np.concatenate([batch()[0], batch()[0][:1]])
    expected = model.predict_on_batch(images)
    got = model.predict(tf.data.Dataset.from_tensor_slices(images).batch(2), verbose=0)
    for key in ("boxes", "confidence", "labels", "num_detections"):
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)


def test_bad_arguments():
    backbone = applications.get_model("resnet_small_fpn", input_shape=(SIZE, SIZE, 3))
    with pytest.raises(ValueError, match="num_classes"):
        RetinaNet(backbone, num_classes=0)
    with pytest.raises(ValueError, match="prior_probability"):
        RetinaNet(backbone, num_classes=2, classification_head_prior_probability=1.5)
    with pytest.raises(TypeError, match="min_level"):
        RetinaNet(applications.get_model("resnet_cifar"), num_classes=2)
    for bad in (0, -2, "4", True):
        with pytest.raises(ValueError, match="anchor_size"):
            RetinaNet(backbone, num_classes=2, anchor_size=bad)


def test_unknown_keyword_arguments_are_refused():
    backbone = applications.get_model("resnet_small_fpn", input_shape=(SIZE, SIZE, 3),
                                      fpn_channels=16)
    with pytest.raises(TypeError) as error:
        RetinaNet(backbone, num_classes=2, anchr_size=2)
    message = str(error.value)
    assert "'anchr_size'" in message and "did you mean 'anchor_size'" in message, message
    assert "pre_logits_num_conv_layers" in message  # the accepted ones are listed
    # keras-hub's own arguments and the base classes' still pass
    model = RetinaNet(backbone, num_classes=2, pre_logits_num_conv_layers=1, name="det",
                      compile=False)
    assert model.name == "det" and model.pre_logits_num_conv_layers == 1


def square_anchor_sides(model, level):
    """Sides of the square anchors of ``level``, smallest first (xyxy anchors)."""
    anchors = keras.ops.convert_to_numpy(model.anchor_generator(batch()[0])[level])
    sides = anchors[:, 2:] - anchors[:, :2]
    square = np.isclose(sides[:, 0], sides[:, 1])
    return sorted(set(np.round(sides[square, 0], 3)))


def test_anchor_size_sets_the_anchor_side_in_strides():
    default, small = detector(), detector(anchor_size=2)
    # anchor_size strides at scale 1, then two octave steps 2**(1/3), 2**(2/3) (keras-hub
    # puts anchor corners on whole pixels: up to 2 px off)
    scales = [2 ** (i / 3) for i in range(3)]
    np.testing.assert_allclose(square_anchor_sides(default, "P3"), [4 * 8 * s for s in scales],
                               atol=2.0)
    np.testing.assert_allclose(square_anchor_sides(small, "P3"), [2 * 8 * s for s in scales],
                               atol=2.0)
    np.testing.assert_allclose(square_anchor_sides(small, "P5"), [2 * 32 * s for s in scales],
                               atol=2.0)
    # the label encoder matches against the same anchors, and the setting is in the config
    assert small.label_encoder.anchor_generator.anchor_size == 2
    assert small.get_config()["anchor_size"] == 2
    restored = RetinaNet.from_config(small.get_config())
    assert square_anchor_sides(restored, "P3") == square_anchor_sides(small, "P3")


def test_keras_round_trip_in_a_fresh_process(tmp_path):
    images, targets = batch()
    model = detector("aw_")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(images, targets, epochs=1, batch_size=2, verbose=0)
    expected = model.predict(images, verbose=0)
    model.save(tmp_path / "detector.keras")
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "boxes.npy", expected["boxes"])
    code = textwrap.dedent(f"""
        import sys
        import aw_keras  # alone: registers RetinaNet, the backbone and layers for loading
        import tensorflow  # looks Keras up with find_spec before importing it
        import numpy as np, keras
        assert "aw_keras.detection" not in sys.modules
        model = keras.saving.load_model({str(tmp_path / 'detector.keras')!r}, safe_mode=True)
        got = model.predict(np.load({str(tmp_path / 'images.npy')!r}), verbose=0)
        np.testing.assert_array_equal(got["boxes"], np.load({str(tmp_path / 'boxes.npy')!r}))
        print(type(model).__name__, type(model.backbone).__name__)
        """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["RetinaNet", "FPNBackbone"]

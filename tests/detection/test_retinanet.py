"""RetinaNet on the FPN backbones: keras-hub's defects fixed (prior bias on the
classification head, clamped and clipped box decoding, evaluation NMS
settings), a fit step + predict for every Table 2 variant, and .keras files
crossing to JAX and PyTorch in fresh processes. The tests marked ``backends``
run again on JAX in their own pytest process (`scripts/test.sh`)."""

import math

import keras
import numpy as np
import pytest

pytest.importorskip("keras_hub", reason="keras-hub (the 'detection' extra) is not installed")

from aw_keras import applications  # noqa: E402
from aw_keras.detection.retinanet import BOX_DELTA_CLIP  # noqa: E402
from aw_keras.detection.retinanet import RetinaNet  # noqa: E402
from other_backends import other_backend_params  # noqa: E402
from other_backends import run_on  # noqa: E402

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


@pytest.mark.backends
def test_prior_probability_bias_is_on_the_classification_head():
    model = detector(classification_head_prior_probability=0.02)
    expected = -math.log((1 - 0.02) / 0.02)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.classification_head.prediction_layer.bias), expected,
        rtol=1e-6)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.box_head.prediction_layer.bias), 0.0)
    # at initialisation every class probability is near the prior
    logits = model(batch()[0], training=False)["cls_logits"]
    assert abs(float(np.mean(keras.ops.convert_to_numpy(keras.ops.sigmoid(logits)))) - 0.02) < 0.01


@pytest.mark.backends
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
        "cls_logits": keras.ops.convert_to_numpy(outputs["cls_logits"]),
    }
    decoded = model.decode_predictions(wild, images)
    boxes = keras.ops.convert_to_numpy(decoded["boxes"])
    valid = np.arange(boxes.shape[1])[None] < keras.ops.convert_to_numpy(
        decoded["num_detections"])[:, None]
    assert np.isfinite(boxes).all()
    assert (boxes[valid] >= 0).all() and (boxes[valid] <= SIZE).all()
    assert BOX_DELTA_CLIP == pytest.approx(math.log(1000 / 16))


@pytest.mark.backends
def test_nms_decoder_uses_evaluation_settings():
    decoder = detector().prediction_decoder
    assert (decoder.confidence_threshold, decoder.iou_threshold, decoder.max_detections) == (
        0.05, 0.5, 100)


# By default the plain and the AW variant (AW only on JAX and PyTorch, where each
# compiles for about a minute); the others in the slow run.
DEFAULT_VARIANTS = ("", "aw_") if keras.backend.backend() == "tensorflow" else ("aw_",)


@pytest.mark.backends
@pytest.mark.parametrize("prefix", [
    prefix if prefix in DEFAULT_VARIANTS else pytest.param(prefix, marks=pytest.mark.slow)
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


@pytest.mark.backends
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


@pytest.mark.backends
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


@pytest.mark.backends
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


def save_trained_detector(tmp_path):
    """An AW-RetinaNet fitted one step and saved; returns its outputs on ``batch()``."""
    images, targets = batch()
    model = detector("aw_")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(images, targets, epochs=1, batch_size=2, verbose=0)
    model.save(tmp_path / "detector.keras")
    np.save(tmp_path / "images.npy", images)
    return model, images


FRESH_PROCESS_CHILD = """
import json, sys
import aw_keras  # alone: registers RetinaNet, the backbone and layers for loading
import numpy as np, keras
assert "aw_keras.detection" not in sys.modules
model = keras.saving.load_model({path!r}, safe_mode=True)
images = np.load({images!r})
raw = model(images, training=False)
predictions = model.predict(images, verbose=0)
np.savez({out!r}, boxes=predictions["boxes"], num_detections=predictions["num_detections"],
         **{{key: keras.ops.convert_to_numpy(raw[key]) for key in ("bbox_regression", "cls_logits")}})
report = {{"classes": [type(model).__name__, type(model.backbone).__name__],
           "backend": keras.backend.backend()}}
"""

SAVE_HERE_CHILD = """
model.save({saved!r})
np.save({saved_raw!r}, keras.ops.convert_to_numpy(model(images, training=False)["cls_logits"]))
"""


def assert_same_raw_outputs(model, images, outputs):
    raw = model(images, training=False)
    for key in ("bbox_regression", "cls_logits"):
        np.testing.assert_allclose(outputs[key], keras.ops.convert_to_numpy(raw[key]),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", other_backend_params())
def test_keras_file_crosses_between_tensorflow_and_another_backend(tmp_path, backend):
    """A RetinaNet saved on TensorFlow loads after ``import aw_keras`` alone on JAX /
    PyTorch with the same head outputs and detections, and the file saved again
    there loads on TensorFlow (fit and predict on each backend: the tests marked
    ``backends`` above). TensorFlow stays importable there: keras-hub feeds NumPy
    inputs through tf.data, or grain where it is installed."""
    model, images = save_trained_detector(tmp_path)
    expected = model.predict(images, verbose=0)
    code = FRESH_PROCESS_CHILD.format(
        path=str(tmp_path / "detector.keras"), images=str(tmp_path / "images.npy"),
        out=str(tmp_path / "outputs.npz")) + SAVE_HERE_CHILD.format(
        saved=str(tmp_path / "there.keras"), saved_raw=str(tmp_path / "there.npy")) + (
        "print(json.dumps(report))")
    report = run_on(backend, code)
    assert report["classes"] == ["RetinaNet", "FPNBackbone"] and report["backend"] == backend
    outputs = np.load(tmp_path / "outputs.npz")
    assert_same_raw_outputs(model, images, outputs)
    np.testing.assert_array_equal(outputs["num_detections"], expected["num_detections"])
    np.testing.assert_allclose(outputs["boxes"], expected["boxes"], atol=1e-3)
    there = keras.saving.load_model(tmp_path / "there.keras")
    np.testing.assert_allclose(np.load(tmp_path / "there.npy"), keras.ops.convert_to_numpy(
        there(images, training=False)["cls_logits"]), rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # the file's cross-backend twin above runs by default
def test_keras_round_trip_in_a_fresh_process(tmp_path):
    model, images = save_trained_detector(tmp_path)
    expected = model.predict(images, verbose=0)
    code = FRESH_PROCESS_CHILD.format(
        path=str(tmp_path / "detector.keras"), images=str(tmp_path / "images.npy"),
        out=str(tmp_path / "outputs.npz")) + "print(json.dumps(report))"
    report = run_on("tensorflow", code)
    assert report["classes"] == ["RetinaNet", "FPNBackbone"]
    outputs = np.load(tmp_path / "outputs.npz")
    np.testing.assert_array_equal(outputs["boxes"], expected["boxes"])
    assert_same_raw_outputs(model, images, outputs)

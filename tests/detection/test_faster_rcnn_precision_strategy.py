"""FasterRCNN under keras.mixed_precision "mixed_float16" and inside a
tf.distribute.MirroredStrategy (one CPU replica): fit (finite losses) and predict
(the documented shapes and dtypes), on tiny 64 px inputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("keras_hub", reason="keras-hub (the 'detection' extra) is not installed")

from aw_keras import applications  # noqa: E402
from aw_keras.detection.faster_rcnn import FasterRCNN  # noqa: E402

SIZE = 64
SMALL = dict(anchor_size=4, rpn_pre_nms_top_k_train=200, rpn_post_nms_top_k_train=100,
             rpn_pre_nms_top_k_test=100, rpn_post_nms_top_k_test=50, roi_samples_per_image=64,
             representation_size=64, seed=0)
LOSSES = ("loss", "rpn_objectness_loss", "rpn_box_loss", "classification_loss", "box_loss")


def _data():
    images = np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    targets = {"boxes": np.array([[[4, 6, 30, 40], [-1, -1, -1, -1]],
                                  [[10, 10, 60, 50], [20, 0, 40, 20]]] * 2, "float32"),
               "labels": np.array([[1, -1], [0, 2]] * 2, "int32")}
    return images, targets


def _model():
    keras.utils.set_random_seed(0)
    backbone = applications.get_model("aw_resnet_small_fpn", input_shape=(SIZE, SIZE, 3),
                                      fpn_channels=16, levels="two_stage")
    return FasterRCNN(backbone, num_classes=3, **SMALL)


def _check(history, predictions, count):
    for name in LOSSES:
        values = history.history[name]
        assert len(values) == 2 and np.isfinite(values).all(), (name, values)
    assert history.history["loss"][0] > 0
    expected = {"boxes": ((count, 100, 4), np.float32), "confidence": ((count, 100), np.float32),
                "labels": ((count, 100), np.int32), "num_detections": ((count,), np.int32)}
    for key, (shape, dtype) in expected.items():
        value = np.asarray(predictions[key])
        assert value.shape == shape and value.dtype == dtype, (key, value.shape, value.dtype)
        assert np.isfinite(value).all(), key
    for b in range(count):
        n = int(predictions["num_detections"][b])
        boxes = np.asarray(predictions["boxes"][b, :n])
        assert ((boxes >= 0) & (boxes <= SIZE)).all()
        assert (np.asarray(predictions["labels"][b, n:]) == -1).all()


@pytest.fixture
def mixed_float16():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_mixed_float16_fit_and_predict(mixed_float16):
    images, targets = _data()
    model = _model()
    assert model.rpn_conv.compute_dtype == "float16"
    assert model.rpn_conv.kernel.dtype == "float32"
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    history = model.fit(images, targets, batch_size=2, epochs=2, verbose=0)
    _check(history, model.predict(images[:3], batch_size=3, verbose=0), 3)
    assert all(np.isfinite(np.asarray(v)).all() for v in model.get_weights())


def test_policy_restored_after_mixed_float16_test():
    assert keras.mixed_precision.global_policy().name == "float32"


def test_mirrored_strategy_fit_and_predict():
    images, targets = _data()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    assert strategy.num_replicas_in_sync == 1
    with strategy.scope():
        model = _model()
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert isinstance(model.rpn_conv.kernel.value, tf.distribute.DistributedValues)
    dataset = tf.data.Dataset.from_tensor_slices((images, targets)).batch(2)
    history = model.fit(dataset, epochs=2, verbose=0)
    _check(history, model.predict(images[:3], batch_size=3, verbose=0), 3)

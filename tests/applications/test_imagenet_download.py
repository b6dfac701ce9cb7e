"""weights="imagenet" finds the keras.applications file as keras.applications does:
the Keras cache, else a download with keras.utils.get_file (never run here: every
test replaces get_file; conftest makes any other call fail as without network);
and from_pretrained("imagenet", ..., classes=N) gives the ImageNet body with a
fresh classifier."""

import logging
import os

import numpy as np
import pytest

import keras

from aw_keras import applications
from aw_keras.applications import imagenet_weights
from aw_keras.layers import AWConv2D
from app_helpers import randomize_like_trained

MOBILENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/"
RESNET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
SHAPE = (32, 32, 3)


def plain_mobilenet(**kwargs):
    """A random keras.applications MobileNet x0.25 standing in for the ImageNet file."""
    keras.utils.set_random_seed(3)
    model = keras.applications.MobileNet(weights=None, input_shape=SHAPE, alpha=0.25, **kwargs)
    calibration = np.random.default_rng(0).normal(size=(8,) + SHAPE).astype("float32")
    return randomize_like_trained(model, calibration)


def features(model, layer_name, x):
    return keras.ops.convert_to_numpy(
        keras.Model(model.input, model.get_layer(layer_name).output)(x, training=False))


class FakeGetFile:
    """Records keras.utils.get_file calls; writes ``model`` where Keras would put the file."""

    def __init__(self, model=None):
        self.model = model
        self.calls = []

    def __call__(self, fname, origin=None, **kwargs):
        self.calls.append(dict(fname=fname, origin=origin, **kwargs))
        if self.model is None:
            raise ValueError("Incomplete or corrupted file detected. The md5 file hash does "
                             "not match the provided value.")
        directory = os.path.join(kwargs["cache_dir"], kwargs["cache_subdir"])
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, fname)
        self.model.save(path)  # the legacy .h5 format keras.applications loads
        return path


def test_a_missing_file_is_downloaded_once_into_the_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    plain = plain_mobilenet(include_top=False)
    fake = FakeGetFile(plain)
    monkeypatch.setattr(keras.utils, "get_file", fake)
    model = applications.AWMobileNet(weights="imagenet", alpha=0.25, include_top=False,
                                     input_shape=SHAPE)
    name = "mobilenet_2_5_224_tf_no_top.h5"
    assert fake.calls == [dict(fname=name, origin=MOBILENET_URL + name, cache_subdir="models",
                               file_hash=None, cache_dir=str(tmp_path / "home"))]
    assert os.path.isfile(tmp_path / "home" / "models" / name)
    assert isinstance(model.get_layer("conv_pw_5"), AWConv2D)
    x = np.random.default_rng(1).normal(size=(2,) + SHAPE).astype("float32")
    expected = keras.ops.convert_to_numpy(plain(x, training=False))
    got = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())

    # Now cached: a second model does not download.
    applications.MobileNet(weights="imagenet", alpha=0.25, include_top=False, input_shape=SHAPE)
    assert len(fake.calls) == 1


@pytest.mark.parametrize("architecture, include_top, file_name", [
    ("resnet50", True, "resnet50_weights_tf_dim_ordering_tf_kernels.h5"),
    ("resnet101", False, "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ("resnet152", False, "resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5"),
])
def test_resnet_downloads_use_keras_applications_url_and_hash(tmp_path, monkeypatch,
                                                              architecture, include_top,
                                                              file_name):
    from keras.src.applications.resnet import WEIGHTS_HASHES  # the published hashes

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    fake = FakeGetFile()  # fails like a corrupted download
    monkeypatch.setattr(keras.utils, "get_file", fake)
    source = imagenet_weights.ImageNetSource(architecture, include_top=include_top,
                                             input_shape=(224, 224, 3))
    with pytest.raises(ValueError) as error:
        source.resolve_path()
    assert fake.calls == [dict(fname=file_name, origin=RESNET_URL + file_name,
                               cache_subdir="models",
                               file_hash=WEIGHTS_HASHES[architecture][0 if include_top else 1],
                               cache_dir=str(tmp_path))]
    message = str(error.value)
    assert repr(file_name) in message and RESNET_URL + file_name in message
    assert "file hash does not match" in message and repr(str(tmp_path / "models")) in message


def test_fpn_builders_download_the_notop_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    fake = FakeGetFile()
    monkeypatch.setattr(keras.utils, "get_file", fake)
    with pytest.raises(ValueError, match="downloading it from .* failed"):
        applications.AWResNet101FPN(weights="imagenet", input_shape=(64, 64, 3))
    name = "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert [(c["fname"], c["origin"], c["file_hash"]) for c in fake.calls] == [
        (name, RESNET_URL + name, "88cf7a10940856eca736dc7b7e228a21")]


def test_an_explicit_path_never_downloads(tmp_path, monkeypatch):
    fake = FakeGetFile()
    monkeypatch.setattr(keras.utils, "get_file", fake)
    with pytest.raises(ValueError, match="does not exist"):
        applications.AWMobileNet(weights=str(tmp_path / "mobilenet_2_5_224_tf.h5"), alpha=0.25,
                                 input_shape=SHAPE)
    assert fake.calls == []


# -------------------------------------------- another number of classes: fresh head


@pytest.mark.parametrize("file_kind", ["cache", "path with classifier"])
def test_imagenet_for_other_classes_loads_the_body_and_a_fresh_classifier(tmp_path, monkeypatch,
                                                                          caplog, file_kind):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    if file_kind == "cache":
        plain = plain_mobilenet(include_top=False)
        plain.save(tmp_path / "models" / "mobilenet_2_5_224_tf_no_top.h5")
        source = "imagenet"
    else:
        plain = plain_mobilenet()  # 1000 classes
        source = str(tmp_path / "mobilenet_2_5_224_tf.h5")
        plain.save(source)
    keras.utils.set_random_seed(0)
    with caplog.at_level(logging.WARNING, logger="aw_keras"):
        model = applications.from_pretrained(source, "aw_se_mobilenet", alpha=0.25,
                                             input_shape=SHAPE, classes=3)
    assert model.output_shape == (None, 3)
    x = np.random.default_rng(2).normal(size=(2,) + SHAPE).astype("float32")
    expected = features(plain, "conv_pw_13_relu", x)
    got = features(model, "conv_pw_13_relu", x)
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())
    # The classifier is the builder's fresh one: glorot-uniform kernel, zero bias.
    kernel, bias = model.get_layer("conv_preds").get_weights()
    assert kernel.shape == (1, 1, 256, 3) and np.all(bias == 0)
    limit = np.sqrt(6.0 / (256 + 3))
    assert 0.5 * limit < np.abs(kernel).max() <= limit
    messages = [r.getMessage() for r in caplog.records if r.name == "aw_keras"]
    assert any("body" in m and "conv_preds" in m and "freshly initialised" in m
               and "3 classes" in m for m in messages), messages


def test_a_cached_file_is_used_without_calling_get_file_and_1000_classes_keep_its_classifier(
        tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    plain = plain_mobilenet()
    plain.save(tmp_path / "models" / "mobilenet_2_5_224_tf.h5")
    fake = FakeGetFile()
    monkeypatch.setattr(keras.utils, "get_file", fake)
    model = applications.from_pretrained("imagenet", "mobilenet", alpha=0.25, input_shape=SHAPE)
    assert fake.calls == []
    np.testing.assert_array_equal(model.get_layer("conv_preds").get_weights()[0],
                                  plain.get_layer("conv_preds").get_weights()[0])


def test_the_builders_keep_keras_applications_rule_for_other_classes():
    with pytest.raises(ValueError, match="needs `classes=1000`.*from_pretrained"):
        applications.AWMobileNet(weights="imagenet", alpha=0.25, input_shape=SHAPE, classes=3)


def test_concurrent_first_use_downloads_once_and_never_reads_a_partial_file(tmp_path,
                                                                             monkeypatch):
    """keras.utils.get_file writes straight to the cached path: a second asker waits
    for the first download instead of reading the half-written file or downloading
    again."""
    import threading
    import time

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    calls = []

    def slow_get_file(fname, origin=None, **kwargs):
        calls.append(fname)
        path = os.path.join(kwargs["cache_dir"], kwargs["cache_subdir"], fname)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(b"partial")  # what another process would see mid-download
            handle.flush()
            time.sleep(0.5)
            handle.write(b" and complete")
        return path

    monkeypatch.setattr(keras.utils, "get_file", slow_get_file)
    source = imagenet_weights.ImageNetSource("resnet50", include_top=False,
                                             input_shape=(None, None, 3))
    results = []

    def ask():
        path = imagenet_weights.ImageNetSource(
            "resnet50", include_top=False, input_shape=(None, None, 3)).resolve_path()
        with open(path, "rb") as handle:
            results.append(handle.read())

    first = threading.Thread(target=ask)
    first.start()
    while not calls:
        time.sleep(0.01)
    second = threading.Thread(target=ask)
    second.start()
    first.join(10)
    second.join(10)
    assert calls == [source.file_name()]
    assert results == [b"partial and complete"] * 2

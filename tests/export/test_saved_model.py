"""SavedModel for TF Serving: layout, signatures, fresh-process load,
saved_model_cli, a PredictRequest answered by the signature, preprocessing,
the attention signature, versioning and atomic writes."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from aw_keras.applications import get_model
from aw_keras.export import ExportError
from aw_keras.export import ImagePreprocessing
from aw_keras.export import export_saved_model
from aw_keras.export.transform import aw_layers
import serving_helper as serving
from aw_keras.export import verify
from aw_keras.export.verify import saved_model_cli


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return get_model("aw_se_resnet_cifar", input_shape=(32, 32, 3), classes=10)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    base = tmp_path_factory.mktemp("serving") / "aw"
    return export_saved_model(model, base, attention_signature=True)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)


def test_layout_and_signature(exported):
    assert os.path.basename(exported) == "1"
    assert os.path.isfile(os.path.join(exported, "saved_model.pb"))
    assert os.path.isdir(os.path.join(exported, "variables"))
    loaded = tf.saved_model.load(exported)
    assert set(loaded.signatures) == {"serving_default", "attention_maps"}
    fn = loaded.signatures["serving_default"]
    spec = fn.structured_input_signature[1]
    assert list(spec) == ["images"]
    assert spec["images"].shape.as_list() == [None, 32, 32, 3]
    assert list(fn.structured_outputs) == ["probabilities"]


def test_matches_keras_at_batch_1_and_4(exported, model, images):
    result = verify(exported, model, images, batch_sizes=(1, 4), latency_repeats=2)
    assert result.max_abs_error <= 1e-4 and result.passed
    assert result.top1_agreement == 1.0


def test_fresh_process_load(exported, model, images, tmp_path):
    np.save(tmp_path / "x.npy", images)
    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"f = tf.saved_model.load({exported!r}).signatures['serving_default']\n"
        f"out = f(images=tf.constant(np.load({str(tmp_path / 'x.npy')!r})))['probabilities']\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, out.numpy())\n"
        "print('aw_keras' in sys.modules)\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # the artifact needs neither aw_keras nor Keras custom objects
    assert done.stdout.strip().endswith("False")
    expected = model(images, training=False).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-4)


def test_saved_model_cli_show_and_run(exported, model, images):
    shown = saved_model_cli("show", "--dir", exported, "--all")
    assert "signature_def['serving_default']" in shown
    assert "inputs['images']" in shown and "outputs['probabilities']" in shown
    assert "(-1, 32, 32, 3)" in shown
    result = verify(exported, model, images, runtime="saved_model_cli")
    assert result.format == "saved_model_cli"
    assert result.max_abs_error <= 1e-4 and result.passed


def test_predict_request_is_answered(exported, model, images):
    from tensorflow_serving.apis import predict_pb2

    request = serving.make_predict_request(images[:3], model_name="aw")
    assert isinstance(request, predict_pb2.PredictRequest)
    wire = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    response = serving.predict(exported, wire)
    assert isinstance(response, predict_pb2.PredictResponse)
    assert response.model_spec.name == "aw"
    out = tf.make_ndarray(response.outputs["probabilities"])
    np.testing.assert_allclose(out, model(images[:3], training=False).numpy(), atol=1e-4)
    bad = serving.make_predict_request(images[:1], input_name="pixels")
    with pytest.raises(ValueError, match="images"):
        serving.predict(exported, bad)


def test_attention_signature_matches_layer(exported, model, images):
    fn = tf.saved_model.load(exported).signatures["attention_maps"]
    maps = fn(images=tf.constant(images))
    layers = aw_layers(model)
    assert set(maps) == {layer.name for layer in layers}
    first = layers[0]
    features = keras.Model(model.inputs, first.input)(images, training=False)
    expected = first.attention_maps(features).numpy()
    assert maps[first.name].shape == expected.shape
    np.testing.assert_allclose(maps[first.name].numpy(), expected, atol=1e-5)


def test_raw_image_preprocessing_and_versions(model, exported, tmp_path):
    base = os.path.dirname(exported)
    raw = np.random.default_rng(1).integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    second = export_saved_model(model, base, preprocessing="raw")
    assert os.path.basename(second) == "2"
    fn = tf.saved_model.load(second).signatures["serving_default"]
    assert fn.structured_input_signature[1]["images"].dtype == tf.uint8
    expected = model(tf.image.resize(raw.astype(np.float32), (32, 32)) / 255.0, training=False)
    np.testing.assert_allclose(fn(images=tf.constant(raw))["probabilities"], expected, atol=1e-4)
    custom = ImagePreprocessing(scale=1.0, mean=(127.0, 127.0, 127.0), std=(64.0, 64.0, 64.0))
    third = export_saved_model(model, tmp_path / "custom", version=7, preprocessing=custom)
    assert third.endswith(os.path.join("custom", "7"))
    with pytest.raises(ValueError, match="preprocessing"):
        export_saved_model(model, tmp_path / "x", preprocessing="imagenet")


def test_logits_name_without_softmax(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    plain = keras.Model(inputs, keras.layers.Dense(3)(x))
    path = export_saved_model(plain, tmp_path / "plain")
    outputs = tf.saved_model.load(path).signatures["serving_default"].structured_outputs
    assert list(outputs) == ["logits"]


def test_existing_version_is_kept_when_export_fails(model, exported, monkeypatch):
    with pytest.raises(ExportError, match="already exists"):
        export_saved_model(model, os.path.dirname(exported), version=1)
    before = sorted(os.listdir(exported))

    import aw_keras.export.saved_model as saved_model_module

    def broken_write(model, path, **kwargs):  # half a SavedModel, then a crash
        os.makedirs(path)
        with open(os.path.join(path, "saved_model.pb"), "wb") as handle:
            handle.write(b"partial")
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(saved_model_module, "write_serving_saved_model", broken_write)
    with pytest.raises(RuntimeError, match="simulated"):
        export_saved_model(model, os.path.dirname(exported), version=1, overwrite=True)
    assert sorted(os.listdir(exported)) == before
    assert tf.saved_model.load(exported).signatures["serving_default"] is not None
    leftovers = [n for n in os.listdir(os.path.dirname(exported)) if n.startswith(".")]
    assert leftovers == []

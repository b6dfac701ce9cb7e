"""The attention branch's BatchNormalization settings: arguments, defaults, saving."""

import json
import zipfile

import numpy as np
import pytest

import keras
from aw_keras.layers import AWConv2D

pytestmark = pytest.mark.backends  # runs on every Keras backend


def _offset_inputs(seed=0):
    # A large offset gives the squeeze conv's output a mean far from the moving
    # mean's initial 0, so lagging moving statistics show in the outputs.
    return (np.random.default_rng(seed).normal(size=(8, 6, 6, 4)) + 5.0).astype("float32")


def test_arguments_reach_both_batch_norms_and_round_trip_through_the_config():
    layer = AWConv2D(8, 3, attention_bn_momentum=0.7, attention_bn_epsilon=1e-5)
    layer(_offset_inputs())
    for norm in (layer.squeeze_bn, layer.excite_bn):
        assert norm.momentum == 0.7 and norm.epsilon == 1e-5
    config = layer.get_config()
    assert config["attention_bn_momentum"] == 0.7
    assert config["attention_bn_epsilon"] == 1e-5
    copy = AWConv2D.from_config(json.loads(json.dumps(config)))
    copy(_offset_inputs())
    assert copy.excite_bn.momentum == 0.7 and copy.squeeze_bn.epsilon == 1e-5


def test_default_momentum_lets_moving_statistics_follow_a_short_training():
    """100 training-mode calls on one batch: the inference output matches the
    training-mode one (with Keras's 0.99 the moving statistics are still 0.37 of
    the way from their start). Each backend draws its own initial weights: after
    60 calls the outputs differed by 1 % of their range on JAX, 3 % on PyTorch."""
    keras.utils.set_random_seed(0)
    layer = AWConv2D(8, 3, padding="same")
    assert layer.attention_bn_momentum == 0.9
    assert layer.attention_bn_epsilon == 1e-3
    x = _offset_inputs()
    for _ in range(100):
        training = keras.ops.convert_to_numpy(layer(x, training=True))
    inference = keras.ops.convert_to_numpy(layer(x, training=False))
    scale = np.abs(training).max()
    assert np.abs(inference - training).max() < 0.02 * scale


def test_setting_the_momentum_after_build_updates_both_batch_norms_and_the_config():
    layer = AWConv2D(8, 3)
    layer(_offset_inputs())
    layer.attention_bn_momentum = 0.5
    assert layer.squeeze_bn.momentum == layer.excite_bn.momentum == 0.5
    # Code that sets the BatchNorms directly (aw-train's set_bn_momentum) shows too.
    layer.squeeze_bn.momentum = layer.excite_bn.momentum = 0.8
    assert layer.attention_bn_momentum == 0.8
    assert layer.get_config()["attention_bn_momentum"] == 0.8
    with pytest.raises(ValueError, match="attention_bn_momentum"):
        layer.attention_bn_momentum = 1.5
    with pytest.raises(AttributeError, match="attention_bn_epsilon"):
        layer.attention_bn_epsilon = 1e-5


def test_a_keras_file_without_the_keys_loads_with_the_settings_it_was_trained_with(tmp_path):
    """Files written before the arguments existed were built with Keras's
    BatchNormalization defaults (0.99, 1e-3); they load with those, outputs unchanged."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 4))
    model = keras.Model(inputs, AWConv2D(8, 3, attention_bn_momentum=0.99, name="aw")(inputs))
    x = _offset_inputs()
    model(x, training=True)  # moves the moving statistics away from their start
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    path = tmp_path / "new.keras"
    model.save(path)

    old = tmp_path / "old.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                text = data.decode()
                config = json.loads(text)
                layer_config = config["config"]["layers"][1]["config"]
                del layer_config["attention_bn_momentum"], layer_config["attention_bn_epsilon"]
                assert "attention_bn" not in json.dumps(config)
                data = json.dumps(config).encode()
            target.writestr(item, data)

    loaded = keras.saving.load_model(old)
    layer = loaded.get_layer("aw")
    assert layer.attention_bn_momentum == 0.99 and layer.attention_bn_epsilon == 1e-3
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)), expected,
                               rtol=1e-6, atol=1e-6)

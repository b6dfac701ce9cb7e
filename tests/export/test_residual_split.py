"""Residual-mode k x k AWConv2D traced as conv(x, K) + attention taps for int8
(aw_keras.export.residual_split): same function, BN folded into the main
conv's bias, only eligible layers, everything restored, and the int8 file
has one full k x k convolution per split layer."""

import contextlib

import keras
import numpy as np
import pytest

from aw_keras.export import export_tflite
from aw_keras.export import prepare
from aw_keras.export.residual_split import split_residual
from aw_keras.export.residual_split import splittable_layers
from aw_keras.layers import AWConv2D


def split_model(seed=5):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((9, 9, 4))
    x = AWConv2D(8, 3, padding="same", use_bias=False, name="aw_same")(inputs)
    x = keras.layers.BatchNormalization(name="bn_same")(x)
    x = keras.layers.ReLU(name="relu_same")(x)
    x = AWConv2D(8, 3, strides=2, use_bias=True, activation="relu", name="aw_valid_s2")(x)
    x = AWConv2D(6, 3, dilation_rate=2, padding="same", input_channel_reduction=2,
                 name="aw_dilated_grouped")(x)
    x = AWConv2D(6, 3, padding="same", attention_mode="multiplicative", name="aw_mult")(x)
    x = AWConv2D(6, 1, name="aw_1x1")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(5, name="logits")(x))
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn_same")
    bn.gamma.assign(rng.uniform(0.5, 2.0, 8))
    bn.beta.assign(rng.normal(0, 1.0, 8))
    bn.moving_mean.assign(rng.normal(0, 0.5, 8))
    bn.moving_variance.assign(rng.uniform(0.2, 2.0, 8))
    return model


def test_only_residual_kxk_layers_are_split():
    names = [layer.name for layer in splittable_layers(split_model())]
    assert names == ["aw_same", "aw_valid_s2", "aw_dilated_grouped"]


@pytest.mark.parametrize("fold", [True, False])
def test_split_form_is_exact_and_restored(fold, capsys):
    model = split_model()
    x = np.random.default_rng(1).normal(0, 1, (3, 9, 9, 4)).astype("float32")
    expected = np.asarray(model(x, training=False))
    before = [w.copy() for w in model.get_weights()]
    with prepare.folded_batch_norms(model) if fold else contextlib.nullcontext():
        with split_residual(model) as layers:
            assert len(layers) == 3
            assert ("call" in model.get_layer("bn_same").__dict__) == fold
            got = np.asarray(model(x, training=False))
    assert "traced 3 AWConv2D layers as conv(x, K) + attention taps" in capsys.readouterr().out
    np.testing.assert_allclose(got, expected, atol=2e-5)
    for name in ("aw_same", "bn_same", "aw_valid_s2", "aw_dilated_grouped"):
        assert "call" not in model.get_layer(name).__dict__
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def _full_convs(path, kernel=3):
    """Number of CONV_2D ops with a kernel x kernel filter in a .tflite."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    count = 0
    for op in interpreter._get_ops_details():
        if op["op_name"] == "CONV_2D":
            shape = interpreter._get_tensor_details(op["inputs"][1], 0)["shape"]
            count += int(shape[1] == kernel and shape[2] == kernel)
    return count


def test_int8_has_one_main_conv_per_split_layer_and_matches(tmp_path):
    from aw_keras.export import verify

    model = split_model()
    calibration = np.random.default_rng(2).normal(0, 1, (32, 9, 9, 4)).astype("float32")
    counts = {}
    for split in (False, True):
        path = export_tflite(model, tmp_path / f"split_{split}.tflite", quantization="int8",
                             representative_data=calibration, io_dtype="float32",
                             split_residual=split)
        counts[split] = _full_convs(path)
        result = verify(path, model, calibration[:8], batch_sizes=(1, 4), latency_repeats=0)
        assert result.max_abs_error < 0.5, result
    assert counts == {False: 0, True: 3}
    with pytest.raises(ValueError, match="split_residual"):
        export_tflite(model, tmp_path / "bad.tflite", quantization="int8",
                      representative_data=calibration, fold_batch_norms=False, split_residual=True)

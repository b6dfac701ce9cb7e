"""The exact clipped form of pointwise AWConv2D -> BatchNorm -> ReLU(6) blocks
used for int8 TFLite (aw_keras.export.clipped_blocks): the bounds are exact,
the rewritten model computes the same function, only eligible blocks are
rewritten, everything is restored, and in the int8 flatbuffer every
activation of a clipped block is quantized over [0, 6]."""

import keras
import numpy as np
import pytest

from aw_keras.applications import get_model
from aw_keras.export import export_tflite
from aw_keras.export import prepare
from aw_keras.export.clipped_blocks import clippable_blocks
from aw_keras.export.clipped_blocks import clipped_blocks
from aw_keras.export.clipped_blocks import exact_bounds
from aw_keras.layers import AWConv2D


@pytest.mark.parametrize("cap", [6.0, None])
def test_exact_bounds_do_not_change_the_block_output(cap):
    rng = np.random.default_rng(0)
    shift = np.concatenate([rng.normal(0, 3, 60), [0.0, 6.0, 7.5, -4.0, 12.0, -0.1]])
    lo, hi = exact_bounds(shift, cap)
    assert np.all(hi - lo >= (cap or 0.0) - 1e-12)  # gain = cap / (hi - lo) <= 1
    z = rng.normal(0, 8, (500, shift.size))
    def act(v):
        return np.maximum(v, 0.0) if cap is None else np.clip(v, 0.0, cap)
    for scale in (1.0, 1.001, 1.37, 1.999, 2.0):
        expected = act(scale * z + shift)
        np.testing.assert_allclose(act(scale * np.clip(z, lo, hi) + shift), expected, atol=1e-12)
    # and they are tight: just inside lo some S gives a non-zero output
    for c, bound in zip(shift, lo):
        inside = bound + 1e-6
        assert max(act(s * inside + c) for s in (1.0, 2.0)) > 0


def block_model(seed=3):
    """Two eligible blocks (ReLU6, plain relu with stride 2) and three that are
    not (3x3 kernel, multiplicative mode, BN feeding two layers)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((9, 9, 6))
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(inputs)
    x = AWConv2D(16, 1, use_bias=False, name="aw_pw1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(6.0, name="relu1")(x)
    x = AWConv2D(12, 1, strides=2, use_bias=True, output_channel_reduction=2, name="aw_pw2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.Activation("relu", name="relu2")(x)
    x = AWConv2D(12, 3, padding="same", use_bias=False, name="aw_3x3")(x)
    x = keras.layers.BatchNormalization(name="bn3")(x)
    x = keras.layers.ReLU(6.0, name="relu3")(x)
    x = AWConv2D(12, 1, attention_mode="multiplicative", name="aw_mult")(x)
    x = keras.layers.BatchNormalization(name="bn4")(x)
    x = keras.layers.ReLU(6.0, name="relu4")(x)
    y = AWConv2D(12, 1, name="aw_branch")(x)
    y = keras.layers.BatchNormalization(name="bn5")(y)
    x = keras.layers.Add()([keras.layers.ReLU(6.0, name="relu5")(y), y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(7, name="logits")(x)
    model = keras.Model(inputs, outputs)
    # trained-looking BatchNorm statistics: shifts on both sides of 0 and 6
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 2.0, n))
            layer.beta.assign(rng.normal(1.0, 4.0, n))
            layer.moving_mean.assign(rng.normal(0, 0.5, n))
            layer.moving_variance.assign(rng.uniform(0.2, 2.0, n))
        if isinstance(layer, AWConv2D) and layer.use_bias:
            layer.bias.assign(rng.normal(0, 1.0, layer.filters))
    return model


def test_only_eligible_blocks_are_found():
    model = block_model()
    found = [(conv.name, norm.name, relu.name, cap) for conv, norm, relu, cap in clippable_blocks(model)]
    assert found == [("aw_pw1", "bn1", "relu1", 6.0), ("aw_pw2", "bn2", "relu2", None)]
    assert len(clippable_blocks(get_model("aw_mobilenet", input_shape=(32, 32, 3), classes=10))) == 13
    assert clippable_blocks(get_model("mobilenet", input_shape=(32, 32, 3), classes=10)) == []


def test_clipped_form_is_exact_and_restored(capsys):
    model = block_model()
    x = np.random.default_rng(1).normal(0, 2, (5, 9, 9, 6)).astype("float32")
    expected = np.asarray(model(x, training=False))
    before = [w.copy() for w in model.get_weights()]
    with prepare.folded_batch_norms(model):
        with clipped_blocks(model) as blocks:
            assert len(blocks) == 2
            assert "call" in model.get_layer("relu1").__dict__
            clipped = np.asarray(model(x, training=False))
    assert "traced 2 AWConv2D(1x1)" in capsys.readouterr().out
    np.testing.assert_allclose(clipped, expected, atol=2e-5)
    for name in ("aw_pw1", "bn1", "relu1", "aw_pw2", "bn2", "relu2"):
        assert "call" not in model.get_layer(name).__dict__
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), expected)


def test_clipped_blocks_refuses_an_unfolded_model():
    model = block_model()
    with pytest.raises(Exception, match="folded first"):
        with clipped_blocks(model):
            pass
    assert "call" not in model.get_layer("aw_pw1").__dict__


def test_export_tflite_clip_blocks_needs_folding(tmp_path):
    with pytest.raises(ValueError, match="clip_blocks"):
        export_tflite(block_model(), tmp_path / "m.tflite", quantization="int8",
                      representative_data=np.zeros((2, 9, 9, 6), "float32"),
                      fold_batch_norms=False, clip_blocks=True)


def _activation_scales(path):
    """{tensor name: int8 scale} of the per-tensor int8 activation maps (spatial
    size > 1: not the attention vectors) of an int8 .tflite."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    scales = {}
    for detail in interpreter.get_tensor_details():
        scale = detail["quantization_parameters"]["scales"]
        shape = detail["shape"]
        if detail["dtype"] == np.int8 and len(scale) == 1 and len(shape) == 4 and shape[1] * shape[2] > 1:
            scales[detail["name"]] = float(scale[0])
    return scales


def test_int8_quantizes_clipped_block_activations_over_relu6_range(tmp_path):
    # The point of the rewrite: without it the raw conv output and the attention
    # product of aw_pw1 are quantized over their (wider) raw ranges.
    model = block_model()
    calibration = np.random.default_rng(2).normal(0, 2, (16, 9, 9, 6)).astype("float32")
    widest = {}
    for clip in (False, True):
        path = export_tflite(model, tmp_path / f"clip_{clip}.tflite", quantization="int8",
                             representative_data=calibration, clip_blocks=clip)
        block = {n: s for n, s in _activation_scales(path).items()
                 if "aw_pw1" in n and "squeeze" not in n and "excite" not in n}
        assert block, sorted(_activation_scales(path))
        widest[clip] = max(block.values())
    assert widest[True] <= 6.0 / 255 * 1.001
    assert widest[False] > 1.5 * widest[True]


def test_is_folded_tells_a_folded_batch_norm_from_a_fresh_one():
    model = block_model()
    fresh = keras.layers.BatchNormalization(epsilon=1.001e-5)
    fresh.build((None, 4))
    assert not prepare.is_folded(fresh)  # gamma 1, mean 0, var 1: still not x + beta
    assert not prepare.is_folded(model.get_layer("bn1"))
    with prepare.folded_batch_norms(model):
        assert prepare.is_folded(model.get_layer("bn1"))

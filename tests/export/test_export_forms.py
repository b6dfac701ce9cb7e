"""The int8 export forms of AWConvExport: the clipped form of pointwise
AWConv2D -> BatchNorm -> ReLU(6) blocks (exact bounds, same function, only
eligible blocks, every activation of the block quantized over [0, 6]) and the
split form of residual k x k layers (conv(x, K) + attention taps: same
function, one full k x k convolution per split layer in the int8 file)."""

import keras
import numpy as np
import pytest

from aw_keras.applications import get_model
from aw_keras.export import export_model
from aw_keras.export import export_tflite
from aw_keras.export import policy_for
from aw_keras.export.layers import exact_bounds
from aw_keras.export.transform import aw_layers
from aw_keras.export.transform import plan_rewrites
from aw_keras.layers import AWConv2D


def forms(model, target="tflite_int8", **overrides):
    """{AWConv2D name: form} that export_model gives ``model`` for ``target``."""
    plan = plan_rewrites(model, policy_for(target, **overrides))
    return {layer.name: plan[id(layer)][0] for layer in aw_layers(model)}


@pytest.mark.parametrize("cap", [6.0, None])
def test_exact_bounds_do_not_change_the_block_output(cap):
    rng = np.random.default_rng(0)
    shift = np.concatenate([rng.normal(0, 3, 60), [0.0, 6.0, 7.5, -4.0, 12.0, -0.1]])
    lo, hi = (np.asarray(v) for v in exact_bounds(shift, cap))
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


def test_only_eligible_blocks_are_clipped():
    assert forms(block_model(), split_residual=True) == {
        "aw_pw1": "clipped", "aw_pw2": "clipped", "aw_3x3": "split", "aw_mult": "taps",
        "aw_branch": "taps"}
    assert forms(block_model())["aw_3x3"] == "taps"  # int8 does not split by default
    mobilenet = forms(get_model("aw_mobilenet", input_shape=(32, 32, 3), classes=10))
    assert list(mobilenet.values()).count("clipped") == 13
    assert set(forms(block_model(), "tflite_float32").values()) == {"taps"}


@pytest.mark.parametrize("target", ["tflite_int8", "tflite_float32"])
def test_int8_forms_compute_the_same_function(target):
    for model in (block_model(), split_model()):
        x = np.random.default_rng(1).normal(0, 2, (5,) + tuple(model.inputs[0].shape[1:]))
        x = x.astype("float32")
        expected = np.asarray(model(x, training=False))
        got = np.asarray(export_model(model, target)(x, training=False))
        np.testing.assert_allclose(got, expected, atol=3e-5)


def test_export_tflite_clip_blocks_needs_folding(tmp_path):
    with pytest.raises(ValueError, match="clip_blocks"):
        export_tflite(block_model(), tmp_path / "m.tflite", quantization="int8",
                      representative_data=np.zeros((2, 9, 9, 6), "float32"),
                      fold_batch_norms=False, clip_blocks=True)
    assert not (tmp_path / "m.tflite").exists()


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
    # aw_same's 9x9 output has 81 >= 4 * 4 positions per input channel: the
    # ``auto`` implementation of int8 computes it by one matmul, unsplit
    assert forms(split_model(), split_residual=True) == {"aw_same": "matmul", "aw_valid_s2": "split",
                                    "aw_dilated_grouped": "split", "aw_mult": "taps",
                                    "aw_1x1": "taps"}


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
                             split_residual=split, implementation="taps")
        counts[split] = _full_convs(path)
        result = verify(path, model, calibration[:8], batch_sizes=(1, 4), latency_repeats=0)
        assert result.max_abs_error < 0.5, result
    assert counts == {False: 0, True: 3}

"""count_flops: hand-computed layer counts, AW's branch, keras ResNet50 cross-check."""

import pytest

import keras

from aw_keras import applications
from aw_keras.layers import AWConv2D
from aw_keras.layers import CBAM
from aw_keras.layers import SqueezeExcite
from aw_keras.utils import count_flops
from aw_keras.utils.flops import layer_flops


def _model(*layers, shape=(8, 8, 4)):
    inputs = keras.Input(shape)
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def test_conv_depthwise_dense_pooling():
    model = _model(
        keras.layers.Conv2D(6, 3, strides=2, padding="same"),          # 4x4x6 out
        keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2),  # 4x4x12
        keras.layers.MaxPooling2D(2),                                   # 2x2x12
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(5),
    )
    expected = (4 * 4 * 3 * 3 * 4 * 6) + (4 * 4 * 3 * 3 * 6 * 2) + (2 * 2 * 12 * 4) + (
        2 * 2 * 12) + 12 * 5
    assert count_flops(model) == expected
    assert count_flops(model, include_elementwise=False) == expected - 2 * 2 * 12 * 5


def test_grouped_conv():
    model = _model(keras.layers.Conv2D(8, 1, groups=2))
    assert count_flops(model) == 8 * 8 * (4 // 2) * 8


def test_aw_conv2d_convention():
    layer = AWConv2D(32, 3, padding="same", use_bias=False, reduction_ratio=16)
    model = _model(layer, shape=(10, 10, 16))
    conv = 10 * 10 * 9 * 16 * 32
    pooling = 10 * 10 * 16
    squeeze = 9 * 16 * 2          # Pointconv1 to 32 // 16 = 2 at 3x3 pooled positions
    excite = 9 * 2 * 32           # Pointconv2 to C2 (r_C1 = C1)
    modulation = 9 * 16 * 32      # AK = K + A * K
    assert count_flops(model) == conv + pooling + squeeze + excite + modulation
    assert count_flops(model, include_elementwise=False) == conv + squeeze + excite


def test_aw_conv2d_output_channel_reduction():
    model = _model(AWConv2D(32, 3, output_channel_reduction=4, input_channel_reduction=8),
                   shape=(6, 6, 16))
    excite_channels = (32 // 4) * (16 // 8)
    assert model.layers[-1].excite_conv.filters == excite_channels
    expected = 4 * 4 * 9 * 16 * 32 + 6 * 6 * 16 + 9 * 16 * 2 + 9 * 2 * excite_channels + 9 * 16 * 32
    assert count_flops(model) == expected


def test_squeeze_excite_and_cbam():
    hw, c, mid = 8 * 8, 32, 2
    se = _model(SqueezeExcite(16), shape=(8, 8, c))
    assert count_flops(se) == 2 * hw * c + 2 * c * mid
    cbam = _model(CBAM(16), shape=(8, 8, c))
    channel = 2 * (hw * c + 2 * c * mid) + hw * c
    spatial = 2 * hw * c + hw * 2 * 49 + hw * c
    assert count_flops(cbam) == channel + spatial
    assert count_flops(cbam, include_elementwise=False) == 2 * 2 * c * mid + hw * 2 * 49


def test_resnet50_equals_keras_applications_and_paper():
    ours = count_flops(applications.ResNet50())
    theirs = count_flops(keras.applications.ResNet50(weights=None))
    assert ours == theirs
    assert round(ours / 1e9, 2) == 3.86


def test_input_shape_clones_dynamic_model():
    model = applications.AWResNetCIFAR(include_top=False, input_shape=(None, None, 1))
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(model)
    small = count_flops(model, input_shape=(16, 16, 1))
    large = count_flops(model, input_shape=(32, 32, 1))
    assert 3.5 * small < large < 4.5 * small


def test_nested_model_counted():
    inner = _model(keras.layers.Conv2D(2, 1), shape=(4, 4, 3))
    outer = _model(inner, keras.layers.Conv2D(5, 1), shape=(4, 4, 3))
    assert count_flops(outer) == 16 * 3 * 2 + 16 * 2 * 5


def test_not_a_model():
    with pytest.raises(TypeError, match="keras.Model"):
        count_flops(keras.layers.Dense(2))


def _fpn_attention_flops(variant, hw, c1, c2, k):
    """Hand count of what ``variant`` adds to one FPN conv (input hw x c1, k x k to c2)."""
    extra = 0
    if "aw" in variant:  # pooling, Pointconv1/2 at k*k pooled positions, AK = K + A*K
        extra += hw * c1 + k * k * (c1 * (c2 // 16) + (c2 // 16) * c2) + k * k * c1 * c2
    if variant.endswith("se"):
        extra += 2 * hw * c1 + 2 * c1 * (c1 // 16)
    if variant.endswith("cbam"):  # full CBAM: avg + max channel gate, 7x7 spatial gate
        extra += 2 * (hw * c1 + 2 * c1 * (c1 // 16)) + hw * c1
        extra += 2 * hw * c1 + hw * 2 * 49 + hw * c1
    return extra


@pytest.mark.parametrize("variant", ["plain", "aw", "se", "cbam", "aw_se", "aw_cbam"])
def test_fpn_layers_counted_by_hand(variant):
    """The FPN part of a two-stage (P2..P6) backbone, 64x96 input: lateral 1x1 and
    output 3x3 convs, their attention, P6 (window-1 max pool: its outputs); the
    upsampling, crop, merges and input rescaling count 0."""
    prefix = "" if variant == "plain" else variant + "_"
    model = applications.get_model(f"{prefix}resnet_small_fpn", input_shape=(64, 96, 3),
                                   levels="two_stage")
    fpn = 64
    levels = {2: (16 * 24, 64), 3: (8 * 12, 128), 4: (4 * 6, 256), 5: (2 * 3, 512)}  # hw, C_l
    expected = 1 * 2 * fpn  # P6: 1x2 outputs of 64 channels
    for hw, channels in levels.values():
        expected += hw * channels * fpn + _fpn_attention_flops(variant, hw, channels, fpn, 1)
        expected += hw * 9 * fpn * fpn + _fpn_attention_flops(variant, hw, fpn, fpn, 3)
    fpn_layers = [layer for layer in model.layers if layer.name.startswith("fpn_")]
    assert sum(layer_flops(layer) for layer in fpn_layers) == expected
    free = [layer for layer in model.layers
            if type(layer).__name__ in ("UpSampling2D", "CropToMatch", "Add", "Rescaling")]
    assert {type(layer).__name__ for layer in free} == {
        "UpSampling2D", "CropToMatch", "Add", "Rescaling"}
    assert all(layer_flops(layer) == 0 for layer in free)

"""The shared layer harness (tests/layer_harness.py) on every aw_keras layer."""

import keras
import numpy as np
import pytest

from aw_keras.layers import CBAM
from aw_keras.layers import AWConv2D
from aw_keras.layers import SqueezeExcite
from layer_harness import run_layer_test
from layer_harness import run_precision_test
from layer_harness import sublayers

pytestmark = pytest.mark.backends  # runs on every Keras backend

AW_ALL_ARGUMENTS = dict(
    filters=8,
    kernel_size=(3, 3),
    strides=(1, 1),
    padding="same",
    dilation_rate=(2, 2),
    activation="relu",
    use_bias=True,
    kernel_initializer="he_normal",
    bias_initializer="ones",
    kernel_regularizer=keras.regularizers.L2(1e-4),
    bias_regularizer=keras.regularizers.L1(1e-5),
    activity_regularizer=keras.regularizers.L2(1e-6),
    kernel_constraint=keras.constraints.MaxNorm(3.0),
    bias_constraint=keras.constraints.NonNeg(),
    reduction_ratio=4,
    input_channel_reduction=2,
    output_channel_reduction=2,
    spatial_reduction=3,
    attention_mode="multiplicative",
    implementation="matmul",
    name="aw",
)


@pytest.mark.parametrize("init_kwargs, input_shape, output_shape, trainable, non_trainable", [
    # kernel, bias, squeeze conv, squeeze BN (2), excite conv, excite BN (2)
    (AW_ALL_ARGUMENTS, (2, 9, 9, 4), (2, 9, 9, 8), 8, 4),
    (dict(filters=6, kernel_size=(3, 1), strides=2, padding="valid", use_bias=False),
     (1, 7, 5, 3), (1, 3, 3, 6), 7, 4),
    (dict(filters=4, kernel_size=1), (3, 5, 5, 4), (3, 5, 5, 4), 8, 4),
])
def test_aw_conv2d(init_kwargs, input_shape, output_shape, trainable, non_trainable):
    run_layer_test(AWConv2D, init_kwargs, input_shape, output_shape, trainable, non_trainable)


@pytest.mark.parametrize("init_kwargs", [
    dict(reduction_ratio=4, min_channels=2, activation="gelu", name="se"),
    dict(reduction_ratio=2, use_bias=False, kernel_regularizer="l2"),
])
def test_squeeze_excite(init_kwargs):
    weights = 4 if init_kwargs.get("use_bias", True) else 2
    run_layer_test(SqueezeExcite, init_kwargs, (2, 5, 7, 8), (2, 5, 7, 8), weights, 0)


@pytest.mark.parametrize("init_kwargs, trainable, non_trainable", [
    (dict(reduction_ratio=4, name="cbam"), 7, 2),       # MLP (4), spatial conv, BN gamma/beta
    (dict(reduction_ratio=2, use_max_pool=False, spatial_kernel_size=3), 7, 2),
    (dict(reduction_ratio=4, use_spatial=False), 4, 0),
])
def test_cbam(init_kwargs, trainable, non_trainable):
    run_layer_test(CBAM, init_kwargs, (2, 6, 5, 8), (2, 6, 5, 8), trainable, non_trainable)


@pytest.mark.parametrize("cls, kwargs", [
    (SqueezeExcite, {"reduction_ratio": 4}), (CBAM, {"reduction_ratio": 4}),
    (AWConv2D, {"filters": 8, "kernel_size": 3, "padding": "same"}),
])
def test_sublayers_follow_the_layer_dtype_policy_not_the_global_one(cls, kwargs):
    """Under a float32 global policy, a layer built with dtype="mixed_bfloat16" runs
    every sublayer in that policy (they once took the global one)."""
    assert keras.config.dtype_policy().name == "float32"
    run_precision_test(cls, kwargs, (2, 6, 6, 8))
    layer = cls(**kwargs, dtype="mixed_bfloat16")
    layer(np.zeros((1, 6, 6, 8), "float32"))
    assert sublayers(layer) and all(s.compute_dtype == "bfloat16" for s in sublayers(layer))

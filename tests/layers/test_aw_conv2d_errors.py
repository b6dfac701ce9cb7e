"""Bad arguments and inputs raise clear errors that name the argument."""

import numpy as np
import pytest

import keras
from aw_keras.layers import AWConv2D

pytestmark = pytest.mark.backends  # runs on every Keras backend

BAD_ARGUMENTS = [
    (dict(filters=0, kernel_size=3), ValueError, "filters"),
    (dict(filters=-4, kernel_size=3), ValueError, "filters"),
    (dict(filters="16", kernel_size=3), TypeError, "filters"),
    (dict(filters=8, kernel_size=0), ValueError, "kernel_size"),
    (dict(filters=8, kernel_size=(3, -1)), ValueError, "kernel_size"),
    (dict(filters=8, kernel_size=(3, 3, 3)), ValueError, "kernel_size"),
    (dict(filters=8, kernel_size=3, strides=0), ValueError, "strides"),
    (dict(filters=8, kernel_size=3, dilation_rate=0), ValueError, "dilation_rate"),
    (dict(filters=8, kernel_size=3, strides=2, dilation_rate=2), ValueError, "dilation_rate"),
    (dict(filters=8, kernel_size=3, padding="causal"), ValueError, "padding"),
    (dict(filters=8, kernel_size=3, reduction_ratio=0), ValueError, "reduction_ratio"),
    (dict(filters=8, kernel_size=3, output_channel_reduction=3), ValueError, "output_channel_reduction"),
    (dict(filters=8, kernel_size=3, output_channel_reduction=16), ValueError, "output_channel_reduction"),
    (dict(filters=8, kernel_size=3, spatial_reduction=2), ValueError, "spatial_reduction"),
    (dict(filters=8, kernel_size=(3, 1), spatial_reduction=3), ValueError, "spatial_reduction"),
    (dict(filters=8, kernel_size=3, input_channel_reduction=0), ValueError, "input_channel_reduction"),
    (dict(filters=8, kernel_size=3, attention_mode="additive"), ValueError, "attention_mode"),
    (dict(filters=8, kernel_size=3, implementation="fft"), ValueError, "implementation"),
    (dict(filters=8, kernel_size=3, data_format="channels_first"), ValueError, "data_format"),
    (dict(filters=8, kernel_size=3, groups=2), ValueError, "groups"),
    (dict(filters=8, kernel_size=3, attention_bn_momentum=1.0), ValueError, "attention_bn_momentum"),
    (dict(filters=8, kernel_size=3, attention_bn_momentum=-0.1), ValueError, "attention_bn_momentum"),
    (dict(filters=8, kernel_size=3, attention_bn_momentum="0.9"), TypeError, "attention_bn_momentum"),
    (dict(filters=8, kernel_size=3, attention_bn_epsilon=0.0), ValueError, "attention_bn_epsilon"),
    (dict(filters=8, kernel_size=3, attention_bn_epsilon=None), TypeError, "attention_bn_epsilon"),
]


@pytest.mark.parametrize(
    "kwargs, error, argument", BAD_ARGUMENTS, ids=[f"{a}-{i}" for i, (_, _, a) in enumerate(BAD_ARGUMENTS)]
)
def test_bad_arguments(kwargs, error, argument):
    with pytest.raises(error) as info:
        AWConv2D(**kwargs)
    message = str(info.value)
    assert f"`{argument}`" in message, message
    assert "received" in message, message


@pytest.mark.parametrize(
    "input_shape, argument",
    [
        ((None, 8, 8, 6), "input_channel_reduction"),  # 4 does not divide C1 = 6
        ((None, 8, 8, 2), "input_channel_reduction"),  # 4 exceeds C1 = 2
    ],
)
def test_input_channel_reduction_checked_against_the_input(input_shape, argument):
    layer = AWConv2D(8, 3, input_channel_reduction=4)
    with pytest.raises(ValueError, match=f"`{argument}` must divide"):
        layer.build(input_shape)


def test_wrong_input_rank():
    layer = AWConv2D(8, 3)
    with pytest.raises(ValueError, match="rank 4|ndim=4|expected min_ndim=4"):
        layer(np.zeros((2, 8, 8), "float32"))
    with pytest.raises(ValueError, match="`inputs`.*rank 4"):
        AWConv2D(8, 3).build((2, 8, 8))


def test_unknown_channel_dimension():
    with pytest.raises(ValueError, match="channel dimension of `inputs`"):
        AWConv2D(8, 3).build((None, 8, 8, None))


def test_wrong_channel_count_after_build():
    layer = AWConv2D(8, 3)
    layer(np.zeros((1, 8, 8, 4), "float32"))
    with pytest.raises(ValueError, match="axis -1|expected axis"):
        layer(np.zeros((1, 8, 8, 5), "float32"))


def test_setting_an_unknown_implementation_later():
    layer = AWConv2D(8, 3)
    with pytest.raises(ValueError, match="`implementation` must be one of"):
        layer.implementation = "groupd"


def test_a_strategy_of_another_backend_is_refused_when_called():
    """Every backend's names are accepted (files load anywhere); calling one the
    running backend lacks names the backend and the names it has."""
    other = "grouped" if keras.backend.backend() == "tensorflow" else "fused"
    layer = AWConv2D(8, 3, implementation=other)
    with pytest.raises(ValueError, match=f"implementation='{other}' does not run on the "
                                         f"{keras.backend.backend()} backend"):
        layer(np.zeros((1, 8, 8, 4), "float32"))


@pytest.mark.parametrize("kwargs, input_shape, axis", [
    ({"kernel_size": 3}, (1, 2, 8, 4), "height 2"),
    ({"kernel_size": (1, 3), "dilation_rate": 2}, (1, 8, 4, 4), "width 4"),
])
def test_valid_padding_input_smaller_than_the_kernel(kwargs, input_shape, axis):
    layer = AWConv2D(4, padding="valid", **kwargs)
    with pytest.raises(ValueError, match=f"input {axis} of AWConv2D .* smaller than its kernel"):
        layer(np.zeros(input_shape, "float32"))
    # A symbolic input of that size fails at the same place, with the same message.
    with pytest.raises(ValueError, match="smaller than its kernel"):
        AWConv2D(4, padding="valid", **kwargs)(keras.Input(input_shape[1:]))
    # Same padding or unknown sizes are fine.
    AWConv2D(4, padding="same", **kwargs)(np.zeros(input_shape, "float32"))
    AWConv2D(4, padding="valid", **kwargs)(keras.Input((None, None, 4)))

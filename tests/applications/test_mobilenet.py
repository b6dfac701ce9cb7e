"""MobileNet builders: keras.applications structure, AW/SE/CBAM placement, arguments."""

import numpy as np
import pytest

import keras

from aw_keras import applications
from aw_keras.layers import AWConv2D
from aw_keras.layers import CBAM
from aw_keras.layers import SqueezeExcite


def _named(model):
    # Skip the input and keras' unnamed (auto-numbered) global pooling layer.
    return [l for l in model.layers if not isinstance(
        l, (keras.layers.InputLayer, keras.layers.GlobalAveragePooling2D))]


@pytest.mark.parametrize("alpha, depth_multiplier", [(1.0, 1), (0.5, 2)])
def test_matches_keras_applications_structure(alpha, depth_multiplier):
    kwargs = dict(input_shape=(64, 64, 3), alpha=alpha, depth_multiplier=depth_multiplier,
                  classes=10)
    ours = applications.MobileNet(**kwargs)
    reference = keras.applications.MobileNet(weights=None, **kwargs)
    assert [l.name for l in _named(ours)] == [l.name for l in _named(reference)]
    for a, b in zip(_named(ours), _named(reference)):
        assert a.output.shape == b.output.shape, a.name
    assert ours.count_params() == reference.count_params()


def test_argument_order_matches_keras():
    model = applications.MobileNet((32, 32, 3), 0.25, 1, 0.2, True, None, None, None, 6)
    assert model.output_shape == (None, 6)
    assert model.get_layer("conv_pw_13").filters == 256
    assert model.get_layer("dropout").rate == 0.2


def test_aw_on_every_pointwise_conv():
    model = applications.AWMobileNet(input_shape=(32, 32, 3), alpha=0.25)
    aw = [l for l in model.layers if isinstance(l, AWConv2D)]
    assert sorted(l.name for l in aw) == sorted(f"conv_pw_{i}" for i in range(1, 14))
    assert all(l.kernel_size == (1, 1) and not l.use_bias for l in aw)


@pytest.mark.parametrize(
    "builder, cls, flags",
    [(applications.AWSEMobileNet, SqueezeExcite, None),
     (applications.CBAMMobileNet, CBAM, (False, True)),
     (applications.AWCBAMMobileNet, CBAM, (False, True))],
)
def test_attention_after_depthwise_and_pointwise(builder, cls, flags):
    model = builder(input_shape=(32, 32, 3), alpha=0.25)
    suffix = "se" if cls is SqueezeExcite else "cbam"
    layers = [l for l in model.layers if isinstance(l, cls)]
    assert len(layers) == 26
    for unit in ("conv_dw_1", "conv_pw_13"):
        layer = model.get_layer(f"{unit}_{suffix}")
        assert layer.input is model.get_layer(f"{unit}_relu").output
        if flags:
            assert (layer.use_max_pool, layer.use_spatial) == flags


def test_cbam_variant_argument():
    model = applications.CBAMMobileNet(input_shape=(32, 32, 3), alpha=0.25, cbam_variant="full")
    assert model.get_layer("conv_pw_1_cbam").use_max_pool is True
    with pytest.raises(ValueError, match="cbam_variant"):
        applications.CBAMMobileNet(cbam_variant="max")


@pytest.mark.parametrize("pooling, shape", [("avg", (None, 256)), ("max", (None, 256)),
                                            (None, (None, 1, 1, 256))])
def test_include_top_false(pooling, shape):
    model = applications.AWSEMobileNet(include_top=False, pooling=pooling, alpha=0.25,
                                       input_shape=(32, 32, 3))
    assert model.output_shape == shape


@pytest.mark.parametrize("channels", [1, 4])
def test_channels(channels):
    model = applications.AWMobileNet(input_shape=(32, 32, channels), alpha=0.25, classes=3)
    assert model(np.ones((2, 32, 32, channels), np.float32)).shape == (2, 3)


def test_input_tensor():
    inputs = keras.Input((32, 32, 3))
    model = applications.SEMobileNet(input_tensor=inputs, alpha=0.25, classes=2)
    assert model.inputs[0] is inputs and model.output_shape == (None, 2)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [({"alpha": 0}, ValueError, "alpha"), ({"alpha": 0.01}, ValueError, "alpha"),
     ({"depth_multiplier": 1.5}, ValueError, "depth_multiplier"),
     ({"dropout": 1.0}, ValueError, "dropout"),
     ({"weights": "imagenet", "classes": 10}, ValueError, "classes=1000"),
     ({"input_shape": (31, 32, 3)}, ValueError, "at least 32"),
     ({"pooling": "mean", "include_top": False}, ValueError, "pooling")],
)
def test_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        applications.MobileNet(**kwargs)

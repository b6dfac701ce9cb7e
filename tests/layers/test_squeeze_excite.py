"""SqueezeExcite: math against NumPy, shapes, config round trip, argument errors."""

import numpy as np
import pytest

import keras

from aw_keras.layers import SqueezeExcite

pytestmark = pytest.mark.backends  # runs on every Keras backend


def _numpy_se(x, layer):
    w1, b1 = [v.numpy() for v in layer.reduce.weights]
    w2, b2 = [v.numpy() for v in layer.expand.weights]
    pooled = x.mean(axis=(1, 2))
    hidden = np.maximum(pooled @ w1[0, 0] + b1, 0)
    gate = 1 / (1 + np.exp(-(hidden @ w2[0, 0] + b2)))
    return x * gate[:, None, None, :]


def test_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 6, 32)).astype("float32")
    layer = SqueezeExcite(reduction_ratio=8, bias_initializer="random_normal")
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(out, _numpy_se(x, layer), rtol=1e-5, atol=1e-5)


def test_parameter_count_matches_se_formula():
    layer = SqueezeExcite(reduction_ratio=16)
    layer.build((None, 7, 7, 256))
    # 256 -> 16 -> 256, both with bias.
    assert layer.count_params() == 256 * 16 + 16 + 16 * 256 + 256


def test_min_channels_floor():
    layer = SqueezeExcite(reduction_ratio=16, min_channels=4)
    layer.build((None, 4, 4, 8))
    assert layer.reduce.filters == 4


def test_channels_first():
    x = np.random.default_rng(1).normal(size=(2, 16, 4, 4)).astype("float32")
    layer = SqueezeExcite(reduction_ratio=4, data_format="channels_first")
    out = keras.ops.convert_to_numpy(layer(x))
    reference = _numpy_se(x.transpose(0, 2, 3, 1), layer).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"reduction_ratio": 0}, ValueError, "reduction_ratio"),
        ({"reduction_ratio": 2.5}, TypeError, "reduction_ratio"),
        ({"min_channels": 0}, ValueError, "min_channels"),
        ({"data_format": "NHWC"}, ValueError, "data_format"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SqueezeExcite(**kwargs)


def test_rejects_non_4d_input():
    with pytest.raises(ValueError, match="4-D"):
        SqueezeExcite()(np.ones((2, 8, 16), "float32"))

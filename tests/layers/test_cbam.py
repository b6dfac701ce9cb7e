"""CBAM: math against NumPy for every flag combination, config, errors."""

import numpy as np
import pytest

import keras

from aw_keras.layers import CBAM

pytestmark = pytest.mark.backends  # runs on every Keras backend


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _conv_same(x, kernel):
    """x (N, H, W, Cin), kernel (k, k, Cin, 1) -> (N, H, W, 1), zero 'same' padding."""
    k = kernel.shape[0]
    p = k // 2
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    n, h, w, _ = x.shape
    out = np.zeros((n, h, w, 1))
    for i in range(k):
        for j in range(k):
            out += padded[:, i:i + h, j:j + w, :] @ kernel[i, j]
    return out


def _numpy_cbam(x, layer):
    w1, b1 = [v.numpy() for v in layer.mlp_reduce.weights]
    w2, b2 = [v.numpy() for v in layer.mlp_expand.weights]

    def mlp(v):
        return np.maximum(v @ w1[0, 0] + b1, 0) @ w2[0, 0] + b2

    logits = mlp(x.mean(axis=(1, 2)))
    if layer.use_max_pool:
        logits = logits + mlp(x.max(axis=(1, 2)))
    y = x * _sigmoid(logits)[:, None, None, :]
    if layer.use_spatial:
        pooled = np.concatenate([y.max(-1, keepdims=True), y.mean(-1, keepdims=True)], -1)
        z = _conv_same(pooled, layer.spatial_conv.kernel.numpy())
        bn = layer.spatial_bn
        z = (z - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        z = z * bn.gamma.numpy() + bn.beta.numpy()
        y = y * _sigmoid(z)
    return y


@pytest.mark.parametrize("use_max_pool", [True, False])
@pytest.mark.parametrize("use_spatial", [True, False])
def test_matches_numpy_reference(use_max_pool, use_spatial):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 5, 16)).astype("float32")
    layer = CBAM(reduction_ratio=4, use_max_pool=use_max_pool, use_spatial=use_spatial,
                 bias_initializer="random_normal")
    out = keras.ops.convert_to_numpy(layer(x, training=False))
    np.testing.assert_allclose(out, _numpy_cbam(x, layer), rtol=1e-4, atol=1e-5)


def test_channels_first_matches_channels_last():
    x = np.random.default_rng(0).normal(size=(2, 6, 7, 16)).astype("float32")
    last = CBAM(reduction_ratio=4)
    expected = keras.ops.convert_to_numpy(last(x))
    first = CBAM(reduction_ratio=4, data_format="channels_first")
    first.build((None, 16, 6, 7))
    first.set_weights(last.get_weights())
    got = keras.ops.convert_to_numpy(first(np.transpose(x, (0, 3, 1, 2))))
    np.testing.assert_allclose(np.transpose(got, (0, 2, 3, 1)), expected, atol=1e-5)


def test_parameter_counts():
    full = CBAM(reduction_ratio=16)
    full.build((None, 14, 14, 256))
    mlp = 256 * 16 + 16 + 16 * 256 + 256
    # 7x7x2 conv without bias, BN gamma/beta trainable (+2 moving statistics).
    assert sum(int(np.prod(w.shape)) for w in full.trainable_weights) == mlp + 98 + 2
    channel_only = CBAM(reduction_ratio=16, use_spatial=False)
    channel_only.build((None, 14, 14, 256))
    assert channel_only.count_params() == mlp


def test_spatial_gate_changes_with_training_flag():
    x = np.random.default_rng(2).normal(size=(4, 8, 8, 8)).astype("float32")
    layer = CBAM(reduction_ratio=2, use_spatial=True)
    infer = keras.ops.convert_to_numpy(layer(x, training=False))
    train = keras.ops.convert_to_numpy(layer(x, training=True))
    assert not np.allclose(infer, train)  # BN uses batch statistics when training


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"reduction_ratio": -1}, ValueError, "reduction_ratio"),
        ({"spatial_kernel_size": 4}, ValueError, "spatial_kernel_size"),
        ({"spatial_kernel_size": "7"}, TypeError, "spatial_kernel_size"),
        ({"use_max_pool": "yes"}, TypeError, "use_max_pool"),
        ({"use_spatial": 1}, TypeError, "use_spatial"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        CBAM(**kwargs)

"""Analytic gradients of AWConv2D against central finite differences (float64)."""

import numpy as np
import pytest
import tensorflow as tf

import keras
from aw_keras.layers import AWConv2D
from aw_keras.layers.aw_conv2d import IMPLEMENTATIONS

EPSILON = 1e-6


def numerical_gradient(loss_fn, variable, indices):
    """Central differences of loss_fn() w.r.t. the entries `indices` of `variable`."""
    values = variable.numpy()
    grads = []
    for index in indices:
        original = values[index]
        for sign in (1, -1):
            values[index] = original + sign * EPSILON
            variable.assign(values)
            grads.append(loss_fn())
        values[index] = original
        variable.assign(values)
    pairs = np.asarray(grads).reshape(-1, 2)
    return (pairs[:, 0] - pairs[:, 1]) / (2 * EPSILON)


def sample_indices(shape, count, rng):
    flat = rng.choice(int(np.prod(shape)), size=min(count, int(np.prod(shape))), replace=False)
    return [np.unravel_index(i, shape) for i in flat]


CASES = {
    "stride2_one_group": (None, 2, (2, 5, 6, 4)),
    "stride2_two_groups": (2, 2, (2, 5, 6, 4)),
    # C1 >= 2 * Ho * Wo: the batched-matmul path of `taps` in training.
    "deep_small_output": (None, 1, (2, 2, 2, 8)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_gradients_match_finite_differences(implementation, case):
    input_channel_reduction, strides, input_shape = CASES[case]
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    layer = AWConv2D(4, 3, strides=strides, padding="same", reduction_ratio=2, dtype="float64",
                     input_channel_reduction=input_channel_reduction,
                     implementation=implementation)
    x = tf.Variable(rng.normal(size=input_shape))
    layer.build(x.shape)
    weights_out = tf.constant(rng.normal(size=layer.compute_output_shape(input_shape)))

    def loss():
        # training=True: BN uses batch statistics, the harder path to differentiate.
        return float(tf.reduce_sum(layer(x, training=True) * weights_out))

    targets = {
        "inputs": x,
        "kernel": layer.kernel,
        "squeeze_conv": layer.squeeze_conv.kernel,
        "excite_conv": layer.excite_conv.kernel,
        "excite_bn_gamma": layer.excite_bn.gamma,
    }
    variables = [v if isinstance(v, tf.Variable) else v.value for v in targets.values()]
    with tf.GradientTape() as tape:
        tape.watch(variables)
        out = tf.reduce_sum(layer(x, training=True) * weights_out)
    analytic = tape.gradient(out, variables)
    for (name, variable), grad in zip(targets.items(), analytic):
        assert grad is not None, f"no gradient for {name}"
        indices = sample_indices(variable.shape, 6, rng)
        numeric = numerical_gradient(loss, variable, indices)
        got = np.array([grad.numpy()[i] for i in indices])
        np.testing.assert_allclose(got, numeric, rtol=1e-5, atol=1e-7, err_msg=name)

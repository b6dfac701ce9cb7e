"""Analytic gradients of AWConv2D against central finite differences (float64),
on every backend (the running backend's autodiff and strategies)."""

import numpy as np
import pytest

import keras
from aw_keras.layers import AWConv2D
from aw_keras.layers.aw_conv2d import IMPLEMENTATIONS
import reference
from backend_gradients import float64_enabled
from backend_gradients import layer_gradients

pytestmark = pytest.mark.backends

EPSILON = 1e-6


def numerical_gradient(loss_fn, values, indices):
    """Central differences of loss_fn(values) w.r.t. the entries `indices` of the array."""
    grads = []
    for index in indices:
        for sign in (1, -1):
            shifted = values.copy()
            shifted[index] += sign * EPSILON
            grads.append(loss_fn(shifted))
    pairs = np.asarray(grads).reshape(-1, 2)
    return (pairs[:, 0] - pairs[:, 1]) / (2 * EPSILON)


def sample_indices(shape, count, rng):
    flat = rng.choice(int(np.prod(shape)), size=min(count, int(np.prod(shape))), replace=False)
    return [np.unravel_index(i, shape) for i in flat]


CASES = {
    "stride2_one_group": (None, 2, (2, 5, 6, 4)),
    "stride2_two_groups": (2, 2, (2, 5, 6, 4)),
    # C1 >= 2 * Ho * Wo: the batched-matmul path of TensorFlow's `taps` in training.
    "deep_small_output": (None, 1, (2, 2, 2, 8)),
}
TENSORFLOW_CASES = ("deep_small_output",)
TARGETS = ("kernel", "squeeze_conv/kernel", "excite_conv/kernel", "excite_bn/gamma")


def oracle_loss(layer, x, values, weights_out):
    """``sum(O * weights_out)`` with O from the NumPy oracle of Eq. 4-8 in float64,
    in training mode, with ``layer``'s trainable variables set to ``values``."""
    by_path = {v.path.split("/", 1)[1]: keras.ops.convert_to_numpy(value).astype(np.float64)
               for v, value in zip(layer.trainable_variables, values)}
    weights = reference.layer_weights(layer)
    weights["kernel"] = by_path["kernel"]
    weights["bias"] = by_path.get("bias")
    weights["squeeze_kernel"] = by_path["squeeze_conv/kernel"][0, 0]
    weights["excite_kernel"] = by_path["excite_conv/kernel"][0, 0]
    for bn in ("squeeze_bn", "excite_bn"):
        weights[bn]["gamma"] = by_path[f"{bn}/gamma"]
        weights[bn]["beta"] = by_path[f"{bn}/beta"]
    outputs = reference.aw_conv2d(x, weights, layer.get_config(), training=True)
    return float(np.sum(outputs * weights_out))


# The layer computes in float64 on every backend but JAX, where Keras's
# BatchNormalization promotes float64 with float32 to float32.
RTOL = {"jax": 2e-5}


@pytest.mark.parametrize("case", [
    pytest.param(case, marks=pytest.mark.tensorflow_only) if case in TENSORFLOW_CASES else case
    for case in CASES])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_gradients_match_finite_differences(implementation, case):
    """The backend's gradients (its autodiff through the running backend's
    strategy, BN in training mode) against central differences of the float64
    NumPy oracle."""
    input_channel_reduction, strides, input_shape = CASES[case]
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    with float64_enabled():
        layer = AWConv2D(4, 3, strides=strides, padding="same", reduction_ratio=2,
                         dtype="float64", input_channel_reduction=input_channel_reduction,
                         implementation=implementation)
        x = rng.normal(size=input_shape)
        layer.build(x.shape)
        weights_out = rng.normal(size=layer.compute_output_shape(input_shape))
        values = [v.numpy().astype(np.float64) for v in layer.trainable_variables]
        paths = [v.path.split("/", 1)[1] for v in layer.trainable_variables]
        grad_x, grad_values = layer_gradients(layer, x, weights_out)

    checks = {"inputs": (x, grad_x, lambda shifted: oracle_loss(layer, shifted, values,
                                                               weights_out))}
    for name in TARGETS:
        i = paths.index(name)
        checks[name] = (values[i], grad_values[i], lambda shifted, i=i: oracle_loss(
            layer, x, values[:i] + [shifted] + values[i + 1:], weights_out))
    rtol = RTOL.get(keras.backend.backend(), 1e-5)
    for name, (value, grad, loss_fn) in checks.items():
        assert grad is not None, f"no gradient for {name}"
        indices = sample_indices(value.shape, 6, rng)
        numeric = numerical_gradient(loss_fn, value, indices)
        got = np.array([grad[i] for i in indices])
        np.testing.assert_allclose(got, numeric, rtol=rtol, atol=1e-7, err_msg=name)

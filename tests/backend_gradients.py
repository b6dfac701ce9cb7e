"""Gradients of a layer's output on the running Keras backend, for tests.

`layer_loss_and_gradients(layer, x, weights_out)` differentiates
``sum(layer(x, training=True) * weights_out)`` with respect to the input and
every trainable variable, with TensorFlow's GradientTape, ``jax.grad`` or
PyTorch's autograd: whichever backend Keras runs on. The layer is called
statelessly (``Layer.stateless_call``): its variables are not changed, so the
same function also gives the loss at perturbed values for finite differences.

Import it as a plain module (``tests/`` is on ``sys.path``, see conftest.py).
"""

import contextlib

import keras
import numpy as np


def layer_loss(layer, x, trainable_values, weights_out):
    """``sum(layer(x, training=True) * weights_out)`` with the trainable
    variables replaced by ``trainable_values`` (batch statistics for BN)."""
    non_trainable = [v.value for v in layer.non_trainable_variables]
    outputs, _ = layer.stateless_call(trainable_values, non_trainable, x, training=True)
    return keras.ops.sum(outputs * weights_out)


def layer_gradients(layer, x, weights_out):
    """(d loss / d x, [d loss / d v for v in layer.trainable_variables]) as NumPy."""
    backend = keras.backend.backend()
    x = keras.ops.convert_to_tensor(x)
    weights_out = keras.ops.convert_to_tensor(weights_out)
    values = [keras.ops.convert_to_tensor(v.numpy()) for v in layer.trainable_variables]
    if backend == "jax":
        import jax

        grad_x, grad_values = jax.grad(
            lambda x_, v_: layer_loss(layer, x_, v_, weights_out), argnums=(0, 1))(x, values)
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch([x] + values)
            loss = layer_loss(layer, x, values, weights_out)
        grad_x, *grad_values = tape.gradient(loss, [x] + values)
    elif backend == "torch":
        x = x.detach().clone().requires_grad_(True)
        values = [v.detach().clone().requires_grad_(True) for v in values]
        layer_loss(layer, x, values, weights_out).backward()
        grad_x, grad_values = x.grad, [v.grad for v in values]
    else:
        raise ValueError(f"no gradient helper for the {backend!r} backend")
    as_numpy = keras.ops.convert_to_numpy
    return as_numpy(grad_x), [None if g is None else as_numpy(g) for g in grad_values]


@contextlib.contextmanager
def float64_enabled():
    """JAX computes in float32 unless ``jax_enable_x64`` is set: set it for the
    duration (a no-op on the other backends)."""
    if keras.backend.backend() != "jax":
        yield
        return
    import jax

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)

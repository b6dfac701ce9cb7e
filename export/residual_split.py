"""Residual-mode AWConv2D with a k x k kernel as ``conv(x, K) + taps(x, K, A)`` for int8.

In residual mode ``AK = K + A*K``, so the layer output is the plain
convolution plus an attention correction::

    y = conv(x, K) + sum over taps t of A_t * (x_t @ K_t)      (+ bias, + BN shift)

The tap decomposition that exports everywhere computes ``sum_t (1 + A_t) *
(x_t @ K_t)`` instead: nine int8 partial products, nine requantizing MULs and
eight requantizing ADDs carry the *whole* signal, and their rounding noise is
what int8 leaves of it (a 60-step AW-ResNet50: top-1 agreement 0.959 on 1024
test images, plain ResNet50 0.974). Split, the main term is one int8
convolution (int32 accumulation, one rounding, the folded BatchNorm shift as
its bias) and only the correction, scaled by A in [0, 1], goes through the
taps: 0.976. The price is one more k x k convolution per AW layer in the
.tflite (see the latency table in docs/export.md); 1x1 blocks followed by a
ReLU use `clipped_blocks` instead.

Example:

>>> with prepare.folded_batch_norms(model), split_residual(model):   # doctest: +SKIP
...     write_serving_saved_model(model, path)
"""

import contextlib

import numpy as np
import tensorflow as tf

from aw_keras.export import prepare
from aw_keras.layers import aw_kernels


def splittable_layers(model):
    """Residual-mode float32 AWConv2D layers of ``model`` with a kernel larger
    than 1x1 (1x1 blocks are `clipped_blocks`' business)."""
    return [
        layer for layer in prepare.aw_layers(model)
        if layer.attention_mode == "residual"
        and tuple(layer.kernel_size) != (1, 1)
        and layer.compute_dtype == "float32"
        and getattr(layer, "groups", 1) == 1
    ]


def _split_call(conv, shift):
    kernel = conv.kernel.numpy()
    geometry = conv.geometry
    bias = np.zeros(conv.filters, np.float32) if shift is None else shift.astype(np.float32)
    if conv.use_bias:
        bias = bias + conv.bias.numpy()
    activation = conv.activation

    def call(inputs, training=None):
        attention = conv.compact_attention(inputs, training)
        main = tf.nn.conv2d(inputs, kernel, geometry.strides, geometry.padding.upper(),
                            dilations=geometry.dilation_rate) + bias
        outputs = main + aw_kernels.taps(inputs, kernel, attention, geometry)
        return activation(outputs) if activation is not None else outputs

    return call


@contextlib.contextmanager
def split_residual(model):
    """Traces every `splittable_layers` layer as ``conv(x, K) + taps(x, K, A)``.
    A BatchNormalization folded by `prepare.folded_batch_norms` (enter that
    first) becomes the main convolution's bias and an identity. Restored on exit."""
    folded = {conv.name: norm for conv, norm in prepare.foldable_batch_norms(model)}
    layers = splittable_layers(model)
    with prepare.call_overrides() as override:
        for conv in layers:
            norm = folded.get(conv.name)
            shift = None
            if norm is not None and prepare.is_folded(norm):  # x + beta: into the bias
                shift = norm.beta.numpy() if norm.beta is not None else None
                override(norm, prepare.identity_call)
            override(conv, _split_call(conv, shift))
        if layers:
            prepare.log(
                f"traced {len(layers)} AWConv2D layers as conv(x, K) + attention taps for int8 "
                "(same numbers; the main term rounds once; restored afterwards)"
            )
        yield layers

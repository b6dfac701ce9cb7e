"""Adaptive average pooling with PyTorch ``AdaptiveAvgPool2d`` bins, export-safe.

Output cell ``i`` of ``out`` cells over an input axis of length ``size`` averages
the input rows ``floor(i * size / out) <= h < ceil((i + 1) * size / out)``.

Only ops that convert to TFLite builtins and ONNX are used: ``reduce_mean`` for a
1x1 output, ``avg_pool2d`` when the bins are equal, otherwise two matrix products
with bin matrices (constant when the input size is static).

Example:

>>> import tensorflow as tf
>>> x = tf.ones((2, 7, 9, 3))
>>> adaptive_average_pool(x, (3, 3)).shape
TensorShape([2, 3, 3, 3])
"""

import numpy as np
import tensorflow as tf


def adaptive_bin_matrix(size, out):
    """Returns the (out, size) NumPy averaging matrix of PyTorch's adaptive bins."""
    matrix = np.zeros((out, size), dtype=np.float64)
    for i in range(out):
        start = (i * size) // out
        end = -((-(i + 1) * size) // out)  # ceil
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _dynamic_bin_matrix(size, out, dtype):
    """The same matrix as `adaptive_bin_matrix` for a tensor-valued ``size``."""
    i = tf.range(out, dtype=tf.int32)[:, None]
    start = (i * size) // out
    end = ((i + 1) * size + out - 1) // out
    h = tf.range(size, dtype=tf.int32)[None, :]
    inside = tf.logical_and(h >= start, h < end)
    counts = tf.cast(end - start, dtype)
    return tf.cast(inside, dtype) / counts


def _bin_matrix(static_size, dynamic_size, out, dtype):
    if static_size is not None:
        return tf.constant(adaptive_bin_matrix(static_size, out), dtype=dtype)
    return _dynamic_bin_matrix(dynamic_size, out, dtype)


def adaptive_average_pool(inputs, output_size):
    """Adaptive average pooling of a channels-last batch to ``output_size``.

    Args:
        inputs: tensor of shape (N, H, W, C); H and W may be unknown statically.
        output_size: (out_h, out_w) positive ints.

    Returns:
        Tensor of shape (N, out_h, out_w, C) with PyTorch ``AdaptiveAvgPool2d``
        semantics.
    """
    out_h, out_w = (int(v) for v in output_size)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"`output_size` must be positive, received {output_size}.")
    if out_h == 1 and out_w == 1:
        return tf.reduce_mean(inputs, axis=[1, 2], keepdims=True)
    static_h, static_w = inputs.shape[1], inputs.shape[2]
    if (
        static_h is not None
        and static_w is not None
        and static_h % out_h == 0
        and static_w % out_w == 0
    ):
        window = (static_h // out_h, static_w // out_w)
        return tf.nn.avg_pool2d(inputs, window, window, "VALID")
    dynamic = tf.shape(inputs)
    rows = _bin_matrix(static_h, dynamic[1], out_h, inputs.dtype)
    cols = _bin_matrix(static_w, dynamic[2], out_w, inputs.dtype)
    pooled = tf.einsum("ih,nhwc->niwc", rows, inputs)
    return tf.einsum("jw,niwc->nijc", cols, pooled)

"""Adaptive average pooling with PyTorch ``AdaptiveAvgPool2d`` bins, export-safe.

Output cell ``i`` of ``out`` cells over an input axis of length ``size`` averages
the input rows ``floor(i * size / out) <= h < ceil((i + 1) * size / out)``.

Only ops that convert to TFLite builtins and ONNX with a dynamic batch are used:
``mean`` for a 1x1 output, ``average_pool`` when the bins are equal,
otherwise (e.g. 56, 28, 14, 7 -> 3 in ResNet50, or unknown sizes) two
broadcasting matrix products with the bin matrices, rows then columns (constant
when the input size is static). With ``sliced=True`` (the export layers of
``aw_keras.export``) uneven static bins are a slice and ``mean``
each: slower in TensorFlow, quantized more faithfully in int8 TFLite. Same
numbers up to float rounding; docs/export.md has the measurements.

Example:

>>> import numpy as np
>>> tuple(adaptive_average_pool(np.ones((2, 7, 9, 3), "float32"), (3, 3)).shape)
(2, 3, 3, 3)
"""

import keras
import numpy as np
from keras import ops


def adaptive_bin_matrix(size, out):
    """Returns the (out, size) NumPy averaging matrix of PyTorch's adaptive bins."""
    matrix = np.zeros((out, size), dtype=np.float64)
    for i, (start, end) in enumerate(_bin_bounds(size, out)):
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _dynamic_bin_matrix(size, out, dtype):
    """The same matrix as `adaptive_bin_matrix` for a tensor-valued ``size``
    (TensorFlow graphs with an unknown height or width)."""
    i = ops.arange(out, dtype="int32")[:, None]
    start = ops.floor_divide(i * size, out)
    end = ops.floor_divide((i + 1) * size + out - 1, out)
    h = ops.arange(size, dtype="int32")[None, :]
    inside = ops.logical_and(h >= start, h < end)
    counts = ops.cast(end - start, dtype)
    return ops.cast(inside, dtype) / counts


def _bin_matrix(static_size, dynamic_size, out, dtype):
    if static_size is not None:
        return ops.convert_to_tensor(adaptive_bin_matrix(static_size, out), dtype=dtype)
    return _dynamic_bin_matrix(dynamic_size, out, dtype)


def _bin_bounds(size, out):
    """The [start, end) input rows of each of ``out`` PyTorch adaptive bins."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _pool_sliced(inputs, height, width, out_h, out_w):
    """Separable slices + ``mean``: rows first, then columns."""
    rows = ops.concatenate(
        [ops.mean(inputs[:, top:bottom], axis=1, keepdims=True)
         for top, bottom in _bin_bounds(height, out_h)],
        axis=1,
    )
    return ops.concatenate(
        [ops.mean(rows[:, :, left:right], axis=2, keepdims=True)
         for left, right in _bin_bounds(width, out_w)],
        axis=2,
    )


def adaptive_average_pool(inputs, output_size, sliced=False):
    """Adaptive average pooling of a channels-last batch to ``output_size``.

    Written with ``keras.ops``: runs on every Keras backend.

    Args:
        inputs: tensor of shape (N, H, W, C); H and W may be unknown statically.
        output_size: (out_h, out_w) positive ints.
        sliced: pool uneven static bins by slices and ``mean`` instead of
            matrix products (for int8 export).

    Returns:
        Tensor of shape (N, out_h, out_w, C) with PyTorch ``AdaptiveAvgPool2d``
        semantics.
    """
    out_h, out_w = (int(v) for v in output_size)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"`output_size` must be positive, received {output_size}.")
    if out_h == 1 and out_w == 1:
        return ops.mean(inputs, axis=(1, 2), keepdims=True)
    static_h, static_w = inputs.shape[1], inputs.shape[2]
    if (
        static_h is not None
        and static_w is not None
        and static_h % out_h == 0
        and static_w % out_w == 0
    ):
        window = (static_h // out_h, static_w // out_w)
        return ops.average_pool(inputs, window, strides=window, padding="valid",
                                data_format="channels_last")
    if static_h is not None and static_w is not None and sliced:
        return _pool_sliced(inputs, static_h, static_w, out_h, out_w)
    dynamic = ops.shape(inputs)
    height = static_h if static_h is not None else dynamic[1]
    width = static_w if static_w is not None else dynamic[2]
    channels = inputs.shape[3] if inputs.shape[3] is not None else dynamic[3]
    dtype = keras.backend.standardize_dtype(inputs.dtype)
    rows = _bin_matrix(static_h, height, out_h, dtype)
    cols = _bin_matrix(static_w, width, out_w, dtype)
    # Separable: contract H with a (out_h, H) matrix, then W with (out_w, W).
    # Plain broadcasting matmuls and reshapes with a single -1 (the batch).
    pooled = ops.matmul(rows, ops.reshape(inputs, (-1, height, width * channels)))
    pooled = ops.matmul(cols, ops.reshape(pooled, (-1, width, channels)))
    return ops.reshape(pooled, (-1, out_h, out_w, channels))

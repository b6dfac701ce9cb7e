"""The geometry of a 2D convolution, in plain Python (no backend).

`ConvGeometry` holds what every AW-convolution strategy needs besides the
tensors; `output_size` and `same_padding` follow TensorFlow's and Keras's
``padding="same"`` convention (the extra row or column goes after).

Example:

>>> geometry = ConvGeometry((3, 3), (2, 2), (1, 1), "same")
>>> output_size(7, 3, 2, 1, "same"), same_padding(7, 3, 2, 1)
(4, (1, 1))
>>> output_hw((8, 7, 9, 16), geometry)
(4, 5)
"""

import collections

ConvGeometry = collections.namedtuple(
    "ConvGeometry", ["kernel_size", "strides", "dilation_rate", "padding"]
)


def output_size(size, kernel, stride, dilation, padding):
    """Output length of a convolution along one axis (TF/Keras semantics)."""
    if padding == "same":
        return (size + stride - 1) // stride
    return (size - (kernel - 1) * dilation - 1) // stride + 1


def output_hw(input_shape, geometry):
    """(Ho, Wo) of a convolution with ``geometry`` on an (N, H, W, C) shape, or
    None when H or W is unknown."""
    height, width = input_shape[1], input_shape[2]
    if height is None or width is None:
        return None
    return tuple(output_size(size, geometry.kernel_size[axis], geometry.strides[axis],
                             geometry.dilation_rate[axis], geometry.padding)
                 for axis, size in enumerate((height, width)))


def same_padding(size, kernel, stride, dilation):
    """(before, after) padding of ``padding="same"`` along one axis of static ``size``."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2

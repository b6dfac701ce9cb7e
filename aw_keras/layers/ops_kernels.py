"""AW-convolution strategies on ``keras.ops``: JAX and PyTorch (any backend).

The same contract as `aw_keras.layers.aw_kernels` (TensorFlow's strategies):
for each sample ``l``,

    O[l] = conv(I[l], AK[l]),   AK[l, j, k, c, p] = K[j, k, c, p] * S[l, j, k, c // r_C1, p]

with ``S`` the compact modulation (``1 + A`` in residual mode, so the residual
costs nothing extra). Static spatial sizes are required (JAX traces with
concrete shapes; PyTorch runs eagerly). The strategies:

- ``taps``: one matmul per kernel tap, scaled per sample and output channel:
  the FLOPs of the plain convolution, no per-sample kernel.
- ``matmul``: im2col by tap slices, then one batched matmul with ``AK``.
- ``per_sample``: ``keras.ops.vectorized_map`` of one convolution per sample
  (``jax.vmap``; on PyTorch ``keras.ops.map``, a loop over the samples).
- ``grouped``: the batch folded into the channels and one grouped convolution
  (``keras.ops.conv`` infers the group count from the kernel), the form
  PyTorch code usually takes (timm's CondConv2d).

`choose_strategy` is the measured rule of ``implementation="auto"`` on these
backends (docs/speed.md).

Example:

>>> import numpy as np
>>> from aw_keras.layers.conv_geometry import ConvGeometry
>>> geometry = ConvGeometry((3, 3), (1, 1), (1, 1), "same")
>>> x = np.ones((2, 8, 8, 4), "float32"); k = np.ones((3, 3, 4, 6), "float32")
>>> tuple(STRATEGIES["taps"](x, k, np.ones((2, 3, 3, 1, 6), "float32"), geometry).shape)
(2, 8, 8, 6)
"""

import keras
from keras import ops

from aw_keras.layers.conv_geometry import output_hw
from aw_keras.layers.conv_geometry import output_size
from aw_keras.layers.conv_geometry import same_padding


def _static_size(inputs, axis):
    size = inputs.shape[axis]
    if size is None:
        raise ValueError(
            "AWConv2D on this backend needs static spatial sizes, received an input of "
            f"shape {tuple(inputs.shape)}."
        )
    return int(size)


def pad_for_taps(inputs, geometry):
    """Pads ``inputs`` so that every tap is a strided slice; returns the padded
    tensor and the output (height, width)."""
    outs, pads = [], [(0, 0)]
    for axis in range(2):
        size = _static_size(inputs, 1 + axis)
        kernel, stride = geometry.kernel_size[axis], geometry.strides[axis]
        dilation = geometry.dilation_rate[axis]
        outs.append(output_size(size, kernel, stride, dilation, geometry.padding))
        pads.append(same_padding(size, kernel, stride, dilation)
                    if geometry.padding == "same" else (0, 0))
    pads.append((0, 0))
    if any(value for pair in pads for value in pair):
        inputs = ops.pad(inputs, pads)
    return inputs, tuple(outs)


def tap_slice(padded, j, k, out_size, geometry):
    """The input window read by kernel tap (j, k) for every output position."""
    (sh, sw), (dh, dw) = geometry.strides, geometry.dilation_rate
    oh, ow = out_size
    top, left = j * dh, k * dw
    if (top, left, sh, sw) == (0, 0, 1, 1) and (oh, ow) == tuple(padded.shape[1:3]):
        return padded
    return padded[:, top: top + (oh - 1) * sh + 1: sh, left: left + (ow - 1) * sw + 1: sw, :]


def repeat_axis(tensor, axis, times):
    """Every entry repeated ``times`` (a static int) times along ``axis``, as
    expand + broadcast + reshape: the ops TFLite and ONNX take with an unknown
    batch (``axis`` must not be the batch)."""
    if times == 1:
        return tensor
    shape = list(ops.shape(tensor))
    expanded = ops.expand_dims(tensor, axis + 1)
    tiled = ops.broadcast_to(expanded, shape[: axis + 1] + [times] + shape[axis + 1:])
    return ops.reshape(tiled, [-1] + shape[1:axis] + [shape[axis] * times] + shape[axis + 1:])


def per_sample_kernels(kernel, scale):
    """AK of shape (N, kh, kw, C1, C2) from K (kh, kw, C1, C2) and S (N, kh, kw, G1, C2)."""
    channels_in, groups = kernel.shape[2], scale.shape[3]
    return kernel[None] * repeat_axis(scale, 3, channels_in // groups)


def taps(inputs, kernel, scale, geometry, training=False):
    """Tap decomposition: ``O = sum_{j,k} S[:, j, k] * (shift_jk(I) @ K[j, k])``."""
    padded, out_size = pad_for_taps(inputs, geometry)
    kh, kw, channels_in, channels_out = kernel.shape
    groups = scale.shape[3]
    total = None
    for j in range(kh):
        for k in range(kw):
            window = tap_slice(padded, j, k, out_size, geometry)
            if groups == 1:
                partial = ops.matmul(window, kernel[j, k]) * scale[:, j: j + 1, k: k + 1, 0, :]
            else:
                oh, ow = out_size
                grouped = ops.reshape(window, (-1, oh * ow, groups, channels_in // groups))
                tap_kernel = ops.reshape(kernel[j, k], (groups, channels_in // groups,
                                                        channels_out))
                products = ops.einsum("nsgc,gcp->nsgp", grouped, tap_kernel)
                partial = ops.sum(products * scale[:, j, k][:, None], axis=2)
                partial = ops.reshape(partial, (-1, oh, ow, channels_out))
            total = partial if total is None else total + partial
    return total


def matmul(inputs, kernel, scale, geometry, training=False):
    """im2col by tap slices, then (N, HoWo, T*C1) @ (N, T*C1, C2)."""
    padded, (oh, ow) = pad_for_taps(inputs, geometry)
    kh, kw, channels_in, channels_out = kernel.shape
    taps_count = kh * kw
    windows = [tap_slice(padded, j, k, (oh, ow), geometry) for j in range(kh) for k in range(kw)]
    columns = windows[0] if taps_count == 1 else ops.concatenate(windows, axis=-1)
    columns = ops.reshape(columns, (-1, oh * ow, taps_count * channels_in))
    if scale.shape[3] == 1:
        per_sample_kernel = ops.reshape(scale, (-1, taps_count, 1, channels_out)) * ops.reshape(
            kernel, (taps_count, channels_in, channels_out))
    else:
        per_sample_kernel = per_sample_kernels(kernel, scale)
    per_sample_kernel = ops.reshape(per_sample_kernel, (-1, taps_count * channels_in,
                                                        channels_out))
    return ops.reshape(ops.matmul(columns, per_sample_kernel), (-1, oh, ow, channels_out))


def _conv(inputs, kernel, geometry):
    return ops.conv(inputs, kernel, strides=geometry.strides, padding="valid",
                    data_format="channels_last", dilation_rate=geometry.dilation_rate)


def per_sample(inputs, kernel, scale, geometry, training=False):
    """One convolution per sample with its own kernel, by ``ops.vectorized_map``
    (``ops.map``, a loop, on PyTorch: ``torch.vmap`` has no rule for its
    convolution on channels-last inputs)."""
    padded, _ = pad_for_taps(inputs, geometry)
    kernels = per_sample_kernels(kernel, scale)
    mapper = ops.map if keras.backend.backend() == "torch" else ops.vectorized_map
    return mapper(lambda pair: _conv(pair[0][None], pair[1], geometry)[0], (padded, kernels))


def grouped(inputs, kernel, scale, geometry, training=False):
    """The batch folded into the channels: one convolution with N groups."""
    padded, (oh, ow) = pad_for_taps(inputs, geometry)
    kh, kw, channels_in, channels_out = kernel.shape
    batch = inputs.shape[0]
    if batch is None:
        batch = ops.shape(inputs)[0]
    height, width = padded.shape[1], padded.shape[2]
    folded = ops.reshape(ops.transpose(padded, (1, 2, 0, 3)),
                         (1, height, width, batch * channels_in))
    # (N, kh, kw, C1, C2) -> (kh, kw, C1, N * C2): group n owns outputs n*C2 .. (n+1)*C2
    kernels = ops.reshape(ops.transpose(per_sample_kernels(kernel, scale), (1, 2, 3, 0, 4)),
                          (kh, kw, channels_in, batch * channels_out))
    out = ops.reshape(_conv(folded, kernels, geometry), (oh, ow, batch, channels_out))
    return ops.transpose(out, (2, 0, 1, 3))


STRATEGIES = {
    "taps": taps,
    "per_sample": per_sample,
    "matmul": matmul,
    "grouped": grouped,
}


def choose_strategy(input_shape, kernel_shape, geometry, training=False, backend="jax"):
    """The strategy of ``implementation="auto"`` on ``backend`` (not TensorFlow).

    Measured on JAX's CPU backend at ResNet50's stage shapes (docs/speed.md,
    `benchmarks/layer_speed_backends.py`): ``taps`` is the fastest for
    inference everywhere and for training where the kernel is deep relative
    to the output; ``matmul`` trains faster where the output has at least 4
    positions per input channel (56x56x64, 28x28x128), since XLA's CPU
    convolution backward pass is slow there. The vmap and grouped forms were
    5-18x a Conv2D and are never chosen. PyTorch is not measured yet and gets
    ``taps``, the form with the plain convolution's FLOPs.

    >>> from aw_keras.layers.conv_geometry import ConvGeometry
    >>> geometry = ConvGeometry((3, 3), (1, 1), (1, 1), "same")
    >>> choose_strategy((16, 56, 56, 64), (3, 3, 64, 64), geometry, training=True)
    'matmul'
    >>> choose_strategy((16, 14, 14, 256), (3, 3, 256, 256), geometry, training=True)
    'taps'
    """
    kh, kw, channels_in, _ = kernel_shape
    output = output_hw(input_shape, geometry)
    if not training or backend != "jax" or kh * kw == 1 or output is None:
        return "taps"
    return "matmul" if 4 * channels_in <= output[0] * output[1] else "taps"

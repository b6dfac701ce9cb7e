"""Exact strategies for the per-sample convolution of AW-convolution (Eq. 4-5).

Every strategy computes, for each sample ``l``,

    O[l] = conv(I[l], AK[l]),   AK[l, j, k, c, p] = K[j, k, c, p] * S[l, j, k, c // r_C1, p]

where ``S`` is the *compact* modulation: ``1 + A`` (residual mode) or ``A``
(multiplicative), expanded along the kernel's spatial axes and output channels
but kept at ``G1 = C1 / r_C1`` input-channel groups. They differ only in cost:

- ``taps``: tap decomposition. ``O = sum_{j,k} S[:, j, k] * (shift_jk(I) @ K[j, k])``;
  no per-sample kernel, the FLOPs of the plain convolution, builtin ops only.
  Fastest when the kernel is large relative to the output (deep stages).
- ``per_sample``: builds the per-sample kernels ``AK`` and runs one ordinary
  convolution per sample (unrolled for a static batch, ``map_fn`` otherwise).
  Fastest when the output is large relative to the kernel (early stages).
- ``matmul``: im2col by tap slices, then one batched matmul with ``AK``.
- ``depthwise``: the batch folded into channels, one depthwise convolution with
  the per-sample kernels as channel multipliers, then a sum over ``C1``. Literal
  and memory hungry; kept as an independent check.
- ``fused``: a custom CPU op (``fused_op``, compiled on first use) that blocks
  the work so neither per-sample kernels nor tap partials reach memory, with a
  fused backward pass. Not exportable and CPU/float32 only; ``auto`` uses it
  where it is allowed (`fused_allowed`).

Example:

>>> import tensorflow as tf
>>> geometry = ConvGeometry((3, 3), (1, 1), (1, 1), "same")
>>> x = tf.random.normal((2, 8, 8, 4)); k = tf.random.normal((3, 3, 4, 6))
>>> s = tf.ones((2, 3, 3, 1, 6))
>>> STRATEGIES["taps"](x, k, s, geometry).shape
TensorShape([2, 8, 8, 6])
"""

import functools

import tensorflow as tf

from aw_keras.layers import fused_op
from aw_keras.layers.conv_geometry import ConvGeometry  # noqa: F401 (re-exported)
from aw_keras.layers.conv_geometry import output_hw
from aw_keras.layers.conv_geometry import output_size
from aw_keras.layers.ops_kernels import tap_slice  # noqa: F401 (backend-free slicing)


def sum_partials(partials, add_chain=False):
    """``tf.add_n`` (one pass in TensorFlow), or with ``add_chain`` a chain of
    ADDs: int8 TFLite has no int8 ADD_N kernel, so the export layers sum their
    tap partials that way."""
    if len(partials) == 1 or not add_chain:
        return tf.add_n(partials)
    total = partials[0]
    for partial in partials[1:]:
        total = total + partial
    return total


# At inference, a static batch up to this size unrolls `per_sample` into one conv
# per sample; larger or unknown batches, and training, use `tf.map_fn`.
MAX_UNROLLED_BATCH = 64


def _dim(tensor, axis):
    """Static size of ``axis`` when known, else a scalar tensor."""
    static = tensor.shape[axis]
    return static if static is not None else tf.shape(tensor)[axis]


def _same_padding(size, kernel, stride, dilation):
    out = (size + stride - 1) // stride
    total = (out - 1) * stride + (kernel - 1) * dilation + 1 - size
    if isinstance(total, int):
        total = max(total, 0)
    else:
        total = tf.maximum(total, 0)
    return total // 2, total - total // 2


def pad_for_taps(inputs, geometry):
    """Pads ``inputs`` explicitly so every tap is a strided slice.

    Returns the padded tensor and the output (height, width), static ints when
    the input size is static, scalar tensors otherwise.
    """
    sizes = [_dim(inputs, 1), _dim(inputs, 2)]
    outs, pads = [], [[0, 0]]
    for axis in range(2):
        size, kernel = sizes[axis], geometry.kernel_size[axis]
        stride, dilation = geometry.strides[axis], geometry.dilation_rate[axis]
        outs.append(output_size(size, kernel, stride, dilation, geometry.padding))
        if geometry.padding == "same":
            pads.append(list(_same_padding(size, kernel, stride, dilation)))
        else:
            pads.append([0, 0])
    pads.append([0, 0])
    static_zero = all(isinstance(v, int) and v == 0 for pair in pads for v in pair)
    if geometry.padding == "same" and not static_zero:  # 1x1 "same" pads nothing
        inputs = tf.pad(inputs, pads)
    return inputs, outs


def padding_only_taps(inputs, geometry):
    """Taps (j, k) whose window holds only "same" padding at every output
    position (statically known sizes only; e.g. a 3x3 stride-2 conv on a 2x2
    map). Their partial product is exactly zero, so `taps` skips them: an
    all-zero tensor is wasted work, and in int8 TFLite its ~0 calibration range
    makes XNNPACK refuse the whole graph."""
    if geometry.padding != "same":
        return set()
    dead = []
    for axis in range(2):
        size = inputs.shape[1 + axis]
        if size is None:
            return set()
        kernel, stride = geometry.kernel_size[axis], geometry.strides[axis]
        dilation = geometry.dilation_rate[axis]
        before, _ = _same_padding(size, kernel, stride, dilation)
        last = (output_size(size, kernel, stride, dilation, "same") - 1) * stride
        dead.append({t for t in range(kernel)
                     if t * dilation + last < before or t * dilation >= before + size})
    kh, kw = geometry.kernel_size
    return {(j, k) for j in range(kh) for k in range(kw) if j in dead[0] or k in dead[1]}


def repeat_axis(tensor, axis, times):
    """``tf.repeat`` with a static count, as expand + broadcast + reshape."""
    if times == 1:
        return tensor
    shape = [_dim(tensor, i) for i in range(tensor.shape.rank)]
    expanded = tf.expand_dims(tensor, axis + 1)
    target = shape[: axis + 1] + [times] + shape[axis + 1 :]
    tiled = tf.broadcast_to(expanded, tf.stack(target) if _has_tensor(target) else target)
    merged = shape[:axis] + [shape[axis] * times] + shape[axis + 1 :]
    return tf.reshape(tiled, tf.stack(merged) if _has_tensor(merged) else merged)


def _has_tensor(values):
    return any(not isinstance(v, int) for v in values)


def per_sample_kernels(kernel, scale):
    """AK of shape (N, kh, kw, C1, C2) from K (kh, kw, C1, C2) and S (N, kh, kw, G1, C2)."""
    channels_in, groups = kernel.shape[2], scale.shape[3]
    return kernel[None] * repeat_axis(scale, 3, channels_in // groups)


def taps(inputs, kernel, scale, geometry, training=False, add_chain=False):
    """Tap decomposition: one 1x1 product per tap (and input-channel group).

    For training with one input-channel group and a kernel much deeper than the
    output is large (ResNet's last stage), the taps go through one batched
    matmul instead (its backward pass is the faster one there, docs/speed.md).
    ``add_chain`` sums the partials by ADDs instead of one ADD_N (`sum_partials`).
    """
    padded, out_size = pad_for_taps(inputs, geometry)
    kh, kw, channels_in, channels_out = kernel.shape
    groups = scale.shape[3]
    static_out = all(isinstance(v, int) for v in out_size)
    if (training and groups == 1 and kh * kw > 1 and static_out
            and channels_in >= 2 * out_size[0] * out_size[1]):
        return _taps_batched(padded, kernel, scale, out_size, geometry)
    skipped = padding_only_taps(inputs, geometry)
    if len(skipped) == kh * kw:  # cannot happen for "same"; never return nothing
        skipped = set()
    partials = []
    if groups == 1:
        # (N, kh, kw, 1, C2) -> (N, 1, kh*kw, C2): each tap's scale is then a 4-D
        # slice. XNNPACK does not take 5-D STRIDED_SLICEs: sliced from the 5-D
        # tensor, every tap's scale fell off the delegate and split int8
        # AW-ResNet50 into 17 partitions (docs/export.md).
        tap_scales = tf.reshape(scale, [-1, 1, kh * kw, channels_out])
    for j in range(kh):
        for k in range(kw):
            if (j, k) in skipped:
                continue
            window = tap_slice(padded, j, k, out_size, geometry)
            if groups == 1:
                product = tf.nn.conv2d(window, kernel[j : j + 1, k : k + 1], 1, "VALID")
                if kh * kw == 1:  # (N, 1, 1, C2) without a slice op
                    tap_scale = tap_scales
                else:
                    tap = j * kw + k
                    tap_scale = tap_scales[:, :, tap : tap + 1, :]
                partials.append(product * tap_scale)
            else:
                partials.append(
                    _grouped_tap(window, kernel[j, k], scale[:, j, k], out_size)
                )
    return sum_partials(partials, add_chain)


def _taps_batched(padded, kernel, scale, out_size, geometry):
    """All taps as one (T, M, C1) @ (T, C1, C2) matmul, then a scaled sum over T."""
    kh, kw, channels_in, channels_out = kernel.shape
    taps_count = kh * kw
    oh, ow = out_size
    batch = _dim(padded, 0)
    windows = tf.stack(
        [tf.reshape(tap_slice(padded, j, k, out_size, geometry), [-1, channels_in])
         for j in range(kh) for k in range(kw)]
    )
    products = tf.matmul(windows, tf.reshape(kernel, [taps_count, channels_in, channels_out]))
    products = tf.reshape(products, [taps_count, batch, oh * ow, channels_out])
    tap_scale = tf.transpose(tf.reshape(scale, [batch, taps_count, channels_out]), [1, 0, 2])
    summed = tf.reduce_sum(products * tap_scale[:, :, None, :], axis=0)
    return tf.reshape(summed, [batch, oh, ow, channels_out])


def _grouped_tap(window, tap_kernel, tap_scale, out_size):
    """One tap with G1 > 1 input-channel groups, each with its own scale."""
    channels_in, channels_out = tap_kernel.shape
    groups = tap_scale.shape[1]
    batch = _dim(window, 0)
    oh, ow = out_size
    grouped = tf.reshape(window, [batch, oh * ow, groups, channels_in // groups])
    grouped_kernel = tf.reshape(tap_kernel, [groups, channels_in // groups, channels_out])
    products = tf.einsum("nsgc,gcp->ngsp", grouped, grouped_kernel)
    scaled = tf.reduce_sum(products * tap_scale[:, :, None, :], axis=1)
    return tf.reshape(scaled, [batch, oh, ow, channels_out])


def per_sample(inputs, kernel, scale, geometry, training=False):
    """One ordinary convolution per sample with its own kernel AK[l].

    Inference with a static batch unrolls one conv per sample; training or an
    unknown batch uses a sequential ``tf.map_fn`` (the faster backward pass on
    CPU, docs/speed.md).
    """
    per_sample_kernel = per_sample_kernels(kernel, scale)

    def convolve(sample, sample_kernel):
        return tf.nn.conv2d(
            sample,
            sample_kernel,
            strides=geometry.strides,
            padding=geometry.padding.upper(),
            dilations=geometry.dilation_rate,
        )

    batch = inputs.shape[0]
    if not training and batch is not None and batch <= MAX_UNROLLED_BATCH:
        outputs = [convolve(inputs[i : i + 1], per_sample_kernel[i]) for i in range(batch)]
        return tf.concat(outputs, axis=0)
    return tf.map_fn(
        lambda pair: convolve(pair[0][None], pair[1])[0],
        (inputs, per_sample_kernel),
        fn_output_signature=inputs.dtype,
    )


# XNNPACK takes a CONCATENATION of at most this many inputs (LiteRT's
# xnnpack_delegate.cc); `matmul` concatenates its tap windows in groups.
MAX_CONCAT_INPUTS = 5


def concat_in_groups(tensors, axis, group=MAX_CONCAT_INPUTS):
    """``tf.concat(tensors, axis)`` as a tree of concatenations of at most
    ``group`` inputs each (same result)."""
    while len(tensors) > group:
        tensors = [tf.concat(tensors[i : i + group], axis) if len(tensors[i : i + group]) > 1
                   else tensors[i] for i in range(0, len(tensors), group)]
    return tf.concat(tensors, axis) if len(tensors) > 1 else tensors[0]


def matmul(inputs, kernel, scale, geometry, training=False):
    """im2col by tap slices, then (N, HoWo, T*C1) @ (N, T*C1, C2).

    Written so that int8 TFLite runs it inside XNNPACK: windows concatenated
    in groups of at most `MAX_CONCAT_INPUTS`, no tensor above rank 4, and no
    SHAPE ops for static spatial sizes (the batch is a -1 in the reshapes).
    XNNPACK also needs the per-sample kernel's int8 zero point to be 0, which
    the converter does not choose: `aw_keras.export.tflite` sets it after
    conversion (`symmetric_matmul_operands`).
    """
    padded, (oh, ow) = pad_for_taps(inputs, geometry)
    kh, kw, channels_in, channels_out = kernel.shape
    taps_count, groups = kh * kw, scale.shape[3]
    columns = concat_in_groups(
        [tap_slice(padded, j, k, (oh, ow), geometry) for j in range(kh) for k in range(kw)],
        axis=-1,
    )
    static = isinstance(oh, int) and isinstance(ow, int)
    batch = -1 if static else _dim(inputs, 0)
    columns = tf.reshape(columns, [batch, oh * ow, taps_count * channels_in])
    if groups == 1:
        # (N, T, 1, C2) * (T, C1, C2): a rank-4 MUL, no repeat along C1
        per_sample_kernel = tf.reshape(scale, [-1, taps_count, 1, channels_out]) * tf.reshape(
            kernel, [taps_count, channels_in, channels_out]
        )
    else:
        per_sample_kernel = per_sample_kernels(kernel, scale)
    per_sample_kernel = tf.reshape(
        per_sample_kernel, [-1, taps_count * channels_in, channels_out]
    )
    return tf.reshape(tf.matmul(columns, per_sample_kernel), [batch, oh, ow, channels_out])


def depthwise(inputs, kernel, scale, geometry, training=False):
    """Batch folded into channels: one depthwise conv, then a sum over C1."""
    padded, (oh, ow) = pad_for_taps(inputs, geometry)
    kh, kw, channels_in, channels_out = kernel.shape
    batch = _dim(inputs, 0)
    height, width = _dim(padded, 1), _dim(padded, 2)
    folded = tf.reshape(
        tf.transpose(padded, [1, 2, 0, 3]), [1, height, width, batch * channels_in]
    )
    filters = tf.reshape(
        tf.transpose(per_sample_kernels(kernel, scale), [1, 2, 0, 3, 4]),
        [kh, kw, batch * channels_in, channels_out],
    )
    (sh, sw), dilation = geometry.strides, list(geometry.dilation_rate)
    equal_strides = sh == sw
    stride = [1, sh, sw, 1] if equal_strides else [1, 1, 1, 1]
    out = tf.nn.depthwise_conv2d(folded, filters, stride, "VALID", dilations=dilation)
    if not equal_strides:
        out = out[:, ::sh, ::sw, :]
    out = tf.reshape(out, [oh, ow, batch, channels_in, channels_out])
    return tf.transpose(tf.reduce_sum(out, axis=3), [2, 0, 1, 3])


def fused(inputs, kernel, scale, geometry, training=False):
    """The fused CPU kernel (``fused_op``): same numbers, no intermediates."""
    if in_xla_context():
        raise ValueError(
            "implementation='fused' has no XLA kernel and cannot run under "
            "jit_compile=True; use implementation='auto' (it picks an XLA-friendly "
            "strategy) or compile without XLA."
        )
    return fused_op.aw_conv(inputs, kernel, scale, geometry)


STRATEGIES = {
    "taps": taps,
    "per_sample": per_sample,
    "matmul": matmul,
    "depthwise": depthwise,
    "fused": fused,
}

# Strategies whose graphs convert to TFLite builtins and ONNX with a dynamic batch.
EXPORTABLE = ("taps", "matmul")


def in_xla_context():
    """True while tracing inside ``tf.function(jit_compile=True)`` (e.g. a Keras
    model compiled with ``jit_compile=True``), where the best strategy differs."""
    try:
        from tensorflow.python.ops import control_flow_util  # no public equivalent
    except ImportError:  # pragma: no cover - a future TF without this module
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def in_save_context():
    """True while ``tf.saved_model.save`` traces functions."""
    try:
        from tensorflow.python.saved_model import save_context  # no public equivalent
    except ImportError:  # pragma: no cover - a future TF without this module
        return False
    return save_context.in_save_context()


@functools.lru_cache(maxsize=None)
def _gpu_visible():
    return bool(tf.config.list_logical_devices("GPU"))


def portable_trace(batch_size, training):
    """Whether a trace of ``AWConv2D(implementation="auto")`` may leave this
    process, so that it must use builtin ops in the form every converter turns
    into its fastest kernels (`PORTABLE`, no custom op, no per-sample loop).

    True while ``tf.saved_model.save`` traces (Keras's ``model.export`` for
    ``tf_saved_model`` and ``litert``, ``TFLiteConverter.from_keras_model``,
    any SavedModel later converted by tf2onnx), and for a graph trace with an
    unknown batch size that nobody said is training or inference
    (``training=None``): Keras's ``model.export(format="onnx")`` and a
    hand-written ``tf.function`` over the model. Keras's own ``fit``,
    ``evaluate`` and ``predict`` always say ``training``, so they keep the
    fastest strategy.
    """
    if in_save_context():
        return True
    return training is None and batch_size is None and not tf.executing_eagerly()


# The strategy of portable traces: builtin ops, no loop, the FLOPs of a conv.
PORTABLE = "taps"


def fused_allowed(dtype=tf.float32, xla=False):
    """Whether ``auto`` may pick the fused kernel for a trace right now.

    Not under XLA (no XLA kernel), not on a machine with a GPU (CPU-only
    kernel), float32 only, and only when the kernel builds here
    (``fused_op.available``). Portable traces (`portable_trace`) never reach
    this question.
    """
    return (tf.as_dtype(dtype) == tf.float32 and not xla and not _gpu_visible()
            and fused_op.available())


def choose_strategy(input_shape, kernel_shape, geometry, training=False, xla=False,
                    fused=False):
    """The fastest exact strategy for a configuration (docs/speed.md has the tables).

    Per-sample kernels cost N*kh*kw*C1*C2 extra elements, tap decomposition about
    N*kh*kw*Ho*Wo*C2: per-sample convs win when the output has many more positions
    than the kernel has input channels. With ``fused=True`` (the fused kernel is
    allowed, see `fused_allowed`) it is used for every k x k training step and
    for inference, except ``per_sample`` for a static batch where the output has
    at least 8 positions per input channel (56x56x64). Under XLA, training through
    ``per_sample``'s ``tf.map_fn`` is slow, so XLA training uses ``matmul``, or
    ``taps`` where the kernel is much deeper than the output is large.

    >>> geometry = ConvGeometry((3, 3), (1, 1), (1, 1), "same")
    >>> choose_strategy((16, 56, 56, 64), (3, 3, 64, 64), geometry)
    'per_sample'
    >>> choose_strategy((16, 56, 56, 64), (3, 3, 64, 64), geometry, training=True, xla=True)
    'matmul'
    >>> choose_strategy((16, 14, 14, 256), (3, 3, 256, 256), geometry, fused=True)
    'fused'
    """
    kh, kw, channels_in, _ = kernel_shape
    output = output_hw(input_shape, geometry)
    if kh * kw == 1 or output is None:
        return "taps"
    oh, ow = output
    if training and xla:
        return "taps" if channels_in >= 2 * oh * ow else "matmul"
    per_sample_wins = 4 * channels_in <= oh * ow
    if fused:
        # Inference: oneDNN's per-sample convs edge out the fused kernel where the
        # output is much larger than the kernel is deep (docs/speed.md).
        if training or input_shape[0] is None or 8 * channels_in > oh * ow:
            return "fused"
        return "per_sample"
    return "per_sample" if per_sample_wins else "taps"

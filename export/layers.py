"""`AWConvExport`: an AWConv2D traced in one fixed exportable form.

`aw_keras.export.export_model` puts one in place of every AWConv2D of the
model it exports, carrying the folded BatchNorm (and, in the clipped form, the
ReLU) that it absorbs. It is an ordinary serializable Keras layer: a
`.keras` file of an exported model loads with ``safe_mode=True`` in a process
that imported ``aw_keras.export``.

Forms (the ``form`` argument):

- ``"taps"``: the tap decomposition (`aw_kernels.taps`), partials summed by ADDs;
- ``"matmul"``: im2col by tap slices and one batched matmul (`aw_kernels.matmul`);
- ``"split"`` (residual mode): ``conv(x, K) + bias + taps(x, K, A)``, since
  ``AK = K + A*K`` (Eq. 6): the main term is one convolution that rounds
  once in int8, only the attention correction goes through the taps;
- ``"split_matmul"`` (residual mode): the same split with the correction as
  im2col and one batched matmul (`aw_kernels.matmul`), cheaper than the taps
  on large maps in int8 (docs/export.md);
- ``"clipped"`` (1x1, residual, followed by ReLU or ReLU6): the block
  ``act(S * conv(x, K) + shift)`` (``S = 1 + A``, ``shift`` the bias holding
  the folded BatchNorm) as three clipped steps, each quantized over the
  activation's range in int8 (`exact_bounds`; docs/export.md has the derivation).

Every form takes the attention from `AWConv2D.compact_attention`; none
re-implements Eq. 4-8. Inside these layers the attention branch pools by
slices and MEAN and its pointwise convs stay CONV_2D ops.

Example:

>>> layer = AWConvExport(16, 3, padding="same", form="split")   # doctest: +SKIP
"""

import keras
import tensorflow as tf

from aw_keras.layers import AWConv2D
from aw_keras.layers import aw_kernels

FORMS = ("taps", "matmul", "split", "split_matmul", "clipped")
SPLIT_FORMS = ("split", "split_matmul")
MATMUL_FORMS = ("matmul", "split_matmul")
CLIP_CAPS = {"relu": None, "relu6": 6.0}


def exact_bounds(shift, cap):
    """Per-channel ``(lo, hi)``: clipping ``z`` to [lo, hi] leaves
    ``act(S * z + shift)`` unchanged for every S in [1, 2], ``act`` a ReLU
    capped at ``cap`` (None: no cap, ``hi`` infinite).

    Below ``lo = max over S of -shift/S`` the output is 0 for every S; above
    ``hi = max over S of (cap - shift)/S`` it is ``cap``. Works on tensors and
    NumPy arrays alike.
    """
    shift = tf.convert_to_tensor(shift)
    lo = tf.where(shift >= 0, -shift, -shift / 2)
    if cap is None:
        return lo, tf.fill(tf.shape(shift), tf.constant(float("inf"), shift.dtype))
    room = cap - shift
    return lo, tf.where(room >= 0, room, room / 2)


@keras.saving.register_keras_serializable(package="aw_keras")
class AWConvExport(AWConv2D):
    """AWConv2D in a fixed exportable form; built by `export_model`.

    Takes AWConv2D's arguments (``implementation`` excepted: the form decides)
    plus:

    Args:
        form: one of ``FORMS`` (see the module docstring). Default ``"taps"``.
        clip_activation: for ``form="clipped"`` only: ``"relu"`` or
            ``"relu6"``, the activation the block ends in (the layer then
            returns the activated output).
    """

    _export_ops = True

    def __init__(self, filters, kernel_size, form="taps", clip_activation=None, **kwargs):
        if form not in FORMS:
            raise ValueError(f"`form` must be one of {FORMS}, received form={form!r}.")
        if (form == "clipped") != (clip_activation is not None):
            raise ValueError(
                '`clip_activation` must be "relu" or "relu6" for form="clipped" and None '
                f"otherwise, received form={form!r}, clip_activation={clip_activation!r}."
            )
        if clip_activation is not None and clip_activation not in CLIP_CAPS:
            raise ValueError(
                f"`clip_activation` must be one of {tuple(CLIP_CAPS)}, received "
                f"clip_activation={clip_activation!r}."
            )
        kwargs.pop("implementation", None)
        implementation = "matmul" if form in MATMUL_FORMS else "taps"
        super().__init__(filters, kernel_size, implementation=implementation, **kwargs)
        self.form = form
        self.clip_activation = clip_activation
        if form in SPLIT_FORMS + ("clipped",) and self.attention_mode != "residual":
            raise ValueError(
                f'form={form!r} needs attention_mode="residual" (it splits AK = K + A*K), '
                f"received attention_mode={self.attention_mode!r}."
            )
        if form == "clipped":
            if self.kernel_size != (1, 1) or not self.use_bias or self.activation not in (
                None, keras.activations.linear
            ):
                raise ValueError(
                    'form="clipped" needs a 1x1 kernel, use_bias=True (the bias holds the '
                    "folded shift) and no activation, received kernel_size="
                    f"{self.kernel_size}, use_bias={self.use_bias}, activation="
                    f"{keras.activations.serialize(self.activation)!r}."
                )
            if self.input_channel_reduction is not None:
                raise ValueError(
                    'form="clipped" needs one attention value for all input channels '
                    f"(input_channel_reduction=None), received "
                    f"input_channel_reduction={self.input_channel_reduction}."
                )

    def call(self, inputs, training=None):
        kernel = tf.cast(self.kernel, self.compute_dtype)
        if self.form == "clipped":
            return self._clipped(inputs, kernel, training)
        if self.form in SPLIT_FORMS:
            attention = self.compact_attention(inputs, training)
            main = tf.nn.conv2d(
                inputs, kernel, self.strides, self.padding.upper(), dilations=self.dilation_rate
            )
            if self.use_bias:
                main = main + tf.cast(self.bias, self.compute_dtype)
            if self.form == "split_matmul":
                correction = aw_kernels.matmul(inputs, kernel, attention, self.geometry)
            else:
                correction = aw_kernels.taps(inputs, kernel, attention, self.geometry,
                                             add_chain=True)
            outputs = main + correction
        else:
            scale = self.attention_scale(inputs, training)
            if self.form == "matmul":
                outputs = aw_kernels.matmul(inputs, kernel, scale, self.geometry)
            else:
                outputs = aw_kernels.taps(inputs, kernel, scale, self.geometry, add_chain=True)
            if self.use_bias:
                outputs = outputs + tf.cast(self.bias, self.compute_dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _clipped(self, inputs, kernel, training):
        """``act(S * conv(x, K) + shift)`` as

            z' = act(gain * conv(x, K) - gain * lo)      conv with a fused activation
            t  = act(z' + gain * lo + gain * shift / S)  ADD with a fused activation
            y  = act(t * S / gain)                        MUL with a fused activation

        with ``gain = cap / (hi - lo) <= 1`` (1 without a cap): each step
        clips only values that the last one clips anyway, so every
        activation-sized tensor lives in [0, cap].
        """
        shift = tf.cast(self.bias, self.compute_dtype)
        cap = CLIP_CAPS[self.clip_activation]
        lo, hi = exact_bounds(shift, cap)
        if cap is None:
            gain, act = tf.ones_like(lo), tf.nn.relu
        else:
            gain, act = cap / (hi - lo), tf.nn.relu6
        attention = self.compact_attention(inputs, training)  # (N, 1, 1, 1, C2)
        scale = 1.0 + tf.reshape(attention, [-1, 1, 1, self.filters])
        clipped = act(tf.nn.conv2d(inputs, kernel * gain, self.strides, "VALID") - lo * gain)
        shifted = act(clipped + (gain * lo + (gain * shift) / scale))
        return act(shifted * (scale * (1.0 / gain)))

    def get_config(self):
        config = super().get_config()
        config.pop("implementation")
        config.update({"form": self.form, "clip_activation": self.clip_activation})
        return config


@keras.saving.register_keras_serializable(package="aw_keras")
class Absorbed(keras.layers.Layer):
    """Stands where a layer was absorbed into an `AWConvExport` (a folded
    BatchNorm, a ReLU of the clipped form): passes its input through,
    accepting the call arguments of the layer it replaces.

    Args:
        absorbed_into: the name of the `AWConvExport` that computes it now.
    """

    def __init__(self, absorbed_into, **kwargs):
        super().__init__(**kwargs)
        self.absorbed_into = absorbed_into

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["absorbed_into"] = self.absorbed_into
        return config

"""CBAM (Woo et al., ECCV 2018): channel then spatial attention on activations.

As in the CBAM authors' code (Jongchan/attention-module, ``cbam.py``):

- channel gate: one shared MLP (1x1 conv with bias, ReLU, 1x1 conv with bias)
  applied to the average-pooled and (``use_max_pool``) max-pooled features; the
  two outputs are summed, then sigmoid, then multiplied into the input;
- spatial gate (``use_spatial``): ``[max over channels, mean over channels]`` ->
  ``spatial_kernel_size`` x ``spatial_kernel_size`` conv to 1 channel without
  bias -> BatchNormalization -> sigmoid -> multiplied into the input.

The paper (Zhu et al., Sec. 4.1) uses two reduced variants, expressed here with
flags:

- "CBAM (MaxPool)": average- and max-pooled channel gate, no spatial gate:
  ``CBAM(use_max_pool=True, use_spatial=False)``;
- "CBAM (Spatial)": average-pooled channel gate only ("we do not use max-pooled
  features") plus the spatial gate: ``CBAM(use_max_pool=False, use_spatial=True)``.

Example:

>>> import numpy as np
>>> CBAM(reduction_ratio=4)(np.ones((2, 8, 8, 16), "float32")).shape
(2, 8, 8, 16)
"""

import keras
from keras import ops

from aw_keras.layers.squeeze_excite import _validate_data_format
from aw_keras.layers.squeeze_excite import _validate_positive_int


@keras.saving.register_keras_serializable(package="aw_keras")
class CBAM(keras.layers.Layer):
    """Convolutional Block Attention Module (channel + spatial gates).

    Args:
        reduction_ratio: hidden width of the shared MLP is
            ``max(min_channels, channels // reduction_ratio)``.
        use_max_pool: also feed max-pooled features to the shared MLP.
        use_spatial: apply the spatial gate after the channel gate.
        spatial_kernel_size: odd kernel size of the spatial gate's conv.
        min_channels: lower bound of the MLP's hidden width.
        data_format: ``"channels_last"``, ``"channels_first"`` or None.
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer: for the MLP (and kernel_* for the spatial conv).

    Example:

    >>> x = keras.Input((32, 32, 64))
    >>> full = CBAM()(x)
    >>> spatial_variant = CBAM(use_max_pool=False, use_spatial=True)(x)
    """

    def __init__(
        self,
        reduction_ratio=16,
        use_max_pool=True,
        use_spatial=True,
        spatial_kernel_size=7,
        min_channels=1,
        data_format=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.reduction_ratio = _validate_positive_int(reduction_ratio, "reduction_ratio")
        self.min_channels = _validate_positive_int(min_channels, "min_channels")
        for flag_name, flag in (("use_max_pool", use_max_pool), ("use_spatial", use_spatial)):
            if not isinstance(flag, bool):
                raise TypeError(f"`{flag_name}` must be a bool, got {flag!r}.")
        self.use_max_pool = use_max_pool
        self.use_spatial = use_spatial
        self.spatial_kernel_size = _validate_positive_int(
            spatial_kernel_size, "spatial_kernel_size"
        )
        if spatial_kernel_size % 2 != 1:
            raise ValueError(
                f"`spatial_kernel_size` must be odd (same padding), got {spatial_kernel_size}."
            )
        self.data_format = _validate_data_format(data_format)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.channel_axis = -1 if self.data_format == "channels_last" else 1
        self.spatial_axes = (1, 2) if self.data_format == "channels_last" else (2, 3)

    def hidden_channels(self, channels):
        """Width of the shared MLP's hidden layer for ``channels`` channels."""
        return max(self.min_channels, channels // self.reduction_ratio)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"CBAM expects a 4-D input (batch, H, W, C), got shape {input_shape}.")
        channels = input_shape[self.channel_axis]
        if channels is None:
            raise ValueError(f"CBAM needs a known channel dimension, got input shape {input_shape}.")
        hidden = self.hidden_channels(channels)
        # The convs run channels-last whatever `data_format` is (the inputs are
        # transposed in `call`): TensorFlow has no channels-first Conv2D on CPU.
        common = dict(
            kernel_size=1,
            use_bias=True,
            data_format="channels_last",
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            dtype=self.dtype_policy,
        )
        self.mlp_reduce = keras.layers.Conv2D(hidden, activation="relu", name="mlp_reduce", **common)
        self.mlp_reduce.build((None, 1, 1, channels))
        self.mlp_expand = keras.layers.Conv2D(channels, name="mlp_expand", **common)
        self.mlp_expand.build((None, 1, 1, hidden))
        if self.use_spatial:
            spatial_shape = list(input_shape)
            spatial_shape[self.channel_axis] = 2
            self.spatial_conv = keras.layers.Conv2D(
                1,
                self.spatial_kernel_size,
                padding="same",
                use_bias=False,
                data_format="channels_last",
                kernel_initializer=self.kernel_initializer,
                kernel_regularizer=self.kernel_regularizer,
                dtype=self.dtype_policy,
                name="spatial_conv",
            )
            self.spatial_conv.build(self._channels_last_shape(spatial_shape))
            spatial_shape[self.channel_axis] = 1
            # Momentum/epsilon of PyTorch's BatchNorm2d(momentum=0.01, eps=1e-5).
            self.spatial_bn = keras.layers.BatchNormalization(
                axis=self.channel_axis, momentum=0.99, epsilon=1e-5, dtype=self.dtype_policy,
                name="spatial_bn",
            )
            self.spatial_bn.build(tuple(spatial_shape))

    def _channels_last_shape(self, shape):
        shape = tuple(shape)
        if self.data_format == "channels_first":
            return (shape[0], shape[2], shape[3], shape[1])
        return shape

    def _to_channels_last(self, x):
        return ops.transpose(x, (0, 2, 3, 1)) if self.data_format == "channels_first" else x

    def _from_channels_last(self, x):
        return ops.transpose(x, (0, 3, 1, 2)) if self.data_format == "channels_first" else x

    def call(self, inputs, training=None):
        avg = ops.mean(inputs, axis=self.spatial_axes, keepdims=True)
        logits = self.mlp_expand(self.mlp_reduce(self._to_channels_last(avg)))
        if self.use_max_pool:
            peak = ops.max(inputs, axis=self.spatial_axes, keepdims=True)
            logits = logits + self.mlp_expand(self.mlp_reduce(self._to_channels_last(peak)))
        outputs = inputs * ops.sigmoid(self._from_channels_last(logits))
        if self.use_spatial:
            gate = ops.sigmoid(self.spatial_bn(self._spatial_logits(outputs), training=training))
            outputs = outputs * gate
        return outputs

    def _spatial_logits(self, features):
        """``spatial_conv([max over channels, mean over channels])``, computed as
        ``conv(max, kernel[..., 0:1, :]) + conv(mean, kernel[..., 1:2, :])``.

        Same numbers; why: int8 TFLite gives every input of a CONCATENATION one
        scale and REDUCE_MAX its input's scale, so the concatenated form forced
        the channel-max/mean range onto the gated features themselves and
        clipped their negative values (CBAM-ResNet50 int8 top-1 agreement 0.90;
        0.98 without the concatenation, see docs/export.md).
        """
        kernel = ops.cast(self.spatial_conv.kernel, features.dtype)

        def conv(pooled, index):
            return self._from_channels_last(ops.conv(
                self._to_channels_last(pooled), kernel[:, :, index : index + 1, :], strides=1,
                padding="same", data_format="channels_last"))

        peak = ops.max(features, axis=self.channel_axis, keepdims=True)
        mean = ops.mean(features, axis=self.channel_axis, keepdims=True)
        return conv(peak, 0) + conv(mean, 1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            reduction_ratio=self.reduction_ratio,
            use_max_pool=self.use_max_pool,
            use_spatial=self.use_spatial,
            spatial_kernel_size=self.spatial_kernel_size,
            min_channels=self.min_channels,
            data_format=self.data_format,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
        )
        return config

"""Squeeze-and-Excitation (Hu et al., CVPR 2018): channel attention on activations.

``y = x * sigmoid(W2 relu(W1 avgpool(x) + b1) + b2)``; ``W1`` maps ``C`` to
``max(min_channels, C // reduction_ratio)`` channels, ``W2`` back to ``C``, both
with bias (the SE-ResNet reference and the paper's Table 1 counts).

Example:

>>> import numpy as np
>>> layer = SqueezeExcite(reduction_ratio=4)
>>> layer(np.ones((2, 8, 8, 16), "float32")).shape
(2, 8, 8, 16)
"""

import keras
from keras import ops


def _validate_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {value!r} of type {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return value


def _validate_data_format(data_format):
    data_format = data_format or keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            "`data_format` must be 'channels_last', 'channels_first' or None, "
            f"got {data_format!r}."
        )
    return data_format


@keras.saving.register_keras_serializable(package="aw_keras")
class SqueezeExcite(keras.layers.Layer):
    """Squeeze-and-Excitation block for 4-D feature maps.

    Args:
        reduction_ratio: hidden width is ``channels // reduction_ratio``.
        min_channels: lower bound of the hidden width.
        activation: hidden activation (default ``"relu"``).
        gate_activation: activation of the gate (default ``"sigmoid"``).
        use_bias: whether both 1x1 convolutions have a bias.
        data_format: ``"channels_last"``, ``"channels_first"`` or None
            (``keras.config.image_data_format()``).
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer: for both 1x1 convolutions.

    Example:

    >>> x = keras.Input((32, 32, 64))
    >>> y = SqueezeExcite(reduction_ratio=16)(x)  # 64 -> 4 -> 64 channel gate
    """

    def __init__(
        self,
        reduction_ratio=16,
        min_channels=1,
        activation="relu",
        gate_activation="sigmoid",
        use_bias=True,
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
        self.activation = keras.activations.get(activation)
        self.gate_activation = keras.activations.get(gate_activation)
        self.use_bias = bool(use_bias)
        self.data_format = _validate_data_format(data_format)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.channel_axis = -1 if self.data_format == "channels_last" else 1
        self.spatial_axes = (1, 2) if self.data_format == "channels_last" else (2, 3)

    def hidden_channels(self, channels):
        """Width of the squeeze convolution for ``channels`` input channels."""
        return max(self.min_channels, channels // self.reduction_ratio)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"SqueezeExcite expects a 4-D input (batch, H, W, C), got shape {input_shape}."
            )
        channels = input_shape[self.channel_axis]
        if channels is None:
            raise ValueError(
                "SqueezeExcite needs a known channel dimension, got input shape "
                f"{input_shape}."
            )
        hidden = self.hidden_channels(channels)
        # The 1x1 convs run channels-last on the pooled (N, 1, 1, C) vector whatever
        # `data_format` is: TensorFlow has no channels-first Conv2D on CPU.
        common = dict(
            kernel_size=1,
            use_bias=self.use_bias,
            data_format="channels_last",
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            dtype=self.dtype_policy,
        )
        self.reduce = keras.layers.Conv2D(hidden, name="reduce", **common)
        self.reduce.build((None, 1, 1, channels))
        self.expand = keras.layers.Conv2D(channels, name="expand", **common)
        self.expand.build((None, 1, 1, hidden))

    def call(self, inputs):
        pooled = ops.mean(inputs, axis=self.spatial_axes, keepdims=True)
        if self.data_format == "channels_first":
            pooled = ops.transpose(pooled, (0, 2, 3, 1))
        hidden = self.activation(self.reduce(pooled))
        gate = self.gate_activation(self.expand(hidden))
        if self.data_format == "channels_first":
            gate = ops.transpose(gate, (0, 3, 1, 2))
        return inputs * gate

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            reduction_ratio=self.reduction_ratio,
            min_channels=self.min_channels,
            activation=keras.activations.serialize(self.activation),
            gate_activation=keras.activations.serialize(self.gate_activation),
            use_bias=self.use_bias,
            data_format=self.data_format,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
        )
        return config

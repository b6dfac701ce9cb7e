"""AWConv2D: the AW-convolution of Zhu et al. (ICANN 2021), a drop-in Conv2D.

Data path, top to bottom (paper Eq. 4-8, Fig. 1):

    inputs (N, H, W, C1)
      -> adaptive average pool to (kh/r_hw, kw/r_hw)                 Avgpool2d
      -> squeeze_conv (1x1, no bias) -> squeeze_bn -> ReLU           Pointconv1
      -> excite_conv (1x1, no bias) -> excite_bn -> sigmoid          Pointconv2
      -> expand to A (N, kh, kw, C1, C2), the kernel's layout        Expand, Eq. 8
      -> AK[l] = K + A[l] * K  (residual)  or  A[l] * K               F2, Eq. 6
      -> O[l] = conv(I[l], AK[l]) (+ bias, activation)                F3, Eq. 5

Example:

>>> import keras
>>> from aw_keras.layers import AWConv2D
>>> inputs = keras.Input((32, 32, 64))
>>> outputs = AWConv2D(64, 3, padding="same", use_bias=False)(inputs)
>>> model = keras.Model(inputs, outputs)
"""

import numbers

import keras
from keras import ops

from aw_keras.layers import conv_geometry
from aw_keras.layers import ops_kernels
from aw_keras.layers.pooling import adaptive_average_pool

ATTENTION_MODES = ("residual", "multiplicative")
# The strategies of each backend: TensorFlow's in `aw_kernels` (with the fused
# CPU op), the others' in `ops_kernels` (keras.ops). A layer accepts every name,
# so a file saved on one backend loads on another; calling it with a name the
# running backend lacks raises a ValueError naming the ones it has.
TENSORFLOW_STRATEGIES = ("taps", "per_sample", "matmul", "depthwise", "fused")
OPS_STRATEGIES = tuple(ops_kernels.STRATEGIES)
ALL_IMPLEMENTATIONS = ("auto",) + tuple(dict.fromkeys(TENSORFLOW_STRATEGIES + OPS_STRATEGIES))


def implementations(backend=None):
    """The ``implementation`` values that run on ``backend`` (default: Keras's
    current backend), ``"auto"`` first."""
    backend = backend or keras.backend.backend()
    return ("auto",) + (TENSORFLOW_STRATEGIES if backend == "tensorflow" else OPS_STRATEGIES)


# The values that run on this process's backend (fixed when Keras is imported).
IMPLEMENTATIONS = implementations()
# The attention branch's BatchNormalization settings (see docs/layer_defaults.md):
# 0.9 is PyTorch's default BatchNorm2d momentum 0.1 in Keras's convention.
ATTENTION_BN_MOMENTUM = 0.9
ATTENTION_BN_EPSILON = 1e-3
# What configs without these keys were built with (Keras's BatchNormalization defaults).
LEGACY_ATTENTION_BN_MOMENTUM = 0.99
LEGACY_ATTENTION_BN_EPSILON = 1e-3


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, received {value!r} of type {type(value).__name__}.")
    if value <= 0:
        raise ValueError(f"`{name}` must be a positive int, received {name}={value}.")
    return value


def _unit_interval_float(name, value):
    """A float in [0, 1) (a BatchNormalization momentum)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a float in [0, 1), received {value!r} of type "
            f"{type(value).__name__}."
        )
    if not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be a float in [0, 1), received {name}={value!r}.")
    return float(value)


def _positive_float(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a positive float, received {value!r} of type "
            f"{type(value).__name__}."
        )
    if not value > 0.0 or value == float("inf"):
        raise ValueError(f"`{name}` must be a positive finite float, received {name}={value!r}.")
    return float(value)


def _int_pair(name, value):
    """Normalizes an int or a pair of ints to a tuple of two positive ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(
            f"`{name}` must be an int or a tuple of 2 ints, received {name}={value!r}."
        )
    return tuple(_positive_int(name, v) for v in value)


def _divisor(name, value, dimension, dimension_name):
    """Validates a reduction ratio that must divide (and not exceed) a dimension."""
    _positive_int(name, value)
    if value > dimension or dimension % value != 0:
        raise ValueError(
            f"`{name}` must divide {dimension_name}={dimension}, received {name}={value}. "
            f"Valid values: {[d for d in range(1, dimension + 1) if dimension % d == 0]}."
        )
    return value


@keras.saving.register_keras_serializable(package="aw_keras")
class AWConv2D(keras.layers.Layer):
    """2D AW-convolution: per-sample attention maps shaped like the kernel.

    Takes every argument of `keras.layers.Conv2D` with the same defaults, plus:

    Args:
        reduction_ratio: r; the squeeze conv has `max(1, filters // r)` units.
            Default 16 (the paper's setting).
        input_channel_reduction: r_C1; consecutive input channels sharing one
            attention value. None (default) means C1: one value for all input
            channels, the paper's setting. Must divide C1.
        output_channel_reduction: r_C2; must divide `filters`. Default 1.
        spatial_reduction: r_hw; must divide both kernel dimensions. Default 1.
        attention_mode: "residual" (AK = K + A*K, default, Eq. 6) or
            "multiplicative" (AK = A*K).
        implementation: "auto" (default: the fastest exact strategy for the
            shape and backend, including TensorFlow's fused CPU kernel where
            allowed), or a strategy of the running backend: on TensorFlow
            "taps", "per_sample", "matmul", "depthwise", "fused"
            (`aw_keras.layers.aw_kernels`); on JAX and PyTorch "taps",
            "per_sample", "matmul", "grouped" (`aw_keras.layers.ops_kernels`).
            All compute the same numbers; `implementations()` lists them.
        attention_bn_momentum: momentum of the attention branch's two
            BatchNormalization layers (`squeeze_bn`, `excite_bn`), in Keras's
            convention (moving = momentum * moving + (1 - momentum) * batch), a
            float in [0, 1). Default 0.9 (PyTorch's default 0.1), so that the
            moving statistics used at inference follow the weights within a
            short training; Keras's own default 0.99 lags behind them for the
            first few hundred steps (measured in docs/layer_defaults.md).
            Settable after construction (`layer.attention_bn_momentum = 0.99`).
        attention_bn_epsilon: epsilon of those two layers, a positive float.
            Default 1e-3 (Keras's default).

    Only `data_format="channels_last"` and `groups=1` are supported; anything else
    raises a ValueError at construction.

    Example:

    >>> layer = AWConv2D(32, 3, padding="same", attention_mode="residual")
    >>> y = layer(keras.random.normal((2, 16, 16, 8)))
    >>> tuple(layer.attention_maps(keras.random.normal((2, 16, 16, 8))).shape)
    (2, 3, 3, 8, 32)
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1),
        groups=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        reduction_ratio=16,
        input_channel_reduction=None,
        output_channel_reduction=1,
        spatial_reduction=1,
        attention_mode="residual",
        implementation="auto",
        attention_bn_momentum=ATTENTION_BN_MOMENTUM,
        attention_bn_epsilon=ATTENTION_BN_EPSILON,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.filters = _positive_int("filters", filters)
        self.kernel_size = _int_pair("kernel_size", kernel_size)
        self.strides = _int_pair("strides", strides)
        self.dilation_rate = _int_pair("dilation_rate", dilation_rate)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "`strides` > 1 is incompatible with `dilation_rate` > 1, received "
                f"strides={self.strides}, dilation_rate={self.dilation_rate}."
            )
        if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
            raise ValueError(f'`padding` must be "valid" or "same", received padding={padding!r}.')
        self.padding = padding.lower()
        data_format = data_format or keras.config.image_data_format()
        if data_format != "channels_last":
            raise ValueError(
                '`data_format` must be "channels_last" (AWConv2D computes in NHWC), '
                f"received data_format={data_format!r}. Transpose inputs to NHWC."
            )
        self.data_format = data_format
        if groups != 1:
            raise ValueError(f"`groups` must be 1 for AWConv2D, received groups={groups!r}.")
        self.groups = 1
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

        self.reduction_ratio = _positive_int("reduction_ratio", reduction_ratio)
        if input_channel_reduction is not None:
            _positive_int("input_channel_reduction", input_channel_reduction)
        self.input_channel_reduction = input_channel_reduction
        self.output_channel_reduction = _divisor(
            "output_channel_reduction", output_channel_reduction, self.filters, "filters"
        )
        self.spatial_reduction = _positive_int("spatial_reduction", spatial_reduction)
        for size in self.kernel_size:
            _divisor("spatial_reduction", spatial_reduction, size, f"kernel_size={self.kernel_size} ")
        if attention_mode not in ATTENTION_MODES:
            raise ValueError(
                f"`attention_mode` must be one of {ATTENTION_MODES}, received "
                f"attention_mode={attention_mode!r}."
            )
        self.attention_mode = attention_mode
        self.implementation = implementation
        self.attention_bn_momentum = attention_bn_momentum
        self.attention_bn_epsilon = attention_bn_epsilon
        self.input_spec = keras.layers.InputSpec(min_ndim=4, max_ndim=4)

    # ---------------------------------------------------------------- properties

    @property
    def implementation(self):
        """The strategy name; settable (e.g. to an exportable one before export)."""
        return self._implementation

    @implementation.setter
    def implementation(self, value):
        if value not in ALL_IMPLEMENTATIONS:
            raise ValueError(
                f"`implementation` must be one of {ALL_IMPLEMENTATIONS}, received "
                f"implementation={value!r}."
            )
        self._implementation = value

    @property
    def attention_bn_momentum(self):
        """The momentum of ``squeeze_bn`` and ``excite_bn``; settable.

        Once built, the value is read from the two BatchNormalization layers
        themselves, so code that sets their ``momentum`` directly (such as
        ``aw_keras.train.run.set_bn_momentum``) is reflected here and in
        `get_config`.
        """
        if self.built:
            return self.squeeze_bn.momentum
        return self._attention_bn_momentum

    @attention_bn_momentum.setter
    def attention_bn_momentum(self, value):
        value = _unit_interval_float("attention_bn_momentum", value)
        self._attention_bn_momentum = value
        if self.built:
            self.squeeze_bn.momentum = value
            self.excite_bn.momentum = value

    @property
    def attention_bn_epsilon(self):
        """The epsilon of ``squeeze_bn`` and ``excite_bn`` (fixed once built)."""
        if self.built:
            return self.squeeze_bn.epsilon
        return self._attention_bn_epsilon

    @attention_bn_epsilon.setter
    def attention_bn_epsilon(self, value):
        if self.built:
            raise AttributeError(
                "`attention_bn_epsilon` cannot change after the layer is built; pass it "
                "to AWConv2D(...) instead."
            )
        self._attention_bn_epsilon = _positive_float("attention_bn_epsilon", value)

    @property
    def pooled_size(self):
        """(kh / r_hw, kw / r_hw): the spatial size of the attention branch."""
        return tuple(k // self.spatial_reduction for k in self.kernel_size)

    @property
    def squeeze_units(self):
        return max(1, self.filters // self.reduction_ratio)

    @property
    def output_groups(self):
        """C2 / r_C2: distinct attention values along the output channels."""
        return self.filters // self.output_channel_reduction

    # --------------------------------------------------------------------- build

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "`inputs` to AWConv2D must have rank 4 (batch, height, width, channels), "
                f"received shape {tuple(input_shape)}."
            )
        channels_in = input_shape[-1]
        if channels_in is None:
            raise ValueError(
                "The channel dimension of `inputs` to AWConv2D must be known, received "
                f"shape {tuple(input_shape)}."
            )
        if self.padding == "valid":
            for axis, size, kernel, dilation in zip(
                ("height", "width"), input_shape[1:3], self.kernel_size, self.dilation_rate
            ):
                extent = (kernel - 1) * dilation + 1
                if size is not None and size < extent:
                    raise ValueError(
                        f"The input {axis} {size} of AWConv2D {self.name!r} is smaller than its "
                        f"kernel's extent {extent} (kernel_size={self.kernel_size}, "
                        f"dilation_rate={self.dilation_rate}) under padding='valid', received "
                        f"input shape {tuple(input_shape)}. Use padding='same' or a larger input."
                    )
        self.input_channels = int(channels_in)
        r_c1 = self.input_channel_reduction
        if r_c1 is None:
            r_c1 = self.input_channels
        self.resolved_input_channel_reduction = _divisor(
            "input_channel_reduction", r_c1, self.input_channels, "the input channels C1"
        )
        self.input_groups = self.input_channels // r_c1
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: self.input_channels})

        self.kernel = self.add_weight(
            name="kernel",
            shape=self.kernel_size + (self.input_channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

        policy = self.dtype_policy
        self.squeeze_conv = keras.layers.Conv2D(
            self.squeeze_units, 1, use_bias=False, dtype=policy, name="squeeze_conv"
        )
        bn_settings = dict(
            momentum=self._attention_bn_momentum, epsilon=self._attention_bn_epsilon, dtype=policy
        )
        self.squeeze_bn = keras.layers.BatchNormalization(name="squeeze_bn", **bn_settings)
        self.excite_conv = keras.layers.Conv2D(
            self.output_groups * self.input_groups, 1, use_bias=False, dtype=policy,
            name="excite_conv",
        )
        self.excite_bn = keras.layers.BatchNormalization(name="excite_bn", **bn_settings)
        pooled_shape = (None,) + self.pooled_size
        self.squeeze_conv.build(pooled_shape + (self.input_channels,))
        self.squeeze_bn.build(pooled_shape + (self.squeeze_units,))
        self.excite_conv.build(pooled_shape + (self.squeeze_units,))
        self.excite_bn.build(pooled_shape + (self.output_groups * self.input_groups,))

    # ---------------------------------------------------------------- attention

    def compact_attention(self, inputs, training=False):
        """The attention A of ``inputs`` (Eq. 7-8) as (N, kh, kw, G1, C2): expanded
        to the kernel's layout except along the input channels, where it holds one
        value per group of ``r_C1`` channels (G1 = C1 / r_C1; 1 by default).

        Every computation of the layer starts from it: `attention_scale`,
        `attention_maps`, `call`, and the export layers of ``aw_keras.export``.
        """
        pooled = adaptive_average_pool(inputs, self.pooled_size, sliced=self._export_ops)
        hidden = self._pointwise(self.squeeze_conv, pooled)
        hidden = ops.relu(self.squeeze_bn(hidden, training=training))
        excited = self._pointwise(self.excite_conv, hidden)
        excited = ops.sigmoid(self.excite_bn(excited, training=training))
        # Eq. 8: flat channel index = p_group * G1 + c1_group (C2-major).
        ph, pw = self.pooled_size
        if self.input_groups == 1 or self.output_groups == 1:  # the transpose is a reshape
            grouped = ops.reshape(excited, (-1, ph, pw, self.input_groups, self.output_groups))
        else:
            grouped = ops.reshape(excited, (-1, ph, pw, self.output_groups, self.input_groups))
            grouped = ops.transpose(grouped, (0, 1, 2, 4, 3))
        grouped = ops_kernels.repeat_axis(grouped, 1, self.spatial_reduction)
        grouped = ops_kernels.repeat_axis(grouped, 2, self.spatial_reduction)
        return ops_kernels.repeat_axis(grouped, 4, self.output_channel_reduction)

    # The export layers (aw_keras.export) trace the attention branch with the ops
    # the converters quantize best: sliced pooling, CONV_2D for the pointwise
    # convs, ADD chains instead of ADD_N.
    _export_ops = False

    def _pointwise(self, conv, features):
        """``conv(features)`` for a bias-free 1x1 Conv2D on the small pooled map:
        one MATMUL with the conv's own kernel (cheaper than a convolution call
        on a 3x3 map, docs/speed.md), or the conv itself in the export layers."""
        if self._export_ops:
            return conv(features)
        kernel = ops.cast(conv.kernel, self.compute_dtype)
        channels_in, channels_out = kernel.shape[2], kernel.shape[3]
        height, width = features.shape[1], features.shape[2]  # the static pooled size
        flat = ops.reshape(features, (-1, channels_in))
        product = ops.matmul(flat, ops.reshape(kernel, (channels_in, channels_out)))
        return ops.reshape(product, (-1, height, width, channels_out))

    def attention_scale(self, inputs, training=False):
        """The per-sample factor S with ``AK[l] = S[l] * K`` (Eq. 6): ``1 + A`` in
        residual mode, ``A`` in multiplicative mode, in `compact_attention`'s
        layout (N, kh, kw, G1, C2)."""
        attention = self.compact_attention(inputs, training)
        return 1.0 + attention if self.attention_mode == "residual" else attention

    def attention_maps(self, inputs, training=False):
        """The expanded attention maps A with shape (N, kh, kw, C1, C2).

        The layout is the kernel's, so ``A[l] * layer.kernel`` is the attentional
        kernel of sample ``l`` (before the residual term).
        """
        inputs = ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        if not self.built:
            self.build(inputs.shape)
        compact = self.compact_attention(inputs, training)
        return ops_kernels.repeat_axis(compact, 3, self.resolved_input_channel_reduction)

    # ---------------------------------------------------------------------- call

    @property
    def geometry(self):
        return conv_geometry.ConvGeometry(
            self.kernel_size, self.strides, self.dilation_rate, self.padding
        )

    def resolved_implementation(self, input_shape, training=False, xla=None, fused=None):
        """The strategy ``implementation="auto"`` picks for ``input_shape`` on
        the running backend (an explicit ``implementation`` is returned as is,
        or refused with a ValueError where the backend lacks it).

        On TensorFlow: ``training=None`` means nobody said (see
        `aw_kernels.portable_trace`: such a trace with an unknown batch, or any
        trace while a SavedModel is written, gets the portable ``taps``).
        ``xla=None`` asks whether this is being traced for XLA right now;
        ``fused=None`` whether the fused kernel may be used now
        (`aw_kernels.fused_allowed` for the compute dtype). Other backends use
        `ops_kernels.choose_strategy` and ignore ``xla`` and ``fused``.
        """
        backend = keras.backend.backend()
        if self.implementation != "auto":
            if self.implementation not in implementations(backend):
                raise ValueError(
                    f"AWConv2D {self.name!r}: implementation={self.implementation!r} does "
                    f"not run on the {backend} backend; use one of "
                    f"{implementations(backend)} (set `layer.implementation`)."
                )
            return self.implementation
        kernel_shape = self.kernel_size + (self.input_channels, self.filters)
        if backend != "tensorflow":
            return ops_kernels.choose_strategy(input_shape, kernel_shape, self.geometry,
                                               training=bool(training), backend=backend)
        from aw_keras.layers import aw_kernels  # TensorFlow's strategies

        if aw_kernels.portable_trace(input_shape[0], training):
            return aw_kernels.PORTABLE
        if xla is None:
            xla = aw_kernels.in_xla_context()
        if fused is None:
            fused = aw_kernels.fused_allowed(self.compute_dtype, xla)
        return aw_kernels.choose_strategy(
            input_shape, kernel_shape, self.geometry, training=bool(training), xla=xla,
            fused=fused,
        )

    def call(self, inputs, training=None):
        scale = self.attention_scale(inputs, training)
        kernel = ops.cast(self.kernel, self.compute_dtype)
        name = self.resolved_implementation(inputs.shape, training)
        outputs = self.strategies()[name](
            inputs, kernel, scale, self.geometry, training=bool(training)
        )
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, self.compute_dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    @staticmethod
    def strategies():
        """The running backend's strategies, name -> function."""
        if keras.backend.backend() == "tensorflow":
            from aw_keras.layers import aw_kernels  # imports TensorFlow

            return aw_kernels.STRATEGIES
        return ops_kernels.STRATEGIES

    def compute_output_shape(self, input_shape):
        sizes = []
        for axis in range(2):
            size = input_shape[1 + axis]
            if size is not None:
                size = conv_geometry.output_size(
                    size, self.kernel_size[axis], self.strides[axis],
                    self.dilation_rate[axis], self.padding,
                )
            sizes.append(size)
        return (input_shape[0], sizes[0], sizes[1], self.filters)

    # -------------------------------------------------------------------- config

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "dilation_rate": self.dilation_rate,
                "groups": self.groups,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
                "reduction_ratio": self.reduction_ratio,
                "input_channel_reduction": self.input_channel_reduction,
                "output_channel_reduction": self.output_channel_reduction,
                "spatial_reduction": self.spatial_reduction,
                "attention_mode": self.attention_mode,
                "implementation": self.implementation,
                "attention_bn_momentum": self.attention_bn_momentum,
                "attention_bn_epsilon": self.attention_bn_epsilon,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        """Rebuilds the layer from `get_config`'s dict.

        A config without the attention BatchNorm keys (written before they
        existed) gets the values those layers were built with, momentum 0.99 and
        epsilon 1e-3, so a loaded model trains on exactly as it did.
        """
        config = dict(config)
        config.setdefault("attention_bn_momentum", LEGACY_ATTENTION_BN_MOMENTUM)
        config.setdefault("attention_bn_epsilon", LEGACY_ATTENTION_BN_EPSILON)
        return super().from_config(config)

"""Multiply-add (MAC) counter for Keras models, per sample.

Convention (the one behind the paper's Table 1 "GFLOPs", e.g. 3.86 for ResNet50
v1 and 0.569 for MobileNet: one multiply-add counts 1):

- ``Conv*`` / ``DepthwiseConv2D`` / ``Dense``: one MAC per kernel element per
  output position, i.e. ``prod(output spatial) * prod(kernel.shape)``
  (``groups`` and depth multipliers are in the kernel's shape). Bias adds,
  BatchNormalization (foldable into the conv), activations, residual adds,
  padding, reshapes and dropout count 0; so do the FPN's (`applications/fpn.py`)
  nearest-neighbour ``UpSampling2D``, its crop (``CropToMatch``), its top-down
  ``Add`` merges and the input ``Rescaling`` (a scale foldable into the first
  conv).
- Pooling layers: one op per pooled input element
  (``MaxPooling2D``/``AveragePooling2D``: ``outputs * pool area``, so the FPN's
  P6, a window-1 stride-2 max pool, counts its outputs; global pooling:
  ``H * W * C``).
- `SqueezeExcite`: global average pool ``H*W*C`` + the two 1x1 convs
  ``2 * C * C/r`` + the rescale ``H*W*C``.
- `CBAM`: channel gate as SE (the max pool and a second MLP pass when
  ``use_max_pool``); spatial gate: channel max and mean ``2*H*W*C``, the
  ``k x k`` conv ``H*W*2*k*k``, the rescale ``H*W*C``.
- `AWConv2D`: the convolution itself as Conv2D, plus the attention branch:
  adaptive pooling ``H_in*W_in*C1``, Pointconv1 ``P*C1*mid`` and Pointconv2
  ``P*mid*(C2/r_C2)*(C1/r_C1)`` at the ``P = (kh/r_hw)*(kw/r_hw)`` pooled
  positions, and the kernel modulation ``AK = K + A*K``: one MAC per kernel
  element per sample, ``kh*kw*C1*C2``. (How the layer computes the modulated
  convolution, e.g. by tap decomposition, does not change the count.)
- Nested models are counted through their layers; unknown layers count 0.

``include_elementwise=False`` gives the narrower "kernel MACs only" count that
forward-hook counters (thop, ptflops on ``nn.Conv2d``/``nn.Linear`` only) report:
only weight kernels (convs, dense, AW's Pointconv1/2) count; pooling, gating
products and AW's kernel modulation count 0. ``docs/table1.md`` shows both.

Example:

>>> import keras
>>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
>>> count_flops(model)  # 6 * 6 * 3*3*3*4
3888
"""

import math

import keras

from aw_keras.layers.aw_conv2d import AWConv2D
from aw_keras.layers.cbam import CBAM
from aw_keras.layers.squeeze_excite import SqueezeExcite


def _prod(values):
    return math.prod(int(v) for v in values)


def _shape(tensor, layer, what):
    shape = tuple(tensor.shape)
    if any(d is None for d in shape[1:]):
        raise ValueError(
            f"Layer {layer.name!r} has an undefined {what} shape {shape}; pass a static "
            "`input_shape` to count_flops (e.g. (224, 224, 3))."
        )
    return shape


def _single_node_shapes(layer):
    try:
        inputs, outputs = layer.input, layer.output
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"count_flops needs every layer to be called exactly once; layer "
            f"{layer.name!r} is not ({error})."
        ) from None
    if isinstance(inputs, (list, tuple)):
        inputs = inputs[0]
    if isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    return _shape(inputs, layer, "input"), _shape(outputs, layer, "output")


def _channels(shape, data_format):
    return shape[-1] if data_format == "channels_last" else shape[1]


def _squeeze_excite_flops(layer, in_shape, elementwise):
    elements = _prod(in_shape[1:]) if elementwise else 0
    channels = _channels(in_shape, layer.data_format)
    hidden = layer.hidden_channels(channels)
    return 2 * elements + 2 * channels * hidden


def _cbam_flops(layer, in_shape, elementwise):
    elements = _prod(in_shape[1:]) if elementwise else 0
    channels = _channels(in_shape, layer.data_format)
    hidden = layer.hidden_channels(channels)
    passes = 2 if layer.use_max_pool else 1
    flops = passes * (elements + 2 * channels * hidden) + elements
    if layer.use_spatial:
        positions = _prod(in_shape[1:]) // channels
        k = layer.spatial_kernel_size
        flops += 2 * elements + positions * 2 * k * k + elements
    return flops


def _aw_conv_flops(layer, in_shape, out_shape, elementwise):
    kernel = _prod(layer.kernel.shape)
    conv = _prod(out_shape[1:-1]) * kernel
    pooled_positions = _prod(layer.pooled_size)
    squeeze = pooled_positions * _prod(layer.squeeze_conv.kernel.shape)
    excite = pooled_positions * _prod(layer.excite_conv.kernel.shape)
    if not elementwise:
        return conv + squeeze + excite
    pooling = _prod(in_shape[1:])
    return conv + pooling + squeeze + excite + kernel


def layer_flops(layer, include_elementwise=True):
    """Multiply-adds of one called layer per sample (see the module convention)."""
    elementwise = include_elementwise
    if isinstance(layer, keras.Model):
        return sum(layer_flops(inner, elementwise) for inner in layer.layers)
    if isinstance(layer, keras.layers.InputLayer):
        return 0
    if isinstance(layer, AWConv2D):
        return _aw_conv_flops(layer, *_single_node_shapes(layer), elementwise)
    if isinstance(layer, SqueezeExcite):
        return _squeeze_excite_flops(layer, _single_node_shapes(layer)[0], elementwise)
    if isinstance(layer, CBAM):
        return _cbam_flops(layer, _single_node_shapes(layer)[0], elementwise)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                          keras.layers.DepthwiseConv2D, keras.layers.DepthwiseConv1D)):
        in_shape, out_shape = _single_node_shapes(layer)
        data_format = getattr(layer, "data_format", "channels_last")
        spatial = out_shape[1:-1] if data_format == "channels_last" else out_shape[2:]
        return _prod(spatial) * _prod(layer.kernel.shape)
    if isinstance(layer, keras.layers.Dense):
        in_shape, _ = _single_node_shapes(layer)
        return _prod(in_shape[1:-1]) * _prod(layer.kernel.shape)
    if not elementwise:
        return 0
    if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
        _, out_shape = _single_node_shapes(layer)
        return _prod(out_shape[1:]) * _prod(layer.pool_size)
    if isinstance(layer, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)):
        in_shape, _ = _single_node_shapes(layer)
        return _prod(in_shape[1:])
    return 0


def count_flops(model, input_shape=None, include_elementwise=True):
    """Multiply-adds of one forward pass of ``model`` for one sample.

    Args:
        model: a built functional or Sequential Keras model whose layers are each
            called once.
        input_shape: optional ``(height, width, channels)`` (no batch); if it
            differs from the model's input shape the model is cloned onto a new
            ``keras.Input`` of that shape first (weights are not needed).
        include_elementwise: count pooling, attention gating products and AW's
            kernel modulation (default). False: weight-kernel MACs only.

    Returns:
        An int: multiply-adds per sample (divide by 1e9 for the paper's
        "GFLOPs").

    Raises:
        TypeError: ``model`` is not a keras.Model.
        ValueError: a layer's shapes are undefined (pass ``input_shape``) or a
            layer is called more than once.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model, got {type(model).__name__}.")
    if input_shape is not None:
        input_shape = tuple(input_shape)
        if tuple(model.input_shape[1:]) != input_shape:
            model = keras.models.clone_model(model, input_tensors=keras.Input(shape=input_shape))
    return int(sum(layer_flops(layer, include_elementwise) for layer in model.layers))

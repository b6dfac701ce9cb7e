"""Keras layers: AW-convolution and attention blocks."""

from aw_keras.layers.aw_conv2d import AWConv2D
from aw_keras.layers.pooling import adaptive_average_pool
from aw_keras.layers.squeeze_excite import SqueezeExcite
from aw_keras.layers.cbam import CBAM
from aw_keras.layers.attention import get_attention

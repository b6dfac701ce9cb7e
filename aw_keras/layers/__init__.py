"""Keras layers: AW-convolution and attention blocks."""

from aw_keras.layers.aw_conv2d import AWConv2D
from aw_keras.layers.pooling import adaptive_average_pool

"""aw_keras: the AW-convolution attention module for Keras 3 / TensorFlow.

Zhu, Hofstee, Lee, Al-Ars, "An Attention Module for Convolutional Neural
Networks", ICANN 2021.

Example:

>>> import keras, aw_keras
>>> layer = aw_keras.layers.AWConv2D(64, 3, padding="same")
"""

from aw_keras import layers
from aw_keras import optimizers
from aw_keras import utils

__version__ = "0.1.0"

"""Utilities (FLOP counting, ...)."""

from aw_keras.utils.flops import count_flops
from aw_keras.utils.flops import layer_flops

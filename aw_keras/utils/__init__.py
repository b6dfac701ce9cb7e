"""Utilities: FLOP counting (`count_flops`, `layer_flops`) and safe cache
entries (`aw_keras.utils.cache`).

``count_flops`` and ``layer_flops`` are imported on first use, so importing
``aw_keras.utils.cache`` does not import Keras or the layers.
"""

from aw_keras.utils import cache

__all__ = ["cache", "count_flops", "layer_flops"]


def __getattr__(name):
    if name in ("count_flops", "layer_flops"):
        from aw_keras.utils import flops

        return getattr(flops, name)
    raise AttributeError(f"module 'aw_keras.utils' has no attribute {name!r}")

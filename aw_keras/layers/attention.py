"""Attention factory: one argument selects the activation-attention block.

In the spirit of timm's ``create_attn``: model blocks take ``attention=`` and call
``get_attention(attention, **kwargs)`` to get a fresh layer (or None).

Accepted values:

- ``None``, ``""`` or ``"none"``: no attention (returns None);
- ``"se"``: `SqueezeExcite`;
- ``"cbam"``: full `CBAM` (average + max pooled channel gate, spatial gate);
- ``"cbam_maxpool"``: the paper's "CBAM (MaxPool)", channel gate only;
- ``"cbam_spatial"``: the paper's "CBAM (Spatial)", average-pooled channel gate
  and spatial gate;
- a ``keras.layers.Layer`` subclass: instantiated with ``**kwargs``;
- any other callable returning a new ``keras.layers.Layer`` (e.g. a
  ``functools.partial``).

Example:

>>> layer = get_attention("se", reduction_ratio=8, name="block1_se")
>>> type(layer).__name__
'SqueezeExcite'
>>> get_attention(None) is None
True
"""

import difflib

import keras

from aw_keras.layers.cbam import CBAM
from aw_keras.layers.squeeze_excite import SqueezeExcite

# name -> (layer class, default keyword arguments)
ATTENTION_LAYERS = {
    "se": (SqueezeExcite, {}),
    "cbam": (CBAM, {"use_max_pool": True, "use_spatial": True}),
    "cbam_maxpool": (CBAM, {"use_max_pool": True, "use_spatial": False}),
    "cbam_spatial": (CBAM, {"use_max_pool": False, "use_spatial": True}),
}


def get_attention(attention, **kwargs):
    """Returns a new attention layer for ``attention``, or None.

    Args:
        attention: None, a name (see module docstring), a Layer subclass, or a
            callable returning a Layer.
        **kwargs: passed to the layer's constructor (e.g. ``reduction_ratio``,
            ``name``); they override the defaults of named variants.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
        TypeError: a layer instance (layers cannot be shared between blocks) or
            any other unsupported type, or a callable not returning a Layer.
    """
    if attention is None:
        return None
    if isinstance(attention, str):
        key = attention.lower()
        if key in ("", "none"):
            return None
        if key not in ATTENTION_LAYERS:
            close = difflib.get_close_matches(key, list(ATTENTION_LAYERS), n=3)
            hint = f" Did you mean {close}?" if close else ""
            raise ValueError(
                f"Unknown `attention` {attention!r}. Expected one of "
                f"{sorted(ATTENTION_LAYERS)}, None, a keras Layer class or a callable "
                f"returning a layer.{hint}"
            )
        cls, defaults = ATTENTION_LAYERS[key]
        return cls(**{**defaults, **kwargs})
    if isinstance(attention, keras.layers.Layer):
        raise TypeError(
            "`attention` must be a name, a Layer class or a callable, not a layer "
            f"instance ({attention!r}): every block needs its own layer. Pass "
            f"`{type(attention).__name__}` (the class) and its arguments instead."
        )
    if callable(attention):
        layer = attention(**kwargs)
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"`attention` callable {attention!r} returned {type(layer).__name__}, "
                "expected a keras.layers.Layer."
            )
        return layer
    raise TypeError(
        "`attention` must be None, a string, a keras Layer class or a callable, got "
        f"{attention!r} of type {type(attention).__name__}."
    )

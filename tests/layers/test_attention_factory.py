"""get_attention: names, classes, callables, errors."""

import functools

import pytest

import keras

from aw_keras.layers import CBAM
from aw_keras.layers import SqueezeExcite
from aw_keras.layers import get_attention

pytestmark = pytest.mark.backends  # runs on every Keras backend


@pytest.mark.parametrize("value", [None, "", "none", "None"])
def test_no_attention(value):
    assert get_attention(value) is None


@pytest.mark.parametrize(
    "name, cls, max_pool, spatial",
    [
        ("se", SqueezeExcite, None, None),
        ("SE", SqueezeExcite, None, None),
        ("cbam", CBAM, True, True),
        ("cbam_maxpool", CBAM, True, False),
        ("cbam_spatial", CBAM, False, True),
    ],
)
def test_names(name, cls, max_pool, spatial):
    layer = get_attention(name, reduction_ratio=4, name="blk")
    assert type(layer) is cls
    assert layer.reduction_ratio == 4 and layer.name == "blk"
    if cls is CBAM:
        assert (layer.use_max_pool, layer.use_spatial) == (max_pool, spatial)


def test_kwargs_override_variant_defaults():
    assert get_attention("cbam_maxpool", use_spatial=True).use_spatial is True


def test_returns_fresh_layers():
    assert get_attention("se") is not get_attention("se")


def test_layer_class_and_callable():
    assert isinstance(get_attention(SqueezeExcite, reduction_ratio=2), SqueezeExcite)
    layer = get_attention(functools.partial(CBAM, use_spatial=False))
    assert isinstance(layer, CBAM) and not layer.use_spatial


def test_unknown_name_suggests_close_match():
    with pytest.raises(ValueError, match=r"cbam_spatial"):
        get_attention("cbam_spatail")


def test_instance_rejected():
    with pytest.raises(TypeError, match="layer instance"):
        get_attention(SqueezeExcite())


def test_callable_must_return_layer():
    with pytest.raises(TypeError, match="keras.layers.Layer"):
        get_attention(lambda **kwargs: 3)


def test_other_types_rejected():
    with pytest.raises(TypeError, match="attention"):
        get_attention(16)

"""The variant mechanism (aw_keras.applications.variants): table, resolve, register,
and that it describes every registered model."""

import inspect

import pytest

from aw_keras import applications
from aw_keras.applications import pretrained
from aw_keras.applications import registry
from aw_keras.applications import variants


def _family_names():
    # Names registered by the families (tests may add "test_*" models of their own).
    return [n for n in applications.list_models() if not n.startswith("test_")]


@pytest.fixture
def isolated_registry(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    monkeypatch.setattr(variants, "_REGISTERED", dict(variants._REGISTERED))


def test_unknown_variant_names_the_argument_and_the_allowed_values():
    allowed = str(sorted(variants.VARIANTS))
    for call in (lambda: variants.resolve("aw_sse", {}),
                 lambda: variants.register("aw_sse", "resnet50"),
                 lambda: variants.model_name("aw_sse", "resnet50")):
        with pytest.raises(ValueError) as error:
            call()
        assert "`variant` 'aw_sse'" in str(error.value) and allowed in str(error.value)


def test_unknown_cbam_variant():
    with pytest.raises(ValueError, match=r"`cbam_variant` must be one of \['full', 'maxpool', "
                                         r"'spatial'\], got 'both'"):
        variants.resolve("cbam", {"cbam_variant": "both"})


def test_variant_argument_the_variant_does_not_take():
    with pytest.raises(TypeError, match=r"'se' variant takes no \['aw_reduction_ratio'\]"):
        variants.resolve("se", {"aw_reduction_ratio": 8})
    with pytest.raises(TypeError, match="cbam_variant"):
        variants.resolve("aw", {"cbam_variant": "full"})


def test_resolve():
    model_kwargs, block_args = variants.resolve(
        "aw_cbam", {"classes": 3, "name": "m", "cbam_variant": "maxpool", "reduction_ratio": 8})
    assert model_kwargs == {"classes": 3, "name": "m"}
    assert block_args == dict(
        attention="cbam_maxpool", attention_kwargs={"reduction_ratio": 8}, use_aw=True,
        aw_kwargs={"reduction_ratio": 16, "implementation": "auto"})
    assert variants.resolve("plain", {"classes": 3})[1] == dict(
        attention=None, attention_kwargs=None, use_aw=False, aw_kwargs=None)
    assert variants.resolve("se", {})[1]["attention"] == "se"
    assert variants.resolve("cbam", {})[1]["attention"] == "cbam"  # cbam_variant "full"


def test_names_and_labels():
    assert variants.model_name("plain", "resnet50") == "resnet50"
    assert variants.model_name("cbam", "resnet50", "full") == "cbam_resnet50"
    assert variants.model_name("aw_cbam", "mobilenet", "spatial") == "aw_cbam_mobilenet_spatial"
    assert [variants.attention_label(a) for a in ("se", "SE", "cbam", "cbam_maxpool", None,
                                                  applications.ResNet)] == [
        "se", "se", "cbam", "cbam", "attention", "attention"]


def test_register_checks_cbam_variants():
    with pytest.raises(ValueError, match="cbam_variants"):
        variants.register("cbam", "x")
    with pytest.raises(ValueError, match="cbam_variants"):
        variants.register("aw", "x", cbam_variants=("full",))
    with pytest.raises(ValueError, match="cbam_variants"):
        variants.register("cbam", "x", cbam_variants=("both",))


def test_the_table_describes_every_registered_model():
    assert variants.registered_names() == _family_names()
    for name in _family_names():
        entry = variants.describe(name)
        assert variants.model_name(entry.variant, entry.base, entry.cbam_variant) == name
        builder = registry.get_model_builder(name)
        expected = {} if entry.cbam_variant is None else {"cbam_variant": entry.cbam_variant}
        assert builder.keywords == {"name": name, **expected}
        parameters = list(inspect.signature(builder.func).parameters.values())
        names = [p.name for p in parameters]
        # Default name "<prefix><base>"; the variant arguments close the signature.
        assert parameters[names.index("name")].default == variants.prefix(
            entry.variant) + entry.base, name
        spec = variants.VARIANTS[entry.variant]
        tail = tuple(names[len(names) - len(spec.arguments):]) if spec.arguments else ()
        assert tail == spec.arguments, name
        assert not set(variants.DEFAULTS) & set(names) - set(spec.arguments), name
        for argument in spec.arguments:
            if argument != "cbam_variant":
                assert parameters[names.index(argument)].default == variants.DEFAULTS[argument]


class _Resolved(Exception):
    pass


@pytest.mark.parametrize("name", _family_names())
def test_every_builder_resolves_its_registered_variant(name, monkeypatch):
    """Each registered builder hands its own variant (and registered cbam_variant) to
    `variants.resolve`; the spy stops before anything is built."""

    def spy(variant, kwargs):
        raise _Resolved(variant, kwargs)

    monkeypatch.setattr(variants, "resolve", spy)
    with pytest.raises(_Resolved) as resolved:
        applications.get_model(name)
    variant, kwargs = resolved.value.args
    entry = variants.describe(name)
    assert variant == entry.variant
    assert kwargs.get("cbam_variant") == entry.cbam_variant
    assert kwargs["name"] == name


def test_plain_counterpart():
    assert pretrained.plain_model_name("aw_cbam_resnet50_maxpool") == "resnet50"
    assert pretrained.plain_model_name("AW_SE_RESNET_CIFAR") == "resnet_cifar"
    assert pretrained.plain_model_name("cbam_mobilenet_spatial") == "mobilenet"
    assert pretrained.plain_model_name("mobilenet") == "mobilenet"


def test_a_new_family_registers_its_variants(isolated_registry):
    def _create_tiny(variant, **kwargs):
        model_kwargs, block_args = variants.resolve(variant, kwargs)
        return applications.ResNet((1, 1, 1), stage_filters=(4, 8, 16), stem="cifar",
                                   **model_kwargs, **block_args)

    @variants.register("plain", "tiny_fpn")
    def TinyFPN(input_shape=(16, 16, 1), classes=3, name="tiny_fpn"):
        return _create_tiny("plain", input_shape=input_shape, classes=classes, name=name)

    @variants.register("aw_cbam", "tiny_fpn", cbam_variants=("maxpool", "spatial"))
    def AWCBAMTinyFPN(input_shape=(16, 16, 1), classes=3, name="aw_cbam_tiny_fpn",
                      cbam_variant="full", reduction_ratio=16, aw_reduction_ratio=16,
                      aw_implementation="auto"):
        return _create_tiny("aw_cbam", input_shape=input_shape, classes=classes, name=name,
                            cbam_variant=cbam_variant, reduction_ratio=reduction_ratio,
                            aw_reduction_ratio=aw_reduction_ratio,
                            aw_implementation=aw_implementation)

    assert applications.list_models("*tiny_fpn*") == [
        "aw_cbam_tiny_fpn_maxpool", "aw_cbam_tiny_fpn_spatial", "tiny_fpn"]
    model = applications.get_model("aw_cbam_tiny_fpn_spatial", reduction_ratio=2,
                                   aw_reduction_ratio=2)
    cbam = model.get_layer("conv2_block1_cbam")
    assert (cbam.use_max_pool, cbam.use_spatial) == (False, True)
    assert type(model.get_layer("conv2_block1_2_conv")).__name__ == "AWConv2D"
    assert pretrained.plain_model_name("aw_cbam_tiny_fpn_maxpool") == "tiny_fpn"

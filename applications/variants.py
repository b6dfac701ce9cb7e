"""The attention variants every model family offers, and how a family registers them.

A *variant* says which attention a family's blocks get (`VARIANTS`)::

    variant   name prefix  attention block          AWConv2D
    plain     (none)       none                     no
    se        se_          SqueezeExcite            no
    cbam      cbam_        CBAM (``cbam_variant``)  no
    aw        aw_          none                     yes
    aw_se     aw_se_       SqueezeExcite            yes
    aw_cbam   aw_cbam_     CBAM (``cbam_variant``)  yes

Each family decides *where* its blocks put the attention layer and which conv
becomes an `AWConv2D`; this module decides *what* they get. A family's blocks take
four arguments, ``attention``, ``attention_kwargs``, ``use_aw`` and ``aw_kwargs``,
and `resolve` makes them from a variant and the builder's variant arguments:

- ``reduction_ratio`` (variants with attention): SE / CBAM reduction, default 16;
- ``cbam_variant`` (CBAM variants): a key of `CBAM_VARIANTS`;
- ``aw_reduction_ratio``, ``aw_implementation`` (AW variants): `AWConv2D`'s
  ``reduction_ratio`` and ``implementation``.

Attention layers are named ``<unit>_<label>`` with the label of `attention_label`
(``conv4_block6_se``, ``conv_pw_3_cbam``); pretrained conversion finds them by it.

Registered names are ``<prefix><base>[_<cbam_variant>]``: ``aw_se_resnet50``,
``cbam_resnet50`` (``cbam_variant="full"`` has no suffix), ``aw_cbam_resnet50_maxpool``.

How a family registers its variants (this is how ResNet, the CIFAR ResNets and
MobileNet do it; an FPN family adds ``aw_resnet50_fpn`` etc. the same way)::

    def _create_resnet_fpn(variant, depth, **kwargs):
        model_kwargs, block_args = variants.resolve(variant, kwargs)
        return ResNetFPN(STAGE_BLOCKS[depth], **model_kwargs, **block_args)

    @variants.register("aw", "resnet50_fpn")
    def AWResNet50FPN(include_top=True, weights=None, ..., name="aw_resnet50_fpn",
                      aw_reduction_ratio=16, aw_implementation="auto"):
        return _create_resnet_fpn("aw", 50, include_top=include_top, weights=weights,
                                  ..., name=name, aw_reduction_ratio=aw_reduction_ratio,
                                  aw_implementation=aw_implementation)

    @variants.register("aw_cbam", "resnet50_fpn", cbam_variants=("maxpool", "spatial"))
    def AWCBAMResNet50FPN(..., name="aw_cbam_resnet50_fpn", cbam_variant="full", ...):
        ...

A builder's default ``name`` is ``<prefix><base>`` and its variant arguments are
`Variant.arguments` (tests/applications/test_variants.py checks both for every
registered builder). For `from_pretrained`, a family whose attention sits elsewhere
than ResNet's or MobileNet's also says where each block's initial gate is compensated
(`aw_keras.applications.pretrained.register_compensation_rule`).
"""

import dataclasses

from aw_keras.applications import registry

# ``cbam_variant`` -> the `aw_keras.layers.get_attention` name.
CBAM_VARIANTS = {"full": "cbam", "maxpool": "cbam_maxpool", "spatial": "cbam_spatial"}

# Layer-name suffixes of attention blocks (see `attention_label`).
ATTENTION_LABELS = ("se", "cbam", "attention")

# The defaults of the variant arguments.
DEFAULTS = {"cbam_variant": "full", "reduction_ratio": 16, "aw_reduction_ratio": 16,
            "aw_implementation": "auto"}


@dataclasses.dataclass(frozen=True)
class Variant:
    """Which attention a variant puts in a family's blocks."""

    attention: str = None  # None, "se" or "cbam"
    aw: bool = False

    @property
    def arguments(self):
        """The variant arguments its builders take, in signature order."""
        names = []
        if self.attention == "cbam":
            names.append("cbam_variant")
        if self.attention is not None:
            names.append("reduction_ratio")
        if self.aw:
            names += ["aw_reduction_ratio", "aw_implementation"]
        return tuple(names)


VARIANTS = {
    "plain": Variant(),
    "se": Variant(attention="se"),
    "cbam": Variant(attention="cbam"),
    "aw": Variant(aw=True),
    "aw_se": Variant(attention="se", aw=True),
    "aw_cbam": Variant(attention="cbam", aw=True),
}


@dataclasses.dataclass(frozen=True)
class Registration:
    """What a registered name was built from."""

    variant: str
    base: str
    cbam_variant: str = None


_REGISTERED = {}  # registered name -> Registration


def get_variant(variant):
    """The `Variant` named ``variant``; ValueError listing the known ones otherwise."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown `variant` {variant!r}; expected one of {sorted(VARIANTS)}.")
    return VARIANTS[variant]


def prefix(variant):
    """The registry-name prefix of ``variant``: "" (plain), "se_", "aw_cbam_", ..."""
    get_variant(variant)
    return "" if variant == "plain" else variant + "_"


def model_name(variant, base, cbam_variant=None):
    """The registered name: ``model_name("aw_cbam", "resnet50", "maxpool")`` ->
    ``"aw_cbam_resnet50_maxpool"`` (``cbam_variant`` "full" or None: no suffix)."""
    suffix = "" if cbam_variant in (None, "full") else "_" + cbam_variant
    return prefix(variant) + base + suffix


def attention_label(attention):
    """The layer-name suffix of an attention block: "se" (``"se"``), "cbam" (any CBAM
    name), else "attention" (a layer class or callable)."""
    if isinstance(attention, str):
        family = attention.lower().split("_")[0]
        if family in ATTENTION_LABELS:
            return family
    return "attention"


def resolve(variant, kwargs):
    """Splits a builder's arguments into (model arguments, block arguments).

    Args:
        variant: a key of `VARIANTS`.
        kwargs: the builder's arguments; the variant arguments among them
            (`Variant.arguments`, defaults in `DEFAULTS`) are taken out.

    Returns:
        ``(model_kwargs, block_args)``: ``kwargs`` without the variant arguments, and
        ``dict(attention=..., attention_kwargs=..., use_aw=..., aw_kwargs=...)``.

    Raises:
        ValueError: unknown ``variant`` or ``cbam_variant``.
        TypeError: a variant argument ``variant`` does not take (a builder bug).
    """
    spec = get_variant(variant)
    model_kwargs = {k: v for k, v in kwargs.items() if k not in DEFAULTS}
    unexpected = sorted(k for k in kwargs if k in DEFAULTS and k not in spec.arguments)
    if unexpected:
        raise TypeError(f"The {variant!r} variant takes no {unexpected}; it takes "
                        f"{list(spec.arguments)}.")
    args = {**{k: DEFAULTS[k] for k in spec.arguments}, **{
        k: v for k, v in kwargs.items() if k in DEFAULTS}}
    attention = spec.attention
    if attention == "cbam":
        if args["cbam_variant"] not in CBAM_VARIANTS:
            raise ValueError(f"`cbam_variant` must be one of {sorted(CBAM_VARIANTS)}, got "
                             f"{args['cbam_variant']!r}.")
        attention = CBAM_VARIANTS[args["cbam_variant"]]
    block_args = dict(
        attention=attention,
        attention_kwargs={"reduction_ratio": args["reduction_ratio"]} if attention else None,
        use_aw=spec.aw,
        aw_kwargs={"reduction_ratio": args["aw_reduction_ratio"],
                   "implementation": args["aw_implementation"]} if spec.aw else None,
    )
    return model_kwargs, block_args


def register(variant, base, cbam_variants=None, task="classification"):
    """Decorator registering a builder of ``variant`` of the family ``base``.

    Registers ``model_name(variant, base)``; a CBAM variant is registered once per
    entry of ``cbam_variants`` (required for them, e.g. ``("full", "maxpool")``),
    with that ``cbam_variant`` as registered default; ``task`` as in
    `registry.register_variant`. Returns the builder unchanged.
    """
    spec = get_variant(variant)
    if (spec.attention == "cbam") != (cbam_variants is not None):
        raise ValueError(f"`cbam_variants` is required for CBAM variants and only for them; "
                         f"got variant={variant!r}, cbam_variants={cbam_variants!r}.")
    for cbam_variant in cbam_variants or ():
        if cbam_variant not in CBAM_VARIANTS:
            raise ValueError(f"`cbam_variants` entries must be in {sorted(CBAM_VARIANTS)}, "
                             f"got {cbam_variant!r}.")

    def decorator(builder):
        for cbam_variant in cbam_variants or (None,):
            name = model_name(variant, base, cbam_variant)
            defaults = {} if cbam_variant is None else {"cbam_variant": cbam_variant}
            registry.register_variant(name, builder, task=task, **defaults)
            _REGISTERED[name] = Registration(variant, base, cbam_variant)
        return builder

    return decorator


def describe(name):
    """The `Registration` of a name registered through `register`, else None."""
    return _REGISTERED.get(name)


def registered_names():
    """Sorted names registered through `register`."""
    return sorted(_REGISTERED)

"""Start AW / SE / CBAM models from pretrained plain weights, computing the same function.

`from_pretrained(source, model_name)` takes a trained plain network and returns the
registered model ``model_name`` (AW, SE, CBAM, AW-SE, AW-CBAM or plain) with every
shared weight transplanted by layer name and every new parameter initialised so
that, at initialisation, the new model's outputs equal the source's (exactly for
SE / CBAM, to float rounding for AW) while gradients still reach the attention.
Fine-tuning then learns the attention from the pretrained network's function.
Why each initialisation is exact: docs/pretrained.md.

Sources: a `keras.Model` (``keras.applications.ResNet50/101/152`` or ``MobileNet``, or
one of ours), a ``.keras`` file, a ``.weights.h5`` file of the plain counterpart of
``model_name`` (built with ``builder_kwargs``), a keras.applications ImageNet file
(``resnet50_weights_tf_dim_ordering_tf_kernels.h5``, ...), or ``"imagenet"`` (that
file from the Keras cache or downloaded into it, see
`aw_keras.applications.imagenet_weights`).

Example:

>>> import keras
>>> from aw_keras import applications
>>> plain = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
>>> model = applications.from_pretrained(plain, "aw_se_resnet50")   # same outputs as plain
>>> model = applications.from_pretrained("runs/plain/last.keras", "aw_resnet_cifar")

FPN backbones (``*_fpn``): from a trained plain FPN backbone (model, ``.keras``,
``.weights.h5``, or a detector ``.keras`` whose ``.backbone`` is one) every variant
starts with the source's pyramid; from a classification ResNet (keras.applications
or ours, ``"imagenet"``) the body is transplanted and verified on C2..C5 while the
FPN's own layers keep their fresh initialisation (nothing in a classifier constrains
them):

>>> backbone = applications.from_pretrained("runs/det_plain/last.keras", "aw_resnet_small_fpn")
>>> backbone = applications.from_pretrained(keras.applications.ResNet50(weights=None),
...                                         "aw_se_resnet50_fpn", input_shape=(512, 512, 3))

The lower-level `transplant(source, target)` converts into a model you built
yourself (same layer names); `register_compensation_rule` teaches it where a new
attention block's constant gate is compensated in other architectures.
"""

import inspect
import json
import logging
import os
import re
import warnings

import numpy as np

import keras

from aw_keras.applications import imagenet_weights
from aw_keras.applications import variants
from aw_keras.utils.keras_files import check_keras_archive

# At initialisation a new AWConv2D's attention is A = sigmoid(0) = 0.5 everywhere:
AW_INITIAL_ATTENTION = 0.5
# Structural settings that must agree between corresponding layers.
STRUCTURAL_KEYS = ("kernel_size", "strides", "padding", "dilation_rate", "depth_multiplier",
                   "activation", "epsilon", "center", "scale", "pool_size",
                   "max_value", "negative_slope", "threshold", "keepdims", "groups")


logger = logging.getLogger("aw_keras")
# The last layer of each ImageNet architecture's body (before the classifier head).
IMAGENET_BODY_OUTPUTS = {"resnet50": "conv5_block3_out", "resnet101": "conv5_block3_out",
                         "resnet152": "conv5_block3_out", "mobilenet": "conv_pw_13_relu"}
IMAGENET_CLASSES = 1000


class ConversionError(ValueError):
    """The source cannot be converted into the target exactly (names the first
    mismatching layer)."""


# --------------------------------------------------------------------- public API


def from_pretrained(source, model_name, *, verify=True, **builder_kwargs):
    """Builds the registered ``model_name`` starting from the trained plain ``source``.

    Args:
        source: a ``keras.Model`` (``keras.applications.ResNet50/101/152`` or
            ``MobileNet`` instance, or a model of `aw_keras.applications`), a path to
            a ``.keras`` file, a path to a ``.weights.h5`` file saved from the plain
            counterpart of ``model_name`` (e.g. ``resnet_cifar`` for
            ``aw_se_resnet_cifar``; built with ``builder_kwargs``), a path to a
            keras.applications ImageNet ``.h5`` file (by its keras.applications name),
            or ``"imagenet"`` (that file from the Keras cache, downloaded into it
            the first time as keras.applications does).
            For an FPN backbone ``model_name`` also a detector (model or ``.keras``)
            whose ``backbone`` is an FPN backbone, and classification ResNets
            (body-only sources: the FPN's own layers keep their fresh
            initialisation; docs/pretrained.md).
        model_name: a name of `aw_keras.applications.list_models()`: the AW / SE /
            CBAM / AW-SE / AW-CBAM counterpart of the source (or the plain one: a
            straight copy).
        verify: run both models on a random batch and raise if their outputs differ
            by more than 1e-3 of the largest output (a safety net against
            architecture differences in layers without weights; the differences
            conversions give: docs/pretrained.md); skipped under a mixed-precision
            policy. (The builders' ``weights="imagenet"`` path always verifies.)
        **builder_kwargs: builder arguments. Unless given here, ``input_shape``,
            ``classes``, ``include_top``, ``pooling``, ``classifier_activation``
            (and MobileNet's ``alpha``, ``depth_multiplier``, ``dropout``; the CIFAR
            ResNets' ``blocks``, ``width``, ``stem_stride``) are read from the
            source. ``include_top=False`` from a source with a classifier drops it.
            FPN targets read ``input_shape``, ``levels``, ``fpn_channels``,
            ``input_preprocessing`` (and ``attention_in_body`` of a non-plain
            source) from an FPN source; from a keras.applications ResNet (or
            ImageNet file) ``input_preprocessing`` is "caffe", what its weights expect.

    Returns:
        The new model: every source weight transplanted by layer name; new
        attention initialised so the outputs equal the source's (see
        docs/pretrained.md).

    Raises:
        ConversionError (a ValueError): the architectures differ (the message names
            the first mismatching layer), or no exact initialisation exists (e.g. a
            MobileNet SE/CBAM model with ``include_top=False``).
        TypeError: ``source`` is of an unsupported type.
    """
    from aw_keras.applications import registry

    builder = registry.get_model_builder(model_name)  # raises for unknown names
    if "weights" in builder_kwargs:
        raise TypeError("from_pretrained sets the weights itself; do not pass `weights` "
                        f"(got weights={builder_kwargs['weights']!r}).")
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path == "imagenet" or imagenet_weights.is_imagenet_file(path):
            if _fresh_classifier(builder, builder_kwargs):
                return _imagenet_body(path, model_name, builder, builder_kwargs, verify)
            # The builder converts the keras.applications ImageNet file itself.
            return registry.get_model(model_name, weights=path, **builder_kwargs)
        source = load_source(path, model_name, builder_kwargs)
    if registry.model_task(model_name) == "detection_backbone":
        source = _backbone_of(source)
    if not isinstance(source, keras.Model):
        raise TypeError(
            "`source` must be a keras.Model, a path to a .keras / .weights.h5 / "
            f"keras.applications .h5 file, or 'imagenet'; got {source!r} of type "
            f"{type(source).__name__}.")
    kwargs = {**source_builder_kwargs(source, builder), **builder_kwargs}
    target = builder(**kwargs)
    return transplant(source, target, verify=verify)


def _fresh_classifier(builder, builder_kwargs):
    """True when the target has a classifier for other than ImageNet's 1000 classes."""
    parameters = inspect.signature(getattr(builder, "func", builder)).parameters
    if "classes" not in parameters or "include_top" not in parameters:
        return False  # FPN backbones: no classifier
    defaults = {**{k: p.default for k, p in parameters.items()},
                **getattr(builder, "keywords", {})}
    settings = {**defaults, **builder_kwargs}
    return bool(settings["include_top"]) and settings["classes"] != IMAGENET_CLASSES


def _imagenet_body(path, model_name, builder, builder_kwargs, verify):
    """``model_name`` with a classifier for ``classes`` != 1000: the ImageNet body
    converted in (verified on the body's output), the classifier freshly
    initialised, as in fine-tuning."""
    architecture = plain_model_name(model_name)
    if architecture not in IMAGENET_BODY_OUTPUTS:
        # The same error as the builder's (no ImageNet weights for this architecture).
        imagenet_weights.ImageNetSource(architecture, include_top=False, input_shape=(None,) * 3)
    target = builder(**builder_kwargs)
    shape = tuple(target.input_shape[1:])
    settings = {k: builder_kwargs[k] for k in ("alpha", "depth_multiplier", "dropout")
                if k in builder_kwargs and architecture == "mobilenet"}
    explicit = None if path == "imagenet" else path
    # An explicit file with the ImageNet classifier gives its body too.
    with_top = explicit is not None and "_notop" not in path and "_no_top" not in path
    source = imagenet_weights.ImageNetSource(
        architecture, include_top=with_top, input_shape=shape, path=explicit, **settings)
    plain = source.build_plain()
    end = IMAGENET_BODY_OUTPUTS[architecture]
    body = keras.Model(_input(plain), plain.get_layer(end).output, name=plain.name)
    target_body = keras.Model(_input(target), target.get_layer(end).output, name=target.name)
    transplant(body, target_body, verify=verify)
    head = [layer.name for layer in target.layers
            if layer.weights and layer.name not in {t.name for t in target_body.layers}]
    logger.warning(
        "aw_keras: %s: ImageNet weights loaded into the body (up to %r); the classifier "
        "for %d classes (%s) is freshly initialised (the ImageNet file's has %d).",
        target.name, end, int(target.output_shape[-1]), ", ".join(head),
        IMAGENET_CLASSES)
    return target


def load_source(path, model_name, builder_kwargs=None):
    """Loads ``path`` (``.keras``, legacy ``.h5`` model, or ``.weights.h5`` of the
    plain counterpart of ``model_name`` built with ``builder_kwargs``) as a model."""
    from aw_keras.applications import registry

    if not os.path.isfile(path):
        raise ValueError(f"`source` file {path!r} does not exist.")
    if path.endswith(".weights.h5"):
        plain = plain_model_name(model_name)
        plain_builder = registry.get_model_builder(plain)
        accepted = inspect.signature(plain_builder.func).parameters
        kwargs = {k: v for k, v in (builder_kwargs or {}).items() if k in accepted}
        model = plain_builder(**kwargs)
        try:
            model.load_weights(path)
        except Exception as error:  # noqa: BLE001 - re-raised with context
            raise ValueError(
                f"Could not load the weights file {path!r} into {plain!r} built with "
                f"{kwargs}: {error}. A .weights.h5 source must come from the plain "
                f"counterpart {plain!r}; pass the builder arguments it was saved with "
                "(input_shape, classes, ...), or use its .keras file.") from error
        return model
    if path.endswith((".keras", ".h5")):
        import aw_keras.layers  # noqa: F401 - registers the custom layers

        try:  # registers the detectors (a detector file is an FPN backbone's source)
            import aw_keras.detection  # noqa: F401
        except ImportError:  # keras-hub (the "detection" extra) not installed
            pass

        if path.endswith(".keras"):
            check_keras_archive(path, "`source` file")
        return keras.saving.load_model(path, compile=False)
    raise ValueError(
        f"`source` {path!r} must be a .keras, .weights.h5 or keras.applications .h5 file, "
        "or 'imagenet'.")


def plain_model_name(model_name):
    """The registered plain counterpart: ``aw_cbam_resnet50_maxpool`` -> ``resnet50``
    (`aw_keras.applications.variants`); a model registered outside the variant table
    is its own."""
    from aw_keras.applications import registry

    name = model_name.lower()
    registration = variants.describe(name)
    plain = variants.model_name("plain", registration.base) if registration else name
    if not registry.is_model(plain):
        raise ValueError(f"{model_name!r} has no registered plain counterpart ({plain!r}).")
    return plain


def source_builder_kwargs(source, builder=None):
    """Builder arguments read from ``source``'s layers (those ``builder`` accepts)."""
    layers = {layer.name: layer for layer in source.layers}
    shape = source.input_shape
    if not isinstance(shape, tuple) or len(shape) != 4:
        raise ConversionError(
            f"`source` must have one 4-D image input, got input_shape={shape}.")
    kwargs = {"input_shape": tuple(shape[1:])}
    classifier = layers.get("conv_preds") or layers.get("predictions")
    if isinstance(classifier, (keras.layers.Dense, keras.layers.Conv2D)):
        kwargs["include_top"] = True
        kwargs["classes"] = int(classifier.kernel.shape[-1])
        activation = layers.get("predictions")
        if activation is not None:
            kwargs["classifier_activation"] = activation.get_config().get("activation")
    else:
        kwargs["include_top"] = False
        last = [layer for layer in source.layers if layer.name != "predictions_float32"][-1]
        kwargs["pooling"] = ("avg" if isinstance(last, keras.layers.GlobalAveragePooling2D)
                             else "max" if isinstance(last, keras.layers.GlobalMaxPooling2D)
                             else None)
    if "conv_pw_13" in layers:  # MobileNet
        kwargs["alpha"] = _filters(layers["conv_pw_13"]) / 1024
        if "conv_dw_1" in layers:
            kwargs["depth_multiplier"] = int(layers["conv_dw_1"].depth_multiplier)
        if "dropout" in layers:
            kwargs["dropout"] = float(layers["dropout"].rate)
    if "conv2_block1_1_conv" in layers and "conv1_conv" in layers:  # CIFAR ResNets
        kwargs["width"] = _filters(layers["conv2_block1_1_conv"])
        kwargs["stem_stride"] = int(layers["conv1_conv"].strides[0])
        kwargs["blocks"] = tuple(
            sum(1 for n in layers if re.fullmatch(rf"conv{stage}_block\d+_1_conv", n))
            for stage in (2, 3, 4))
    kwargs.update(_fpn_builder_kwargs(source, layers))
    if builder is not None:
        accepted = inspect.signature(getattr(builder, "func", builder)).parameters
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    return kwargs


def _filters(layer):
    return int(layer.kernel.shape[-1])


def _fpn_builder_kwargs(source, layers):
    """FPN builder arguments of ``source``: an FPN backbone's own settings; "caffe"
    preprocessing for a keras.applications ResNet (its ImageNet weights expect it)."""
    from aw_keras.applications.fpn import FPNBackbone

    if isinstance(source, FPNBackbone):
        found = {"input_shape": tuple(source.image_shape), "levels": source.levels,
                 "fpn_channels": source.fpn_channels,
                 "input_preprocessing": source.input_preprocessing}
        if source.variant != "plain":
            found["attention_in_body"] = source.attention_in_body
        return found
    stem = layers.get("conv1_conv")
    if not _has_fpn(source) and "conv2_block1_out" in layers and getattr(
            stem, "use_bias", False):
        # keras.applications' ResNets are the ones whose stem conv has a bias.
        return {"input_preprocessing": "caffe"}
    return {}


def _backbone_of(source):
    """A detector's FPN backbone (``source.backbone``), else ``source``."""
    backbone = getattr(source, "backbone", None)
    if isinstance(source, keras.Model) and not _has_fpn(source) and isinstance(
            backbone, keras.Model) and _has_fpn(backbone):
        return backbone
    return source


def _has_fpn(model):
    return any(layer.name.startswith("fpn_") for layer in model.layers)


# --------------------------------------------------------- compensation rules

# A new SE / CBAM block starts with a constant gate g (0.5, or 0.25 for CBAM with
# its spatial gate). A rule maps the attention layer's name to where 1/g goes:
#   ("bn", NAME): NAME is the BatchNormalization producing the attention's input
#       (linear, no clipping in between): its gamma and beta are multiplied by 1/g;
#   ("kernel", NAME): NAME is the linear layer consuming the attention's output
#       (Conv2D, DepthwiseConv2D, AWConv2D): its kernel is multiplied by 1/g.
# 1/g is a power of two, so both are exact in floating point.
_COMPENSATION_RULES = []


def register_compensation_rule(pattern, resolve):
    """Teaches `transplant` where a new attention layer's gate is compensated.

    Args:
        pattern: regular expression matched (fullmatch) against the attention
            layer's name.
        resolve: ``resolve(match, target_model) -> ("bn" | "kernel", layer_name)``;
            may raise `ConversionError` when no exact compensation exists.
    """
    _COMPENSATION_RULES.append((re.compile(pattern), resolve))


def _resnet_block(match, target):
    return "bn", f"{match['block']}_3_bn"


def _mobilenet_depthwise_unit(match, target):
    return "kernel", f"conv_pw_{match['id']}"


def _mobilenet_pointwise_unit(match, target):
    names = {layer.name for layer in target.layers}
    for consumer in (f"conv_dw_{int(match['id']) + 1}", "conv_preds"):
        if consumer in names:
            return "kernel", consumer
    raise ConversionError(
        f"No exact initialisation for {match[0]!r}: it multiplies the model's output by "
        "its initial gate and nothing in the model follows it to compensate (in MobileNet "
        "the attention sits after ReLU6, whose clipping rules out compensating in the "
        "producing BatchNormalization). Convert with include_top=True (the classifier "
        "`conv_preds` compensates), or use the AW-only variant for a headless MobileNet; "
        "see docs/pretrained.md.")


_LABEL = "(" + "|".join(variants.ATTENTION_LABELS) + ")"  # attention layer-name suffixes
register_compensation_rule(r"(?P<block>conv\d+_block\d+)_" + _LABEL, _resnet_block)
register_compensation_rule(r"conv_dw_(?P<id>\d+)_" + _LABEL, _mobilenet_depthwise_unit)
register_compensation_rule(r"conv_pw_(?P<id>\d+)_" + _LABEL, _mobilenet_pointwise_unit)


def _fpn_conv(match, target):
    return "kernel", match["conv"]


# FPN backbones: SE / CBAM right before a lateral or output conv, which is linear
# (conv + bias, no norm, no activation) -> that conv's kernel takes 1/g.
register_compensation_rule(r"(?P<conv>fpn_(lateral|output)\d+)_" + _LABEL, _fpn_conv)


# ------------------------------------------------------------------ transplant


def transplant(source, target, verify=True):
    """Copies ``source``'s weights into ``target`` by layer name and initialises what
    ``target`` adds so both compute the same function; returns ``target``.

    Pairs by layer name: same class -> copied; Conv2D -> AWConv2D -> kernel scaled by
    1 / (1 + A0) (residual) or 1 / A0 (multiplicative) with ``excite_bn`` gamma =
    beta = 0 so that A = A0 = 0.5; a conv bias the target lacks is folded into the
    following BatchNormalization (``moving_mean - bias``); a conv bias both have is
    copied (an AWConv2D adds it after the attentional conv: not scaled). Target
    layers without a source counterpart must be SqueezeExcite / CBAM: their last
    layer is zeroed (gate 0.5) and a compensation rule puts the factor back. The one
    exception, "new layers, any initialisation": an `FPNBackbone` target from a
    source without FPN layers (a classification ResNet, the ImageNet file): the
    FPN's own layers (``fpn_*``, their attention, the input preprocessing) keep
    their initialisation, and ``verify`` compares the body features C2..C5
    instead of the outputs. Nothing is assigned unless the whole conversion
    succeeds (a failed ``verify`` restores the target).

    Raises:
        ConversionError: the first layer that does not correspond (missing, other
            class, other shape or settings), or an attention block with no exact
            compensation; or (``verify``) outputs that differ.
    """
    from aw_keras.layers import AWConv2D

    source = _backbone_of(source) if _has_fpn(target) else source
    prefix = f"Cannot convert {source.name!r} into {target.name!r}: "
    plan = _Plan()
    target_layers = {layer.name: layer for layer in target.layers}
    source_layers = {layer.name: layer for layer in source.layers}
    dropped_top = _dropped_classifier(source_layers, target_layers)
    new_aw = []
    fresh = fresh_layer_names(source, target)

    for s in source.layers:
        if isinstance(s, keras.Model):
            raise ConversionError(prefix + f"nested model {s.name!r} in the source; pass a "
                                  "flat functional model.")
        t = target_layers.get(s.name)
        if t is None:
            if s.weights and s.name not in dropped_top:
                raise ConversionError(
                    prefix + f"source layer {s.name!r} ({type(s).__name__}) has no "
                    f"counterpart in the target (the architectures differ: depth, "
                    "attention or head).")
            continue
        _check_structure(s, t, prefix)
        if not s.weights and not t.weights:
            continue
        if isinstance(t, AWConv2D) and type(s) is keras.layers.Conv2D:
            _plan_conv(plan, s, t, target_layers, prefix)
            new_aw.append(t)
        elif type(s) is not type(t):
            raise ConversionError(
                prefix + f"layer {s.name!r} is a {type(s).__name__} in the source but a "
                f"{type(t).__name__} in the target.")
        elif type(s) in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense):
            _plan_conv(plan, s, t, target_layers, prefix)
        elif isinstance(s, keras.layers.BatchNormalization):
            _plan_bn(plan, s, t, prefix)
        else:
            _plan_same(plan, s, t, prefix)

    for t in target.layers:
        if t.name not in source_layers and t.weights and t.name not in fresh:
            _plan_new_attention(plan, t, target, target_layers, prefix)
    for layer in new_aw:
        _plan_aw(plan, layer, prefix)
    previous = plan.apply()
    if verify:
        try:
            verify_same_outputs(source, target)
        except ConversionError:
            for variable, value in previous:
                variable.assign(value)
            raise
    return target


def fresh_layer_names(source, target):
    """Target layers that keep their own initialisation ("new layers, any
    initialisation"): only for an `FPNBackbone` target whose source has no FPN
    layer (a body-only source), the FPN's own layers (``fpn_*`` including their
    attention blocks) and its input preprocessing layers. Empty otherwise: every
    other target layer must correspond to a source layer or be a compensated
    attention block."""
    from aw_keras.applications.fpn import FPNBackbone

    if not isinstance(target, FPNBackbone) or _has_fpn(source):
        return set()
    names = {layer.name for layer in target.layers if layer.name.startswith("fpn_")}
    return names | set(target.preprocessing_layer_names)


class _Plan:
    """New values for target variables (NumPy, in each variable's dtype), assigned
    together at the end so that a failed conversion leaves the target untouched."""

    def __init__(self):
        self.values = {}
        self.folds = []  # (BatchNormalization, conv bias) subtracted from moving_mean last

    def set(self, variable, value):
        value = np.array(value, dtype=_numpy_dtype(variable))
        if tuple(value.shape) != tuple(variable.shape):
            raise ConversionError(f"{variable.path}: shape {tuple(value.shape)} vs "
                                  f"{tuple(variable.shape)}")
        self.values[id(variable)] = (variable, value)

    def get(self, variable):
        if id(variable) not in self.values:
            self.set(variable, keras.ops.convert_to_numpy(variable))
        return self.values[id(variable)][1]

    def scale(self, variable, factor):
        value = self.get(variable)
        value *= value.dtype.type(factor)

    def fold_bias(self, bn, bias):
        self.folds.append((bn, bias))

    def apply(self):
        """Assigns everything; returns the previous (variable, value) pairs."""
        for bn, bias in self.folds:
            mean = self.get(bn.moving_mean)
            mean -= np.asarray(bias, mean.dtype)
        previous = []
        for variable, value in self.values.values():
            previous.append((variable, keras.ops.convert_to_numpy(variable)))
            variable.assign(value)
        return previous


def _numpy_dtype(variable):
    return np.dtype(keras.backend.standardize_dtype(variable.dtype))


def _config(layer):
    """The structural settings of ``layer``, normalised for comparison."""
    config = layer.get_config()
    found = {}
    for key in STRUCTURAL_KEYS:
        if key in config:
            value = json.loads(json.dumps(config[key], default=str))  # tuples -> lists
            if isinstance(value, str):
                value = value.lower()
            if key == "activation" and value in (None, "linear"):
                value = "linear"
            found[key] = value
    return found


def _check_structure(s, t, prefix):
    a, b = _config(s), _config(t)
    for key in a:
        if key in b and a[key] != b[key]:
            raise ConversionError(
                prefix + f"layer {s.name!r} has {key}={a[key]!r} in the source but "
                f"{b[key]!r} in the target.")


def _shapes_must_match(s_var, t_var, layer_name, prefix):
    if tuple(s_var.shape) != tuple(t_var.shape):
        raise ConversionError(
            prefix + f"layer {layer_name!r}: weight {s_var.path.split('/')[-1]!r} has shape "
            f"{tuple(s_var.shape)} in the source but {tuple(t_var.shape)} in the target.")


def _plan_conv(plan, s, t, target_layers, prefix):
    """Kernel copied; bias copied, zeroed, or folded into the next BN's moving mean."""
    _shapes_must_match(s.kernel, t.kernel, s.name, prefix)
    plan.set(t.kernel, s.kernel.numpy())
    s_bias = getattr(s, "bias", None)
    t_bias = getattr(t, "bias", None)
    if t_bias is not None:
        plan.set(t_bias, s_bias.numpy() if s_bias is not None else np.zeros(t_bias.shape))
    elif s_bias is not None:
        candidates = [re.sub(r"_conv$", "_bn", s.name), s.name + "_bn"]
        bn = next((target_layers[n] for n in candidates if n in target_layers and isinstance(
            target_layers[n], keras.layers.BatchNormalization)), None)
        if bn is None:
            raise ConversionError(
                prefix + f"layer {s.name!r} has a bias in the source and none in the target, "
                f"and no BatchNormalization ({' or '.join(map(repr, candidates))}) follows "
                "it to absorb it.")
        # BN(conv + b) with mean m equals BN(conv) with mean m - b (inference; in
        # training BN subtracts the batch mean, which removes any constant).
        plan.fold_bias(bn, keras.ops.convert_to_numpy(s_bias))


def _plan_bn(plan, s, t, prefix):
    for attribute in ("gamma", "beta", "moving_mean", "moving_variance"):
        s_var, t_var = getattr(s, attribute, None), getattr(t, attribute, None)
        if (s_var is None) != (t_var is None):
            raise ConversionError(
                prefix + f"layer {s.name!r}: BatchNormalization {attribute} exists in only "
                "one of the two models.")
        if s_var is not None:
            _shapes_must_match(s_var, t_var, s.name, prefix)
            plan.set(t_var, s_var.numpy())


def _plan_same(plan, s, t, prefix):
    if len(s.weights) != len(t.weights):
        raise ConversionError(
            prefix + f"layer {s.name!r} has {len(s.weights)} weights in the source but "
            f"{len(t.weights)} in the target.")
    for s_var, t_var in zip(s.weights, t.weights):
        _shapes_must_match(s_var, t_var, s.name, prefix)
        plan.set(t_var, s_var.numpy())


def _plan_aw(plan, layer, prefix):
    """excite_bn gamma = beta = 0 -> A = sigmoid(0) = 0.5 for every input, in
    inference and training; the kernel is divided by the initial scale."""
    bn = layer.excite_bn
    if bn.gamma is None or bn.beta is None:
        raise ConversionError(prefix + f"{layer.name!r}: excite_bn needs center and scale.")
    plan.set(bn.gamma, np.zeros(bn.gamma.shape))
    plan.set(bn.beta, np.zeros(bn.beta.shape))
    initial = AW_INITIAL_ATTENTION
    if layer.attention_mode == "residual":
        initial = 1.0 + AW_INITIAL_ATTENTION
    value = plan.get(layer.kernel)
    value /= value.dtype.type(initial)


def _plan_new_attention(plan, layer, target, target_layers, prefix):
    """A target layer without source counterpart: an SE / CBAM block starting as a
    constant gate g, and 1/g put where its compensation rule says."""
    from aw_keras.layers import AWConv2D

    gate = _initial_gate(plan, layer, prefix)
    kind, name = _compensation(layer.name, target, prefix)
    other = target_layers.get(name)
    if kind == "bn":
        if not isinstance(other, keras.layers.BatchNormalization) or other.gamma is None:
            raise ConversionError(
                prefix + f"{layer.name!r} is compensated in {name!r}, which is not a "
                "BatchNormalization with a scale in the target.")
        plan.scale(other.gamma, 1.0 / gate)
        if other.beta is not None:
            plan.scale(other.beta, 1.0 / gate)
        return
    if not isinstance(other, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, AWConv2D)):
        raise ConversionError(
            prefix + f"{layer.name!r} is compensated in {name!r}, which is not a "
            "convolution in the target.")
    plan.scale(other.kernel, 1.0 / gate)
    if isinstance(other, AWConv2D):
        # AW's attention branch sees the gated input too: its first (linear, bias-free)
        # conv undoes the gate, so A is unchanged.
        plan.scale(other.squeeze_conv.kernel, 1.0 / gate)


def _initial_gate(plan, layer, prefix):
    """Zeroes the attention's last layer; returns its constant initial gate."""
    from aw_keras.layers import CBAM
    from aw_keras.layers import SqueezeExcite

    if isinstance(layer, SqueezeExcite):
        if keras.activations.serialize(layer.gate_activation) != "sigmoid":
            raise ConversionError(prefix + f"{layer.name!r}: only a sigmoid gate has a "
                                  "constant exact initial value.")
        _zero(plan, layer.expand)
        return 0.5
    if isinstance(layer, CBAM):
        _zero(plan, layer.mlp_expand)
        if not layer.use_spatial:
            return 0.5
        bn = layer.spatial_bn
        plan.set(bn.gamma, np.zeros(bn.gamma.shape))
        plan.set(bn.beta, np.zeros(bn.beta.shape))
        return 0.25
    raise ConversionError(
        prefix + f"target layer {layer.name!r} ({type(layer).__name__}) has no counterpart in "
        "the source (the architectures differ: depth, width or head), and is not an "
        "attention block (SqueezeExcite, CBAM) that can start as identity.")


def _zero(plan, conv):
    plan.set(conv.kernel, np.zeros(conv.kernel.shape))
    if conv.bias is not None:
        plan.set(conv.bias, np.zeros(conv.bias.shape))


def _compensation(name, target, prefix):
    for pattern, resolve in _COMPENSATION_RULES:
        match = pattern.fullmatch(name)
        if match:
            try:
                return resolve(match, target)
            except ConversionError as error:
                raise ConversionError(prefix + str(error)) from None
    raise ConversionError(
        prefix + f"no rule says where to compensate the initial gate of the new attention "
        f"layer {name!r}; see register_compensation_rule.")


def _dropped_classifier(source_layers, target_layers):
    """Source classifier layers the target (include_top=False) leaves out."""
    head = {"predictions", "conv_preds"}
    if head & set(source_layers) and not head & set(target_layers):
        return head
    return set()


# --------------------------------------------------------------------- verify


def verify_same_outputs(source, target, tolerance=1e-3, seed=0):
    """Raises ConversionError unless ``target`` reproduces ``source`` on a random batch
    (inference mode): max |difference| <= tolerance * max(1, max |source output|).

    With the source's classifier dropped (target include_top=False) the target's
    output is compared with the source's tensor of the same layer name (or its
    pooled input). Several outputs (an FPN's pyramid) are compared together. An
    `FPNBackbone` target from a body-only source (see `fresh_layer_names`) is
    compared on the body features C2..C5, the source taking the target's
    preprocessed input. FPN targets get images in [0, 255]. Skipped under a
    non-float32 compute dtype."""
    if any(layer.compute_dtype != "float32" for model in (source, target)
           for layer in model.layers if layer.weights):
        return None
    shape = tuple(target.input_shape[1:])
    source_shape = tuple(source.input_shape[1:])
    shape = tuple(t if t is not None else (s if s is not None else 64)
                  for s, t in zip(source_shape, shape))
    rng = np.random.default_rng(seed)
    if _has_fpn(target):
        x = rng.uniform(0.0, 255.0, size=(2,) + shape).astype(np.float32)
    else:
        x = rng.normal(size=(2,) + shape).astype(np.float32)
    if fresh_layer_names(source, target):
        expected, got = _body_features(source, target, shape, x)
    else:
        reference = _reference(source, target, shape)
        expected = _numpy_outputs(reference(x, training=False))
        got = _numpy_outputs(target(x, training=False))
    expected_shapes = [e.shape for e in expected]
    got_shapes = [g.shape for g in got]
    if expected_shapes != got_shapes:
        if len(got) == 1 and len(expected) == 1:
            expected_shapes, got_shapes = expected_shapes[0], got_shapes[0]
        raise ConversionError(
            f"Converted {target.name!r} outputs shape {got_shapes}, the source {expected_shapes}.")
    difference, scale = 0.0, 1.0
    for e, g in zip(expected, got):
        if g.size:
            difference = max(difference, float(np.max(np.abs(e - g))))
            scale = max(scale, float(np.max(np.abs(e))))
    if not difference <= tolerance * scale:
        raise ConversionError(
            f"Converted {target.name!r} does not reproduce {source.name!r}: max |difference| "
            f"{difference:.3g} on a random batch (allowed {tolerance * scale:.3g}). The "
            "architectures differ in a layer without weights (pooling, activation, strides "
            "of the stem, input preprocessing, ...); check the builder arguments.")
    return difference


def _numpy_outputs(outputs):
    """A model's outputs (a tensor, list or dict) as a list of NumPy arrays."""
    return [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(outputs)]


def _body_features(source, target, shape, x):
    """(source's, target's) C2..C5 of an FPN target; the source runs on the
    target's preprocessed input (what the body sees)."""
    names = list(target.feature_layer_names.values())
    body_input = target.get_layer("conv1_pad").input
    features = keras.Model(_input(target), [body_input] + [target.get_layer(n).output
                                                            for n in names])
    outputs = _numpy_outputs(features(x, training=False))
    model = _source_at(source, shape)
    missing = [n for n in names if n not in {layer.name for layer in model.layers}]
    if missing:
        raise ConversionError(f"Cannot verify {target.name!r}: the source has no layer "
                              f"{missing[0]!r} (the body's features C2..C5 are compared).")
    reference = keras.Model(_input(model), [model.get_layer(n).output for n in names])
    return _numpy_outputs(reference(outputs[0], training=False)), outputs[1:]


def _input(model):
    """The model's input tensor (the list for several inputs)."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def _source_at(source, shape):
    """``source`` taking ``shape`` inputs (a copy with the same weights when its
    input size is another)."""
    from aw_keras.applications.fpn import FPNBackbone

    defined = tuple(source.input_shape[1:])
    if not any(d is not None and d != s for d, s in zip(defined, shape)):
        return source
    if isinstance(source, FPNBackbone):
        model = FPNBackbone.from_config({**source.get_config(), "image_shape": shape})
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras.models.clone_model(source, input_tensors=keras.Input(shape))
    model.set_weights(source.get_weights())
    return model


def _reference(source, target, shape):
    """The source (or the part of it the target reproduces) taking ``shape`` inputs."""
    model = _source_at(source, shape)
    names = {layer.name for layer in model.layers}
    output_layer = target.layers[-1]
    if _dropped_classifier(names, {layer.name for layer in target.layers}):
        if output_layer.name in names:
            return keras.Model(_input(model), model.get_layer(output_layer.name).output)
        before = target.layers[-2].name
        if before not in names:
            raise ConversionError(f"Cannot verify {target.name!r}: no source layer named "
                                  f"{output_layer.name!r} or {before!r}.")
        features = model.get_layer(before).output
        if isinstance(output_layer, keras.layers.GlobalAveragePooling2D):
            features = keras.layers.GlobalAveragePooling2D()(features)
        elif isinstance(output_layer, keras.layers.GlobalMaxPooling2D):
            features = keras.layers.GlobalMaxPooling2D()(features)
        return keras.Model(_input(model), features)
    return model

"""ResNet v1 (bottleneck) with SE, CBAM, AW, AW-SE and AW-CBAM variants.

Structure and layer names follow ``keras.applications.ResNet50`` (stride in the
first 1x1 conv of a block, ``conv4_block6_2_conv``, BN epsilon 1.001e-5), except
that convolutions before BatchNormalization have no bias (the torchvision
convention behind the paper's Table 1 parameter counts, docs/table1.md).

Attention placement (paper Sec. 3.4, Fig. 2):

- SE / CBAM: after the last BN of the block, before the residual add
  (layer ``convN_blockM_se`` / ``convN_blockM_cbam``);
- AW: the 3x3 conv (``convN_blockM_2_conv``) is an `AWConv2D`.

CBAM variants (``cbam_variant``): ``"full"`` (average + max pooled channel gate and
spatial gate, as in CBAM), ``"maxpool"`` (the paper's "CBAM (MaxPool)": average +
max pooled channel gate, no spatial gate) and ``"spatial"`` (the paper's
"CBAM (Spatial)": average pooled channel gate and spatial gate).

Also: small CIFAR-style models for 28x28-32x32 inputs (``ResNetCIFAR`` ...): a 3x3
stem (stride ``stem_stride``, default 2), three stages of bottlenecks (default
one block each, widths 16/32/64, so outputs 64/128/256 channels) and strides
1, 2, 2 (their speed on a CPU: docs/speed.md).

The variant builders are registered through `aw_keras.applications.variants`.

Example:

>>> model = AWSEResNet50(input_shape=(64, 64, 3), classes=10)
>>> model.get_layer("conv4_block6_2_conv").__class__.__name__
'AWConv2D'
"""

import keras

from aw_keras.applications import input_utils
from aw_keras.applications import variants
from aw_keras.layers import AWConv2D
from aw_keras.layers import get_attention

BN_EPSILON = 1.001e-5

# depth -> blocks per stage (conv2 .. conv5)
STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def bottleneck_block(
    x,
    filters,
    stride=1,
    conv_shortcut=True,
    attention=None,
    attention_kwargs=None,
    use_aw=False,
    aw_kwargs=None,
    name=None,
):
    """A ResNet v1 bottleneck: 1x1 (stride) -> 3x3 -> 1x1 (4 * filters), + shortcut.

    Args:
        x: input tensor.
        filters: width of the bottleneck; the block outputs ``4 * filters``.
        stride: stride of the first 1x1 conv and of the projection shortcut.
        conv_shortcut: projection (1x1 conv + BN) shortcut if True, else identity.
        attention: None, "se", "cbam", "cbam_maxpool", "cbam_spatial", a layer
            class or callable (see `aw_keras.layers.get_attention`), applied after
            the last BN and before the residual add.
        attention_kwargs: extra arguments for the attention layer.
        use_aw: the 3x3 conv is an `AWConv2D`.
        aw_kwargs: extra arguments for `AWConv2D` (e.g. ``reduction_ratio``).
        name: block label, e.g. ``"conv4_block6"``.
    """
    if conv_shortcut:
        shortcut = keras.layers.Conv2D(
            4 * filters, 1, strides=stride, use_bias=False, name=name + "_0_conv"
        )(x)
        shortcut = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=name + "_0_bn")(
            shortcut
        )
    else:
        shortcut = x

    x = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=name + "_1_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=name + "_1_bn")(x)
    x = keras.layers.Activation("relu", name=name + "_1_relu")(x)

    if use_aw:
        x = AWConv2D(
            filters, 3, padding="same", use_bias=False, name=name + "_2_conv", **(aw_kwargs or {})
        )(x)
    else:
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name + "_2_conv")(
            x
        )
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=name + "_2_bn")(x)
    x = keras.layers.Activation("relu", name=name + "_2_relu")(x)

    x = keras.layers.Conv2D(4 * filters, 1, use_bias=False, name=name + "_3_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=name + "_3_bn")(x)

    layer = get_attention(attention, **{
        "name": f"{name}_{variants.attention_label(attention)}", **(attention_kwargs or {})})
    if layer is not None:
        x = layer(x)

    x = keras.layers.Add(name=name + "_add")([shortcut, x])
    return keras.layers.Activation("relu", name=name + "_out")(x)


def stack(x, filters, blocks, stride1=2, name=None, **block_kwargs):
    """``blocks`` bottlenecks; the first has a projection shortcut and ``stride1``."""
    x = bottleneck_block(x, filters, stride=stride1, name=name + "_block1", **block_kwargs)
    for i in range(2, blocks + 1):
        x = bottleneck_block(
            x, filters, conv_shortcut=False, name=f"{name}_block{i}", **block_kwargs
        )
    return x


def ResNet(
    stage_blocks,
    stage_filters=(64, 128, 256, 512),
    stem="imagenet",
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="resnet",
    attention=None,
    attention_kwargs=None,
    use_aw=False,
    aw_kwargs=None,
    stem_stride=1,
):
    """Generic bottleneck ResNet v1; the named builders (`ResNet50`, ...) call it.

    Args:
        stage_blocks: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet50.
        stage_filters: bottleneck width per stage (outputs are 4x wider).
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max pool, stages strided
            1, 2, 2, 2) or ``"cifar"`` (3x3/1 conv with ``stage_filters[0]``
            channels, no pool, stages strided 1, 2, 2, ...).
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in ``keras.applications.ResNet50``.
            ``weights``: None, a weights file of this model, or "imagenet" (the
            keras.applications ImageNet file of the plain ResNet50/101/152, from
            the Keras cache (downloaded into it once, as keras.applications
            does) or given by its path, converted so the model starts as
            that network: `aw_keras.applications.pretrained`).
        attention, attention_kwargs, use_aw, aw_kwargs: see `bottleneck_block`.
        stem_stride: stride of the "cifar" stem conv (1 or 2).
    """
    input_utils.require_channels_last()
    weights = input_utils.validate_weights(weights)
    input_utils.validate_pooling(pooling)
    input_utils.validate_classes(classes)
    if stem not in ("imagenet", "cifar"):
        raise ValueError(f"`stem` must be 'imagenet' or 'cifar', got {stem!r}.")
    if len(stage_blocks) != len(stage_filters):
        raise ValueError(
            f"`stage_blocks` {stage_blocks} and `stage_filters` {stage_filters} must "
            "have the same length."
        )
    if any(b < 1 for b in stage_blocks):
        raise ValueError(f"Every stage needs at least one block, got {stage_blocks}.")
    if stem_stride not in (1, 2):
        raise ValueError(f"`stem_stride` must be 1 or 2, got {stem_stride!r}.")
    if stem == "imagenet" and stem_stride != 1:
        raise ValueError("`stem_stride` applies to the 'cifar' stem only.")
    downsampling = 2 ** (len(stage_blocks) - 1) * (4 if stem == "imagenet" else stem_stride)
    input_shape = input_utils.obtain_input_shape(
        input_shape,
        input_tensor,
        default_size=224 if stem == "imagenet" else 32,
        min_size=max(8, downsampling),
        include_top=include_top,
    )
    imagenet = input_utils.imagenet_source(
        weights, _imagenet_architecture(stage_blocks, stage_filters, stem),
        include_top=include_top, input_shape=input_shape, pooling=pooling, classes=classes,
        classifier_activation=classifier_activation)
    inputs, x = input_utils.make_input(input_tensor, input_shape)

    if stem == "imagenet":
        x = keras.layers.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(x)
        x = keras.layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name="conv1_bn")(x)
        x = keras.layers.Activation("relu", name="conv1_relu")(x)
        x = keras.layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    else:
        x = keras.layers.Conv2D(
            stage_filters[0], 3, strides=stem_stride, padding="same", use_bias=False,
            name="conv1_conv",
        )(x)
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name="conv1_bn")(x)
        x = keras.layers.Activation("relu", name="conv1_relu")(x)

    block_kwargs = dict(
        attention=attention, attention_kwargs=attention_kwargs, use_aw=use_aw, aw_kwargs=aw_kwargs
    )
    for index, (blocks, filters) in enumerate(zip(stage_blocks, stage_filters)):
        x = stack(
            x,
            filters,
            blocks,
            stride1=1 if index == 0 else 2,
            name=f"conv{index + 2}",
            **block_kwargs,
        )

    x = input_utils.add_head(x, include_top, pooling, classes, classifier_activation)
    return input_utils.finish_model(inputs, x, name, weights, imagenet)


def _imagenet_architecture(stage_blocks, stage_filters, stem):
    """The keras.applications name ("resnet50", "resnet101", "resnet152") when it has
    ImageNet weights for this configuration, else None."""
    if stem != "imagenet" or tuple(stage_filters) != (64, 128, 256, 512):
        return None
    for depth, blocks in STAGE_BLOCKS.items():
        if tuple(stage_blocks) == blocks:
            return f"resnet{depth}"
    return None


def _create_resnet(variant, depth, **kwargs):
    """ResNet{depth} of ``variant`` (see `aw_keras.applications.variants`); ``kwargs``:
    a builder's arguments."""
    model_kwargs, block_args = variants.resolve(variant, kwargs)
    return ResNet(STAGE_BLOCKS[depth], **model_kwargs, **block_args)


# The builders below share keras.applications' signature; variants add
# keyword arguments at the end: `reduction_ratio` (SE/CBAM, default 16),
# `cbam_variant` ("full" | "maxpool" | "spatial"), `aw_reduction_ratio`
# (AWConv2D's r, default 16) and `aw_implementation` (AWConv2D's strategy).


@variants.register("plain", "resnet50")
def ResNet50(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
             classes=1000, classifier_activation="softmax", name="resnet50"):
    """ResNet50 v1."""
    return _create_resnet("plain", 50, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name)


@variants.register("se", "resnet50")
def SEResNet50(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
               classes=1000, classifier_activation="softmax", name="se_resnet50",
               reduction_ratio=16):
    """SE-ResNet50: SqueezeExcite after the last BN of every bottleneck."""
    return _create_resnet("se", 50, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name,
                          reduction_ratio=reduction_ratio)


@variants.register("cbam", "resnet50", cbam_variants=("full", "maxpool", "spatial"))
def CBAMResNet50(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                 classes=1000, classifier_activation="softmax", name="cbam_resnet50",
                 cbam_variant="full", reduction_ratio=16):
    """CBAM-ResNet50; ``cbam_variant`` "full", "maxpool" or "spatial"."""
    return _create_resnet("cbam", 50, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name,
                          cbam_variant=cbam_variant, reduction_ratio=reduction_ratio)


@variants.register("aw", "resnet50")
def AWResNet50(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
               classes=1000, classifier_activation="softmax", name="aw_resnet50",
               aw_reduction_ratio=16, aw_implementation="auto"):
    """AW-ResNet50: every bottleneck's 3x3 conv is an AWConv2D."""
    return _create_resnet("aw", 50, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name,
                          aw_reduction_ratio=aw_reduction_ratio,
                          aw_implementation=aw_implementation)


@variants.register("aw_se", "resnet50")
def AWSEResNet50(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                 classes=1000, classifier_activation="softmax", name="aw_se_resnet50",
                 reduction_ratio=16, aw_reduction_ratio=16, aw_implementation="auto"):
    """AW-SE-ResNet50: AW 3x3 convs and SqueezeExcite blocks."""
    return _create_resnet("aw_se", 50, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name,
                          reduction_ratio=reduction_ratio, aw_reduction_ratio=aw_reduction_ratio,
                          aw_implementation=aw_implementation)


@variants.register("aw_cbam", "resnet50", cbam_variants=("maxpool", "spatial"))
def AWCBAMResNet50(include_top=True, weights=None, input_tensor=None, input_shape=None,
                   pooling=None, classes=1000, classifier_activation="softmax",
                   name="aw_cbam_resnet50", cbam_variant="full", reduction_ratio=16,
                   aw_reduction_ratio=16, aw_implementation="auto"):
    """AW-CBAM-ResNet50; ``cbam_variant`` "full", "maxpool" or "spatial"."""
    return _create_resnet("aw_cbam", 50, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name,
                          cbam_variant=cbam_variant, reduction_ratio=reduction_ratio,
                          aw_reduction_ratio=aw_reduction_ratio,
                          aw_implementation=aw_implementation)


@variants.register("plain", "resnet101")
def ResNet101(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
              classes=1000, classifier_activation="softmax", name="resnet101"):
    """ResNet101 v1."""
    return _create_resnet("plain", 101, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name)


@variants.register("se", "resnet101")
def SEResNet101(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", name="se_resnet101",
                reduction_ratio=16):
    """SE-ResNet101."""
    return _create_resnet("se", 101, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name,
                          reduction_ratio=reduction_ratio)


@variants.register("cbam", "resnet101", cbam_variants=("full", "maxpool", "spatial"))
def CBAMResNet101(include_top=True, weights=None, input_tensor=None, input_shape=None,
                  pooling=None, classes=1000, classifier_activation="softmax",
                  name="cbam_resnet101", cbam_variant="full", reduction_ratio=16):
    """CBAM-ResNet101; ``cbam_variant`` "full", "maxpool" or "spatial"."""
    return _create_resnet("cbam", 101, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name,
                          cbam_variant=cbam_variant, reduction_ratio=reduction_ratio)


@variants.register("aw", "resnet101")
def AWResNet101(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", name="aw_resnet101",
                aw_reduction_ratio=16, aw_implementation="auto"):
    """AW-ResNet101."""
    return _create_resnet("aw", 101, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name,
                          aw_reduction_ratio=aw_reduction_ratio,
                          aw_implementation=aw_implementation)


@variants.register("aw_se", "resnet101")
def AWSEResNet101(include_top=True, weights=None, input_tensor=None, input_shape=None,
                  pooling=None, classes=1000, classifier_activation="softmax",
                  name="aw_se_resnet101", reduction_ratio=16, aw_reduction_ratio=16,
                  aw_implementation="auto"):
    """AW-SE-ResNet101."""
    return _create_resnet("aw_se", 101, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name,
                          reduction_ratio=reduction_ratio, aw_reduction_ratio=aw_reduction_ratio,
                          aw_implementation=aw_implementation)


@variants.register("aw_cbam", "resnet101", cbam_variants=("maxpool", "spatial"))
def AWCBAMResNet101(include_top=True, weights=None, input_tensor=None, input_shape=None,
                    pooling=None, classes=1000, classifier_activation="softmax",
                    name="aw_cbam_resnet101", cbam_variant="full", reduction_ratio=16,
                    aw_reduction_ratio=16, aw_implementation="auto"):
    """AW-CBAM-ResNet101; ``cbam_variant`` "full", "maxpool" or "spatial"."""
    return _create_resnet("aw_cbam", 101, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name,
                          cbam_variant=cbam_variant, reduction_ratio=reduction_ratio,
                          aw_reduction_ratio=aw_reduction_ratio,
                          aw_implementation=aw_implementation)


@variants.register("plain", "resnet152")
def ResNet152(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
              classes=1000, classifier_activation="softmax", name="resnet152"):
    """ResNet152 v1."""
    return _create_resnet("plain", 152, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name)


@variants.register("se", "resnet152")
def SEResNet152(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", name="se_resnet152",
                reduction_ratio=16):
    """SE-ResNet152."""
    return _create_resnet("se", 152, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name,
                          reduction_ratio=reduction_ratio)


@variants.register("cbam", "resnet152", cbam_variants=("full", "maxpool", "spatial"))
def CBAMResNet152(include_top=True, weights=None, input_tensor=None, input_shape=None,
                  pooling=None, classes=1000, classifier_activation="softmax",
                  name="cbam_resnet152", cbam_variant="full", reduction_ratio=16):
    """CBAM-ResNet152; ``cbam_variant`` "full", "maxpool" or "spatial"."""
    return _create_resnet("cbam", 152, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name,
                          cbam_variant=cbam_variant, reduction_ratio=reduction_ratio)


@variants.register("aw", "resnet152")
def AWResNet152(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", name="aw_resnet152",
                aw_reduction_ratio=16, aw_implementation="auto"):
    """AW-ResNet152."""
    return _create_resnet("aw", 152, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name,
                          aw_reduction_ratio=aw_reduction_ratio,
                          aw_implementation=aw_implementation)


@variants.register("aw_se", "resnet152")
def AWSEResNet152(include_top=True, weights=None, input_tensor=None, input_shape=None,
                  pooling=None, classes=1000, classifier_activation="softmax",
                  name="aw_se_resnet152", reduction_ratio=16, aw_reduction_ratio=16,
                  aw_implementation="auto"):
    """AW-SE-ResNet152."""
    return _create_resnet("aw_se", 152, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name,
                          reduction_ratio=reduction_ratio, aw_reduction_ratio=aw_reduction_ratio,
                          aw_implementation=aw_implementation)


@variants.register("aw_cbam", "resnet152", cbam_variants=("maxpool", "spatial"))
def AWCBAMResNet152(include_top=True, weights=None, input_tensor=None, input_shape=None,
                    pooling=None, classes=1000, classifier_activation="softmax",
                    name="aw_cbam_resnet152", cbam_variant="full", reduction_ratio=16,
                    aw_reduction_ratio=16, aw_implementation="auto"):
    """AW-CBAM-ResNet152; ``cbam_variant`` "full", "maxpool" or "spatial"."""
    return _create_resnet("aw_cbam", 152, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name,
                          cbam_variant=cbam_variant, reduction_ratio=reduction_ratio,
                          aw_reduction_ratio=aw_reduction_ratio,
                          aw_implementation=aw_implementation)


# --- CIFAR-size models (28x28 - 32x32 inputs) --------------------------------


def _create_resnet_cifar(variant, blocks, width, stem_stride, **kwargs):
    """`ResNetCIFAR` of ``variant``; ``kwargs``: the builder's other arguments."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"`width` must be a positive int, got {width!r}.")
    blocks = tuple(blocks)
    if len(blocks) != 3:
        raise ValueError(f"`blocks` must give 3 stages, got {blocks}.")
    model_kwargs, block_args = variants.resolve(variant, kwargs)
    return ResNet(blocks, stage_filters=(width, 2 * width, 4 * width), stem="cifar",
                  stem_stride=stem_stride, **model_kwargs, **block_args)


@variants.register("plain", "resnet_cifar")
def ResNetCIFAR(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                classes=10, classifier_activation="softmax", name="resnet_cifar", blocks=(1, 1, 1),
                width=16, stem_stride=2):
    """Small bottleneck ResNet for 28x28-32x32 inputs (default input 32x32x3).

    ``blocks`` per stage (3 stages, strides 1, 2, 2), bottleneck ``width`` of the
    first stage (doubling per stage; outputs are 4x wider), ``stem_stride`` of
    the 3x3 stem conv (2: a 28x28 input runs its stages at 14, 7, 4).
    """
    return _create_resnet_cifar("plain", include_top=include_top, weights=weights,
                                input_tensor=input_tensor, input_shape=input_shape,
                                pooling=pooling, classes=classes,
                                classifier_activation=classifier_activation, name=name,
                                blocks=blocks, width=width, stem_stride=stem_stride)


@variants.register("aw", "resnet_cifar")
def AWResNetCIFAR(include_top=True, weights=None, input_tensor=None, input_shape=None,
                  pooling=None, classes=10, classifier_activation="softmax",
                  name="aw_resnet_cifar", blocks=(1, 1, 1), width=16, stem_stride=2,
                  aw_reduction_ratio=16, aw_implementation="auto"):
    """`ResNetCIFAR` with AWConv2D 3x3 convs."""
    return _create_resnet_cifar("aw", include_top=include_top, weights=weights,
                                input_tensor=input_tensor, input_shape=input_shape,
                                pooling=pooling, classes=classes,
                                classifier_activation=classifier_activation, name=name,
                                blocks=blocks, width=width, stem_stride=stem_stride,
                                aw_reduction_ratio=aw_reduction_ratio,
                                aw_implementation=aw_implementation)


@variants.register("se", "resnet_cifar")
def SEResNetCIFAR(include_top=True, weights=None, input_tensor=None, input_shape=None,
                  pooling=None, classes=10, classifier_activation="softmax",
                  name="se_resnet_cifar", blocks=(1, 1, 1), width=16, stem_stride=2,
                  reduction_ratio=16):
    """`ResNetCIFAR` with SqueezeExcite blocks."""
    return _create_resnet_cifar("se", include_top=include_top, weights=weights,
                                input_tensor=input_tensor, input_shape=input_shape,
                                pooling=pooling, classes=classes,
                                classifier_activation=classifier_activation, name=name,
                                blocks=blocks, width=width, stem_stride=stem_stride,
                                reduction_ratio=reduction_ratio)


@variants.register("aw_se", "resnet_cifar")
def AWSEResNetCIFAR(include_top=True, weights=None, input_tensor=None, input_shape=None,
                    pooling=None, classes=10, classifier_activation="softmax",
                    name="aw_se_resnet_cifar", blocks=(1, 1, 1), width=16, stem_stride=2,
                    reduction_ratio=16, aw_reduction_ratio=16, aw_implementation="auto"):
    """`ResNetCIFAR` with AWConv2D 3x3 convs and SqueezeExcite blocks."""
    return _create_resnet_cifar("aw_se", include_top=include_top, weights=weights,
                                input_tensor=input_tensor, input_shape=input_shape,
                                pooling=pooling, classes=classes,
                                classifier_activation=classifier_activation, name=name,
                                blocks=blocks, width=width, stem_stride=stem_stride,
                                reduction_ratio=reduction_ratio,
                                aw_reduction_ratio=aw_reduction_ratio,
                                aw_implementation=aw_implementation)

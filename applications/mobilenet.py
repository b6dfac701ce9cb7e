"""MobileNet v1 with SE, CBAM, AW, AW-SE and AW-CBAM variants.

Structure, argument order and layer names follow ``keras.applications.MobileNet``
(``conv1``, ``conv_dw_7``, ``conv_pw_7``, ``conv_preds``, ...); ``weights`` defaults
to None and accepts None, a weights file of the model, or "imagenet" (the
keras.applications MobileNet ImageNet file, from the Keras cache, downloaded into
it as keras.applications does, or by path; converted so the model starts as that network: `aw_keras.applications.pretrained`).

Placement (the readings of the paper's Table 1 that reproduce its parameter
counts: docs/table1.md):

- AW: every one of the 13 pointwise convs (``conv_pw_N``) is an `AWConv2D`;
- SE / CBAM: after both the depthwise and the pointwise conv unit (after its
  ReLU6) of every block (``conv_dw_N_se``, ``conv_pw_N_se``).

The variant builders are registered through `aw_keras.applications.variants`.

Example:

>>> model = AWSEMobileNet(input_shape=(64, 64, 3), alpha=0.25, classes=5)
"""

import keras

from aw_keras.applications import input_utils
from aw_keras.applications import variants
from aw_keras.layers import AWConv2D
from aw_keras.layers import get_attention

# (pointwise filters, stride) of the 13 depthwise separable blocks.
BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


def _attend(x, attention, attention_kwargs, name):
    label = variants.attention_label(attention)
    layer = get_attention(attention, **{"name": f"{name}_{label}", **(attention_kwargs or {})})
    return x if layer is None else layer(x)


def conv_block(x, filters, alpha, strides=(1, 1)):
    """Stem: 3x3 conv (no bias) + BN + ReLU6, layers ``conv1``, ``conv1_bn``, ``conv1_relu``."""
    filters = int(filters * alpha)
    x = keras.layers.Conv2D(
        filters, (3, 3), padding="same", use_bias=False, strides=strides, name="conv1"
    )(x)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    return keras.layers.ReLU(6.0, name="conv1_relu")(x)


def depthwise_conv_block(
    x,
    pointwise_conv_filters,
    alpha,
    depth_multiplier=1,
    strides=(1, 1),
    block_id=1,
    attention=None,
    attention_kwargs=None,
    use_aw=False,
    aw_kwargs=None,
):
    """Depthwise 3x3 + BN + ReLU6 [+ attention], pointwise 1x1 + BN + ReLU6 [+ attention].

    With ``use_aw`` the pointwise conv is an `AWConv2D`.
    """
    pointwise_conv_filters = int(pointwise_conv_filters * alpha)
    if strides != (1, 1):
        x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"conv_pad_{block_id}")(x)
    x = keras.layers.DepthwiseConv2D(
        (3, 3),
        padding="same" if strides == (1, 1) else "valid",
        depth_multiplier=depth_multiplier,
        strides=strides,
        use_bias=False,
        name=f"conv_dw_{block_id}",
    )(x)
    x = keras.layers.BatchNormalization(name=f"conv_dw_{block_id}_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"conv_dw_{block_id}_relu")(x)
    x = _attend(x, attention, attention_kwargs, f"conv_dw_{block_id}")

    conv_kwargs = dict(padding="same", use_bias=False, strides=(1, 1), name=f"conv_pw_{block_id}")
    if use_aw:
        x = AWConv2D(pointwise_conv_filters, (1, 1), **conv_kwargs, **(aw_kwargs or {}))(x)
    else:
        x = keras.layers.Conv2D(pointwise_conv_filters, (1, 1), **conv_kwargs)(x)
    x = keras.layers.BatchNormalization(name=f"conv_pw_{block_id}_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"conv_pw_{block_id}_relu")(x)
    return _attend(x, attention, attention_kwargs, f"conv_pw_{block_id}")


def _mobilenet(*, input_shape, alpha, depth_multiplier, dropout, include_top, weights,
               input_tensor, pooling, classes, classifier_activation, name, attention,
               attention_kwargs, use_aw, aw_kwargs):
    """MobileNet v1 whose blocks get ``attention``, ``attention_kwargs``, ``use_aw`` and
    ``aw_kwargs`` (see `depthwise_conv_block`); the other arguments: `MobileNet`'s."""
    input_utils.require_channels_last()
    weights = input_utils.validate_weights(weights)
    input_utils.validate_pooling(pooling)
    input_utils.validate_classes(classes)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ValueError(f"`alpha` must be a positive number, got {alpha!r}.")
    if int(32 * alpha) < 1:
        raise ValueError(f"`alpha`={alpha} leaves the stem with no filters; use alpha >= 1/32.")
    if isinstance(depth_multiplier, bool) or not isinstance(depth_multiplier, int) or (
        depth_multiplier < 1
    ):
        raise ValueError(f"`depth_multiplier` must be a positive int, got {depth_multiplier!r}.")
    if not 0 <= dropout < 1:
        raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}.")
    input_shape = input_utils.obtain_input_shape(
        input_shape, input_tensor, default_size=224, min_size=32, include_top=include_top
    )
    imagenet = input_utils.imagenet_source(
        weights, "mobilenet", include_top=include_top, input_shape=input_shape,
        pooling=pooling, classes=classes, classifier_activation=classifier_activation,
        alpha=alpha, depth_multiplier=depth_multiplier, dropout=dropout)
    inputs, x = input_utils.make_input(input_tensor, input_shape)

    x = conv_block(x, 32, alpha, strides=(2, 2))
    for block_id, (filters, stride) in enumerate(BLOCKS, start=1):
        x = depthwise_conv_block(
            x,
            filters,
            alpha,
            depth_multiplier,
            strides=(stride, stride),
            block_id=block_id,
            attention=attention,
            attention_kwargs=attention_kwargs,
            use_aw=use_aw,
            aw_kwargs=aw_kwargs,
        )

    if include_top:
        x = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
        x = keras.layers.Dropout(dropout, name="dropout")(x)
        x = keras.layers.Conv2D(classes, (1, 1), padding="same", name="conv_preds")(x)
        x = keras.layers.Reshape((classes,), name="reshape_2")(x)
        x = keras.layers.Activation(classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return input_utils.finish_model(inputs, x, name, weights, imagenet)


def _create_mobilenet(variant, **kwargs):
    """MobileNet of ``variant`` (see `aw_keras.applications.variants`); ``kwargs``: a
    builder's arguments."""
    model_kwargs, block_args = variants.resolve(variant, kwargs)
    return _mobilenet(**model_kwargs, **block_args)


@variants.register("plain", "mobilenet")
def MobileNet(input_shape=None, alpha=1.0, depth_multiplier=1, dropout=1e-3, include_top=True,
              weights=None, input_tensor=None, pooling=None, classes=1000,
              classifier_activation="softmax", name="mobilenet"):
    """MobileNet v1."""
    return _create_mobilenet("plain", input_shape=input_shape, alpha=alpha,
                             depth_multiplier=depth_multiplier, dropout=dropout,
                             include_top=include_top, weights=weights, input_tensor=input_tensor,
                             pooling=pooling, classes=classes,
                             classifier_activation=classifier_activation, name=name)


@variants.register("se", "mobilenet")
def SEMobileNet(input_shape=None, alpha=1.0, depth_multiplier=1, dropout=1e-3, include_top=True,
                weights=None, input_tensor=None, pooling=None, classes=1000,
                classifier_activation="softmax", name="se_mobilenet", reduction_ratio=16):
    """SE-MobileNet: SqueezeExcite after every depthwise and pointwise conv unit."""
    return _create_mobilenet("se", input_shape=input_shape, alpha=alpha,
                             depth_multiplier=depth_multiplier, dropout=dropout,
                             include_top=include_top, weights=weights, input_tensor=input_tensor,
                             pooling=pooling, classes=classes,
                             classifier_activation=classifier_activation, name=name,
                             reduction_ratio=reduction_ratio)


@variants.register("cbam", "mobilenet", cbam_variants=("spatial",))
def CBAMMobileNet(input_shape=None, alpha=1.0, depth_multiplier=1, dropout=1e-3, include_top=True,
                  weights=None, input_tensor=None, pooling=None, classes=1000,
                  classifier_activation="softmax", name="cbam_mobilenet", cbam_variant="spatial",
                  reduction_ratio=16):
    """CBAM-MobileNet; ``cbam_variant`` "spatial" (paper, default), "full" or "maxpool"."""
    return _create_mobilenet("cbam", input_shape=input_shape, alpha=alpha,
                             depth_multiplier=depth_multiplier, dropout=dropout,
                             include_top=include_top, weights=weights, input_tensor=input_tensor,
                             pooling=pooling, classes=classes,
                             classifier_activation=classifier_activation, name=name,
                             cbam_variant=cbam_variant, reduction_ratio=reduction_ratio)


@variants.register("aw", "mobilenet")
def AWMobileNet(input_shape=None, alpha=1.0, depth_multiplier=1, dropout=1e-3, include_top=True,
                weights=None, input_tensor=None, pooling=None, classes=1000,
                classifier_activation="softmax", name="aw_mobilenet", aw_reduction_ratio=16,
                aw_implementation="auto"):
    """AW-MobileNet: all 13 pointwise convs are AWConv2D."""
    return _create_mobilenet("aw", input_shape=input_shape, alpha=alpha,
                             depth_multiplier=depth_multiplier, dropout=dropout,
                             include_top=include_top, weights=weights, input_tensor=input_tensor,
                             pooling=pooling, classes=classes,
                             classifier_activation=classifier_activation, name=name,
                             aw_reduction_ratio=aw_reduction_ratio,
                             aw_implementation=aw_implementation)


@variants.register("aw_se", "mobilenet")
def AWSEMobileNet(input_shape=None, alpha=1.0, depth_multiplier=1, dropout=1e-3, include_top=True,
                  weights=None, input_tensor=None, pooling=None, classes=1000,
                  classifier_activation="softmax", name="aw_se_mobilenet", reduction_ratio=16,
                  aw_reduction_ratio=16, aw_implementation="auto"):
    """AW-SE-MobileNet."""
    return _create_mobilenet("aw_se", input_shape=input_shape, alpha=alpha,
                             depth_multiplier=depth_multiplier, dropout=dropout,
                             include_top=include_top, weights=weights, input_tensor=input_tensor,
                             pooling=pooling, classes=classes,
                             classifier_activation=classifier_activation, name=name,
                             reduction_ratio=reduction_ratio,
                             aw_reduction_ratio=aw_reduction_ratio,
                             aw_implementation=aw_implementation)


@variants.register("aw_cbam", "mobilenet", cbam_variants=("spatial",))
def AWCBAMMobileNet(input_shape=None, alpha=1.0, depth_multiplier=1, dropout=1e-3,
                    include_top=True, weights=None, input_tensor=None, pooling=None, classes=1000,
                    classifier_activation="softmax", name="aw_cbam_mobilenet",
                    cbam_variant="spatial", reduction_ratio=16, aw_reduction_ratio=16,
                    aw_implementation="auto"):
    """AW-CBAM-MobileNet; ``cbam_variant`` "spatial" (paper, default), "full" or "maxpool"."""
    return _create_mobilenet("aw_cbam", input_shape=input_shape, alpha=alpha,
                             depth_multiplier=depth_multiplier, dropout=dropout,
                             include_top=include_top, weights=weights, input_tensor=input_tensor,
                             pooling=pooling, classes=classes,
                             classifier_activation=classifier_activation, name=name,
                             cbam_variant=cbam_variant, reduction_ratio=reduction_ratio,
                             aw_reduction_ratio=aw_reduction_ratio,
                             aw_implementation=aw_implementation)

"""Feature-pyramid backbones on the ResNet bodies, with the paper's Table 2 variants.

The FPN of Lin et al. (2017) as torchvision, detectron2 and mmdetection build it:
1x1 lateral convs (with bias) on C2..C5 of the ResNet body (strides 4..32) to
``fpn_channels``, a top-down path ``m_l = lateral_l + upsample_nearest(m_{l+1})``
upsampled to the lateral's exact size (any input size works), and a 3x3 output
conv on each merged map; no norm, no activation. Extra levels stay plain:

- ``levels="retinanet"``: P3..P7, ``P6 = conv3x3/2(C5)``, ``P7 = conv3x3/2(relu(P6))``;
- ``levels="two_stage"``: P2..P6, ``P6 = maxpool(1, stride 2)(P5)`` (Faster R-CNN).

Variants (paper Sec. 4.2, Table 2; `aw_keras.applications.variants`): ``aw``
makes every lateral and output conv an `AWConv2D`; ``se`` / ``cbam`` put the
block right before each lateral and output conv (on C_l, and on the merged map);
``aw_se`` / ``aw_cbam`` do both. The ResNet body stays the plain ResNet (the
reading of Sec. 4.2 used here); ``attention_in_body=True`` gives the body the
same variant too, which is beyond the paper.

Every level has ``fpn_channels`` channels and spatial size ``ceil(H / 2**l)``,
so the backbone plugs into ``keras_hub.models.RetinaNetObjectDetector`` (and
`aw_keras.detection.RetinaNet`) unchanged. Layer names: the body's are
keras.applications' (``conv4_block6_out``), the FPN's ``fpn_lateral{l}``,
``fpn_output{l}``, ``fpn_merge{l}``, attention blocks ``fpn_lateral{l}_se``...

Inputs are RGB images in [0, 255], as the detection pipelines give them; the
backbone preprocesses them itself (``input_preprocessing``): ``"scale"`` (x / 255,
the default) or ``"caffe"`` (RGB -> BGR and the ImageNet mean subtracted, exactly
``keras.applications.resnet.preprocess_input``: what the keras.applications
ImageNet ResNet weights expect; the builders pick it with ``weights="imagenet"``).
Pretrained starts: ``weights="imagenet"`` (ResNet50/101 bodies: keras.applications'
notop file, from the Keras cache or downloaded into it)
or `aw_keras.applications.from_pretrained` from a trained plain FPN (same pyramid)
or a classification ResNet (same body, fresh FPN); see docs/pretrained.md.

Example:

>>> backbone = AWResNet50FPN(input_shape=(512, 512, 3))         # doctest: +SKIP
>>> sorted(backbone.pyramid_outputs)                               # doctest: +SKIP
['P3', 'P4', 'P5', 'P6', 'P7']
>>> features = backbone(images)        # {"P3": (N, 64, 64, 256), ..., "P7": (N, 4, 4, 256)}
>>> backbone = AWResNet50FPN(weights="imagenet")    # ImageNet body  # doctest: +SKIP
"""

import keras

from aw_keras.applications import imagenet_weights
from aw_keras.applications import input_utils
from aw_keras.applications import resnet
from aw_keras.applications import variants
from aw_keras.layers import AWConv2D
from aw_keras.layers import get_attention

LEVELS = {"retinanet": (3, 7), "two_stage": (2, 6)}
# The mean attention of an AWConv2D at initialisation (sigmoid of a zero-mean input).
AW_INITIAL_ATTENTION = 0.5
BODIES = {
    "resnet50": dict(stage_blocks=resnet.STAGE_BLOCKS[50], stage_filters=(64, 128, 256, 512)),
    "resnet101": dict(stage_blocks=resnet.STAGE_BLOCKS[101], stage_filters=(64, 128, 256, 512)),
    # a small body for 64-256 px images (the demo and the tests): one block per stage
    "resnet_small": dict(stage_blocks=(1, 1, 1, 1), stage_filters=(16, 32, 64, 128)),
}
DEFAULT_SIZES = {"resnet50": 512, "resnet101": 512, "resnet_small": 128}
# The keras.applications architecture whose ImageNet weights fit each body.
IMAGENET_BODIES = {"resnet50": "resnet50", "resnet101": "resnet101"}
INPUT_PREPROCESSING = ("scale", "caffe", None)
# keras.applications.resnet.preprocess_input ("caffe"): BGR means, subtracted after RGB -> BGR.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# The layers that preprocess the input, per mode (they hold no weights).
PREPROCESSING_LAYERS = {"scale": ("rescale",), "caffe": ("rgb_to_bgr", "imagenet_mean"),
                        None: ()}


def float32_convs_on_1x1(backbone):
    """Under a bfloat16 policy, makes the backbone's Conv2D layers whose input is 1x1
    (P6 -> P7 at 64 px) compute in float32; returns their names. TF 2.21's CPU
    bfloat16 kernel gradient of a 3x3 stride-2 conv on a 1x1 input is sometimes
    non-finite (3 of 30 identical calls in a standalone check), which made
    RetinaNet's first AdamW step NaN in 2 of 4 identical 64 px runs."""
    changed = []
    for layer in backbone.layers:
        if not isinstance(layer, keras.layers.Conv2D) or layer.compute_dtype != "bfloat16":
            continue
        try:
            shape = tuple(layer.input.shape)
        except (AttributeError, ValueError):  # not called once in the graph
            continue
        if len(shape) == 4 and shape[1] == 1 and shape[2] == 1:
            layer.dtype_policy = keras.dtype_policies.get("float32")
            changed.append(layer.name)
    return changed


@keras.saving.register_keras_serializable(package="aw_keras")
class CropToMatch(keras.layers.Layer):
    """Crops ``inputs[0]`` (bottom/right) to the height and width of ``inputs[1]``:
    after a 2x nearest upsampling that is torchvision's nearest interpolation to
    the lateral's exact size (odd sizes included)."""

    def call(self, inputs):
        upsampled, reference = inputs
        shape = keras.ops.shape(reference)
        return upsampled[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, input_shapes):
        upsampled, reference = input_shapes
        return (upsampled[0], reference[1], reference[2], upsampled[3])


@keras.saving.register_keras_serializable(package="aw_keras")
class ReverseChannels(keras.layers.Layer):
    """Reverses the channel (last) axis: RGB -> BGR. A pure permutation: exact."""

    def call(self, inputs):
        return keras.ops.flip(inputs, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape


def preprocess(inputs, input_preprocessing, input_scale=1.0 / 255.0):
    """The FPN's input preprocessing (see `FPNBackbone`) applied to ``inputs``."""
    if input_preprocessing == "caffe":
        x = ReverseChannels(name="rgb_to_bgr")(inputs)
        # x * 1 + (-mean): the same float operation as preprocess_input's x - mean.
        return keras.layers.Rescaling(1.0, offset=[-m for m in CAFFE_MEAN_BGR],
                                      name="imagenet_mean")(x)
    if input_preprocessing == "scale" and input_scale is not None:
        return keras.layers.Rescaling(input_scale, name="rescale")(inputs)
    return inputs


def _fpn_conv(x, filters, kernel_size, name, block_args, strides=1):
    """The attention block (if any) right before a conv, then the conv: an
    AWConv2D for the AW variants, a Conv2D otherwise."""
    attention = get_attention(block_args["attention"], **{
        "name": f"{name}_{variants.attention_label(block_args['attention'])}",
        **(block_args["attention_kwargs"] or {})})
    if attention is not None:
        x = attention(x)
    common = dict(padding="same", strides=strides, name=name)
    if block_args["use_aw"]:
        aw_kwargs = block_args["aw_kwargs"]
        # No normalisation follows an FPN conv, so AW's initial gain (the mean of
        # 1 + A, A = sigmoid(~N(0, 1)): 1.5) would compound through the lateral and
        # output convs (2.25x the plain FPN's features, heads saturated at the
        # start: docs/detection.md). The kernel starts 1/1.5 smaller instead, so AW
        # starts at the plain FPN's scale (lecun_uniform of the plain convs otherwise).
        gain = 1.0 + AW_INITIAL_ATTENTION if aw_kwargs.get(
            "attention_mode", "residual") == "residual" else AW_INITIAL_ATTENTION
        initializer = keras.initializers.VarianceScaling(
            scale=1.0 / gain ** 2, mode="fan_in", distribution="uniform")
        return AWConv2D(filters, kernel_size, kernel_initializer=initializer, **common,
                        **aw_kwargs)(x)
    return keras.layers.Conv2D(filters, kernel_size, kernel_initializer="lecun_uniform",
                               **common)(x)


def feature_pyramid(features, levels, fpn_channels, block_args):
    """P levels from ``features`` ``{2: C2, ..., 5: C5}`` (see the module docstring)."""
    min_level, max_level = LEVELS[levels]
    merged, pyramid = None, {}
    for level in range(5, min_level - 1, -1):
        lateral = _fpn_conv(features[level], fpn_channels, 1, f"fpn_lateral{level}", block_args)
        if merged is not None:
            upsampled = keras.layers.UpSampling2D(2, name=f"fpn_upsample{level}")(merged)
            upsampled = CropToMatch(name=f"fpn_crop{level}")([upsampled, lateral])
            lateral = keras.layers.Add(name=f"fpn_merge{level}")([lateral, upsampled])
        merged = lateral
        pyramid[level] = _fpn_conv(merged, fpn_channels, 3, f"fpn_output{level}", block_args)
    plain = dict(padding="same", strides=2, kernel_initializer="lecun_uniform")
    if levels == "retinanet":
        pyramid[6] = keras.layers.Conv2D(fpn_channels, 3, name="fpn_p6", **plain)(features[5])
        relu = keras.layers.ReLU(name="fpn_p6_relu")(pyramid[6])
        pyramid[7] = keras.layers.Conv2D(fpn_channels, 3, name="fpn_p7", **plain)(relu)
    else:
        pyramid[6] = keras.layers.MaxPooling2D(1, strides=2, name="fpn_p6")(pyramid[5])
    return {f"P{level}": pyramid[level] for level in range(min_level, max_level + 1)}


@keras.saving.register_keras_serializable(package="aw_keras")
class FPNBackbone(keras.Model):
    """A ResNet body with an FPN of one attention variant; outputs ``{"P3": ..}``.

    A functional model with the attributes keras-hub's detectors read
    (``image_shape``, ``min_level``, ``max_level``, ``pyramid_outputs``); its
    config holds the constructor arguments, so a detector built on it saves and
    loads as ``.keras``.

    Build it through the registered builders (`AWResNet50FPN`, ...,
    ``aw_keras.applications.get_model("aw_resnet50_fpn")``).

    Args:
        body: a key of `BODIES` ("resnet50", "resnet101", "resnet_small").
        variant: a key of `aw_keras.applications.variants.VARIANTS`.
        image_shape: (height, width, 3); None sizes are allowed for feature
            extraction (a detector needs a fixed size).
        input_scale: the factor of ``input_preprocessing="scale"`` (layer
            ``rescale``): 1/255 (default) takes images in [0, 255] as the
            detection pipelines give them; None: no scaling. Unused by the
            other modes.
        input_preprocessing: what the backbone does to its RGB [0, 255] input
            before the body: "scale" (default; multiply by ``input_scale``),
            "caffe" (RGB -> BGR, then the ImageNet BGR mean [103.939, 116.779,
            123.68] subtracted, no scaling; layers ``rgb_to_bgr`` and
            ``imagenet_mean``: bit for bit
            ``keras.applications.resnet.preprocess_input``, what the
            keras.applications ImageNet ResNet weights expect), or None (the
            input as it is).
        levels: "retinanet" (P3..P7) or "two_stage" (P2..P6).
        fpn_channels: channels of every pyramid level.
        attention_in_body: give the ResNet body the same variant (beyond the paper).
        reduction_ratio, cbam_variant, aw_reduction_ratio, aw_implementation:
            the variant's arguments (see `aw_keras.applications.variants`).
    """

    def __init__(self, body="resnet50", variant="plain", image_shape=(512, 512, 3),
                 levels="retinanet", fpn_channels=256, attention_in_body=False,
                 input_scale=1.0 / 255.0, input_preprocessing="scale",
                 reduction_ratio=16, cbam_variant="full", aw_reduction_ratio=16,
                 aw_implementation="auto", dtype=None, **kwargs):
        if body not in BODIES:
            raise ValueError(f"`body` must be one of {sorted(BODIES)}, received body={body!r}.")
        if levels not in LEVELS:
            raise ValueError(f"`levels` must be one of {sorted(LEVELS)}, received levels={levels!r}.")
        if isinstance(fpn_channels, bool) or not isinstance(fpn_channels, int) or fpn_channels < 1:
            raise ValueError(f"`fpn_channels` must be a positive int, received {fpn_channels!r}.")
        image_shape = tuple(image_shape)
        if len(image_shape) != 3 or image_shape[-1] is None:
            raise ValueError(f"`image_shape` must be (height, width, channels) with known "
                             f"channels, received image_shape={image_shape!r}.")
        for size in image_shape[:2]:
            if size is not None and size < 32:
                raise ValueError(f"`image_shape` sides must be at least 32 (the C5 stride), "
                                 f"received image_shape={image_shape!r}.")
        if input_preprocessing not in INPUT_PREPROCESSING:
            raise ValueError(f"`input_preprocessing` must be one of {INPUT_PREPROCESSING}, "
                             f"received input_preprocessing={input_preprocessing!r}.")
        if input_preprocessing == "caffe" and image_shape[-1] != 3:
            raise ValueError("`input_preprocessing='caffe'` needs RGB images (3 channels), "
                             f"received image_shape={image_shape!r}.")
        spec = variants.get_variant(variant)
        given = dict(reduction_ratio=reduction_ratio, cbam_variant=cbam_variant,
                     aw_reduction_ratio=aw_reduction_ratio, aw_implementation=aw_implementation)
        _, block_args = variants.resolve(variant, {k: given[k] for k in spec.arguments})
        _, plain_args = variants.resolve("plain", {})

        inputs = keras.Input(image_shape, name="images")
        x = preprocess(inputs, input_preprocessing, input_scale)
        stage_blocks = BODIES[body]["stage_blocks"]
        # the body's layers are called on `inputs`: C2..C5 are their output tensors
        body_model = resnet.ResNet(include_top=False, input_tensor=x, name=body,
                                   **BODIES[body],
                                   **(block_args if attention_in_body else plain_args))
        features = {
            level: body_model.get_layer(f"conv{level}_block{blocks}_out").output
            for level, blocks in zip(range(2, 6), stage_blocks)
        }
        pyramid = feature_pyramid(features, levels, fpn_channels, block_args)
        super().__init__(inputs=inputs, outputs=pyramid, **kwargs)
        if dtype is not None:
            self.dtype_policy = keras.dtype_policies.get(dtype)

        self.body = body
        self.variant = variant
        self.image_shape = image_shape
        self.levels = levels
        self.min_level, self.max_level = LEVELS[levels]
        self.fpn_channels = fpn_channels
        self.attention_in_body = attention_in_body
        self.input_scale = input_scale
        self.input_preprocessing = input_preprocessing
        self.reduction_ratio = reduction_ratio
        self.cbam_variant = cbam_variant
        self.aw_reduction_ratio = aw_reduction_ratio
        self.aw_implementation = aw_implementation

    @property
    def pyramid_outputs(self):
        """``{"P3": KerasTensor, ...}``: the pyramid of the functional graph, e.g.
        for ``keras.Model(backbone.inputs, backbone.pyramid_outputs)``."""
        levels = range(self.min_level, self.max_level + 1)
        return {f"P{level}": tensor for level, tensor in zip(levels, self.outputs)}

    @property
    def feature_layer_names(self):
        """``{"C2": "conv2_block3_out", ..., "C5": ...}``: the body layers whose
        outputs the FPN reads (strides 4..32)."""
        blocks = BODIES[self.body]["stage_blocks"]
        return {f"C{level}": f"conv{level}_block{n}_out" for level, n in zip(range(2, 6), blocks)}

    @property
    def preprocessing_layer_names(self):
        """The names of the input preprocessing layers (none hold weights)."""
        if self.input_preprocessing == "scale" and self.input_scale is None:
            return ()
        return PREPROCESSING_LAYERS[self.input_preprocessing]

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable,
                  "dtype": keras.dtype_policies.serialize(self.dtype_policy)}
        config.update(
            body=self.body, variant=self.variant, image_shape=self.image_shape,
            levels=self.levels, fpn_channels=self.fpn_channels,
            attention_in_body=self.attention_in_body, input_scale=self.input_scale,
            input_preprocessing=self.input_preprocessing,
            reduction_ratio=self.reduction_ratio,
            cbam_variant=self.cbam_variant, aw_reduction_ratio=self.aw_reduction_ratio,
            aw_implementation=self.aw_implementation,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)


def _create_fpn(variant, body, input_shape=None, weights=None, input_preprocessing="auto",
                **kwargs):
    """The `FPNBackbone` of ``variant`` on ``body``; ``kwargs``: a builder's other
    arguments. ``weights``: None, a weights file of this backbone, or "imagenet"
    (or a keras.applications ImageNet file by its name): the keras.applications
    ResNet50/101 ImageNet body, from the Keras cache or downloaded into it
    (`aw_keras.applications.imagenet_weights`), converted in (the FPN keeps
    its fresh initialisation). ``input_preprocessing="auto"``: "caffe" with
    ImageNet weights (what they expect), else "scale"."""
    weights = input_utils.validate_weights(weights)
    imagenet = weights == "imagenet" or imagenet_weights.is_imagenet_file(weights)
    if input_preprocessing == "auto":
        input_preprocessing = "caffe" if imagenet else "scale"
    variants.resolve(variant, kwargs)  # checks the variant arguments as every family does
    if input_shape is None:
        input_shape = (DEFAULT_SIZES[body],) * 2 + (3,)
    source = None
    if imagenet:
        if body not in IMAGENET_BODIES:
            raise ValueError(
                f"`weights='imagenet'`: no keras.applications ImageNet weights exist for the "
                f"{body!r} body (they exist for {sorted(IMAGENET_BODIES)}); pass `weights=None` "
                "or a weights file of this backbone, or start from a trained plain backbone "
                "with aw_keras.applications.from_pretrained.")
        # The body only: the notop file. Checked before building, so a missing file fails fast.
        source = imagenet_weights.ImageNetSource(
            IMAGENET_BODIES[body], include_top=False, input_shape=input_shape,
            path=None if weights == "imagenet" else weights)
        source.resolve_path()
    backbone = FPNBackbone(body=body, variant=variant, image_shape=input_shape,
                           input_preprocessing=input_preprocessing, **kwargs)
    if source is not None:
        from aw_keras.applications import pretrained

        # Body transplanted by name and verified on C2..C5; the FPN keeps its initialisation.
        pretrained.transplant(source.build_plain(), backbone)
    elif weights is not None:
        backbone.load_weights(weights)
    return backbone


# The builders: keras-hub-style backbone arguments; variants add their keyword
# arguments at the end (see aw_keras.applications.variants). Default input: 512x512
# (ResNet50/101), 128x128 (the small body). ``weights``: None, a weights file of the
# backbone, or "imagenet" (ResNet50/101 bodies; see `_create_fpn`);
# ``input_preprocessing``: "auto" ("caffe" with ImageNet weights, else "scale"),
# "scale", "caffe" or None (see `FPNBackbone`).

@variants.register("plain", "resnet50_fpn", task="detection_backbone")
def ResNet50FPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=256,
                attention_in_body=False, input_preprocessing="auto", name="resnet50_fpn"):
    """ResNet50 with a plain FPN."""
    return _create_fpn("plain", "resnet50", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name)

@variants.register("se", "resnet50_fpn", task="detection_backbone")
def SEResNet50FPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=256,
                  attention_in_body=False, input_preprocessing="auto", name="se_resnet50_fpn", reduction_ratio=16):
    """ResNet50 FPN with a SqueezeExcite block right before every lateral and output conv."""
    return _create_fpn("se", "resnet50", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name, reduction_ratio=reduction_ratio)

@variants.register("cbam", "resnet50_fpn", cbam_variants=('full',), task="detection_backbone")
def CBAMResNet50FPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=256,
                    attention_in_body=False, input_preprocessing="auto", name="cbam_resnet50_fpn", cbam_variant="full", reduction_ratio=16):
    """ResNet50 FPN with a CBAM block right before every lateral and output conv."""
    return _create_fpn("cbam", "resnet50", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name, cbam_variant=cbam_variant, reduction_ratio=reduction_ratio)

@variants.register("aw", "resnet50_fpn", task="detection_backbone")
def AWResNet50FPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=256,
                  attention_in_body=False, input_preprocessing="auto", name="aw_resnet50_fpn", aw_reduction_ratio=16, aw_implementation="auto"):
    """ResNet50 FPN whose lateral and output convs are AWConv2D (Table 2's AW-FPN)."""
    return _create_fpn("aw", "resnet50", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name, aw_reduction_ratio=aw_reduction_ratio, aw_implementation=aw_implementation)

@variants.register("aw_se", "resnet50_fpn", task="detection_backbone")
def AWSEResNet50FPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=256,
                    attention_in_body=False, input_preprocessing="auto", name="aw_se_resnet50_fpn", reduction_ratio=16, aw_reduction_ratio=16, aw_implementation="auto"):
    """ResNet50 FPN with AWConv2D lateral/output convs and SqueezeExcite before them."""
    return _create_fpn("aw_se", "resnet50", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name, reduction_ratio=reduction_ratio, aw_reduction_ratio=aw_reduction_ratio, aw_implementation=aw_implementation)

@variants.register("aw_cbam", "resnet50_fpn", cbam_variants=('full',), task="detection_backbone")
def AWCBAMResNet50FPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=256,
                      attention_in_body=False, input_preprocessing="auto", name="aw_cbam_resnet50_fpn", cbam_variant="full", reduction_ratio=16, aw_reduction_ratio=16, aw_implementation="auto"):
    """ResNet50 FPN with AWConv2D lateral/output convs and CBAM before them."""
    return _create_fpn("aw_cbam", "resnet50", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name, cbam_variant=cbam_variant, reduction_ratio=reduction_ratio, aw_reduction_ratio=aw_reduction_ratio, aw_implementation=aw_implementation)

@variants.register("plain", "resnet101_fpn", task="detection_backbone")
def ResNet101FPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=256,
                 attention_in_body=False, input_preprocessing="auto", name="resnet101_fpn"):
    """ResNet101 with a plain FPN."""
    return _create_fpn("plain", "resnet101", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name)

@variants.register("se", "resnet101_fpn", task="detection_backbone")
def SEResNet101FPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=256,
                   attention_in_body=False, input_preprocessing="auto", name="se_resnet101_fpn", reduction_ratio=16):
    """ResNet101 FPN with a SqueezeExcite block right before every lateral and output conv."""
    return _create_fpn("se", "resnet101", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name, reduction_ratio=reduction_ratio)

@variants.register("cbam", "resnet101_fpn", cbam_variants=('full',), task="detection_backbone")
def CBAMResNet101FPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=256,
                     attention_in_body=False, input_preprocessing="auto", name="cbam_resnet101_fpn", cbam_variant="full", reduction_ratio=16):
    """ResNet101 FPN with a CBAM block right before every lateral and output conv."""
    return _create_fpn("cbam", "resnet101", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name, cbam_variant=cbam_variant, reduction_ratio=reduction_ratio)

@variants.register("aw", "resnet101_fpn", task="detection_backbone")
def AWResNet101FPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=256,
                   attention_in_body=False, input_preprocessing="auto", name="aw_resnet101_fpn", aw_reduction_ratio=16, aw_implementation="auto"):
    """ResNet101 FPN whose lateral and output convs are AWConv2D (Table 2's AW-FPN)."""
    return _create_fpn("aw", "resnet101", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name, aw_reduction_ratio=aw_reduction_ratio, aw_implementation=aw_implementation)

@variants.register("aw_se", "resnet101_fpn", task="detection_backbone")
def AWSEResNet101FPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=256,
                     attention_in_body=False, input_preprocessing="auto", name="aw_se_resnet101_fpn", reduction_ratio=16, aw_reduction_ratio=16, aw_implementation="auto"):
    """ResNet101 FPN with AWConv2D lateral/output convs and SqueezeExcite before them."""
    return _create_fpn("aw_se", "resnet101", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name, reduction_ratio=reduction_ratio, aw_reduction_ratio=aw_reduction_ratio, aw_implementation=aw_implementation)

@variants.register("aw_cbam", "resnet101_fpn", cbam_variants=('full',), task="detection_backbone")
def AWCBAMResNet101FPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=256,
                       attention_in_body=False, input_preprocessing="auto", name="aw_cbam_resnet101_fpn", cbam_variant="full", reduction_ratio=16, aw_reduction_ratio=16, aw_implementation="auto"):
    """ResNet101 FPN with AWConv2D lateral/output convs and CBAM before them."""
    return _create_fpn("aw_cbam", "resnet101", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name, cbam_variant=cbam_variant, reduction_ratio=reduction_ratio, aw_reduction_ratio=aw_reduction_ratio, aw_implementation=aw_implementation)

@variants.register("plain", "resnet_small_fpn", task="detection_backbone")
def ResNetSmallFPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=64,
                   attention_in_body=False, input_preprocessing="auto", name="resnet_small_fpn"):
    """The small ResNet body (one bottleneck per stage, 64-256 px images) with a plain FPN."""
    return _create_fpn("plain", "resnet_small", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name)

@variants.register("se", "resnet_small_fpn", task="detection_backbone")
def SEResNetSmallFPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=64,
                     attention_in_body=False, input_preprocessing="auto", name="se_resnet_small_fpn", reduction_ratio=16):
    """The small ResNet body (one bottleneck per stage, 64-256 px images) FPN with a SqueezeExcite block right before every lateral and output conv."""
    return _create_fpn("se", "resnet_small", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name, reduction_ratio=reduction_ratio)

@variants.register("cbam", "resnet_small_fpn", cbam_variants=('full',), task="detection_backbone")
def CBAMResNetSmallFPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=64,
                       attention_in_body=False, input_preprocessing="auto", name="cbam_resnet_small_fpn", cbam_variant="full", reduction_ratio=16):
    """The small ResNet body (one bottleneck per stage, 64-256 px images) FPN with a CBAM block right before every lateral and output conv."""
    return _create_fpn("cbam", "resnet_small", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name, cbam_variant=cbam_variant, reduction_ratio=reduction_ratio)

@variants.register("aw", "resnet_small_fpn", task="detection_backbone")
def AWResNetSmallFPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=64,
                     attention_in_body=False, input_preprocessing="auto", name="aw_resnet_small_fpn", aw_reduction_ratio=16, aw_implementation="auto"):
    """The small ResNet body (one bottleneck per stage, 64-256 px images) FPN whose lateral and output convs are AWConv2D (Table 2's AW-FPN)."""
    return _create_fpn("aw", "resnet_small", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name, aw_reduction_ratio=aw_reduction_ratio, aw_implementation=aw_implementation)

@variants.register("aw_se", "resnet_small_fpn", task="detection_backbone")
def AWSEResNetSmallFPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=64,
                       attention_in_body=False, input_preprocessing="auto", name="aw_se_resnet_small_fpn", reduction_ratio=16, aw_reduction_ratio=16, aw_implementation="auto"):
    """The small ResNet body (one bottleneck per stage, 64-256 px images) FPN with AWConv2D lateral/output convs and SqueezeExcite before them."""
    return _create_fpn("aw_se", "resnet_small", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name, reduction_ratio=reduction_ratio, aw_reduction_ratio=aw_reduction_ratio, aw_implementation=aw_implementation)

@variants.register("aw_cbam", "resnet_small_fpn", cbam_variants=('full',), task="detection_backbone")
def AWCBAMResNetSmallFPN(input_shape=None, weights=None, levels="retinanet", fpn_channels=64,
                         attention_in_body=False, input_preprocessing="auto", name="aw_cbam_resnet_small_fpn", cbam_variant="full", reduction_ratio=16, aw_reduction_ratio=16, aw_implementation="auto"):
    """The small ResNet body (one bottleneck per stage, 64-256 px images) FPN with AWConv2D lateral/output convs and CBAM before them."""
    return _create_fpn("aw_cbam", "resnet_small", input_shape=input_shape, weights=weights, levels=levels,
                       fpn_channels=fpn_channels, attention_in_body=attention_in_body,
                       input_preprocessing=input_preprocessing,
                       name=name, cbam_variant=cbam_variant, reduction_ratio=reduction_ratio, aw_reduction_ratio=aw_reduction_ratio, aw_implementation=aw_implementation)

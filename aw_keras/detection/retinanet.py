"""RetinaNet on an FPN backbone: keras-hub's detector with three defects fixed.

`RetinaNet` is ``keras_hub.models.RetinaNetObjectDetector`` (same heads, same
losses, same ``fit``/``predict`` contract) with:

- the prior-probability bias on the classification head, where the focal-loss
  paper puts it (keras-hub 0.32 puts it on the box head and leaves the
  classification bias at 0: an initial classification loss of ~10 instead of
  ~1.5);
- decoded boxes made finite: the log-scale width/height deltas are clamped at
  ``log(1000 / 16)`` (torchvision's bound) and the boxes clipped to the image
  before NMS (unclamped, one step from random init gave boxes of 3.8e37 and inf);
- an NMS decoder with the evaluation settings of the references (confidence
  threshold 0.05, IoU 0.5, 100 detections) instead of a 0.5 threshold that
  depresses mAP.

The image size is fixed per model (keras-hub's ``AnchorGenerator`` cannot
predict at a second size): build the backbone with the size you train and
evaluate at; the data pipeline resizes and pads every image to it.

Example:

>>> from aw_keras.applications import get_model                   # doctest: +SKIP
>>> backbone = get_model("aw_resnet50_fpn", input_shape=(512, 512, 3))
>>> detector = RetinaNet(backbone, num_classes=80)
>>> detector.compile(optimizer="adam")
>>> detector.fit(dataset)   # (images, {"boxes": xyxy pixels, "labels"}) padded with -1
>>> detector.predict(images)["boxes"]
"""

import difflib
import inspect
import math

import keras

try:
    import keras_hub
except ImportError as error:  # the optional "detection" extra
    raise ImportError("aw_keras.detection needs keras-hub: pip install 'aw_keras[detection]'.") from error

from aw_keras.applications.fpn import float32_convs_on_1x1  # noqa: E402
from aw_keras.detection.saving import saved_policy  # noqa: E402

BOX_DELTA_CLIP = math.log(1000.0 / 16)
# keyword arguments keras-hub's detector takes through ``**kwargs`` (its base classes:
# keras_hub's Task takes ``compile``, Keras's Functional ``name`` and ``trainable``)
_BASE_KEYWORDS = ("name", "trainable", "compile")


def accepted_keywords():
    """The keyword arguments `RetinaNet` accepts, sorted."""
    names = set(_BASE_KEYWORDS)
    for function in (RetinaNet.__init__, keras_hub.models.RetinaNetObjectDetector.__init__):
        names.update(name for name, parameter in inspect.signature(function).parameters.items()
                     if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD,
                                           parameter.KEYWORD_ONLY))
    names.discard("self")
    return sorted(names)


def _check_keywords(kwargs):
    """TypeError naming the keyword arguments of ``kwargs`` that `RetinaNet` does not take."""
    accepted = accepted_keywords()
    unknown = sorted(key for key in kwargs if key not in accepted)
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, accepted, n=1)
        if close:
            hints.append(f"{key!r}: did you mean {close[0]!r}?")
    raise TypeError(
        f"RetinaNet got unknown keyword argument(s) {unknown}"
        + (f" ({'; '.join(hints)})" if hints else "")
        + f". Accepted: {', '.join(accepted)}.")


@keras.saving.register_keras_serializable(package="aw_keras")
class RetinaNet(keras_hub.models.RetinaNetObjectDetector):
    """keras-hub's RetinaNet with the prior bias, box decoding and NMS fixed.

    Takes the arguments of ``keras_hub.models.RetinaNetObjectDetector`` with
    ``bounding_box_format="xyxy"`` by default, plus:

    Args:
        box_delta_clip: upper bound of the decoded log-scale width/height deltas.
        anchor_size: anchor side in units of each level's stride (keras-hub's
            ``AnchorGenerator``; 4: 32 px at P3 to 512 px at P7, three scales and
            aspect ratios 0.5, 1, 2 each). Objects much smaller than the P3
            anchors match none at IoU 0.5: use 2 for objects of ~10-30 px (small
            images). Ignored when an ``anchor_generator`` is given.
        confidence_threshold, iou_threshold, max_detections: the NMS decoder's
            settings, used when no ``prediction_decoder`` is given.

    Any other keyword argument is a ``TypeError`` that names it and lists the
    accepted ones (keras-hub's detector would ignore it silently).
    """

    def __init__(
        self,
        backbone,
        num_classes,
        bounding_box_format="xyxy",
        classification_head_prior_probability=0.01,
        box_delta_clip=BOX_DELTA_CLIP,
        anchor_size=4,
        confidence_threshold=0.05,
        iou_threshold=0.5,
        max_detections=100,
        prediction_decoder=None,
        **kwargs,
    ):
        _check_keywords(kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int, received {num_classes!r}.")
        if not 0.0 < classification_head_prior_probability < 1.0:
            raise ValueError(
                "`classification_head_prior_probability` must be in (0, 1), received "
                f"{classification_head_prior_probability!r}."
            )
        missing = [a for a in ("image_shape", "min_level", "max_level") if not hasattr(backbone, a)]
        if missing:
            raise TypeError(
                f"`backbone` must be an FPN backbone with attributes image_shape, min_level and "
                f"max_level (e.g. aw_keras.applications.get_model('resnet50_fpn')); "
                f"{type(backbone).__name__} lacks {missing}."
            )
        if isinstance(anchor_size, bool) or not isinstance(anchor_size, (int, float)) \
                or not anchor_size > 0:
            raise ValueError(f"`anchor_size` must be a positive number, received {anchor_size!r}.")
        float32_convs_on_1x1(backbone)
        if kwargs.get("anchor_generator") is None:
            kwargs["anchor_generator"] = keras_hub.layers.AnchorGenerator(
                bounding_box_format, min_level=backbone.min_level, max_level=backbone.max_level,
                num_scales=3, aspect_ratios=[0.5, 1.0, 2.0], anchor_size=anchor_size,
                dtype="float32")  # exact anchors under a mixed policy too
        if prediction_decoder is None:
            prediction_decoder = keras_hub.layers.NonMaxSuppression(
                bounding_box_format=bounding_box_format,
                from_logits=True,
                confidence_threshold=confidence_threshold,
                iou_threshold=iou_threshold,
                max_detections=max_detections,
                dtype="float32",  # float32 boxes and scores under a mixed policy too
            )
        super().__init__(
            backbone=backbone,
            num_classes=num_classes,
            bounding_box_format=bounding_box_format,
            classification_head_prior_probability=classification_head_prior_probability,
            prediction_decoder=prediction_decoder,
            **kwargs,
        )
        self.box_delta_clip = float(box_delta_clip)
        self.anchor_size = anchor_size
        self.confidence_threshold = confidence_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self.classification_head_prior_probability = classification_head_prior_probability
        prior = -math.log((1.0 - classification_head_prior_probability)
                          / classification_head_prior_probability)
        classification_bias = self.classification_head.prediction_layer.bias
        classification_bias.assign(keras.ops.full(classification_bias.shape, prior))
        box_bias = self.box_head.prediction_layer.bias
        box_bias.assign(keras.ops.zeros(box_bias.shape))

    def decode_predictions(self, predictions, data):
        """keras-hub's decoding with clamped deltas and boxes clipped to the image."""
        ops = keras.ops
        images = data[0] if isinstance(data, (list, tuple)) else data
        height, width, channels = ops.shape(images)[1:]
        # float32 whatever the policy: under mixed_bfloat16 the heads' outputs are
        # bfloat16 and the box decoding mixes them with float32 anchors (a TypeError);
        # the predictions stay float32, as under float32 and mixed_float16.
        deltas = ops.cast(predictions["bbox_regression"], "float32")
        logits = ops.cast(predictions["cls_logits"], "float32")
        deltas = ops.concatenate(
            [deltas[..., :2], ops.minimum(deltas[..., 2:], self.box_delta_clip)], axis=-1
        )
        anchors = self.anchor_generator(images)
        anchors = ops.cast(ops.concatenate(list(anchors.values()), axis=0), "float32")
        boxes = keras.utils.bounding_boxes.decode_deltas_to_boxes(
            anchors=anchors,
            boxes_delta=deltas,
            encoded_format="center_xywh",
            anchor_format=self.anchor_generator.bounding_box_format,
            box_format="xyxy",
            image_shape=(height, width, channels),
        )
        limits = ops.cast(ops.stack([width, height, width, height]), boxes.dtype)
        boxes = ops.clip(boxes, 0.0, limits)
        decoder = self.prediction_decoder
        boxes = keras.utils.bounding_boxes.convert_format(
            boxes, source="xyxy", target=decoder.bounding_box_format, height=height, width=width
        )
        decoded = self._suppress(boxes, logits, images)
        decoded["boxes"] = keras.utils.bounding_boxes.convert_format(
            decoded["boxes"], source=decoder.bounding_box_format,
            target=self.bounding_box_format, height=height, width=width,
        )
        return decoded

    def _suppress(self, boxes, logits, images):
        """The NMS decoder on a batch; image by image when the batch size is not
        static (keras-hub's NMS needs a static batch: Keras retraces predict with
        an unknown batch for a last, smaller batch, and exported signatures have one)."""
        decoder = self.prediction_decoder
        if boxes.shape[0] is not None:
            return decoder(boxes, logits, images=images)
        import tensorflow as tf

        def one_image(args):
            box, logit, image = args
            decoded = decoder(box[None], logit[None], images=image[None])
            return {key: value[0] for key, value in decoded.items()}

        return tf.map_fn(one_image, (boxes, logits, images), fn_output_signature={
            "boxes": tf.TensorSpec((decoder.max_detections, 4), boxes.dtype),
            "confidence": tf.TensorSpec((decoder.max_detections,), logits.dtype),
            "labels": tf.TensorSpec((decoder.max_detections,), tf.int32),
            "num_detections": tf.TensorSpec((), tf.int32),
        })

    @classmethod
    def from_config(cls, config):
        # A loaded detector is uncompiled unless its file holds a compile config (then
        # Keras compiles it): keras-hub's default compile would add an Adam optimizer
        # that finds no saved variables in files written without one (aw-train's).
        config = {"compile": False, **config}
        with saved_policy(config):
            return super().from_config(config)

    def get_config(self):
        config = super().get_config()
        config.update(
            box_delta_clip=self.box_delta_clip,
            anchor_size=self.anchor_size,
            confidence_threshold=self.confidence_threshold,
            iou_threshold=self.iou_threshold,
            max_detections=self.max_detections,
        )
        return config

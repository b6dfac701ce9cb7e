"""Faster R-CNN with FPN (Ren et al. 2015, Lin et al. 2017) in Keras 3, on our FPN backbones.

The two-stage detector as torchvision's ``fasterrcnn_resnet50_fpn`` defines it
(its defaults unless the argument says otherwise):

- RPN shared over P2..P6: 3x3 conv + ReLU, 1x1 objectness (one logit per
  anchor) and 1x1 box deltas; anchors of one size per level (``anchor_size``
  strides: 32, 64, 128, 256, 512 px) x aspect ratios 0.5, 1, 2, from
  ``keras_hub.layers.AnchorGenerator`` (``num_scales=1``). Training targets:
  IoU >= 0.7 positive, < 0.3 negative, every ground-truth box's best anchors
  positive too; 256 anchors per image, at most half positive; binary
  cross-entropy (mean over sampled anchors) + smooth-L1 (beta 1/9, summed over
  positives, divided by the number of sampled anchors), box coder weights (1, 1, 1, 1).
- Proposals: per level the top ``rpn_pre_nms_top_k`` anchors by objectness,
  decoded, clipped to the image, boxes with a side < 1e-3 dropped, NMS 0.7 within
  each level, the best ``rpn_post_nms_top_k`` per image kept (train 2000/2000,
  test 1000/1000). In training the ground-truth boxes are added to them.
- RoI heads: 512 RoIs per image, at most 25 % positive (IoU >= 0.5, the rest
  negative); multi-level RoIAlign 7x7, sampling ratio 2, aligned
  (`aw_keras.detection.roi_align`) on P2..P5; two FC-1024 + ReLU; class logits
  (``num_classes + 1``, index 0 is background) and class-specific deltas
  (weights (10, 10, 5, 5)); cross-entropy (mean over sampled RoIs) + smooth-L1
  (beta 1/9) on the positives' true-class deltas, divided by the sampled RoIs.
- Inference: softmax, class-specific boxes decoded (log-scale deltas clamped at
  ``log(1000 / 16)``) and clipped, boxes with a side < 1e-2 dropped, score
  threshold 0.05, NMS 0.5 per class, 100 detections per image.

``predict`` (and calling the model) returns what `aw_keras.detection.RetinaNet`
returns, so the COCO evaluation, plots and exports are shared:
``{"boxes": (B, 100, 4) xyxy pixels, "confidence": (B, 100), "labels": (B, 100)
int32 in 0..num_classes-1, "num_detections": (B,)}``, padded with -1.

``fit`` takes ``(images, {"boxes": (B, N, 4) xyxy pixels, "labels": (B, N)})``
padded with -1 (`aw_keras.data.coco.detection_dataset`); images without boxes
are fine. Images are RGB in [0, 255] at the backbone's fixed ``image_shape``
(the backbone preprocesses them). Runs in graph mode (``tf.function``); not
under XLA (``CombinedNonMaxSuppression`` and ``CropAndResize`` have no XLA
kernels), so the model declares ``supports_jit = False``: ``jit_compile="auto"``
resolves to no XLA and ``jit_compile=True`` falls back with Keras' warning.
TensorFlow backend only.

For small images shrink the anchors and the sample counts, e.g.
``anchor_size=4`` (16..256 px), ``rpn_pre_nms_top_k_train=200``,
``rpn_post_nms_top_k_train=100``, ``roi_samples_per_image=64``.

Example:

>>> from aw_keras.applications import get_model                 # doctest: +SKIP
>>> backbone = get_model("aw_resnet50_fpn", input_shape=(512, 512, 3), levels="two_stage")
>>> detector = FasterRCNN(backbone, num_classes=80)
>>> detector.compile(optimizer=keras.optimizers.SGD(0.02, momentum=0.9))
>>> detector.fit(dataset)
>>> detector.predict(images)["boxes"]
"""

import keras
import numpy as np

try:
    import tensorflow as tf
except ImportError as error:
    raise ImportError("aw_keras.detection.FasterRCNN is built on TensorFlow ops and needs "
                      "TensorFlow: pip install tensorflow (aw_keras's default install; "
                      "RetinaNet runs on every Keras backend without it).") from error

try:
    import keras_hub
except ImportError as error:  # the optional "detection" extra
    raise ImportError("aw_keras.detection needs keras-hub: pip install 'aw_keras[detection]'.") from error

from aw_keras.detection import boxes as box_ops
from aw_keras.detection.saving import saved_policy
from aw_keras.detection.roi_align import multilevel_roi_align

SMOOTH_L1_BETA = 1.0 / 9.0
RPN_LEVELS = (2, 6)     # P2..P6
ROI_LEVELS = (2, 5)     # P2..P5


def smooth_l1(x, beta=SMOOTH_L1_BETA):
    """torchvision's ``smooth_l1_loss`` elementwise: 0.5 x^2 / beta below beta, |x| - beta/2 above."""
    x = tf.abs(x)
    return tf.where(x < beta, 0.5 * x * x / beta, x - 0.5 * beta)


@keras.saving.register_keras_serializable(package="aw_keras")
class FasterRCNN(keras.Model):
    """FPN Faster R-CNN on an FPN backbone with P2..P6 (``levels="two_stage"``).

    Args:
        backbone: an `aw_keras.applications.fpn.FPNBackbone` (or a registered
            model with the same attributes: ``image_shape`` fixed,
            ``min_level == 2``, ``max_level == 6``) returning ``{"P2": .., "P6": ..}``.
        num_classes: object classes, labels 0..num_classes-1 (background is extra).
        anchor_size: anchor side in strides of each level (8: 32 px at P2 ... 512 px at P6).
        aspect_ratios: anchor height/width ratios.
        rpn_positive_iou, rpn_negative_iou: anchor matching thresholds (0.7, 0.3).
        rpn_samples_per_image, rpn_positive_fraction: RPN sampling (256, 0.5).
        rpn_pre_nms_top_k_train, rpn_post_nms_top_k_train: proposals in
            training (2000 per level before NMS, 2000 per image after).
        rpn_pre_nms_top_k_test, rpn_post_nms_top_k_test: at inference (1000, 1000).
        rpn_nms_iou: NMS IoU of the proposals (0.7).
        rpn_min_size: proposals with a side below this (pixels) are dropped.
        roi_positive_iou, roi_negative_iou: RoI matching (0.5, 0.5).
        roi_samples_per_image, roi_positive_fraction: RoI sampling (512, 0.25).
        roi_output_size, sampling_ratio: RoIAlign (7, 2).
        representation_size: width of the two FC layers (1024).
        score_threshold, nms_iou, max_detections: inference (0.05, 0.5, 100).
        box_min_size: detections with a side below this (pixels) are dropped.
        seed: seed of the samplers (None: random).
    """

    def __init__(self, backbone, num_classes, anchor_size=8.0, aspect_ratios=(0.5, 1.0, 2.0),
                 rpn_positive_iou=0.7, rpn_negative_iou=0.3, rpn_samples_per_image=256,
                 rpn_positive_fraction=0.5, rpn_pre_nms_top_k_train=2000,
                 rpn_post_nms_top_k_train=2000, rpn_pre_nms_top_k_test=1000,
                 rpn_post_nms_top_k_test=1000, rpn_nms_iou=0.7, rpn_min_size=1e-3,
                 roi_positive_iou=0.5, roi_negative_iou=0.5, roi_samples_per_image=512,
                 roi_positive_fraction=0.25, roi_output_size=7, sampling_ratio=2,
                 representation_size=1024, score_threshold=0.05, nms_iou=0.5,
                 max_detections=100, box_min_size=1e-2, seed=None, **kwargs):
        if keras.backend.backend() != "tensorflow":
            raise NotImplementedError(
                f"FasterRCNN runs on Keras's TensorFlow backend only (its RPN, RoIAlign and "
                f"NMS are TensorFlow ops); Keras is running on {keras.backend.backend()!r}. "
                "Use KERAS_BACKEND=tensorflow, or aw_keras.detection.RetinaNet, which runs "
                "on every backend.")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int, received {num_classes!r}.")
        missing = [a for a in ("image_shape", "min_level", "max_level") if not hasattr(backbone, a)]
        if missing:
            raise TypeError(
                "`backbone` must be an FPN backbone with attributes image_shape, min_level and "
                "max_level (e.g. aw_keras.applications.get_model('resnet50_fpn', "
                f"levels='two_stage')); {type(backbone).__name__} lacks {missing}.")
        if (backbone.min_level, backbone.max_level) != RPN_LEVELS:
            raise ValueError(
                "`backbone` must give P2..P6 (build it with levels='two_stage'), received "
                f"P{backbone.min_level}..P{backbone.max_level}.")
        image_shape = tuple(backbone.image_shape)
        if image_shape[0] is None or image_shape[1] is None:
            raise ValueError(f"`backbone.image_shape` must be fixed, received {image_shape}.")
        if isinstance(anchor_size, bool) or not isinstance(anchor_size, (int, float)) \
                or not anchor_size > 0:
            raise ValueError(f"`anchor_size` must be a positive number, received {anchor_size!r}.")
        super().__init__(**kwargs)
        self.backbone = backbone
        self.num_classes = num_classes
        self.anchor_size = anchor_size
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.rpn_positive_iou = rpn_positive_iou
        self.rpn_negative_iou = rpn_negative_iou
        self.rpn_samples_per_image = int(rpn_samples_per_image)
        self.rpn_positive_fraction = rpn_positive_fraction
        self.rpn_pre_nms_top_k_train = int(rpn_pre_nms_top_k_train)
        self.rpn_post_nms_top_k_train = int(rpn_post_nms_top_k_train)
        self.rpn_pre_nms_top_k_test = int(rpn_pre_nms_top_k_test)
        self.rpn_post_nms_top_k_test = int(rpn_post_nms_top_k_test)
        self.rpn_nms_iou = rpn_nms_iou
        self.rpn_min_size = rpn_min_size
        self.roi_positive_iou = roi_positive_iou
        self.roi_negative_iou = roi_negative_iou
        self.roi_samples_per_image = int(roi_samples_per_image)
        self.roi_positive_fraction = roi_positive_fraction
        self.roi_output_size = int(roi_output_size)
        self.sampling_ratio = int(sampling_ratio)
        self.representation_size = int(representation_size)
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.max_detections = int(max_detections)
        self.box_min_size = box_min_size
        self.seed = seed
        self.image_shape = image_shape
        # not XLA-compilable (CombinedNonMaxSuppression, CropAndResize): jit_compile="auto"
        # then resolves to False
        self.supports_jit = False

        self.anchor_generator = keras_hub.layers.AnchorGenerator(
            "xyxy", min_level=RPN_LEVELS[0], max_level=RPN_LEVELS[1], num_scales=1,
            aspect_ratios=list(self.aspect_ratios), anchor_size=anchor_size)
        anchors = self.anchor_generator(np.zeros((1,) + image_shape, "float32"))
        self._anchors = [np.asarray(keras.ops.convert_to_numpy(anchors[f"P{level}"]), "float32")
                         for level in range(RPN_LEVELS[0], RPN_LEVELS[1] + 1)]
        num_anchors = len(self.aspect_ratios)
        channels = backbone.outputs[0].shape[-1]
        normal = keras.initializers.RandomNormal(stddev=0.01)
        self.rpn_conv = keras.layers.Conv2D(channels, 3, padding="same", activation="relu",
                                            kernel_initializer=normal, name="rpn_conv")
        self.rpn_objectness = keras.layers.Conv2D(num_anchors, 1, kernel_initializer=normal,
                                                  name="rpn_objectness")
        self.rpn_box_deltas = keras.layers.Conv2D(4 * num_anchors, 1, kernel_initializer=normal,
                                                  name="rpn_box_deltas")
        self.box_head_fc1 = keras.layers.Dense(self.representation_size, activation="relu",
                                               name="box_head_fc1")
        self.box_head_fc2 = keras.layers.Dense(self.representation_size, activation="relu",
                                               name="box_head_fc2")
        self.class_logits = keras.layers.Dense(num_classes + 1, kernel_initializer=normal,
                                               name="class_logits")
        self.box_deltas = keras.layers.Dense(
            4 * (num_classes + 1), kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            name="box_deltas")
        feature_shape = (None, None, None, channels)
        self.rpn_conv.build(feature_shape)
        self.rpn_objectness.build(feature_shape)
        self.rpn_box_deltas.build(feature_shape)
        self.box_head_fc1.build((None, self.roi_output_size ** 2 * channels))
        self.box_head_fc2.build((None, self.representation_size))
        self.class_logits.build((None, self.representation_size))
        self.box_deltas.build((None, self.representation_size))
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "rpn_objectness_loss", "rpn_box_loss", "classification_loss",
                         "box_loss")
        }
        self.built = True

    # ------------------------------------------------------------------ pieces

    @property
    def metrics(self):
        return list(self.loss_trackers.values())

    def _rpn(self, features):
        """Objectness logits and deltas per level: lists of (B, N_l), (B, N_l, 4)."""
        logits, deltas = [], []
        for level in range(RPN_LEVELS[0], RPN_LEVELS[1] + 1):
            x = self.rpn_conv(features[f"P{level}"])
            batch = tf.shape(x)[0]
            logits.append(tf.reshape(tf.cast(self.rpn_objectness(x), tf.float32), [batch, -1]))
            deltas.append(tf.reshape(tf.cast(self.rpn_box_deltas(x), tf.float32),
                                     [batch, -1, 4]))
        return logits, deltas

    def _proposals(self, logits, deltas, pre_nms_top_k, post_nms_top_k):
        """torchvision's ``RegionProposalNetwork.filter_proposals``: (B, K, 4) boxes
        and a (B, K) validity mask, K = post_nms_top_k, best first."""
        height, width = self.image_shape[:2]
        boxes, scores, level_ids = [], [], []
        for i, (logit, delta, anchors) in enumerate(zip(logits, deltas, self._anchors)):
            k = min(pre_nms_top_k, anchors.shape[0])
            top, index = tf.math.top_k(tf.stop_gradient(logit), k=k)
            chosen = tf.gather(tf.stop_gradient(delta), index, batch_dims=1)
            decoded = box_ops.decode_boxes(chosen, tf.gather(tf.constant(anchors), index),
                                           box_ops.RPN_BOX_WEIGHTS)
            boxes.append(box_ops.clip_boxes(decoded, height, width))
            scores.append(tf.sigmoid(top))
            level_ids.append(np.full((k,), i, "int32"))
        boxes = tf.concat(boxes, axis=1)
        scores = tf.concat(scores, axis=1)
        level_ids = np.concatenate(level_ids)
        sides = tf.minimum(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1])
        scores = tf.where(sides >= self.rpn_min_size, scores, -tf.ones_like(scores))
        # NMS within each level: levels act as the classes of combined NMS
        one_hot = tf.constant(np.eye(len(self._anchors), dtype=bool)[level_ids])   # (K, L)
        level_scores = tf.where(one_hot[None], scores[..., None], -1.0)
        nmsed, _, _, valid = tf.image.combined_non_max_suppression(
            boxes[:, :, None, :], level_scores, max_output_size_per_class=post_nms_top_k,
            max_total_size=post_nms_top_k, iou_threshold=self.rpn_nms_iou,
            score_threshold=-0.5, pad_per_class=False, clip_boxes=False)
        mask = tf.range(post_nms_top_k)[None, :] < valid[:, None]
        return tf.stop_gradient(nmsed), mask

    def _box_head(self, features, rois):
        """Class logits (B, R, K+1) and class-specific deltas (B, R, K+1, 4) of ``rois``."""
        pooled = multilevel_roi_align(
            {f"P{level}": features[f"P{level}"] for level in range(ROI_LEVELS[0], ROI_LEVELS[1] + 1)},
            rois, self.roi_output_size, self.sampling_ratio, *ROI_LEVELS)
        batch, count = tf.shape(rois)[0], tf.shape(rois)[1]
        x = tf.reshape(pooled, [batch * count, -1])
        x = self.box_head_fc2(self.box_head_fc1(x))
        logits = tf.reshape(tf.cast(self.class_logits(x), tf.float32),
                            [batch, count, self.num_classes + 1])
        deltas = tf.reshape(tf.cast(self.box_deltas(x), tf.float32),
                            [batch, count, self.num_classes + 1, 4])
        return logits, deltas

    # ------------------------------------------------------------------ inference

    def call(self, images, training=False):
        """Detections ``{"boxes", "confidence", "labels", "num_detections"}`` (see the module)."""
        images = tf.convert_to_tensor(images)
        features = self.backbone(images, training=training)
        logits, deltas = self._rpn(features)
        proposals, valid = self._proposals(logits, deltas, self.rpn_pre_nms_top_k_test,
                                           self.rpn_post_nms_top_k_test)
        class_logits, box_deltas = self._box_head(features, proposals)
        return self._detections(proposals, valid, class_logits, box_deltas)

    def _detections(self, proposals, valid, class_logits, box_deltas):
        height, width = self.image_shape[:2]
        scores = tf.nn.softmax(class_logits, axis=-1)[..., 1:]               # (B, R, K)
        boxes = box_ops.decode_boxes(box_deltas[:, :, 1:], proposals[:, :, None, :],
                                     box_ops.HEAD_BOX_WEIGHTS)
        boxes = box_ops.clip_boxes(boxes, height, width)                      # (B, R, K, 4)
        sides = tf.minimum(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1])
        keep = (sides >= self.box_min_size) & valid[..., None]
        scores = tf.where(keep, scores, tf.zeros_like(scores))
        k = self.max_detections
        nmsed_boxes, nmsed_scores, classes, count = tf.image.combined_non_max_suppression(
            boxes, scores, max_output_size_per_class=k, max_total_size=k,
            iou_threshold=self.nms_iou, score_threshold=self.score_threshold,
            pad_per_class=False, clip_boxes=False)
        present = tf.range(k)[None, :] < count[:, None]
        return {
            "boxes": tf.where(present[..., None], nmsed_boxes, -tf.ones_like(nmsed_boxes)),
            "confidence": tf.where(present, nmsed_scores, -tf.ones_like(nmsed_scores)),
            "labels": tf.where(present, tf.cast(classes, tf.int32), -tf.ones_like(count)[:, None]),
            "num_detections": count,
        }

    # ------------------------------------------------------------------ training

    def _ground_truth(self, targets):
        """(B, G + 1, 4) boxes, (B, G + 1) int32 labels, (B, G + 1) validity: one
        padding box appended so that G + 1 >= 1."""
        boxes = tf.cast(tf.convert_to_tensor(targets["boxes"]), tf.float32)
        labels = tf.cast(tf.convert_to_tensor(targets["labels"]), tf.int32)
        batch = tf.shape(boxes)[0]
        boxes = tf.concat([tf.reshape(boxes, [batch, -1, 4]), -tf.ones([batch, 1, 4])], axis=1)
        labels = tf.concat([tf.reshape(labels, [batch, -1]), -tf.ones([batch, 1], tf.int32)],
                           axis=1)
        valid = (labels >= 0) & (box_ops.box_area(boxes) > 0) & tf.reduce_all(
            tf.math.is_finite(boxes), axis=-1)
        boxes = tf.where(valid[..., None], boxes, -tf.ones_like(boxes))
        return boxes, tf.where(valid, labels, -tf.ones_like(labels)), valid

    def compute_detection_losses(self, images, targets, training=True):
        """The four losses of a batch: ``{"rpn_objectness_loss", "rpn_box_loss",
        "classification_loss", "box_loss"}`` (scalars, float32)."""
        gt_boxes, gt_labels, gt_valid = self._ground_truth(targets)
        features = self.backbone(images, training=training)
        logits, deltas = self._rpn(features)

        # --- RPN targets and losses
        anchors = tf.constant(np.concatenate(self._anchors, axis=0))
        all_logits = tf.concat(logits, axis=1)
        all_deltas = tf.concat(deltas, axis=1)
        iou = box_ops.box_iou(anchors[None], gt_boxes)                        # (B, N, G)
        matched, positive, negative = box_ops.match_boxes(
            iou, gt_valid, self.rpn_positive_iou, self.rpn_negative_iou,
            allow_low_quality_matches=True)
        index, s_pos, s_neg = box_ops.sample_balanced(
            positive, negative, self.rpn_samples_per_image, self.rpn_positive_fraction,
            seed=self.seed_generator)
        sampled = tf.cast(s_pos | s_neg, tf.float32)
        num_sampled = tf.maximum(tf.reduce_sum(sampled), 1.0)
        sampled_logits = tf.gather(all_logits, index, batch_dims=1)
        objectness_loss = tf.reduce_sum(sampled * tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.cast(s_pos, tf.float32), logits=sampled_logits)) / num_sampled
        target_boxes = tf.gather(gt_boxes, tf.gather(matched, index, batch_dims=1), batch_dims=1)
        rpn_targets = box_ops.encode_boxes(target_boxes, tf.gather(anchors, index),
                                           box_ops.RPN_BOX_WEIGHTS)
        rpn_error = smooth_l1(tf.gather(all_deltas, index, batch_dims=1) - rpn_targets)
        rpn_box_loss = tf.reduce_sum(
            tf.where(s_pos[..., None], rpn_error, tf.zeros_like(rpn_error))) / num_sampled

        # --- proposals + ground truth, sampled RoIs
        proposals, valid = self._proposals(logits, deltas, self.rpn_pre_nms_top_k_train,
                                           self.rpn_post_nms_top_k_train)
        rois = tf.concat([proposals, gt_boxes], axis=1)
        roi_valid = tf.concat([valid, gt_valid], axis=1)
        matched, positive, negative = box_ops.match_boxes(
            box_ops.box_iou(rois, gt_boxes), gt_valid, self.roi_positive_iou,
            self.roi_negative_iou)
        index, s_pos, s_neg = box_ops.sample_balanced(
            positive & roi_valid, negative & roi_valid, self.roi_samples_per_image,
            self.roi_positive_fraction, seed=self.seed_generator)
        sampled_rois = tf.stop_gradient(tf.gather(rois, index, batch_dims=1))
        matched = tf.gather(matched, index, batch_dims=1)
        classes = tf.where(s_pos, tf.gather(gt_labels, matched, batch_dims=1) + 1,
                           tf.zeros_like(matched))
        head_targets = box_ops.encode_boxes(tf.gather(gt_boxes, matched, batch_dims=1),
                                            sampled_rois, box_ops.HEAD_BOX_WEIGHTS)

        # --- box head losses
        class_logits, box_deltas = self._box_head(features, sampled_rois)
        sampled = tf.cast(s_pos | s_neg, tf.float32)
        num_sampled = tf.maximum(tf.reduce_sum(sampled), 1.0)
        classification_loss = tf.reduce_sum(
            sampled * tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=classes, logits=class_logits)) / num_sampled
        class_deltas = tf.gather(box_deltas, classes, batch_dims=2)          # (B, R, 4)
        head_error = smooth_l1(class_deltas - head_targets)
        box_loss = tf.reduce_sum(
            tf.where(s_pos[..., None], head_error, tf.zeros_like(head_error))) / num_sampled
        return {"rpn_objectness_loss": objectness_loss, "rpn_box_loss": rpn_box_loss,
                "classification_loss": classification_loss, "box_loss": box_loss}

    def _update_trackers(self, losses, total):
        self.loss_trackers["loss"].update_state(total)
        for name, value in losses.items():
            self.loss_trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.loss_trackers.items()}

    def train_step(self, data):
        images, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            losses = self.compute_detection_losses(images, targets, training=True)
            total = tf.add_n(list(losses.values()))
            if self.losses:
                total = total + tf.cast(tf.add_n(self.losses), tf.float32)
            # as Keras's own train_step: under a tf.distribute strategy the optimizer sums
            # the replicas' gradients, so each replica's loss is divided by their number
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(total / replicas if replicas > 1 else total)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return self._update_trackers(losses, total)

    def test_step(self, data):
        images, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        losses = self.compute_detection_losses(images, targets, training=False)
        return self._update_trackers(losses, tf.add_n(list(losses.values())))

    # ------------------------------------------------------------------ config

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable,
                  "dtype": keras.dtype_policies.serialize(self.dtype_policy)}
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            num_classes=self.num_classes, anchor_size=self.anchor_size,
            aspect_ratios=list(self.aspect_ratios),
            rpn_positive_iou=self.rpn_positive_iou, rpn_negative_iou=self.rpn_negative_iou,
            rpn_samples_per_image=self.rpn_samples_per_image,
            rpn_positive_fraction=self.rpn_positive_fraction,
            rpn_pre_nms_top_k_train=self.rpn_pre_nms_top_k_train,
            rpn_post_nms_top_k_train=self.rpn_post_nms_top_k_train,
            rpn_pre_nms_top_k_test=self.rpn_pre_nms_top_k_test,
            rpn_post_nms_top_k_test=self.rpn_post_nms_top_k_test,
            rpn_nms_iou=self.rpn_nms_iou, rpn_min_size=self.rpn_min_size,
            roi_positive_iou=self.roi_positive_iou, roi_negative_iou=self.roi_negative_iou,
            roi_samples_per_image=self.roi_samples_per_image,
            roi_positive_fraction=self.roi_positive_fraction,
            roi_output_size=self.roi_output_size, sampling_ratio=self.sampling_ratio,
            representation_size=self.representation_size,
            score_threshold=self.score_threshold, nms_iou=self.nms_iou,
            max_detections=self.max_detections, box_min_size=self.box_min_size, seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        with saved_policy(config):  # the policy it was saved with (mixed precision)
            if isinstance(config.get("dtype"), dict):
                config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
            if isinstance(config.get("backbone"), dict):
                config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
            return cls(**config)

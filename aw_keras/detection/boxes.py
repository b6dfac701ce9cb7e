"""Box utilities of the two-stage detector: IoU matrix, box coder, matcher, sampler.

All functions take and return TensorFlow tensors (or anything convertible),
work batched in graph mode with fixed output shapes, and treat padded boxes
(``[-1, -1, -1, -1]``, or any box with width or height <= 0) as absent: their
IoU with anything is 0, never NaN.

Boxes are ``[x1, y1, x2, y2]`` in pixels (``xyxy``). The box coder is
torchvision's ``BoxCoder`` (``det/rpn.py``, ``roi_heads.py``): deltas
``(wx * dx / w, wy * dy / h, ww * log(w' / w), wh * log(h' / h))`` with weights
``(1, 1, 1, 1)`` for the RPN and ``(10, 10, 5, 5)`` for the box head; decoding
clamps the log-scale deltas at ``log(1000 / 16)``.

Example:

>>> iou = box_iou(ground_truth, anchors)                       # doctest: +SKIP
>>> deltas = encode_boxes(matched_ground_truth, anchors, weights=(1, 1, 1, 1))
>>> indices, positive, negative = sample_balanced(is_positive, is_negative, 256, 0.5)
"""

import math

import keras
import tensorflow as tf

BOX_DELTA_CLIP = math.log(1000.0 / 16)
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
HEAD_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
# widths/heights below this are treated as this when encoding (no log(0), no 1/0)
_MIN_SIDE = 1e-6


def box_area(boxes):
    """Area of ``xyxy`` boxes ``(..., 4)``; 0 for boxes with a non-positive side."""
    boxes = tf.convert_to_tensor(boxes)
    width = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    height = tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return width * height


def box_iou(boxes1, boxes2):
    """IoU matrix of ``boxes1 (..., N, 4)`` and ``boxes2 (..., M, 4)`` -> ``(..., N, M)``.

    Leading (batch) dimensions must match or broadcast. A pair where either box
    has zero area (padding, degenerate boxes) has IoU 0.
    """
    boxes1 = tf.convert_to_tensor(boxes1)
    boxes2 = tf.cast(tf.convert_to_tensor(boxes2), boxes1.dtype)
    area1 = box_area(boxes1)[..., :, None]
    area2 = box_area(boxes2)[..., None, :]
    a = boxes1[..., :, None, :]
    b = boxes2[..., None, :, :]
    width = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    height = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    intersection = width * height
    union = area1 + area2 - intersection
    valid = (area1 > 0) & (area2 > 0) & (union > 0)
    return tf.where(valid, intersection / tf.where(valid, union, tf.ones_like(union)),
                    tf.zeros_like(union))


def _centres(boxes):
    width = boxes[..., 2] - boxes[..., 0]
    height = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * width, boxes[..., 1] + 0.5 * height, width, height


def encode_boxes(boxes, reference, weights=RPN_BOX_WEIGHTS):
    """Deltas that take ``reference`` (anchors or proposals) to ``boxes``; both ``(..., 4)``.

    Sides below 1e-6 are read as 1e-6 (finite deltas for degenerate boxes; the
    losses only use the deltas of positive matches).
    """
    boxes = tf.convert_to_tensor(boxes)
    reference = tf.cast(tf.convert_to_tensor(reference), boxes.dtype)
    wx, wy, ww, wh = (tf.constant(w, boxes.dtype) for w in weights)
    cx, cy, w, h = _centres(boxes)
    rcx, rcy, rw, rh = _centres(reference)
    w, h = tf.maximum(w, _MIN_SIDE), tf.maximum(h, _MIN_SIDE)
    rw, rh = tf.maximum(rw, _MIN_SIDE), tf.maximum(rh, _MIN_SIDE)
    return tf.stack([wx * (cx - rcx) / rw, wy * (cy - rcy) / rh,
                     ww * tf.math.log(w / rw), wh * tf.math.log(h / rh)], axis=-1)


def decode_boxes(deltas, reference, weights=RPN_BOX_WEIGHTS, clip=BOX_DELTA_CLIP):
    """Inverse of `encode_boxes`: boxes from ``deltas`` applied to ``reference``.

    The log-scale deltas (after dividing by their weights) are clamped at ``clip``
    (torchvision's ``log(1000 / 16)``), so decoded boxes stay finite.
    """
    deltas = tf.convert_to_tensor(deltas)
    reference = tf.cast(tf.convert_to_tensor(reference), deltas.dtype)
    wx, wy, ww, wh = (tf.constant(w, deltas.dtype) for w in weights)
    rcx, rcy, rw, rh = _centres(reference)
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw = tf.minimum(deltas[..., 2] / ww, clip)
    dh = tf.minimum(deltas[..., 3] / wh, clip)
    cx, cy = dx * rw + rcx, dy * rh + rcy
    w, h = tf.exp(dw) * rw, tf.exp(dh) * rh
    return tf.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def clip_boxes(boxes, height, width):
    """Clip ``xyxy`` boxes to the image ``[0, width] x [0, height]``."""
    boxes = tf.convert_to_tensor(boxes)
    limits = tf.cast(tf.stack([width, height, width, height]), boxes.dtype)
    return tf.clip_by_value(boxes, tf.zeros_like(limits), limits)


def match_boxes(iou, ground_truth_valid, positive_threshold, negative_threshold,
                allow_low_quality_matches=False):
    """torchvision's ``Matcher`` on a batched IoU matrix.

    Args:
        iou: ``(B, N, G)`` IoU of N candidates (anchors, proposals) with G
            (padded) ground-truth boxes.
        ground_truth_valid: ``(B, G)`` bool, False for padding.
        positive_threshold: IoU >= this: positive.
        negative_threshold: IoU < this: negative; in between: ignored.
        allow_low_quality_matches: also make positive, for every ground-truth
            box, the candidates with its highest IoU (ties included; only when
            that IoU is > 0).

    Returns:
        ``(matched, positive, negative)``: ``(B, N)`` int32 index of the best
        ground-truth box of each candidate (0 when there is none), and two
        ``(B, N)`` bool masks. Images without ground truth give all negatives.
    """
    iou = tf.convert_to_tensor(iou)
    ground_truth_valid = tf.cast(ground_truth_valid, tf.bool)
    iou = tf.where(ground_truth_valid[:, None, :], iou, -tf.ones_like(iou))
    has_gt = tf.shape(iou)[-1] > 0
    best = tf.cond(has_gt, lambda: tf.reduce_max(iou, axis=-1),
                   lambda: -tf.ones(tf.shape(iou)[:2], iou.dtype))
    matched = tf.cond(has_gt, lambda: tf.argmax(iou, axis=-1, output_type=tf.int32),
                      lambda: tf.zeros(tf.shape(iou)[:2], tf.int32))
    positive = best >= positive_threshold
    negative = best < negative_threshold
    if allow_low_quality_matches:
        best_per_gt = tf.reduce_max(iou, axis=1, keepdims=True)            # (B, 1, G)
        is_best = (iou == best_per_gt) & (best_per_gt > 0) & ground_truth_valid[:, None, :]
        low_quality = tf.reduce_any(is_best, axis=-1)
        positive = positive | low_quality
        negative = negative & ~low_quality
    return matched, positive, negative


def _sample_mask(mask, count, k, seed):
    """Indices ``(B, k)`` of up to ``count`` random True entries of ``mask`` per row,
    and which of the k slots hold one."""
    noise = keras.random.uniform(tf.shape(mask), seed=seed)
    priority = tf.where(mask, noise, -tf.ones_like(noise))
    k = tf.minimum(k, tf.shape(mask)[1])
    _, indices = tf.math.top_k(priority, k=k)
    slots = tf.range(k)[None, :]
    return tf.cast(indices, tf.int32), slots < count[:, None]


def sample_balanced(positive, negative, num_samples, positive_fraction, seed=None):
    """torchvision's ``BalancedPositiveNegativeSampler``, batched, fixed size.

    Per image, draws at most ``int(num_samples * positive_fraction)`` positives
    at random, then negatives to fill ``num_samples`` (fewer when there are
    not enough candidates).

    Args:
        positive, negative: ``(B, N)`` bool masks (disjoint).
        num_samples: samples per image (S).
        positive_fraction: largest fraction of positives.
        seed: as for ``keras.random.uniform`` (an int, a
            ``keras.random.SeedGenerator``, or None).

    Returns:
        ``(indices, sampled_positive, sampled_negative)`` of shape ``(B, S')``,
        ``S' = min(S, N)``: candidate indices and whether each slot holds a
        positive or a negative; slots with neither are empty (index 0). Filled
        slots come first, positives before negatives.
    """
    positive = tf.cast(positive, tf.bool)
    negative = tf.cast(negative, tf.bool) & ~positive
    max_positive = int(num_samples * positive_fraction)
    num_positive = tf.minimum(tf.reduce_sum(tf.cast(positive, tf.int32), axis=1), max_positive)
    num_negative = tf.minimum(tf.reduce_sum(tf.cast(negative, tf.int32), axis=1),
                              num_samples - num_positive)
    pos_idx, pos_ok = _sample_mask(positive, num_positive, max_positive, seed)
    neg_idx, neg_ok = _sample_mask(negative, num_negative, num_samples, seed)
    indices = tf.concat([pos_idx, neg_idx], axis=1)
    is_pos = tf.concat([pos_ok, tf.zeros_like(neg_ok)], axis=1)
    is_neg = tf.concat([tf.zeros_like(pos_ok), neg_ok], axis=1)
    # move the filled slots to the front (stable), keep S' of them
    order = tf.argsort(tf.cast(is_pos | is_neg, tf.int32), axis=1, direction="DESCENDING",
                       stable=True)
    size = tf.minimum(num_samples, tf.shape(positive)[1])
    order = order[:, :size]
    indices = tf.gather(indices, order, batch_dims=1)
    is_pos = tf.gather(is_pos, order, batch_dims=1)
    is_neg = tf.gather(is_neg, order, batch_dims=1)
    indices = tf.where(is_pos | is_neg, indices, tf.zeros_like(indices))
    return indices, is_pos, is_neg

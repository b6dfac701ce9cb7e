"""Multi-level RoIAlign (He et al. 2017) as torchvision's ``MultiScaleRoIAlign``.

Each box is pooled from one pyramid level, ``floor(4 + log2(sqrt(w * h) / 224))``
clamped to ``[min_level, max_level]`` (P2..P5 by default, strides 4..32), with
torchvision's ``roi_align(aligned=True)``: box corners times ``1 / stride`` minus
half a pixel, ``output_size x output_size`` bins, ``sampling_ratio x
sampling_ratio`` bilinear samples per bin at the bin's regular sub-grid, averaged.
A sample within one pixel outside the map reads the border value; farther out it
reads 0 (torchvision's ``bilinear_interpolate``).

Implementation (public TensorFlow ops, graph mode): every sample of a box lies
on a regular grid, which ``tf.image.crop_and_resize`` reproduces exactly when
given the first and last sample points as its box; the feature map is padded by
one replicated pixel on each side so that samples within a pixel of the border
read the border value and the others read the extrapolation value 0; the
samples are then averaged per bin by average pooling. Boxes are routed to their
level with ``tf.dynamic_partition`` / ``tf.dynamic_stitch``. Gradients flow to
the features (not to the boxes, as in torchvision's use in Faster R-CNN).

Example:

>>> pooled = multilevel_roi_align({"P2": p2, "P3": p3, "P4": p4, "P5": p5},  # doctest: +SKIP
...                               boxes)            # boxes (B, R, 4) xyxy pixels
>>> pooled.shape                                    # (B, R, 7, 7, C)
"""

import tensorflow as tf

CANONICAL_SCALE = 224.0
CANONICAL_LEVEL = 4


def assign_levels(boxes, min_level=2, max_level=5, canonical_scale=CANONICAL_SCALE,
                  canonical_level=CANONICAL_LEVEL):
    """Pyramid level of each ``xyxy`` box ``(..., 4)`` (int32), torchvision's
    ``LevelMapper``: ``floor(4 + log2(sqrt(area) / 224) + 1e-6)`` clamped.
    Zero-area boxes go to ``min_level``."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    area = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * tf.maximum(
        boxes[..., 3] - boxes[..., 1], 0.0)
    scale = tf.sqrt(area)
    level = tf.floor(canonical_level + tf.math.log(scale / canonical_scale + 1e-12)
                     / tf.math.log(2.0) + 1e-6)
    return tf.cast(tf.clip_by_value(level, min_level, max_level), tf.int32)


def roi_align(features, boxes, box_indices, spatial_scale, output_size=7, sampling_ratio=2):
    """Single-level RoIAlign (aligned=True) of ``boxes (R, 4)`` on ``features
    (B, H, W, C)``; ``box_indices (R,)`` the image of each box. -> ``(R, S, S, C)``."""
    features = tf.convert_to_tensor(features)
    boxes = tf.cast(tf.convert_to_tensor(boxes), tf.float32)
    shape = tf.shape(features)
    height = tf.cast(shape[1], tf.float32)
    width = tf.cast(shape[2], tf.float32)
    # feature coordinates of the box, aligned: pixel centres at integer + 0.5
    x1 = boxes[:, 0] * spatial_scale - 0.5
    y1 = boxes[:, 1] * spatial_scale - 0.5
    x2 = boxes[:, 2] * spatial_scale - 0.5
    y2 = boxes[:, 3] * spatial_scale - 0.5
    points = output_size * sampling_ratio
    step_x = (x2 - x1) / points
    step_y = (y2 - y1) / points
    # first and last sample points, in the coordinates of the map padded by 1 pixel
    first_x = x1 + 0.5 * step_x + 1.0
    last_x = x2 - 0.5 * step_x + 1.0
    first_y = y1 + 0.5 * step_y + 1.0
    last_y = y2 - 0.5 * step_y + 1.0
    padded = tf.pad(features, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    # crop_and_resize's normalised box: pixel = coordinate * (size - 1)
    crop_boxes = tf.stack([first_y / (height + 1.0), first_x / (width + 1.0),
                           last_y / (height + 1.0), last_x / (width + 1.0)], axis=1)
    samples = tf.image.crop_and_resize(
        tf.cast(padded, tf.float32), crop_boxes, tf.cast(box_indices, tf.int32),
        (points, points), method="bilinear", extrapolation_value=0.0)
    pooled = tf.nn.avg_pool2d(samples, sampling_ratio, sampling_ratio, "VALID")
    return tf.cast(pooled, features.dtype)


def multilevel_roi_align(features, boxes, output_size=7, sampling_ratio=2, min_level=2,
                         max_level=5):
    """RoIAlign of ``boxes (B, R, 4)`` (``xyxy`` image pixels) over the pyramid
    ``features`` (``{"P2": (B, H/4, W/4, C), ...}``; levels beyond ``max_level``
    are unused), each box from its `assign_levels` level. -> ``(B, R, S, S, C)``."""
    levels = list(range(min_level, max_level + 1))
    maps = [features[f"P{level}"] for level in levels]
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    batch = tf.shape(boxes)[0]
    num_boxes = tf.shape(boxes)[1]
    flat = tf.reshape(boxes, [-1, 4])
    image_index = tf.repeat(tf.range(batch), num_boxes)
    level_index = assign_levels(flat, min_level, max_level) - min_level
    positions = tf.range(tf.shape(flat)[0])
    part_boxes = tf.dynamic_partition(flat, level_index, len(levels))
    part_images = tf.dynamic_partition(image_index, level_index, len(levels))
    part_positions = tf.dynamic_partition(positions, level_index, len(levels))
    pooled = [
        roi_align(feature, part_boxes[i], part_images[i], 1.0 / 2 ** level, output_size,
                  sampling_ratio)
        for i, (feature, level) in enumerate(zip(maps, levels))
    ]
    stitched = tf.dynamic_stitch(part_positions, pooled)
    channels = maps[0].shape[-1] if maps[0].shape[-1] is not None else tf.shape(maps[0])[-1]
    return tf.reshape(stitched, tf.stack([batch, num_boxes, output_size, output_size, channels]))

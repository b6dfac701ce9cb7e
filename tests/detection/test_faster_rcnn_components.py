"""Components of the two-stage detector against literal NumPy references written
for clarity: IoU matrix, box coder, matcher, balanced sampler, RoIAlign and its
level assignment, anchors."""

import math

import numpy as np
import pytest
import tensorflow as tf

from aw_keras.detection import boxes as box_ops


# ---------------------------------------------------------------- references

def iou_reference(a, b):
    out = np.zeros((len(a), len(b)))
    for i, (ax1, ay1, ax2, ay2) in enumerate(a):
        for j, (bx1, by1, bx2, by2) in enumerate(b):
            area_a = max(ax2 - ax1, 0) * max(ay2 - ay1, 0)
            area_b = max(bx2 - bx1, 0) * max(by2 - by1, 0)
            if area_a <= 0 or area_b <= 0:
                continue
            iw = max(min(ax2, bx2) - max(ax1, bx1), 0)
            ih = max(min(ay2, by2) - max(ay1, by1), 0)
            inter = iw * ih
            out[i, j] = inter / (area_a + area_b - inter)
    return out


def encode_reference(box, ref, weights):
    wx, wy, ww, wh = weights
    w, h = box[2] - box[0], box[3] - box[1]
    rw, rh = ref[2] - ref[0], ref[3] - ref[1]
    cx, cy = box[0] + w / 2, box[1] + h / 2
    rcx, rcy = ref[0] + rw / 2, ref[1] + rh / 2
    return [wx * (cx - rcx) / rw, wy * (cy - rcy) / rh, ww * math.log(w / rw),
            wh * math.log(h / rh)]


def random_boxes(rng, n, size=100.0):
    xy = rng.uniform(0, size * 0.8, (n, 2))
    wh = rng.uniform(1, size * 0.5, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype("float32")


# ---------------------------------------------------------------- IoU

def test_iou_matrix_matches_the_loop_reference_batched_with_padding():
    rng = np.random.default_rng(0)
    a = random_boxes(rng, 7)
    b = random_boxes(rng, 5)
    a[3] = -1                                  # padding
    b[1] = [10, 10, 10, 30]                    # zero width
    b[4] = a[0]                                # identical box -> 1
    batch_a = np.stack([a, a[::-1]])
    batch_b = np.stack([b, b])
    got = box_ops.box_iou(batch_a, batch_b).numpy()
    for i in range(2):
        np.testing.assert_allclose(got[i], iou_reference(batch_a[i], batch_b[i]), atol=1e-6)
    assert np.isfinite(got).all()
    assert got[0, 0, 4] == pytest.approx(1.0)
    np.testing.assert_array_equal(got[0, 3], 0.0)
    np.testing.assert_array_equal(got[:, :, 1], 0.0)


def test_iou_with_no_boxes_has_an_empty_shape():
    got = box_ops.box_iou(np.zeros((2, 0, 4), "float32"), np.ones((2, 3, 4), "float32"))
    assert got.shape == (2, 0, 3)


# ---------------------------------------------------------------- box coder

@pytest.mark.parametrize("weights", [box_ops.RPN_BOX_WEIGHTS, box_ops.HEAD_BOX_WEIGHTS])
def test_encode_matches_reference_and_decode_inverts_it(weights):
    rng = np.random.default_rng(1)
    boxes, refs = random_boxes(rng, 20), random_boxes(rng, 20)
    deltas = box_ops.encode_boxes(boxes, refs, weights).numpy()
    expected = np.array([encode_reference(b, r, weights) for b, r in zip(boxes, refs)])
    np.testing.assert_allclose(deltas, expected, rtol=1e-4, atol=1e-4)
    decoded = box_ops.decode_boxes(deltas, refs, weights).numpy()
    np.testing.assert_allclose(decoded, boxes, rtol=1e-4, atol=1e-3)


def test_decode_clamps_the_log_scale_deltas():
    refs = np.array([[0, 0, 16, 16]], "float32")
    decoded = box_ops.decode_boxes(np.array([[0, 0, 1e4, 1e4]], "float32"), refs).numpy()
    assert np.isfinite(decoded).all()
    np.testing.assert_allclose(decoded[0, 2] - decoded[0, 0], 1000.0, rtol=1e-4)
    assert box_ops.BOX_DELTA_CLIP == pytest.approx(math.log(1000 / 16))


def test_encode_degenerate_boxes_stays_finite():
    deltas = box_ops.encode_boxes(np.array([[-1, -1, -1, -1]], "float32"),
                                  np.array([[0, 0, 10, 10]], "float32"))
    assert np.isfinite(deltas.numpy()).all()


# ---------------------------------------------------------------- matcher

def test_matcher_thresholds_padding_and_low_quality_matches():
    # 4 candidates, 2 ground-truth boxes (the second padded in image 1)
    iou = np.array([[[0.8, 0.1], [0.5, 0.2], [0.1, 0.6], [0.2, 0.05]],
                    [[0.8, 0.9], [0.5, 0.2], [0.1, 0.6], [0.2, 0.05]]], "float32")
    valid = np.array([[True, True], [True, False]])
    matched, pos, neg = box_ops.match_boxes(iou, valid, 0.7, 0.3,
                                            allow_low_quality_matches=True)
    # image 0: candidate 2 is gt 1's best (0.6) -> positive though < 0.7
    np.testing.assert_array_equal(pos[0], [True, False, True, False])
    np.testing.assert_array_equal(neg[0], [False, False, False, True])
    np.testing.assert_array_equal(matched[0], [0, 0, 1, 0])
    # image 1: the padded gt is ignored (0.9 does not count)
    np.testing.assert_array_equal(matched[1], [0, 0, 0, 0])
    np.testing.assert_array_equal(pos[1], [True, False, False, False])
    np.testing.assert_array_equal(neg[1], [False, False, True, True])
    _, pos, _ = box_ops.match_boxes(iou, valid, 0.7, 0.3)
    np.testing.assert_array_equal(pos[0], [True, False, False, False])


def test_matcher_without_ground_truth_gives_all_negatives():
    iou = np.zeros((2, 5, 3), "float32")
    _, pos, neg = box_ops.match_boxes(iou, np.zeros((2, 3), bool), 0.7, 0.3, True)
    assert not pos.numpy().any() and neg.numpy().all()
    _, pos, neg = box_ops.match_boxes(np.zeros((1, 5, 0), "float32"), np.zeros((1, 0), bool),
                                      0.7, 0.3, True)
    assert not pos.numpy().any() and neg.numpy().all()


# ---------------------------------------------------------------- sampler

def sampler_expectation(n_pos, n_neg, num_samples, fraction):
    """What torchvision's BalancedPositiveNegativeSampler draws, counted."""
    take_pos = min(n_pos, int(num_samples * fraction))
    take_neg = min(n_neg, num_samples - take_pos)
    return take_pos, take_neg


@pytest.mark.parametrize("n_pos,n_neg", [(100, 900), (3, 900), (100, 10), (0, 0), (0, 50)])
def test_sampler_proportions(n_pos, n_neg):
    n, num_samples, fraction = 1000, 256, 0.5
    rng = np.random.default_rng(n_pos + n_neg)
    labels = np.full((2, n), -1)
    for b in range(2):
        order = rng.permutation(n)
        labels[b, order[:n_pos]] = 1
        labels[b, order[n_pos:n_pos + n_neg]] = 0
    indices, pos, neg = box_ops.sample_balanced(labels == 1, labels == 0, num_samples,
                                                fraction, seed=3)
    indices, pos, neg = indices.numpy(), pos.numpy(), neg.numpy()
    assert indices.shape == (2, num_samples)
    take_pos, take_neg = sampler_expectation(n_pos, n_neg, num_samples, fraction)
    for b in range(2):
        assert pos[b].sum() == take_pos and neg[b].sum() == take_neg
        assert not (pos[b] & neg[b]).any()
        assert (labels[b, indices[b][pos[b]]] == 1).all()
        assert (labels[b, indices[b][neg[b]]] == 0).all()
        chosen = indices[b][pos[b] | neg[b]]
        assert len(set(chosen.tolist())) == len(chosen)           # no repeats
        filled = pos[b] | neg[b]                                   # filled slots first
        assert filled[:filled.sum()].all()
    if n_pos + n_neg >= num_samples:
        assert ((pos | neg).sum(axis=1) == num_samples).all()


def test_sampler_is_deterministic_given_a_seed_and_fixed_size_in_graph_mode():
    labels = np.random.default_rng(0).integers(-1, 2, (2, 300))

    @tf.function
    def sample(seed):
        return box_ops.sample_balanced(labels == 1, labels == 0, 64, 0.25, seed=seed)

    first = [t.numpy() for t in box_ops.sample_balanced(labels == 1, labels == 0, 64, 0.25, 7)]
    again = [t.numpy() for t in box_ops.sample_balanced(labels == 1, labels == 0, 64, 0.25, 7)]
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)
    graph = sample(7)
    assert graph[0].shape == (2, 64)
    assert (graph[1].numpy().sum(axis=1) == 16).all()


def test_sampler_with_fewer_candidates_than_samples():
    positive = np.zeros((1, 10), bool)
    positive[0, :2] = True
    indices, pos, neg = box_ops.sample_balanced(positive, ~positive, 256, 0.5, seed=0)
    assert indices.shape == (1, 10)
    assert pos.numpy().sum() == 2 and neg.numpy().sum() == 8


# ---------------------------------------------------------------- RoIAlign

from aw_keras.detection import roi_align as roi_ops  # noqa: E402


def bilinear_reference(feature, y, x):
    """torchvision's bilinear_interpolate (roi_align_kernel.cpp), one channel vector."""
    height, width = feature.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feature.shape[-1])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * feature[y_low, x_low] + hy * lx * feature[y_low, x_high]
            + ly * hx * feature[y_high, x_low] + ly * lx * feature[y_high, x_high])


def roi_align_reference(feature, box, scale, size=7, ratio=2):
    """torchvision.ops.roi_align(aligned=True, sampling_ratio=ratio) of one box."""
    x1, y1, x2, y2 = [c * scale - 0.5 for c in box]
    bin_w, bin_h = (x2 - x1) / size, (y2 - y1) / size
    out = np.zeros((size, size, feature.shape[-1]))
    for ph in range(size):
        for pw in range(size):
            total = np.zeros(feature.shape[-1])
            for iy in range(ratio):
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / ratio
                for ix in range(ratio):
                    x = x1 + pw * bin_w + (ix + 0.5) * bin_w / ratio
                    total += bilinear_reference(feature, y, x)
            out[ph, pw] = total / (ratio * ratio)
    return out


def test_single_level_roi_align_matches_the_bilinear_reference():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 9, 13, 3)).astype("float32")     # odd sizes
    boxes = np.array([
        [0, 0, 52, 36],            # the whole image (stride 4: 13 x 9 map)
        [0, 0, 3, 2],              # at the top-left border, smaller than one bin
        [48, 30, 52, 36],          # at the bottom-right border
        [10.3, 7.7, 11.1, 8.2],    # much smaller than one pixel
        [-6, -5, 20, 14],          # partly outside the image
        [40, 20, 70, 50],          # partly outside, beyond one pixel
        [5.5, 3.25, 33.75, 21.5],
    ], "float32")
    images = np.array([0, 1, 0, 1, 0, 1, 1])
    got = roi_ops.roi_align(features, boxes, images, 1 / 4).numpy()
    for r in range(len(boxes)):
        expected = roi_align_reference(features[images[r]], boxes[r], 1 / 4)
        np.testing.assert_allclose(got[r], expected, atol=1e-5, err_msg=f"box {r}")


def level_reference(box):
    area = max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
    if area <= 0:
        return 2
    return int(min(max(math.floor(4 + math.log2(math.sqrt(area) / 224) + 1e-6), 2), 5))


def test_level_assignment():
    sides = [0, 1, 10, 55, 56, 111, 112, 113, 223, 224, 447, 448, 1000]
    boxes = np.array([[0, 0, s, s] for s in sides] + [[0, 0, 112, 448]], "float32")
    got = roi_ops.assign_levels(boxes).numpy()
    assert got.tolist() == [level_reference(b) for b in boxes]
    assert got.tolist() == [2, 2, 2, 2, 2, 2, 3, 3, 3, 4, 4, 5, 5, 4]


def test_multilevel_roi_align_routes_each_box_to_its_level():
    rng = np.random.default_rng(1)
    size = 96
    features = {f"P{l}": rng.normal(size=(2, math.ceil(size / 2 ** l), math.ceil(size / 2 ** l),
                                          4)).astype("float32") for l in range(2, 7)}
    boxes = np.array([[[2, 3, 20, 30], [0, 0, 96, 96], [10, 10, 80, 60]],
                      [[40, 40, 41, 41], [-1, -1, -1, -1], [0, 0, 96, 90]]], "float32")
    got = tf.function(roi_ops.multilevel_roi_align)(features, boxes).numpy()
    assert got.shape == (2, 3, 7, 7, 4)
    for b in range(2):
        for r in range(3):
            level = level_reference(boxes[b, r])
            expected = roi_align_reference(features[f"P{level}"][b], boxes[b, r],
                                           1 / 2 ** level)
            np.testing.assert_allclose(got[b, r], expected, atol=1e-5)


def test_multilevel_roi_align_uses_every_level_and_has_gradients():
    rng = np.random.default_rng(2)
    features = {f"P{l}": tf.constant(rng.normal(size=(1, 2 ** (9 - l), 2 ** (9 - l), 2)),
                                     tf.float32) for l in range(2, 6)}   # a 512 px image
    boxes = np.array([[[0, 0, 50, 50], [0, 0, 120, 120], [0, 0, 250, 250],
                       [0, 0, 500, 500]]], "float32")
    assert roi_ops.assign_levels(boxes).numpy().tolist() == [[2, 3, 4, 5]]
    with tf.GradientTape() as tape:
        tape.watch(features)
        pooled = roi_ops.multilevel_roi_align(features, boxes)
        loss = tf.reduce_sum(pooled)
    grads = tape.gradient(loss, features)
    for b, level in enumerate(range(2, 6)):
        expected = roi_align_reference(features[f"P{level}"][0].numpy(), boxes[0, b],
                                       1 / 2 ** level)
        np.testing.assert_allclose(pooled[0, b].numpy(), expected, atol=1e-5)
        assert float(tf.reduce_sum(tf.abs(grads[f"P{level}"]))) > 0

"""The detection run's plots: predictions.png says when an image has no detection
above the drawing threshold; fpn_attention.png's tick labels stay clear of the
other rows."""

import types

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the plots need matplotlib")

from aw_keras.train import detection_plots  # noqa: E402


class _FixedDetector:
    """predict_on_batch gives fixed detections: image 0 one box at 0.9, image 1
    two boxes below the threshold, image 2 none at all."""

    def predict_on_batch(self, images):
        confidence = np.zeros((3, 5), np.float32)
        confidence[0, 0] = 0.9
        confidence[1, :2] = (0.12, 0.05)
        boxes = np.tile(np.asarray([4, 4, 20, 20], np.float32), (3, 5, 1))
        return {"boxes": boxes, "confidence": confidence, "labels": np.zeros((3, 5), np.int32),
                "num_detections": np.asarray([1, 2, 0], np.int32)}


def test_predictions_say_when_no_detection_reaches_the_threshold(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(detection_plots, "save",
                        lambda figure, path, dpi=100: figures.append(figure) or path)
    images = np.full((3, 32, 32, 3), 100.0, np.float32)
    targets = {"boxes": np.full((3, 2, 4), -1.0, np.float32),
               "labels": np.full((3, 2), -1, np.int32)}
    split = types.SimpleNamespace(class_names=("cat", "dog"))
    detection_plots.plot_predictions(_FixedDetector(), [(images, targets, {})], split,
                                     str(tmp_path / "p.png"), count=3)
    axes = figures[0].axes
    texts = [[t.get_text() for t in axis.texts] for axis in axes]
    hint = f"no detection with score >= {detection_plots.SCORE_TO_DRAW}"
    assert not any(hint in t for t in texts[0]) and "cat 0.90" in texts[0], texts[0]
    assert any(hint in t and "best 0.12" in t for t in texts[1]), texts[1]
    assert any(hint in t and "none at all" in t for t in texts[2]), texts[2]


def test_fpn_attention_tick_labels_do_not_run_into_other_rows():
    from aw_keras import applications

    backbone = applications.get_model("aw_resnet_small_fpn", input_shape=(64, 64, 3),
                                      fpn_channels=32)
    images = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    figure = detection_plots.fpn_attention_figure(backbone, images)
    rows = [axis for axis in figure.axes if axis.get_label() != "<colorbar>"]
    assert len(rows) == 6  # three laterals, three outputs
    renderer = figure.canvas.get_renderer()
    figure.canvas.draw()
    labelled = 0
    for i, axis in enumerate(rows):
        for label in axis.get_xticklabels():
            if not (label.get_visible() and label.get_text()):
                continue
            labelled += 1
            box = label.get_window_extent(renderer)
            for j, other in enumerate(rows):
                if j != i:
                    assert not box.overlaps(other.get_window_extent(renderer)), (
                        f"tick label {label.get_text()!r} of row {i} overlaps row {j}")
    assert labelled >= 2  # the channel axis is labelled (once, under the last row)
    detection_plots.pyplot().close(figure)

"""PNG plots of a detection run: learning curves, predicted vs ground-truth boxes
on validation images, and the FPN's AW attention maps."""

import os

import numpy as np

from aw_keras.train.plots import aw_layers
from aw_keras.train.plots import epoch_axis
from aw_keras.train.plots import pyplot
from aw_keras.train.plots import save

SCORE_TO_DRAW = 0.3


def plot_curves(history, path):
    """Training and validation loss, and validation mAP / mAP@0.5 per epoch."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, style, label in (("loss", "-o", "train loss"), ("val_loss", "-s", "validation loss")):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            axes[0].plot(epochs, values, style, label=label)
    for key, style, label in (("val_map", "-o", "mAP@[.5:.95]"), ("val_map50", "-s", "mAP@0.5")):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            axes[1].plot(epochs, values, style, label=label)
    for axis, title in ((axes[0], "loss"), (axes[1], "validation COCO mAP")):
        epoch_axis(axis, title)
    return save(figure, path)


def _draw_boxes(axis, boxes, labels, names, color, scores=None):
    import matplotlib.patches as patches

    for i, (box, label) in enumerate(zip(boxes, labels)):
        x1, y1, x2, y2 = (float(v) for v in box)
        axis.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=color,
                                         linewidth=1.5))
        text = names[int(label)] if 0 <= int(label) < len(names) else str(int(label))
        if scores is not None:
            text += f" {float(scores[i]):.2f}"
        axis.text(x1, y1, text, color="white", fontsize=6,
                  bbox=dict(facecolor=color, alpha=0.7, pad=0.5, linewidth=0))


def plot_predictions(model, dataset, split, path, count=4):
    """``count`` validation images: ground truth in green, predictions with a
    score of at least 0.3 in red (label and score). An image without such a
    prediction says so, with its best score."""
    plt = pyplot()
    images, targets, _ = next(iter(dataset))
    images = images[:count]
    predictions = model.predict_on_batch(images)
    count = int(images.shape[0])
    figure, axes = plt.subplots(1, count, figsize=(3.2 * count, 3.4), squeeze=False)
    for i, axis in enumerate(axes[0]):
        axis.imshow(np.clip(np.asarray(images[i]) / 255.0, 0, 1))
        labels = np.asarray(targets["labels"][i])
        keep = labels >= 0
        _draw_boxes(axis, np.asarray(targets["boxes"][i])[keep], labels[keep], split.class_names,
                    "tab:green")
        scores = np.asarray(predictions["confidence"][i])
        valid = np.arange(len(scores)) < int(predictions["num_detections"][i])
        shown = (scores >= SCORE_TO_DRAW) & valid
        _draw_boxes(axis, np.asarray(predictions["boxes"][i])[shown],
                    np.asarray(predictions["labels"][i])[shown], split.class_names, "tab:red",
                    scores[shown])
        if not shown.any():
            best = f"best {float(scores[valid].max()):.2f}" if valid.any() else "none at all"
            axis.text(0.5, 0.02, f"no detection with score >= {SCORE_TO_DRAW} ({best})",
                      transform=axis.transAxes, ha="center", va="bottom", fontsize=7,
                      color="white", bbox=dict(facecolor="tab:red", alpha=0.8, pad=1,
                                               linewidth=0))
        axis.set_axis_off()
    figure.suptitle(f"validation images: ground truth (green), predictions >= {SCORE_TO_DRAW} "
                    "(red)", fontsize=9)
    return save(figure, path, dpi=110)


def fpn_attention_figure(backbone, images):
    """The figure of `plot_fpn_attention` (a matplotlib Figure), or None when the
    FPN has no AWConv2D. The rows share the output-channel axis, labelled once
    below the last row, so no row's tick labels run into the next row."""
    import keras

    layers = [layer for layer in aw_layers(backbone) if layer.name.startswith("fpn_")]
    if not layers:
        return None
    features = keras.Model(backbone.inputs, [layer.input for layer in layers])
    inputs = features(images[:1], training=False)
    if len(layers) == 1:
        inputs = [inputs]
    plt = pyplot()
    figure, axes = plt.subplots(len(layers), 1, figsize=(10, 1.1 * len(layers) + 1),
                                squeeze=False, sharex=True, layout="constrained")
    for axis, layer, x in zip(axes[:, 0], layers, inputs):
        attention = np.asarray(layer.attention_maps(x))[0]  # (kh, kw, C1, C2)
        taps = attention.mean(axis=2).reshape(-1, attention.shape[-1])
        image = axis.imshow(taps, aspect="auto", vmin=0.0, vmax=1.0, cmap="viridis")
        kh, kw = attention.shape[:2]
        axis.set_ylabel(f"{layer.name}\n{kh}x{kw} taps", rotation=0, ha="right",
                        va="center", fontsize=8)
        axis.set_yticks([])
    for axis in axes[:-1, 0]:
        axis.tick_params(axis="x", labelbottom=False)
    axes[-1, 0].set_xlabel("output channel")
    figure.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.02)
    figure.suptitle("FPN AWConv2D attention A (rows: kernel taps; mean over input channels)",
                    fontsize=9)
    return figure


def plot_fpn_attention(backbone, images, path):
    """For each AWConv2D of the FPN: its attention A on the first image, one row
    per kernel tap, one column per output channel (values in [0, 1]). Returns
    ``path``, or None (nothing written) when the FPN has no AWConv2D."""
    figure = fpn_attention_figure(backbone, images)
    if figure is None:
        return None
    figure.savefig(path, dpi=100)
    pyplot().close(figure)
    return path


def write_all(out, history, model, dataset, split, count):
    """Writes every plot into ``out/plots``; returns the paths written."""
    directory = os.path.join(out, "plots")
    os.makedirs(directory, exist_ok=True)
    written = [plot_curves(history, os.path.join(directory, "curves.png"))]
    if count:
        written.append(plot_predictions(model, dataset, split,
                                        os.path.join(directory, "predictions.png"), count))
        images = next(iter(dataset))[0]
        attention = plot_fpn_attention(model.backbone, images,
                                       os.path.join(directory, "fpn_attention.png"))
        if attention:
            written.append(attention)
    return written

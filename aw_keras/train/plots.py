"""PNG plots of a run: learning curves and AWConv2D attention maps."""

import os

import numpy as np


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (files only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def epoch_axis(axis, title):
    """An axis over epochs: integer ticks (no 1.25 epochs), title, grid, legend."""
    axis.set_xlabel("epoch")
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()


def save(figure, path, dpi=100):
    """Lays ``figure`` out, writes it to ``path``, closes it; returns ``path``."""
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    pyplot().close(figure)
    return path


def plot_curves(history, path):
    """Loss and top-1 accuracy per epoch, train and validation."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "top-1 accuracy")):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            values = [h.get(prefix + key) for h in history]
            if any(v is not None for v in values):
                axis.plot(epochs, values, style, label=("validation " if prefix else "train ") + key)
        epoch_axis(axis, title)
    return save(figure, path)


def aw_layers(model):
    """The AWConv2D layers of ``model`` (nested models included), in order."""
    from aw_keras.layers import AWConv2D

    found = []
    for layer in model.layers:
        if isinstance(layer, AWConv2D):
            found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(aw_layers(layer))
    return found


def attention_maps(model, images, max_layers=3):
    """[(layer name, A)] for the first, middle and last AWConv2D layers, where A
    is ``layer.attention_maps(layer input)`` with shape (N, kh, kw, C1, C2)."""
    import keras

    layers = aw_layers(model)
    if not layers:
        return []
    if len(layers) > max_layers:
        picks = np.linspace(0, len(layers) - 1, max_layers).round().astype(int)
        layers = [layers[i] for i in sorted(set(picks))]
    probe = keras.Model(model.input, [layer.input for layer in layers])
    inputs = probe(images, training=False)
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    return [(layer.name, np.asarray(layer.attention_maps(x), np.float32))
            for layer, x in zip(layers, inputs)]


def plot_attention(model, images, labels, class_names, path, max_channels=64):
    """One row per image: the image, then per AWConv2D layer the attention values
    averaged over input channels, as (kernel tap) x (output channel). ``images``
    are what ``model`` takes (raw pixels for the models aw-train builds)."""
    maps = attention_maps(model, images)
    if not maps:
        return None
    plt = pyplot()
    rows, cols = len(images), 1 + len(maps)
    figure, axes = plt.subplots(rows, cols, figsize=(3 + 3.2 * len(maps), 2.4 * rows + 0.6),
                                squeeze=False, layout="constrained")
    for i in range(rows):
        image = images[i]
        shown = image[..., 0] if image.shape[-1] == 1 else (image - image.min()) / (np.ptp(image) + 1e-9)
        axes[i, 0].imshow(shown, cmap="gray" if image.shape[-1] == 1 else None)
        label = int(labels[i])
        axes[i, 0].set_title(class_names[label] if label < len(class_names) else f"class {label}",
                             fontsize=8)
        axes[i, 0].axis("off")
        for j, (name, values) in enumerate(maps, start=1):
            a = values[i].mean(axis=2)  # (kh, kw, C2)
            kh, kw, c2 = a.shape
            picture = a.reshape(kh * kw, c2)[:, :max_channels]
            axis = axes[i, j]
            shown = axis.imshow(picture, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
            if i == 0:  # layer names once, on top; axis labels on the last row
                axis.set_title(f"{name}\n(taps x out channels)", fontsize=7)
            if i == rows - 1:
                axis.set_xlabel("output channel", fontsize=6)
            axis.set_ylabel(f"tap ({kh}x{kw})", fontsize=6)
            axis.tick_params(labelsize=5)
    figure.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.6, label="attention A")
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_all(out, history, model, source, preset, count):
    """Writes ``out/plots/curves.png`` and, when ``model`` has AWConv2D layers and
    ``count`` > 0, ``out/plots/attention_maps.png`` of ``count`` validation images
    of different classes (as many as there are); returns the paths written."""
    from aw_keras.data import sample_images

    directory = os.path.join(out, "plots")
    os.makedirs(directory, exist_ok=True)
    written = [plot_curves(history, os.path.join(directory, "curves.png"))]
    if count and aw_layers(model):
        images, labels = sample_images(source, "validation", preset, count,
                                       distinct_classes=True)
        written.append(plot_attention(model, images, labels, source.class_names,
                                      os.path.join(directory, "attention_maps.png")))
    return written

"""Short training as a drop-in: Conv2D vs AWConv2D at several attention-BN momenta.

scikit-learn's digits (8x8 grey images, 10 classes; 1,347 training and 450 test
images, a fixed stratified split), a small network with no BatchNormalization of
its own:

    Input(8, 8, 1) -> CONV(16, 3, relu) -> CONV(32, 3, relu)
                   -> GlobalAveragePooling2D (or Flatten) -> Dense(10, softmax)

where CONV is `keras.layers.Conv2D` or `AWConv2D` (same arguments, plus
`attention_bn_momentum`), trained with Keras's defaults (`optimizer="sgd"`,
`batch_size=32`) on the raw pixel values 0-16 for `--epochs` epochs. Per
candidate, means over the seeds of:

- fit accuracy: the last epoch's training accuracy as `fit` reports it (a mean
  over the epoch's batches, BatchNorm on batch statistics);
- train accuracy, batch statistics: the final weights on the training set with
  BatchNorm on batch statistics (training mode, nothing updated);
- train accuracy and test accuracy: inference mode (moving statistics).

The gap between the second and third columns is what the attention branch's
moving statistics cost; Conv2D (no BatchNorm anywhere) has none.

    python benchmarks/attention_bn_momentum.py                  # 8 epochs, 3 seeds
    python benchmarks/attention_bn_momentum.py --epochs 30 --momenta 0.99 0.9
    python benchmarks/attention_bn_momentum.py --head flatten --padding valid --scale 0.0625
    python benchmarks/attention_bn_momentum.py --markdown table.md
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import keras  # noqa: E402
from aw_keras.layers import AWConv2D  # noqa: E402


def load_digits_split():
    """(x_train, y_train, x_test, y_test): digits as (N, 8, 8, 1) float32 0-16."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype("float32")[..., None]
    return train_test_split(images, digits.target, test_size=0.25, random_state=0,
                            stratify=digits.target)


def make_model(momentum, seed, head="gap", padding="same"):
    """The two-conv network; ``momentum=None`` uses Conv2D, a float AWConv2D."""
    keras.utils.set_random_seed(seed)

    def conv(filters):
        if momentum is None:
            return keras.layers.Conv2D(filters, 3, padding=padding, activation="relu")
        return AWConv2D(filters, 3, padding=padding, activation="relu",
                        attention_bn_momentum=momentum)

    pool = keras.layers.GlobalAveragePooling2D() if head == "gap" else keras.layers.Flatten()
    return keras.Sequential([
        keras.Input((8, 8, 1)), conv(16), conv(32), pool,
        keras.layers.Dense(10, activation="softmax"),
    ])


def batch_statistics_accuracy(model, images, labels, batch_size):
    """Accuracy with every BatchNormalization in training mode (batch statistics),
    the model's weights and moving statistics left as they were."""
    saved = model.get_weights()
    correct = 0
    for start in range(0, len(images), batch_size):
        probabilities = model(images[start:start + batch_size], training=True)
        correct += int(np.sum(np.argmax(probabilities, -1) == labels[start:start + batch_size]))
    model.set_weights(saved)
    return correct / len(images)


def run(momentum, seed, args, data):
    """(fit accuracy, batch-statistics train accuracy, train accuracy, test accuracy)."""
    x_train, x_test, y_train, y_test = data
    model = make_model(momentum, seed, args.head, args.padding)
    model.compile(optimizer=args.optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        verbose=0)
    fit_accuracy = history.history["accuracy"][-1]
    batch_accuracy = batch_statistics_accuracy(model, x_train, y_train, args.batch_size)
    train_accuracy = model.evaluate(x_train, y_train, verbose=0)[1]
    test_accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    return fit_accuracy, batch_accuracy, train_accuracy, test_accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="pixel values (0-16) are multiplied by this (default 1)")
    parser.add_argument("--head", choices=("gap", "flatten"), default="gap",
                        help="GlobalAveragePooling2D or Flatten before the Dense layer")
    parser.add_argument("--padding", choices=("same", "valid"), default="same")
    parser.add_argument("--optimizer", default="sgd", help="a Keras optimizer name")
    parser.add_argument("--momenta", type=float, nargs="+", default=[0.99, 0.9, 0.5, 0.0],
                        help="attention_bn_momentum values to try (default: %(default)s)")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    for name in ("epochs", "seeds", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, received {getattr(args, name)}")
    data = load_digits_split()
    data = [data[0] * args.scale, data[1] * args.scale, data[2], data[3]]
    lines = [
        "| layer | attention_bn_momentum | fit accuracy (last epoch) | train accuracy, "
        "batch statistics | train accuracy | test accuracy | test, per seed |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for momentum in [None] + list(args.momenta):
        results = np.array([run(momentum, seed, args, data) for seed in range(args.seeds)])
        mean = results.mean(axis=0)
        per_seed = ", ".join(f"{value:.2f}" for value in results[:, 3])
        layer = "Conv2D" if momentum is None else "AWConv2D"
        shown = "-" if momentum is None else f"{momentum:g}"
        lines.append(f"| {layer} | {shown} | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} "
                     f"| {mean[3]:.3f} | {per_seed} |")
        print(lines[-1] if len(lines) > 3 else "\n".join(lines), flush=True)
    header = (f"digits, {args.epochs} epochs, batch {args.batch_size}, pixels x {args.scale:g}, "
              f"head {args.head}, padding {args.padding}, optimizer {args.optimizer} (Keras "
              f"defaults), {args.seeds} seeds "
              f"(means; {len(data[0])} training / {len(data[1])} test images)")
    print(header)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(header + "\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

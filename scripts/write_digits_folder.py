"""Writes scikit-learn's handwritten digits as an image folder that aw-train reads.

The 1,797 real 8x8 digit scans (UCI optical recognition data) ship inside
scikit-learn, so this works offline. Each image is scaled from 0-16 to 0-255 and
enlarged to 16x16 (nearest neighbour, so no pixel is invented); the split is
stratified and fixed by ``--seed``: 60 % train, 20 % val, 20 % test.

    python scripts/write_digits_folder.py runs/digits
    aw-train resnet_cifar --dataset folder:runs/digits --preset small_noflip ...

Use the ``small_noflip`` preset: a mirrored digit is another class or none.
"""

import argparse
import os
import sys
import tempfile

import numpy as np


def split_indices(labels, seed):
    """Stratified 60/20/20 split: {"train": idx, "val": idx, "test": idx}."""
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_train, n_val = int(round(0.6 * len(members))), int(round(0.2 * len(members)))
        parts["train"] += members[:n_train].tolist()
        parts["val"] += members[n_train:n_train + n_val].tolist()
        parts["test"] += members[n_train + n_val:].tolist()
    return {k: sorted(v) for k, v in parts.items()}


def write_digits_folder(out, seed=0, scale=2):
    """Writes ``out/{train,val,test}/<digit>/<index>.png``; returns image counts per split.

    Written into a temporary directory next to ``out`` and renamed at the end, so an
    interrupted run leaves no half-written folder.
    """
    import tensorflow as tf
    from sklearn.datasets import load_digits

    if os.path.exists(out):
        raise ValueError(f"`out` {out!r} already exists; choose a new directory.")
    digits = load_digits()
    images = np.clip(np.round(digits.images * 255.0 / 16.0), 0, 255).astype(np.uint8)
    images = np.repeat(np.repeat(images, scale, axis=1), scale, axis=2)[..., None]
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".digits-", dir=parent)
    counts = {}
    for split, indices in split_indices(digits.target, seed).items():
        for index in indices:
            directory = os.path.join(staging, split, str(digits.target[index]))
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, f"{index:04d}.png"), "wb") as f:
                f.write(tf.io.encode_png(images[index]).numpy())
        counts[split] = len(indices)
    os.replace(staging, out)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python scripts/write_digits_folder.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out", help="new directory to write")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    args = parser.parse_args(argv)
    try:
        counts = write_digits_folder(args.out, args.seed)
    except ValueError as error:
        parser.error(str(error))
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Writes scikit-learn's handwritten digits as an image folder that aw-train reads.

The 1,797 real 8x8 digit scans (UCI optical recognition data) ship inside
scikit-learn, so this works offline. Each image is scaled from 0-16 to 0-255 and
enlarged to 16x16 (nearest neighbour, so no pixel is invented); the split is
stratified and fixed by ``--seed``: 60 % train, 20 % val, 20 % test.

    python scripts/write_digits_folder.py runs/digits
    aw-train resnet_cifar --dataset folder:runs/digits --preset small_noflip ...

Use the ``small_noflip`` preset: a mirrored digit is another class or none.
Running it again with the same ``--seed`` keeps the folder it wrote.
"""

import argparse
import os
import sys

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

    The folder is built in a temporary sibling of ``out`` and renamed when complete
    (`aw_keras.utils.cache.get_or_build`), so an interrupted run leaves no
    half-written folder (the next run removes its temporary) and runs that ask for
    the same folder at once all succeed, writing it once. An ``out`` this script
    already wrote with the same ``seed`` and ``scale`` is kept as it is; anything
    else at ``out`` is refused.
    """
    return _write(out, seed, scale)[0]


def _write(out, seed, scale):
    """(counts per split, whether this call wrote the folder)."""
    for name, value, low in (("seed", seed, 0), ("scale", scale, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"`out` must be a path, got {type(out).__name__} {out!r}.")
    from aw_keras.utils import cache

    out = os.path.abspath(os.fspath(out))
    key = {"digits_folder": 1, "seed": seed, "scale": scale}
    refused = ValueError(f"`out` {out!r} already exists and is not a digits folder written "
                         f"with seed {seed} and scale {scale}; choose a new directory.")
    if os.path.lexists(out) and not cache.is_complete(out, key):
        raise refused
    from sklearn.datasets import load_digits

    digits = load_digits()
    parts = split_indices(digits.target, seed)
    written = []

    def build(staging):
        import tensorflow as tf

        images = np.clip(np.round(digits.images * 255.0 / 16.0), 0, 255).astype(np.uint8)
        images = np.repeat(np.repeat(images, scale, axis=1), scale, axis=2)[..., None]
        for split, indices in parts.items():
            for index in indices:
                directory = os.path.join(staging, split, str(digits.target[index]))
                os.makedirs(directory, exist_ok=True)
                with open(os.path.join(directory, f"{index:04d}.png"), "wb") as f:
                    f.write(tf.io.encode_png(images[index]).numpy())
        written.append(staging)

    try:
        cache.get_or_build(out, build, key=key)
    except cache.CacheEntryError:
        raise refused from None
    return {split: len(indices) for split, indices in parts.items()}, bool(written)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python scripts/write_digits_folder.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out", help="new directory to write")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    args = parser.parse_args(argv)
    try:
        counts, wrote = _write(args.out, args.seed, 2)
    except ValueError as error:
        parser.error(str(error))
    summary = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(f"{'wrote' if wrote else 'kept the existing'} {args.out}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""int8 top-1 agreement with and without the residual split, over several trainings.

    python benchmarks/int8_split_agreement.py [--model aw_resnet_cifar] [--steps 100]
        [--seeds 0-7] [--images 2048] [--out results.json]

For each seed it trains ``--model`` with the int8 acceptance tests' recipe
(tests/export/conftest.py ``train_briefly``: 32x32 Fashion-MNIST, Adam, the
given steps, the seed varied), exports it to int8 TFLite twice
(``split_residual=True`` and ``False``, calibrated on the same 128 training
images as the tests) and prints a table: float accuracy and, per export, top-1
agreement with the Keras model on the first 64 test images (the tests'
acceptance set) and on ``--images`` test images (XNNPACK, 1 thread), then the
means and the paired difference with its standard error. The tests' recipe is
imported, not copied, so the figures are those of the acceptance tests.
Needs Fashion-MNIST at /usr/share/datasets/fashion-mnist.
"""

import argparse
import json
import os
import platform
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "export"))
import conftest as recipe  # noqa: E402

from aw_keras.export import export_tflite  # noqa: E402
from aw_keras.export.verify import TFLiteRunner  # noqa: E402

ACCEPTANCE_IMAGES = 64


def seed_list(text):
    """``"0-7"`` or ``"0,3,5"`` -> list of ints."""
    try:
        if "-" in text:
            first, last = (int(v) for v in text.split("-"))
            return list(range(first, last + 1))
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 0-7 or 0,3,5, received {text!r}")


def agreement(path, images, reference):
    runner = TFLiteRunner(path)
    predicted = np.concatenate([runner(images[i : i + 1]) for i in range(len(images))]).argmax(-1)
    same = predicted == reference
    return float(same[:ACCEPTANCE_IMAGES].mean()), float(same.mean())


def run_seed(name, steps, seed, images, labels, calibration, directory):
    model = recipe.train_briefly(name, steps, seed=seed, cache=False)  # one model at a time
    logits = np.concatenate([np.asarray(model(images[i : i + 256], training=False))
                             for i in range(0, len(images), 256)])
    reference = logits.argmax(-1)
    row = {"seed": seed, "float_accuracy": float((reference == labels).mean())}
    for split in (True, False):
        path = export_tflite(model, os.path.join(directory, f"{name}_{seed}_{split}.tflite"),
                             quantization="int8", representative_data=calibration,
                             split_residual=split)
        row["split" if split else "no_split"] = agreement(path, images, reference)
    return row


def print_table(rows, images):
    print(f"\n| seed | float accuracy | split ({ACCEPTANCE_IMAGES} / {images} images) "
          f"| no split ({ACCEPTANCE_IMAGES} / {images}) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['float_accuracy']:.3f} | {r['split'][0]:.3f} / "
              f"{r['split'][1]:.4f} | {r['no_split'][0]:.3f} / {r['no_split'][1]:.4f} |")
    split = np.array([r["split"] for r in rows])
    no_split = np.array([r["no_split"] for r in rows])
    print(f"| mean | | {split[:, 0].mean():.3f} / {split[:, 1].mean():.4f} | "
          f"{no_split[:, 0].mean():.3f} / {no_split[:, 1].mean():.4f} |")
    difference = no_split[:, 1] - split[:, 1]
    error = difference.std(ddof=1) / np.sqrt(len(rows)) if len(rows) > 1 else float("nan")
    print(f"\nno split - split on {images} images: {difference.mean():+.4f} "
          f"(standard error {error:.4f}, {len(rows)} trainings)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="aw_resnet_cifar")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=seed_list, default=seed_list("0-7"))
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.images < ACCEPTANCE_IMAGES:
        parser.error(f"--images must be at least {ACCEPTANCE_IMAGES}, received {args.images}")
    if args.steps < 1:
        parser.error(f"--steps must be positive, received {args.steps}")
    images, labels = recipe.load_fashion_mnist("t10k", args.images)
    calibration = recipe.load_fashion_mnist("train", 128)[0]
    print(f"{args.model}, {args.steps} steps, seeds {args.seeds}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for n, seed in enumerate(args.seeds, 1):
            rows.append(run_seed(args.model, args.steps, seed, images, labels, calibration, directory))
            print(f"[{n}/{len(args.seeds)}] {json.dumps(rows[-1])}", flush=True)
    print_table(rows, args.images)
    if args.out:
        with open(args.out + ".tmp", "w") as handle:
            json.dump(rows, handle, indent=1)
        os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()

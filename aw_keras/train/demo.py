"""The README's main job: plain vs AW ResNet on Fashion-MNIST over several seeds.

Runs ``aw-train`` once per (model, seed) in a fresh process (each run resumable:
re-running the demo continues or skips finished runs), prints the table
(model, params, top-1 error mean +- std over seeds, train images/s), writes it to
``OUT/table.md``, then exports the AW model with ``aw-export`` and prints its
verification table.

    python -m aw_keras.train.demo --out runs/demo
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

DEFAULT_MODELS = ("resnet_cifar", "aw_resnet_cifar")
# A 3-stage bottleneck ResNet with one block per stage, width 16 (~0.13 M params):
# the largest that fits 2 models x 3 seeds in ~15 minutes on 2 CPU cores.
DEFAULT_MODEL_KWARGS = {"blocks": [1, 1, 1], "width": 16}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m aw_keras.train.demo")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-examples", type=int, default=10000)
    parser.add_argument("--val-examples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--model-kwargs", default=json.dumps(DEFAULT_MODEL_KWARGS))
    parser.add_argument("--skip-export", action="store_true")
    return parser.parse_args(argv)


def run_one(args, model, seed):
    out = os.path.join(args.out, f"{model}_seed{seed}")
    metrics_path = os.path.join(out, "metrics.json")
    if os.path.isfile(metrics_path):
        print(f"[demo] {out} is complete; reusing it", flush=True)
        with open(metrics_path) as f:
            return json.load(f), out
    command = [sys.executable, "-m", "aw_keras.train.cli", model, "--dataset", "fashion_mnist",
               "--preset", "small", "--epochs", str(args.epochs), "--batch-size",
               str(args.batch_size), "--train-examples", str(args.train_examples),
               "--val-examples", str(args.val_examples), "--seed", str(seed),
               "--model-kwargs", args.model_kwargs, "--out", out, "--verbose", "2", "--resume"]
    print("[demo] " + " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)
    with open(metrics_path) as f:
        return json.load(f), out


def table(rows, seeds):
    lines = [f"| model | params | top-1 error % (mean +- std, {len(seeds)} seeds) | "
             "per-seed top-1 error % | train images/s |",
             "|---|---:|---:|---|---:|"]
    for model, results in rows:
        errors = [100 * r["top1_error"] for r in results]
        mean = statistics.mean(errors)
        std = statistics.stdev(errors) if len(errors) > 1 else 0.0
        speed = statistics.mean(r["train_images_per_second"] or 0 for r in results)
        lines.append(f"| {model} | {results[0]['params']:,} | {mean:.2f} +- {std:.2f} | "
                     f"{', '.join(f'{e:.2f}' for e in errors)} | {speed:.0f} |")
    return "\n".join(lines)


def export(args, aw_run):
    """aw-export of the AW model (guarded: the exporter may not be installed)."""
    import importlib.util

    if importlib.util.find_spec("aw_keras.export.cli") is None:
        print("[demo] aw-export (aw_keras.export.cli) is not available in this checkout; "
              "skipping the export step.", flush=True)
        return None
    model_path = os.path.join(aw_run, "last.keras")
    out = os.path.join(args.out, "export")
    command = [sys.executable, "-m", "aw_keras.export.cli", model_path, "--out", out]
    print("[demo] " + " ".join(command[1:]), flush=True)
    result = subprocess.run(command)
    if result.returncode:
        print(f"[demo] aw-export exited with {result.returncode}", flush=True)
    return result.returncode


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    rows, runs = [], {}
    for model in args.models:
        results = []
        for seed in args.seeds:
            metrics, out = run_one(args, model, seed)
            results.append(metrics)
            runs.setdefault(model, out)
        rows.append((model, results))
    minutes = (time.perf_counter() - start) / 60
    text = table(rows, args.seeds)
    header = (f"Fashion-MNIST, small-image preset, {args.train_examples} training images x "
              f"{args.epochs} epochs, batch {args.batch_size}, model kwargs {args.model_kwargs}; "
              f"top-1 error of the last model on the 10,000 test images; "
              f"wall time of all runs {minutes:.1f} min.")
    print("\n" + header + "\n\n" + text + "\n", flush=True)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(header + "\n\n" + text + "\n")
    aw_models = [m for m in args.models if m.startswith("aw_")]
    if aw_models and not args.skip_export:
        export(args, runs[aw_models[0]])
    print(f"[demo] plots: {args.out}/<model>_seed<k>/plots/*.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

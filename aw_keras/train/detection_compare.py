"""A multi-seed detection comparison: aw-train runs of FPN backbones, COCO mAP mean +- std.

The main job (`aw_keras.train.demo`) runs it after the classification comparison::

    python -m aw_keras.train.detection_compare --out runs/demo/detection --jobs 2 \\
        --models resnet_small_fpn aw_resnet_small_fpn --seeds 0 1 -- --epochs 4

Arguments after ``--`` go to every aw-train run. Runs are resumable like
aw-compare's (finished runs are reused, interrupted ones continued). Writes
``detection.md`` (table and paired differences of mAP against the first model),
``detection.json`` and ``plots/detection_map.png``.
"""

import argparse
import os
import sys

from aw_keras.train import compare
from aw_keras.train.checkpoint import atomic_write_json
from aw_keras.train.checkpoint import atomic_write_text
from aw_keras.train.stats import paired_difference
from aw_keras.train.stats import verdict

METRICS = ("map", "map50", "map75")


def summarize(models, seeds, runs):
    """{model: {metric: (mean, std), "per_seed": {...}, ...}} and the paired mAP
    differences of each model against ``models[0]``."""
    import numpy as np

    baseline = models[0]
    summary = {"baseline": baseline, "models": {}, "paired": {}}
    for model in models:
        done = {seed: runs[(model, seed)] for seed in seeds if (model, seed) in runs}
        entry = {"per_seed": {str(s): {k: r[k] for k in METRICS} for s, r in done.items()},
                 "missing_seeds": [s for s in seeds if s not in done]}
        if done:
            first = next(iter(done.values()))
            speeds = [r["train_images_per_second"] for r in done.values()
                      if r.get("train_images_per_second")]
            entry.update(params=first.get("params"), epochs=first.get("epochs"),
                         train_images_per_second=float(np.median(speeds)) if speeds else None)
            for metric in METRICS:
                entry[metric] = compare._mean_std([r[metric] for r in done.values()])
        summary["models"][model] = entry
    for model in models[1:]:
        paired = [s for s in seeds if (model, s) in runs and (baseline, s) in runs]
        if len(paired) < 1:
            continue
        result = paired_difference([runs[(model, s)]["map"] for s in paired],
                                           [runs[(baseline, s)]["map"] for s in paired])
        result["seeds"] = paired
        result["verdict"] = verdict(result, lower_is_better=False)
        summary["paired"][model] = result
    return summary


def _fmt(pair, scale=100.0):
    mean, std = pair
    return f"{scale * mean:.2f}" + (f" +- {scale * std:.2f}" if std is not None else "")


def markdown(summary, seeds, command):
    lines = [f"Detection comparison: {len(seeds)} seed(s) {seeds}, COCO metrics (%) on the "
             "validation split, mean +- std over seeds.", "", f"Command: `{command}`", "",
             "| model | params | mAP@[.5:.95] | mAP@0.5 | mAP@0.75 | train images/s |",
             "|---|---|---|---|---|---|"]
    for model, entry in summary["models"].items():
        if "map" not in entry:
            lines.append(f"| {model} | - | not run | | | |")
            continue
        speed = entry.get("train_images_per_second")
        lines.append(f"| {model} | {entry['params']:,} | {_fmt(entry['map'])} | "
                     f"{_fmt(entry['map50'])} | {_fmt(entry['map75'])} | "
                     f"{f'{speed:.1f}' if speed is not None else '-'} |")
    for model, result in summary["paired"].items():
        interval = result.get("ci95")
        text = (f"[{100 * interval[0]:+.2f}, {100 * interval[1]:+.2f}]" if interval
                else "(one seed: no interval)")
        lines += ["", f"{model} vs {summary['baseline']}: mAP difference "
                      f"{100 * result['mean_diff']:+.2f} points, 95 % CI {text}: "
                      f"{result['verdict']}."]
    return "\n".join(lines) + "\n"


def clipped_error_bars(means, stds, low=0.0, high=100.0):
    """Matplotlib's ``yerr`` (2, N) for bars at ``means`` +- ``stds``, cut at ``low``
    and ``high``: a metric in [0, 100] % never leaves that range, while mean +- std
    of a few seeds can (two seeds of 0.1 % and 2.3 %: 1.2 +- 1.6 %)."""
    import numpy as np

    means = np.asarray(means, np.float64)
    stds = np.asarray(stds, np.float64)
    return np.stack([np.clip(np.minimum(stds, means - low), 0.0, None),
                     np.clip(np.minimum(stds, high - means), 0.0, None)])


def plot(summary, path):
    from aw_keras.train.plots import pyplot

    plt = pyplot()
    models = [m for m, e in summary["models"].items() if "map" in e]
    seeds = sorted({len(summary["models"][m]["per_seed"]) for m in models})
    figure, axis = plt.subplots(figsize=(2.2 + 1.6 * len(models), 4.0))
    width = 0.38
    for offset, metric, label in ((-width / 2, "map", "mAP@[.5:.95]"),
                                  (width / 2, "map50", "mAP@0.5")):
        means = [100 * summary["models"][m][metric][0] for m in models]
        stds = [100 * (summary["models"][m][metric][1] or 0.0) for m in models]
        axis.bar([i + offset for i in range(len(models))], means, width,
                 yerr=clipped_error_bars(means, stds), capsize=4, label=label)
    axis.set_xticks(range(len(models)), models, rotation=15, fontsize=8)
    axis.set_ylabel("% (mean over seeds)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, axis="y")
    count = "/".join(str(n) for n in seeds) or "0"
    figure.text(0.01, 0.01, f"error bars: +- 1 std over {count} seed(s), cut at 0 and 100 % "
                "(mAP cannot leave them);\nwith few seeds the std itself is very uncertain",
                fontsize=7, va="bottom")
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def compare_detectors(out, models, seeds, train_args, dataset="fashion_detection", log=print,
                      jobs=1):
    """Trains every (model, seed), ``jobs`` runs at a time (each with its share of
    the CPU threads), then writes and returns the summary."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"`jobs` must be a positive int, received {jobs!r}.")
    runner = compare.Runner(out, dataset, train_args, jobs=jobs, log=log)
    failed = runner.run_all([(model, seed, None, False) for seed in seeds for model in models])
    runs = {}
    for model in models:
        for seed in seeds:
            result = compare.load_run(compare.run_dir(out, model, seed))
            if result is not None:
                runs[(model, seed)] = result
    summary = summarize(models, seeds, runs)
    command = " ".join(["python -m aw_keras.train.detection_compare", "--out", out,
                        *(["--jobs", str(jobs)] if jobs > 1 else []), "--models",
                        *models, "--seeds", *map(str, seeds), "--", *train_args])
    table = markdown(summary, seeds, command)
    atomic_write_text(os.path.join(out, "detection.md"), table)
    atomic_write_json(os.path.join(out, "detection.json"), summary)
    plot(summary, os.path.join(out, "plots", "detection_map.png"))
    log(table)
    if failed:
        log(f"[detection] {len(failed)} run(s) failed: {failed}; see {out}/logs")
    return summary, failed


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m aw_keras.train.detection_compare")
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", nargs="+", default=["resnet_small_fpn", "aw_resnet_small_fpn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--dataset", default="fashion_detection")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time (2 on 2 cores: seed by seed, both models at once)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be positive, got {args.jobs}")
    _, failed = compare_detectors(args.out, args.models, args.seeds, train_args, args.dataset,
                                  jobs=args.jobs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

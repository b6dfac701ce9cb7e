"""``aw-compare``: paired multi-seed comparisons of registered models.

Trains every (model, seed) with ``aw-train`` (one resumable run each), then
reports, for every model against the baseline, the paired difference of the
top-1 test error over seeds with a 95 % confidence interval, a p-value and a
verdict in plain words; also the comparison at equal training time.

Example:

    aw-compare resnet_cifar aw_resnet_cifar --dataset fashion_mnist --seeds 0 1 2 3 4 \\
        --epochs 5 --out runs/compare --train-examples 10000 --model-kwargs '{"width": 16}'
    # killed? run the same command again: finished runs are reused, the
    # interrupted one continues from its last checkpoint.

Any option that is not aw-compare's own goes to every ``aw-train`` run
(``--batch-size``, ``--preset``, ``--model-kwargs``, ...; see ``aw-train --help``).

Writes into ``--out``: ``runs/<model>_seed<k>/`` (aw-train runs), ``logs/``,
``comparison.md``, ``comparison.json``, ``plots/comparison.png``,
``plots/validation_curves.png``. Exit status: 0 done, 2 bad input (nothing
written or overwritten), 1 a run failed.
"""

import argparse
import concurrent.futures
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

from aw_keras.train import plots
from aw_keras.train.checkpoint import atomic_write_json
from aw_keras.train.stats import CONFIDENCE
from aw_keras.train.stats import TEST_NAME
from aw_keras.train.stats import paired_difference
from aw_keras.train.stats import verdict
from aw_keras.utils import tf_quiet
from aw_keras.utils.text import count_phrase

SETTINGS_FILE = "compare_settings.json"
# aw-train options that aw-compare sets itself, per run.
OWNED_TRAIN_OPTIONS = ("--out", "--seed", "--resume", "--epochs")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="aw-compare",
        description="Train each model with each seed (aw-train, resumable) and compare them "
                    "with the baseline: paired differences over seeds, 95 %% confidence "
                    "intervals, p-values (paired t-test), plots.",
        epilog="Every other option is passed to each aw-train run (see aw-train --help), "
               "e.g. --batch-size 128 --preset small --train-examples 10000. TensorFlow's "
               "start-up log lines are hidden; AW_KERAS_TF_LOGS=1 shows them.")
    add = parser.add_argument
    add("models", nargs="+", metavar="MODEL", help="registered model names, e.g. resnet_cifar "
        "aw_resnet_cifar")
    add("--out", required=True, help="output directory (new/empty, or this comparison's)")
    add("--seeds", nargs="+", type=_seed, default=[0, 1, 2, 3, 4],
        help="seeds (default 0 1 2 3 4); the same seed gives every model the same data order")
    add("--epochs", type=_positive_int("--epochs"), default=None,
        help="epochs per run (default: the preset's)")
    add("--baseline", default=None, help="the model the others are compared with (default: "
        "the first MODEL)")
    add("--dataset", default="fashion_mnist", help="as aw-train's --dataset (default "
        "fashion_mnist)")
    add("--jobs", type=_positive_int("--jobs"), default=1,
        help="runs trained at once (default 1); each gets cores / jobs threads")
    add("--equal-time", action=argparse.BooleanOptionalAction, default=True,
        help="also train the baseline for as many more epochs as a slower model needed time, "
             "and compare at equal training time (default: on)")
    return parser


def _positive_int(flag):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer, got {text!r}") \
                from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer, got {value}")
        return value

    return parse


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes integers >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"--seeds takes integers >= 0, got {value}")
    return value


# ------------------------------------------------------------------ validation


def check_arguments(args, train_args):
    """Everything that can be checked before any file is written; raises UsageError."""
    from aw_keras import applications
    from aw_keras.train.run import UsageError
    from aw_keras.train import cli as train_cli

    models = [m.lower() for m in args.models]
    for model in models:
        try:
            applications.get_model_builder(model)
        except ValueError as error:
            raise UsageError(str(error)) from None
    if len(set(models)) != len(models):
        raise UsageError(f"A model is listed twice in {args.models}; list each once.")
    if len(set(args.seeds)) != len(args.seeds):
        raise UsageError(f"--seeds lists a seed twice: {args.seeds}.")
    baseline = (args.baseline or models[0]).lower()
    if baseline not in models:
        raise UsageError(f"--baseline {args.baseline!r} is not among the models {models}; "
                         "add it to the list of models.")
    for option in OWNED_TRAIN_OPTIONS:
        if any(a == option or a.startswith(option + "=") for a in train_args):
            raise UsageError(f"{option} is set by aw-compare for each run; use aw-compare's own "
                             "--out, --seeds and --epochs.")
    # aw-train's own parser checks the options passed through (exit 2 on errors).
    probe = [models[0], "--out", "unused", "--dataset", args.dataset, *train_args]
    try:
        parsed = train_cli.build_parser().parse_args(probe)
    except SystemExit as exit_:
        raise UsageError("the options above are not valid aw-train options "
                         f"({' '.join(train_args) or 'none'}).") from exit_
    train_cli.check_early(parsed)  # a missing dataset folder fails here, not in every run
    return models, baseline


def settings_of(args, train_args):
    """What makes runs of this comparison interchangeable (models, seeds and the
    baseline may change: runs are added and reused)."""
    return {"dataset": args.dataset, "epochs": args.epochs, "train_args": list(train_args)}


def prepare_output_dir(out, settings):
    """Refuses an output directory holding anything but this comparison."""
    from aw_keras.train.run import UsageError

    path = os.path.join(out, SETTINGS_FILE)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out!r} exists and is not a directory.")
    if os.path.isfile(path):
        try:
            with open(path) as f:
                previous = json.load(f)["settings"]
        except (OSError, ValueError, KeyError) as error:
            raise UsageError(f"{path} is unreadable ({error}); refusing to touch {out!r}.") \
                from error
        if previous != settings:
            changed = ", ".join(f"{k}: {previous.get(k)!r} there vs {settings[k]!r} now"
                                for k in settings if previous.get(k) != settings[k])
            raise UsageError(f"--out {out!r} holds a different comparison ({changed}). Nothing "
                             "was overwritten; choose another --out or repeat its settings.")
        return
    if os.path.isdir(out) and os.listdir(out):
        raise UsageError(f"--out {out!r} is not empty and holds no aw-compare comparison "
                         f"({SETTINGS_FILE} missing); refusing to write into it.")


# ---------------------------------------------------------------------- runs


def run_dir(out, model, seed, epochs=None):
    suffix = f"_e{epochs}" if epochs is not None else ""
    return os.path.join(out, "runs", f"{model}{suffix}_seed{seed}")


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def _die_with_parent():
    """Child processes die with aw-compare (kill -9 included), so a re-run never
    trains the same directory twice at once. Linux only; elsewhere a no-op."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Runner:
    """Runs aw-train for (model, seed, epochs) jobs, reusing finished ones."""

    def __init__(self, out, dataset, train_args, jobs, log=print):
        self.out, self.dataset = out, dataset
        self.train_args, self.jobs, self.log = list(train_args), jobs, log
        self._lock = threading.Lock()
        self._children = set()
        self.reused = 0  # finished runs found and reused, not trained again

    def command(self, model, seed, epochs, directory):
        command = [sys.executable, "-m", "aw_keras.train.cli", model, "--dataset", self.dataset,
                   "--seed", str(seed), "--out", directory, "--resume", *self.train_args]
        if epochs is not None:
            command += ["--epochs", str(epochs)]
        if not any(a == "--verbose" or a.startswith("--verbose=") for a in self.train_args):
            command += ["--verbose", "2"]
        return command

    def environment(self):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if self.jobs > 1:
            threads = str(max(1, (os.cpu_count() or 1) // self.jobs))
            env.setdefault("TF_NUM_INTRAOP_THREADS", threads)
            env.setdefault("TF_NUM_INTEROP_THREADS", "1")
        return env

    def run_one(self, label, model, seed, epochs, extended=False):
        directory = run_dir(self.out, model, seed, epochs if extended else None)
        metrics_path = os.path.join(directory, "metrics.json")
        if os.path.isfile(metrics_path):
            with self._lock:
                self.reused += 1
            self.log(f"[aw-compare] {label} {model} seed {seed}: finished earlier, reusing "
                     f"{directory}")
            return 0
        os.makedirs(os.path.join(self.out, "logs"), exist_ok=True)
        log_path = os.path.join(self.out, "logs", os.path.basename(directory) + ".log")
        command = self.command(model, seed, epochs, directory)
        self.log(f"[aw-compare] {label} {model} seed {seed}: "
                 + " ".join(shlex.quote(c) for c in command[2:]) + f"  (log: {log_path})")
        start = time.perf_counter()
        with open(log_path, "a") as log_file:
            process = subprocess.Popen(command, env=self.environment(), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True,
                                       preexec_fn=_die_with_parent if os.name == "posix" else None)
            with self._lock:
                self._children.add(process)
            for line in process.stdout:
                log_file.write(line)
                log_file.flush()
                if self.jobs == 1 and (not tf_quiet.enabled() or not tf_quiet.is_noise(line)):
                    sys.stdout.write("    " + line)
                    sys.stdout.flush()
            process.wait()
            with self._lock:
                self._children.discard(process)
        minutes = (time.perf_counter() - start) / 60
        if process.returncode:
            self.log(f"[aw-compare] {label} {model} seed {seed}: aw-train exited with "
                     f"{process.returncode} after {minutes:.1f} min; see {log_path}")
        else:
            self.log(f"[aw-compare] {label} {model} seed {seed}: done in {minutes:.1f} min")
        return process.returncode

    def run_all(self, jobs):
        """``jobs``: [(model, seed, epochs, extended)]. Returns the failed ones."""
        total = len(jobs)
        labelled = [(f"run {i}/{total}", *job) for i, job in enumerate(jobs, 1)]
        failed = []
        try:
            if self.jobs == 1:
                for job in labelled:
                    if self.run_one(*job):
                        failed.append(job[1:])
            else:
                with concurrent.futures.ThreadPoolExecutor(self.jobs) as pool:
                    results = list(pool.map(lambda job: (job, self.run_one(*job)), labelled))
                failed = [job[1:] for job, code in results if code]
        except KeyboardInterrupt:
            self.stop_children()
            raise
        return failed

    def stop_children(self):
        with self._lock:
            for process in self._children:
                process.terminate()


# ------------------------------------------------------------------ analysis


def load_run(directory):
    """metrics.json and history.json of a finished run, with the Keras backend
    its run.json names (runs written before backends were recorded: tensorflow),
    or None."""
    metrics = read_json(os.path.join(directory, "metrics.json"))
    if metrics is None:
        return None
    history = read_json(os.path.join(directory, "history.json"), [])
    metrics = dict(metrics)
    metrics["history"] = history
    metrics["backend"] = (read_json(os.path.join(directory, "run.json"), {}) or {}).get(
        "backend", "tensorflow")
    metrics["train_seconds"] = sum(h.get("train_seconds", 0.0) for h in history)
    return metrics


def _mean_std(values):
    import numpy as np

    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if values.size > 1 else None
    return float(values.mean()), std


def _mean_interval(values):
    """Mean and its 95 % t-interval (None for one value)."""
    mean, std = _mean_std(values)
    if std is None:
        return mean, None
    from scipy import stats

    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1)) * std / math.sqrt(
        len(values))
    return mean, [mean - half, mean + half]


def summarize(models, baseline, seeds, runs):
    """``runs``: {(model, seed): metrics}. Returns the comparison.json structure
    (without the equal-time part)."""
    import numpy as np

    summary = {"baseline": baseline, "metric": "top1_error", "test": TEST_NAME,
               "confidence": CONFIDENCE, "models": {}, "paired": {}}
    for model in models:
        done = {seed: runs[(model, seed)] for seed in seeds if (model, seed) in runs}
        if not done:
            summary["models"][model] = {"per_seed": {}, "missing_seeds": list(seeds)}
            continue
        errors = [r["top1_error"] for r in done.values()]
        mean, std = _mean_std(errors)
        speeds = [steady_speed(r) for r in done.values()]
        speeds = [(speed, steady) for speed, steady in speeds if speed]
        first = next(iter(done.values()))
        summary["models"][model] = {
            "params": first.get("params"), "gflops": first.get("gflops"),
            "train_images_per_second": (float(np.median([speed for speed, _ in speeds]))
                                        if speeds else None),
            "speed_includes_tracing": not all(steady for _, steady in speeds),
            "train_seconds_median": float(np.median([r["train_seconds"] for r in done.values()])),
            "epochs": first.get("epochs"),
            "mean": mean, "std": std, "ci95_of_mean": _mean_interval(errors)[1],
            "per_seed": {str(seed): r["top1_error"] for seed, r in done.items()},
            "missing_seeds": [s for s in seeds if s not in done],
        }
    for model in models:
        if model == baseline:
            continue
        paired_seeds = [s for s in seeds if (model, s) in runs and (baseline, s) in runs]
        if not paired_seeds:
            continue
        result = paired_difference([runs[(model, s)]["top1_error"] for s in paired_seeds],
                                   [runs[(baseline, s)]["top1_error"] for s in paired_seeds])
        result["seeds"] = paired_seeds
        result["verdict"] = verdict(result, lower_is_better=True)
        summary["paired"][model] = result
    return summary


# A history entry's training images/s counted from the end of the epoch's first
# step, where aw-train records it: a process's first step traces the graph.
AFTER_FIRST_STEP = "images_per_second_after_first_step"
TRACING_NOTE = ("no equal-time comparison: every run trained each epoch as the first of its "
                "process, whose time is dominated by the one-time graph tracing, and no timing "
                "without it was recorded; use --epochs 2 or more")


def _weighted_speed(entries, key):
    seconds = sum(h["train_seconds"] for h in entries)
    if not seconds:
        return None
    return sum(h[key] * h["train_seconds"] for h in entries) / seconds


def steady_speed(run):
    """``(images/s, steady)``: a finished run's training speed without graph tracing
    and the fused kernel's one-time build (``steady`` True), from the epochs after
    a process's first, else from each epoch's time after its first step; where
    neither was recorded, aw-train's own figure with ``steady`` False."""
    history = run.get("history") or []
    if not history or not all("first_epoch_of_process" in h for h in history):
        return run.get("train_images_per_second"), True  # aw-train's steady figure
    later = [h for h in history if not h["first_epoch_of_process"]]
    if later:
        return _weighted_speed(later, "images_per_second"), True
    if all(h.get(AFTER_FIRST_STEP) for h in history):
        return _weighted_speed(history, AFTER_FIRST_STEP), True
    return run.get("train_images_per_second"), False


def time_ratio(model_runs, baseline_runs):
    """Median over paired seeds of the model's training time per image over the
    baseline's, from `steady_speed` (graph tracing and the fused kernel's one-time
    build do not count); None when no seed has a steady speed of both runs."""
    import numpy as np

    ratios = []
    for seed in model_runs:
        if seed not in baseline_runs:
            continue
        (mine, mine_steady), (base, base_steady) = (steady_speed(model_runs[seed]),
                                                    steady_speed(baseline_runs[seed]))
        if mine and base and mine_steady and base_steady:
            ratios.append(base / mine)
    return float(np.median(ratios)) if ratios else None


def equal_time_epochs(epochs, ratio):
    """Baseline epochs that take at least the time the model needed for ``epochs``."""
    return max(epochs, int(math.ceil(epochs * ratio - 1e-9)))


# --------------------------------------------------------------------- report


def _pp(value):
    return "n/a" if value is None else f"{100 * value:.2f}"


def _signed_pp(value):
    return "n/a" if value is None else f"{100 * value:+.2f}"


def _interval(ci):
    return "n/a" if ci is None else f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"


def _p(value):
    return "n/a" if value is None else (f"{value:.3f}" if value >= 0.001 else f"{value:.1e}")


def markdown(summary, command, seeds, header):
    lines = [header, "", f"Command: `{command}`", ""]
    lines += ["| model | params | GFLOPs | train images/s | top-1 error % (mean +- std) | "
              "per-seed top-1 error % |", "|---|---:|---:|---:|---:|---|"]
    tracing = False
    for model, entry in summary["models"].items():
        if not entry["per_seed"]:
            lines.append(f"| {model} | | | | no finished run | |")
            continue
        std = "n/a" if entry["std"] is None else f"{100 * entry['std']:.2f}"
        gflops = "n/a" if entry["gflops"] is None else f"{entry['gflops']:.3g}"
        speed = entry["train_images_per_second"]
        speed = "n/a" if speed is None else f"{speed:.0f}"
        if entry.get("speed_includes_tracing"):
            speed += " (incl. tracing)"
            tracing = True
        lines.append(
            f"| {model} | {entry['params']:,} | {gflops} | "
            f"{speed} | {_pp(entry['mean'])} +- {std} | "
            + ", ".join(f"{_pp(v)} (seed {s})" for s, v in entry["per_seed"].items()) + " |")
    if tracing:
        lines += ["", "incl. tracing: each epoch of these runs was the first of its process, so "
                  "its time includes the one-time graph tracing, which dominates short runs; "
                  "these images/s are far below the steady speed and do not compare models."]
    baseline = summary["baseline"]
    lines += ["", f"Paired against **{baseline}** (difference = model - baseline in percentage "
              f"points of top-1 error; negative means fewer errors; {TEST_NAME}, "
              f"{int(100 * CONFIDENCE)} % interval):", "",
              "| model | seeds | mean difference (pp) | 95 % CI (pp) | p-value | verdict |",
              "|---|---:|---:|---:|---:|---|"]
    for model, result in summary["paired"].items():
        lines.append(f"| {model} | {result['n']} | {_signed_pp(result['mean_diff'])} | "
                     f"{_interval(result['ci95'])} | {_p(result['p_value'])} | "
                     f"{result['verdict']} |")
    if len(seeds) < 2:
        lines += ["", "One seed only: no confidence interval or p-value can be computed; the "
                  "difference above says nothing about which model is better."]
    equal = summary.get("equal_time") or {}
    if equal:
        lines += ["", "At equal training time (the baseline trained again for as many epochs as "
                  "the slower model's training time needed, rounded up, so the baseline gets at "
                  "least the same time):", "",
                  "| model | time ratio to baseline | baseline epochs | mean difference (pp) | "
                  "95 % CI (pp) | p-value | verdict |", "|---|---:|---:|---:|---:|---:|---|"]
        for model, entry in equal.items():
            if entry.get("note"):
                ratio = "n/a" if entry["time_ratio"] is None else f"{entry['time_ratio']:.2f}"
                baseline_epochs = ("n/a" if entry["baseline_epochs"] is None
                                   else entry["baseline_epochs"])
                lines.append(f"| {model} | {ratio} | {baseline_epochs} | | | | "
                             f"{entry['note']} |")
                continue
            result = entry["paired"]
            lines.append(f"| {model} | {entry['time_ratio']:.2f} | {entry['baseline_epochs']} | "
                         f"{_signed_pp(result['mean_diff'])} | {_interval(result['ci95'])} | "
                         f"{_p(result['p_value'])} | {result['verdict']} |")
    return "\n".join(lines) + "\n"


def error_bars(summary):
    """The 95 % intervals `plot_comparison` draws, in percent, clipped to the values
    that are possible: an error rate lies in [0, 100] %, and a mean paired
    difference in [-b, 100 - b] pp where b is the baseline's mean error on those
    seeds. (A t-interval of few seeds is wide: with two seeds it is 12.7 standard
    errors either side and easily passes those limits.)

    Returns ``{"models": {model: (mean, low, high, clipped)}, "paired": {...}}``;
    ``low``/``high`` are None where there is no interval (one seed)."""

    def clip(mean, ci, lowest, highest):
        if ci is None:
            return mean, None, None, False
        low, high = 100 * ci[0], 100 * ci[1]
        clipped = low < lowest or high > highest
        return mean, max(low, lowest), min(high, highest), clipped

    bars = {"models": {}, "paired": {}}
    for model, entry in summary["models"].items():
        if entry["per_seed"]:
            bars["models"][model] = clip(100 * entry["mean"], entry["ci95_of_mean"], 0.0, 100.0)
    base_errors = summary["models"].get(summary["baseline"], {}).get("per_seed", {})
    for model, result in summary["paired"].items():
        seeds = [str(s) for s in result.get("seeds", [])]
        known = [base_errors[s] for s in seeds if s in base_errors]
        base = 100 * sum(known) / len(known) if known else 0.0
        lowest, highest = (-base, 100.0 - base) if known else (-100.0, 100.0)
        bars["paired"][model] = clip(100 * result["mean_diff"], result["ci95"], lowest, highest)
    return bars


def plot_comparison(summary, path):
    """Per-seed errors with mean and 95 % CI per model, and the paired differences;
    intervals clipped to the possible range (see `error_bars`), said on the figure."""
    import numpy as np

    plt = plots.pyplot()
    models = [m for m, e in summary["models"].items() if e["per_seed"]]
    bars = error_bars(summary)
    clipped = False
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    rng = np.random.default_rng(0)
    for i, model in enumerate(models):
        entry = summary["models"][model]
        values = 100 * np.array(list(entry["per_seed"].values()))
        axes[0].scatter(i + rng.uniform(-0.08, 0.08, values.size), values, s=18, alpha=0.6,
                        color="tab:gray", zorder=2)
        mean, low, high, cut = bars["models"][model]
        clipped |= cut
        yerr = None if low is None else [[mean - low], [high - mean]]
        axes[0].errorbar(i + 0.2, mean, yerr=yerr, fmt="o", color="tab:blue", capsize=4,
                         zorder=3)
    axes[0].set_xticks(range(len(models)), models, rotation=20, ha="right")
    axes[0].set_ylabel("top-1 test error %")
    axes[0].set_title("per seed (grey), mean and 95 % CI (blue)")
    axes[0].grid(alpha=0.3)
    paired = summary["paired"]
    for i, model in enumerate(paired):
        mean, low, high, cut = bars["paired"][model]
        clipped |= cut
        yerr = None if low is None else [[mean - low], [high - mean]]
        axes[1].errorbar(i, mean, yerr=yerr, fmt="o", color="tab:red", capsize=4)
    axes[1].axhline(0.0, color="black", linewidth=0.8)
    axes[1].set_xticks(range(len(paired)), list(paired), rotation=20, ha="right")
    axes[1].set_ylabel(f"error difference to {summary['baseline']} (pp)")
    axes[1].set_title("paired difference, mean and 95 % CI")
    axes[1].grid(alpha=0.3)
    figure.tight_layout()
    if clipped:
        seeds = len(summary.get("settings", {}).get("seeds") or []) or None
        few = f"{seeds} seeds" if seeds else "few seeds"
        figure.text(0.5, 0.01, f"Bars are cut where the values end (an error lies in 0-100 %, "
                    f"so does the baseline's error plus a difference): the 95 % t-interval "
                    f"of {few} reaches past them.", ha="center", va="bottom", fontsize=8,
                    style="italic")
        figure.subplots_adjust(bottom=max(figure.subplotpars.bottom, 0.27))
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_validation_curves(models, seeds, runs, path):
    """Validation top-1 error per epoch: mean over seeds and a +-1 std band."""
    import numpy as np

    plt = plots.pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for model in models:
        curves = [[1 - h["val_accuracy"] for h in runs[(model, s)]["history"]
                   if h.get("val_accuracy") is not None]
                  for s in seeds if (model, s) in runs]
        curves = [c for c in curves if c]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        values = 100 * np.array([c[:length] for c in curves])
        epochs = np.arange(1, length + 1)
        mean = values.mean(axis=0)
        (line,) = axis.plot(epochs, mean, "-o", markersize=3, label=f"{model} ({len(curves)} "
                            "seeds)")
        if len(curves) > 1:
            std = values.std(axis=0, ddof=1)
            axis.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    axis.set_xlabel("epoch")
    axis.xaxis.get_major_locator().set_params(integer=True)
    low, high = axis.get_ylim()
    if low > 0 and high / low > 10:  # early epochs would flatten the end of the curves
        axis.set_yscale("log")
    axis.set_ylabel("validation top-1 error %")
    axis.set_title("validation error: mean over seeds, band +-1 std")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# ---------------------------------------------------------------------- main


def compare(args, train_args, command_line, log=print):
    """Runs and reports one comparison; returns the exit status (0 or 1)."""
    models, baseline = check_arguments(args, train_args)
    settings = settings_of(args, train_args)
    prepare_output_dir(args.out, settings)
    os.makedirs(args.out, exist_ok=True)
    atomic_write_json(os.path.join(args.out, SETTINGS_FILE),
                      {"settings": settings, "command": command_line})
    if len(args.seeds) < 2:
        log("[aw-compare] one seed only: the table is printed, but without a confidence "
            "interval nothing can be said about which model is better.")
    runner = Runner(args.out, args.dataset, train_args, args.jobs, log=log)
    start = time.perf_counter()
    # Seed-major order: an interrupted sweep has complete pairs for its first seeds.
    jobs = [(model, seed, args.epochs, False) for seed in args.seeds for model in models]
    failed = runner.run_all(jobs)
    runs = {}
    for model in models:
        for seed in args.seeds:
            result = load_run(run_dir(args.out, model, seed))
            if result is not None:
                runs[(model, seed)] = result
    summary = summarize(models, baseline, args.seeds, runs)
    if args.equal_time:
        failed += equal_time(args, runner, models, baseline, runs, summary, log)
    minutes = (time.perf_counter() - start) / 60
    backends = sorted({run["backend"] for run in runs.values()})
    summary["settings"] = {**settings, "seeds": args.seeds, "models": models,
                           "command": command_line, "backends": backends}
    epochs = args.epochs or next((e["epochs"] for e in summary["models"].values()
                                  if e.get("epochs")), None)
    reused = (f" ({runner.reused} finished run{'s' if runner.reused != 1 else ''} reused)"
              if runner.reused else "")
    on_backends = f" (Keras on {', '.join(backends)})" if backends else ""
    header = (f"aw-compare on {args.dataset}{on_backends}, {count_phrase(epochs, 'epoch')}, seeds "
              f"{' '.join(map(str, args.seeds))}; top-1 error of the last model on the test "
              f"split; this invocation took {minutes:.1f} min{reused}.")
    text = markdown(summary, command_line, args.seeds, header)
    for model, entry in summary["models"].items():
        if entry.get("missing_seeds"):
            log(f"[aw-compare] {model}: no finished run for seeds {entry['missing_seeds']}; "
                "they are left out of the statistics.")
    atomic_write_json(os.path.join(args.out, "comparison.json"), summary)
    with open(os.path.join(args.out, ".comparison.md.tmp"), "w") as f:
        f.write(text)
    os.replace(os.path.join(args.out, ".comparison.md.tmp"),
               os.path.join(args.out, "comparison.md"))
    written = []
    if runs:
        os.makedirs(os.path.join(args.out, "plots"), exist_ok=True)
        written.append(plot_comparison(summary, os.path.join(args.out, "plots",
                                                             "comparison.png")))
        written.append(plot_validation_curves(models, args.seeds, runs,
                                              os.path.join(args.out, "plots",
                                                           "validation_curves.png")))
    log("\n" + text)
    log(f"[aw-compare] wrote {os.path.join(args.out, 'comparison.md')}, comparison.json"
        + (", " + ", ".join(written) if written else ""))
    if failed:
        log(f"[aw-compare] {len(failed)} run(s) failed: "
            + ", ".join(f"{m} seed {s}" for m, s, *_ in failed) + "; see the logs. Re-run the "
            "same command to retry them.")
        return 1
    return 0


def equal_time(args, runner, models, baseline, runs, summary, log):
    """Trains the baseline longer where a model needed more time; fills
    ``summary["equal_time"]``. Returns failed jobs."""
    base = {s: runs[(baseline, s)] for s in args.seeds if (baseline, s) in runs}
    plans = {}
    for model in models:
        if model == baseline:
            continue
        mine = {s: runs[(model, s)] for s in args.seeds if (model, s) in runs}
        ratio = time_ratio(mine, base)
        if ratio is None:
            if any(s in base for s in mine):  # paired runs without a steady speed
                summary.setdefault("equal_time", {})[model] = {
                    "time_ratio": None, "baseline_epochs": None, "note": TRACING_NOTE}
            continue
        epochs = next(iter(base.values()))["epochs"]
        plans[model] = (ratio, epochs, equal_time_epochs(epochs, ratio))
    extra = sorted({e for _, epochs, e in plans.values() if e > epochs} if plans else set())
    jobs = [(baseline, seed, e, True) for e in extra for seed in args.seeds]
    if jobs:
        log(f"[aw-compare] equal training time: training {baseline} again for "
            f"{', '.join(map(str, extra))} epochs")
    failed = runner.run_all(jobs)
    summary.setdefault("equal_time", {})
    for model, (ratio, epochs, longer) in plans.items():
        entry = {"time_ratio": ratio, "baseline_epochs": longer}
        if longer == epochs:
            entry["note"] = ("not slower than the baseline: the equal-epoch comparison already "
                             "gives the baseline at least the same time")
            summary["equal_time"][model] = entry
            continue
        longer_runs = {s: load_run(run_dir(args.out, baseline, s, longer)) for s in args.seeds}
        seeds = [s for s in args.seeds if (model, s) in runs and longer_runs.get(s)]
        if not seeds:
            continue
        result = paired_difference([runs[(model, s)]["top1_error"] for s in seeds],
                                   [longer_runs[s]["top1_error"] for s in seeds])
        result["seeds"] = seeds
        result["verdict"] = verdict(result, lower_is_better=True)
        entry["paired"] = result
        entry["baseline_per_seed"] = {str(s): longer_runs[s]["top1_error"] for s in seeds}
        summary["equal_time"][model] = entry
    return failed


def split_arguments(argv):
    """(aw-compare's arguments, aw-train's arguments): every option that aw-train
    knows and aw-compare does not is taken, with its value, for aw-train."""
    from aw_keras.train import cli as train_cli

    own = {s for action in build_parser()._actions for s in action.option_strings}
    takes_value = {}
    for action in train_cli.build_parser()._actions:
        for option in action.option_strings:
            if option not in own:
                takes_value[option] = action.nargs != 0
    mine, theirs = [], []
    tokens = iter(argv)
    for token in tokens:
        name = token.split("=", 1)[0]
        if name in takes_value:
            theirs.append(token)
            if takes_value[name] and "=" not in token:
                value = next(tokens, None)
                if value is not None:
                    theirs.append(value)
        else:
            mine.append(token)
    return mine, theirs


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    mine, train_args = split_arguments(argv)
    parser = build_parser()
    args = parser.parse_args(mine)
    try:  # after parsing: --help and usage errors need no TensorFlow
        tf_quiet.import_tensorflow("aw-compare (aw-train's input pipelines are tf.data)")
    except ImportError as error:
        parser.error(str(error))
    from aw_keras.train.run import UsageError

    command_line = "aw-compare " + " ".join(shlex.quote(a) for a in argv)
    try:
        return compare(args, train_args, command_line)
    except UsageError as error:
        print(f"aw-compare: error: {error}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("aw-compare: interrupted; re-run the same command to continue.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

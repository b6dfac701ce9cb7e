"""aw-compare: bad input, analysis of finished runs (statistics, equal time, plots,
files), and the real sweep end to end with a kill -9 in the middle."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from aw_keras.train import compare
from aw_keras.utils import tf_quiet
from train_helpers import kill_after_epochs
from train_helpers import TINY_KWARGS, read_history, run_main, snapshot, subprocess_env


def _run(capsys, *argv):
    return run_main(capsys, compare.main, *argv)


@pytest.mark.parametrize("argv, message", [
    (["resnet_cifarr", "aw_resnet_cifar"], "Unknown model 'resnet_cifarr'"),
    (["resnet_cifar", "aw_resnet_cifar", "--baseline", "se_resnet_cifar"],
     "--baseline 'se_resnet_cifar' is not among the models"),
    (["resnet_cifar", "resnet_cifar"], "listed twice"),
    (["resnet_cifar", "--seeds", "1", "1"], "lists a seed twice"),
    (["resnet_cifar", "--seeds", "-1"], "--seeds takes integers >= 0"),
    (["resnet_cifar", "--seed", "3"], "--seed is set by aw-compare"),
    (["resnet_cifar", "--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["resnet_cifar", "--epochs", "0"], "--epochs must be a positive integer"),
    (["resnet_cifar", "--dataset", "folder:/nonexistent/images"], "does not exist"),
])
def test_bad_input_exits_2_and_writes_nothing(capsys, tmp_path, argv, message):
    out = tmp_path / "out"
    status, _, err = _run(capsys, *argv, "--out", str(out))
    assert status == 2
    assert message in err, err
    assert not out.exists()


def test_refuses_a_foreign_or_different_output_directory(capsys, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    status, _, err = _run(capsys, "resnet_cifar", "--out", str(foreign))
    assert status == 2 and "holds no aw-compare comparison" in err
    assert snapshot(foreign) == {str(foreign / "notes.txt"): b"mine"}

    other = tmp_path / "other"
    _write_finished(other, ["resnet_cifar"], [0], epochs=2)
    before = snapshot(other)
    status, _, err = _run(capsys, "resnet_cifar", "--seeds", "0", "--epochs", "3",
                          "--out", str(other))
    assert status == 2 and "holds a different comparison" in err and "epochs: 2 there" in err
    assert snapshot(other) == before


# ------------------------------------------------ analysis of finished runs

SETTINGS = {"dataset": "fashion_mnist", "epochs": None, "train_args": []}


def _write_run(directory, top1_error, epochs, images_per_second, params=1000):
    os.makedirs(directory)
    history = [{"epoch": e + 1, "train_seconds": 10.0, "val_accuracy": 0.5 + 0.1 * e,
                "images_per_second": images_per_second} for e in range(epochs)]
    with open(os.path.join(directory, "history.json"), "w") as f:
        json.dump(history, f)
    with open(os.path.join(directory, "metrics.json"), "w") as f:
        json.dump({"top1_error": top1_error, "params": params, "gflops": 0.5, "epochs": epochs,
                   "train_images_per_second": images_per_second}, f)


def _write_finished(out, models, seeds, epochs=None, errors=None, speeds=None):
    """Finished aw-train runs as aw-compare lays them out (it reuses them)."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, compare.SETTINGS_FILE), "w") as f:
        json.dump({"settings": {**SETTINGS, "epochs": epochs}}, f)
    for model in models:
        for seed in seeds:
            error = (errors or {}).get((model, seed), 0.2)
            speed = (speeds or {}).get(model, 1000.0)
            _write_run(compare.run_dir(str(out), model, seed), error, epochs or 3, speed)


def test_analysis_of_finished_runs(capsys, tmp_path):
    out = tmp_path / "cmp"
    seeds = [0, 1, 2]
    errors = {("resnet_cifar", 0): 0.20, ("resnet_cifar", 1): 0.22, ("resnet_cifar", 2): 0.21,
              ("aw_resnet_cifar", 0): 0.18, ("aw_resnet_cifar", 1): 0.19,
              ("aw_resnet_cifar", 2): 0.185}
    # AW runs at 800 images/s against 1000: it needs 1.25x the time, so the baseline
    # is trained again for ceil(2 * 1.25) = 3 epochs (here: found finished).
    _write_finished(out, ["resnet_cifar", "aw_resnet_cifar"], seeds, epochs=2, errors=errors,
                    speeds={"resnet_cifar": 1000.0, "aw_resnet_cifar": 800.0})
    for seed, error in zip(seeds, (0.185, 0.19, 0.18)):
        _write_run(compare.run_dir(str(out), "resnet_cifar", seed, 3), error, 3, 1000.0)
    status, stdout, _ = _run(capsys, "resnet_cifar", "aw_resnet_cifar", "--seeds", "0", "1", "2",
                             "--epochs", "2", "--out", str(out))
    assert status == 0, stdout
    assert stdout.count("finished earlier, reusing") == 9
    assert "(9 finished runs reused)" in stdout
    result = json.load(open(out / "comparison.json"))
    assert result["baseline"] == "resnet_cifar"
    assert result["models"]["aw_resnet_cifar"]["per_seed"] == {"0": 0.18, "1": 0.19, "2": 0.185}
    paired = result["paired"]["aw_resnet_cifar"]
    diffs = [0.18 - 0.20, 0.19 - 0.22, 0.185 - 0.21]
    assert paired["n"] == 3 and paired["mean_diff"] == pytest.approx(sum(diffs) / 3)
    assert paired["ci95"][1] < 0 and paired["verdict"] == "better"
    assert 0 < paired["p_value"] < 0.05
    equal = result["equal_time"]["aw_resnet_cifar"]
    assert equal["time_ratio"] == pytest.approx(1.25) and equal["baseline_epochs"] == 3
    assert equal["paired"]["mean_diff"] == pytest.approx(
        ((0.18 - 0.185) + (0.19 - 0.19) + (0.185 - 0.18)) / 3)
    assert equal["paired"]["verdict"] == "not distinguishable at this budget"
    text = (out / "comparison.md").read_text()
    assert "| aw_resnet_cifar | 3 | -2.50 | [-3.74, -1.26] |" in text and "better" in text
    assert "At equal training time" in text and "| aw_resnet_cifar | 1.25 | 3 |" in text
    assert text.strip() in stdout
    for name in ("comparison.png", "validation_curves.png"):
        path = out / "plots" / name
        assert path.is_file() and path.stat().st_size > 10_000, name


def test_one_seed_still_prints_the_table(capsys, tmp_path):
    out = tmp_path / "one"
    _write_finished(out, ["resnet_cifar", "aw_resnet_cifar"], [4], epochs=2,
                    errors={("resnet_cifar", 4): 0.3, ("aw_resnet_cifar", 4): 0.25})
    status, stdout, _ = _run(capsys, "resnet_cifar", "aw_resnet_cifar", "--seeds", "4",
                             "--epochs", "2", "--no-equal-time", "--out", str(out))
    assert status == 0
    assert "one seed only" in stdout
    assert "| aw_resnet_cifar | 1 | -5.00 | n/a | n/a | one seed: no confidence interval" in stdout
    result = json.load(open(out / "comparison.json"))
    assert result["paired"]["aw_resnet_cifar"]["ci95"] is None
    assert "equal_time" not in result



def test_the_report_names_the_backends_the_runs_recorded(capsys, tmp_path):
    """Runs trained with --backend jax (their run.json says so) are reported as
    JAX runs; runs written before backends were recorded count as TensorFlow."""
    out = tmp_path / "jax"
    _write_finished(out, ["resnet_cifar", "aw_resnet_cifar"], [0, 1], epochs=2)
    for model in ("resnet_cifar", "aw_resnet_cifar"):
        with open(os.path.join(compare.run_dir(str(out), model, 0), "run.json"), "w") as f:
            json.dump({"backend": "jax"}, f)
    status, stdout, _ = _run(capsys, "resnet_cifar", "aw_resnet_cifar", "--seeds", "0", "1",
                             "--epochs", "2", "--no-equal-time", "--out", str(out))
    assert status == 0, stdout
    result = json.load(open(out / "comparison.json"))
    assert result["settings"]["backends"] == ["jax", "tensorflow"]
    assert "(Keras on jax, tensorflow)" in (out / "comparison.md").read_text()


FAKE_TRAIN = r"""
import json, os, sys
args = sys.argv[1:]
model, out, seed = args[0], args[args.index("--out") + 1], int(args[args.index("--seed") + 1])
epochs = int(args[args.index("--epochs") + 1])
speed = {"resnet_cifar": 120.0, "aw_resnet_cifar": 80.0}[model]  # tracing-dominated
sys.stderr.write("I0000 00:00:1796665971.557507    4943 cudart_stub.cc:31] Could not find "
                 "cuda drivers on your machine, GPU will not be used.\n")
os.makedirs(out)
history = [{"epoch": e + 1, "train_seconds": 10.0, "val_accuracy": 0.5, "train_steps": 8,
            "images_per_second": speed, "first_epoch_of_process": True}
           for e in range(epochs)]
for entry in history:
    print(f"Epoch {entry['epoch']}/{epochs}", flush=True)
json.dump(history, open(os.path.join(out, "history.json"), "w"))
json.dump({"top1_error": 0.2 + 0.01 * seed + (0.02 if model == "resnet_cifar" else 0),
           "params": 1000, "gflops": 0.5, "epochs": epochs,
           "train_images_per_second": speed}, open(os.path.join(out, "metrics.json"), "w"))
"""


def test_one_epoch_sweep_says_what_it_cannot_measure(capsys, tmp_path, monkeypatch):
    """One epoch per run: its images/s include graph tracing, so there is no
    equal-time comparison (and no baseline trained longer on that basis), the table
    says so; "1 epoch", reuse said only when runs were reused; the children's
    TensorFlow start-up lines are kept off aw-compare's output (aw-train stands in
    for a fake that writes a finished run)."""
    fake = tmp_path / "fake_aw_train.py"
    fake.write_text(FAKE_TRAIN)
    command = compare.Runner.command
    monkeypatch.setattr(compare.Runner, "command", lambda self, *a: [
        sys.executable, str(fake), *command(self, *a)[3:]])
    monkeypatch.delenv("AW_KERAS_TF_LOGS", raising=False)
    out = tmp_path / "cmp"
    argv = ["resnet_cifar", "aw_resnet_cifar", "--seeds", "0", "1", "--epochs", "1",
            "--out", str(out)]
    status, stdout, _ = _run(capsys, *argv)
    assert status == 0, stdout
    assert "    Epoch 1/1" in stdout and "cudart_stub" not in stdout
    assert "cudart_stub" in (out / "logs" / "resnet_cifar_seed0.log").read_text()  # full log
    header = next(line for line in stdout.splitlines() if line.startswith("aw-compare on"))
    assert ", 1 epoch, seeds 0 1;" in header and "reused" not in header, header
    result = json.load(open(out / "comparison.json"))
    assert result["equal_time"]["aw_resnet_cifar"]["note"] == compare.TRACING_NOTE
    assert result["models"]["aw_resnet_cifar"]["speed_includes_tracing"] is True
    assert not (out / "runs" / "resnet_cifar_e2_seed0").exists()
    text = (out / "comparison.md").read_text()
    assert "| 80 (incl. tracing) |" in text and "graph tracing" in text
    assert "| aw_resnet_cifar | n/a | n/a | | | | no equal-time comparison" in text

    status, stdout, _ = _run(capsys, *argv)
    assert status == 0 and "(4 finished runs reused)" in stdout


def test_steady_speed_leaves_out_each_process_first_step_or_epoch():
    def entry(first, speed, after=None):
        return {"train_seconds": 10.0, "images_per_second": speed,
                "first_epoch_of_process": first,
                **({compare.AFTER_FIRST_STEP: after} if after else {})}

    run = {"train_images_per_second": 100.0}
    assert compare.steady_speed({**run, "history": [entry(True, 100.0), entry(False, 900.0)]}) \
        == (900.0, True)
    assert compare.steady_speed({**run, "history": [entry(True, 100.0, after=950.0)]}) \
        == (950.0, True)
    assert compare.steady_speed({**run, "history": [entry(True, 100.0)]}) == (100.0, False)


def test_error_bars_are_clipped_to_the_possible_range(tmp_path):
    """Two seeds: the t-interval (12.7 standard errors) passes 0 % and 100 %; the
    bars stop there and the figure says why."""
    summary = compare.summarize(
        ["resnet_cifar", "aw_resnet_cifar"], "resnet_cifar", [0, 1],
        {("resnet_cifar", 0): {"top1_error": 0.05, "train_seconds": 1.0},
         ("resnet_cifar", 1): {"top1_error": 0.45, "train_seconds": 1.0},
         ("aw_resnet_cifar", 0): {"top1_error": 0.10, "train_seconds": 1.0},
         ("aw_resnet_cifar", 1): {"top1_error": 0.90, "train_seconds": 1.0}})
    ci = summary["models"]["resnet_cifar"]["ci95_of_mean"]
    assert ci[0] < 0 < 1 < ci[1]  # the unclipped interval
    bars = compare.error_bars(summary)
    assert bars["models"]["resnet_cifar"] == (pytest.approx(25.0), 0.0, 100.0, True)
    mean, low, high, clipped = bars["paired"]["aw_resnet_cifar"]
    # the baseline's mean error is 25 %: the difference lies in [-25, +75] pp
    assert mean == pytest.approx(25.0) and (low, high, clipped) == (-25.0, 75.0, True)
    path = compare.plot_comparison(summary, str(tmp_path / "comparison.png"))
    assert os.path.getsize(path) > 10_000


def test_equal_time_epochs():
    assert compare.equal_time_epochs(3, 1.0) == 3
    assert compare.equal_time_epochs(3, 0.8) == 3
    assert compare.equal_time_epochs(3, 1.12) == 4
    assert compare.equal_time_epochs(5, 1.2) == 6
    assert compare.equal_time_epochs(5, 1.21) == 7


# ------------------------------------------------------ the real sweep


def test_sweep_killed_then_resumed_reuses_finished_runs(tmp_path, tiny_folder):
    """One seed of two models on a tiny folder (the statistics over seeds are
    tested on finished runs above); kill -9 aw-compare while the second run trains:
    its aw-train child dies with it, the re-run reuses the finished run, continues
    the interrupted one from its checkpoint and completes the report."""
    out = str(tmp_path / "cmp")
    command = [sys.executable, "-m", "aw_keras.train.compare", "resnet_cifar",
               "aw_resnet_cifar", "--seeds", "0", "--epochs", "4", "--out", out,
               "--dataset", f"folder:{tiny_folder}", "--batch-size", "8",
               "--checkpoint-steps", "2", "--model-kwargs", TINY_KWARGS,
               "--attention-images", "0", "--no-equal-time"]
    env = subprocess_env()
    env.pop("AW_KERAS_TF_LOGS", None)
    second = compare.run_dir(out, "aw_resnet_cifar", 0)
    kill_after_epochs(command, env, second, 2, timeout=300)
    first_metrics = os.path.join(compare.run_dir(out, "resnet_cifar", 0), "metrics.json")
    assert os.path.isfile(first_metrics)
    stamp = os.stat(first_metrics).st_mtime_ns
    done = len(read_history(second))
    assert 2 <= done < 4 and not os.path.exists(os.path.join(second, "metrics.json"))
    time.sleep(1.0)
    # The child died with its parent: the history no longer grows.
    assert len(read_history(second)) == done

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    # neither aw-compare nor its aw-train children show TensorFlow's start-up lines
    output = (resumed.stdout + resumed.stderr).splitlines()
    assert [line for line in output if tf_quiet.is_noise(line)] == []
    assert "run 1/2 resnet_cifar seed 0: finished earlier, reusing" in resumed.stdout
    assert os.stat(first_metrics).st_mtime_ns == stamp
    assert re.search(r"\(epoch [23],", resumed.stdout), resumed.stdout[-3000:]
    assert [h["epoch"] for h in read_history(second)] == [1, 2, 3, 4]
    result = json.load(open(os.path.join(out, "comparison.json")))
    assert set(result["models"]) == {"resnet_cifar", "aw_resnet_cifar"}
    assert result["paired"]["aw_resnet_cifar"]["n"] == 1
    for value in result["models"]["aw_resnet_cifar"]["per_seed"].values():
        assert 0.0 <= value <= 1.0
    assert "| model | params | GFLOPs | train images/s |" in resumed.stdout
    for name in ("comparison.md", "plots/comparison.png", "plots/validation_curves.png",
                 "logs/aw_resnet_cifar_seed0.log"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name


def test_parallel_jobs_share_the_cores_between_their_children(monkeypatch):
    """--jobs 2: each aw-train child gets half the cores for TensorFlow's intra-op
    pool (one inter-op thread); one job leaves the thread settings alone."""
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    env = compare.Runner("out", "fashion_mnist", [], jobs=2).environment()
    assert (env["TF_NUM_INTRAOP_THREADS"], env["TF_NUM_INTEROP_THREADS"]) == ("4", "1")
    env = compare.Runner("out", "fashion_mnist", [], jobs=1).environment()
    assert "TF_NUM_INTRAOP_THREADS" not in env and "TF_NUM_INTEROP_THREADS" not in env

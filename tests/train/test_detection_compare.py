"""The detection comparison's analysis: mean +- std per model over seeds, the paired
mAP difference against the first model (higher is better), the Markdown table and
the plot, on finished runs written by hand."""

import json
import os

import pytest

from aw_keras.train import compare
from aw_keras.train import detection_compare


def _write_run(out, model, seed, map_, map50, map75):
    directory = compare.run_dir(out, model, seed)
    os.makedirs(directory)
    with open(os.path.join(directory, "metrics.json"), "w") as f:
        json.dump({"map": map_, "map50": map50, "map75": map75, "params": 1000,
                   "epochs": 2, "train_images_per_second": 10.0 + seed / 30}, f)
    with open(os.path.join(directory, "history.json"), "w") as f:
        json.dump([{"epoch": 1, "train_seconds": 1.0}], f)


def test_summary_table_and_plot_of_finished_runs(tmp_path):
    out = str(tmp_path)
    values = {("plain_fpn", 0): 0.10, ("plain_fpn", 1): 0.20, ("plain_fpn", 2): 0.15,
              ("aw_fpn", 0): 0.14, ("aw_fpn", 1): 0.25, ("aw_fpn", 2): 0.19}
    for (model, seed), value in values.items():
        _write_run(out, model, seed, value, 2 * value, value / 2)
    summary, failed = detection_compare.compare_detectors(
        out, ["plain_fpn", "aw_fpn"], [0, 1, 2], ["--epochs", "2"], log=lambda *_: None)
    assert failed == []  # every run was finished: reused, nothing trained
    plain, aw = summary["models"]["plain_fpn"], summary["models"]["aw_fpn"]
    assert plain["map"][0] == pytest.approx(0.15) and plain["map"][1] == pytest.approx(0.05)
    assert aw["map50"][0] == pytest.approx(2 * (0.14 + 0.25 + 0.19) / 3)
    paired = summary["paired"]["aw_fpn"]
    assert paired["mean_diff"] == pytest.approx((0.04 + 0.05 + 0.04) / 3)
    assert paired["n"] == 3 and paired["ci95"][0] > 0  # consistently higher mAP
    assert paired["verdict"] == "better"
    table = open(os.path.join(out, "detection.md")).read()
    # images/s: the mean over seeds (10.0333...) with one decimal
    assert "| plain_fpn | 1,000 | 15.00 +- 5.00 | 30.00 +- 10.00 | 7.50 +- 2.50 | 10.0 |" in table
    assert "| aw_fpn | 1,000 | 19.33 +- 5.51 |" in table
    assert "aw_fpn vs plain_fpn: mAP difference +4.33 points" in table
    assert os.path.getsize(os.path.join(out, "plots", "detection_map.png")) > 0
    assert json.load(open(os.path.join(out, "detection.json")))["baseline"] == "plain_fpn"


def test_one_seed_says_there_is_no_interval(tmp_path):
    out = str(tmp_path)
    _write_run(out, "a", 0, 0.1, 0.2, 0.05)
    _write_run(out, "b", 0, 0.2, 0.3, 0.1)
    summary, _ = detection_compare.compare_detectors(out, ["a", "b"], [0], [],
                                                     log=lambda *_: None)
    assert summary["models"]["a"]["map"][1] is None
    assert "no interval" in open(os.path.join(out, "detection.md")).read()


def test_jobs_runs_in_parallel_or_refuses_a_bad_count(tmp_path):
    out = str(tmp_path)
    for model, value in (("a", 0.1), ("b", 0.2)):
        _write_run(out, model, 0, value, value, value)
    summary, failed = detection_compare.compare_detectors(out, ["a", "b"], [0], [], jobs=2,
                                                          log=lambda *_: None)
    assert failed == [] and summary["paired"]["b"]["mean_diff"] == pytest.approx(0.1)
    assert "detection_compare --out " + out + " --jobs 2 --models a b" in open(
        os.path.join(out, "detection.md")).read()
    for bad in (0, True, "2"):
        with pytest.raises(ValueError, match="jobs"):
            detection_compare.compare_detectors(out, ["a", "b"], [0], [], jobs=bad)


def test_error_bars_stay_within_the_possible_range(tmp_path, monkeypatch):
    # two seeds far apart: mean +- std reaches below 0 %
    yerr = detection_compare.clipped_error_bars([1.2, 50.0, 99.0], [1.6, 10.0, 3.0])
    assert yerr.shape == (2, 3)
    assert yerr[0].tolist() == pytest.approx([1.2, 10.0, 3.0])   # down to 0, not -0.4
    assert yerr[1].tolist() == pytest.approx([1.6, 10.0, 1.0])   # up to 100, not 102
    # the plot draws them so, and says why
    out = str(tmp_path)
    _write_run(out, "a", 0, 0.001, 0.004, 0.0)
    _write_run(out, "a", 1, 0.023, 0.09, 0.001)
    captured = {}
    from aw_keras.train import plots

    plt = plots.pyplot()
    monkeypatch.setattr(plt, "close", lambda figure: captured.setdefault("figure", figure))
    detection_compare.compare_detectors(out, ["a"], [0, 1], [], log=lambda *_: None)
    figure = captured["figure"]
    lows = [segment[:, 1].min() for collection in figure.axes[0].collections
            for segment in collection.get_segments()]
    assert lows and min(lows) >= 0.0, lows
    caption = " ".join(text.get_text() for text in figure.texts)
    assert "cut at 0 and 100 %" in caption and "2 seed(s)" in caption, caption

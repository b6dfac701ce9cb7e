"""The main job's driver (`aw_keras.train.demo`): preset merging and the order of its
steps. The steps themselves (aw-compare, aw-export, detection_compare) have their own
tests; the whole job runs from a fresh clone as the README's first command."""

import json

import pytest

from aw_keras.train import compare
from aw_keras.train import demo
from aw_keras.train import detection_compare


def test_options_replace_the_preset_values_and_keep_the_rest():
    args, overrides = demo.parse_args(["--out", "o", "--epochs", "5", "--seeds", "3", "4"])
    argv = demo.compare_arguments(args, overrides)
    assert argv[:4] == ["resnet_cifar", "aw_resnet_cifar", "--out", "o"]
    assert argv.count("--epochs") == 1 and argv[argv.index("--epochs") + 1] == "5"
    seeds = argv.index("--seeds")
    assert argv[seeds + 1:seeds + 3] == ["3", "4"] and argv.count("--seeds") == 1
    assert argv[argv.index("--dataset") + 1] == "fashion_mnist"  # kept from the preset


@pytest.fixture
def steps(monkeypatch, tmp_path):
    """Replaces the three steps by recorders; returns the list of calls."""
    calls = []

    def fake_compare(argv):
        calls.append(("compare", argv))
        out = argv[argv.index("--out") + 1]
        (tmp_path / "comparison.json").write_text(json.dumps(
            {"models": {"resnet_cifar": {}, "aw_resnet_cifar": {}}, "settings": {"seeds": [0]}}))
        assert out == str(tmp_path)
        return 0

    def fake_detectors(out, models, seeds, train_args, **kwargs):
        assert kwargs["jobs"] == 2  # both models of a seed at once on 2 cores
        calls.append(("detection", out, models, seeds, train_args))
        return {}, []

    monkeypatch.setattr(compare, "main", fake_compare)
    monkeypatch.setattr(demo, "export", lambda args, model, seed: calls.append(
        ("export", model, seed)) or 0)
    monkeypatch.setattr(detection_compare, "compare_detectors", fake_detectors)
    return calls


def test_main_job_compares_exports_then_compares_detectors(steps, tmp_path):
    assert demo.main(["--out", str(tmp_path), "--detection-epochs", "3",
                      "--detection-seeds", "0", "1", "2"]) == 0
    assert [call[0] for call in steps] == ["compare", "export", "detection"]
    assert steps[1][1:] == ("aw_resnet_cifar", 0)
    _, out, models, seeds, train_args = steps[2]
    assert out == str(tmp_path / "detection")
    assert models == ["resnet_small_fpn", "aw_resnet_small_fpn"] and seeds == [0, 1, 2]
    assert train_args[train_args.index("--epochs") + 1] == "3"
    assert train_args[train_args.index("--detector") + 1] == "faster_rcnn"
    assert json.loads(train_args[train_args.index("--detector-kwargs") + 1])["anchor_size"] == 4


def test_skip_detection_and_export(steps, tmp_path):
    assert demo.main(["--out", str(tmp_path), "--skip-detection", "--skip-export"]) == 0
    assert [call[0] for call in steps] == ["compare"]


def test_a_failed_detection_run_fails_the_job(steps, monkeypatch, tmp_path):
    monkeypatch.setattr(detection_compare, "compare_detectors",
                        lambda *a, **k: ({}, [("aw_resnet_small_fpn", 0)]))
    assert demo.main(["--out", str(tmp_path), "--skip-export"]) == 1


def test_bad_detection_epochs_is_a_usage_error_before_any_training(steps, tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        demo.main(["--out", str(tmp_path), "--detection-epochs", "0"])
    assert error.value.code == 2 and "--detection-epochs" in capsys.readouterr().err
    assert steps == []

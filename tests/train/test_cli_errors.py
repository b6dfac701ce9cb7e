"""aw-train rejects bad input with a clear message, exit status 2, nothing written.

The library (aw_keras.data, aw_keras.train.run) names its Python arguments in
its errors; aw-train reports them under its option names.
"""

import json
import os

import pytest

from aw_keras.train import cli
from aw_keras.train import run
from train_helpers import run_main, snapshot


def _run(capsys, *argv):
    status, _, err = run_main(capsys, cli.main, *argv)
    return status, err


@pytest.mark.parametrize("argv, message", [
    (["resnet_cifarr"], "Unknown model 'resnet_cifarr'.*Close matches"),
    (["resnet_cifar", "--dataset", "cifar11"], "Unknown dataset 'cifar11'.*with --data-dir"),
    (["resnet_cifar", "--dataset", ""], "--dataset must be a non-empty string, got ''"),
    (["resnet_cifar", "--dataset", "tfds:"], "--dataset 'tfds:' needs a dataset name"),
    (["resnet_cifar", "--dataset", "folder:/nonexistent/images"], "does not exist"),
    (["resnet_cifar", "--dataset", "tfds:mnist", "--data-dir", "/nonexistent/tfds"],
     "--data-dir '/nonexistent/tfds' does not exist"),
    (["resnet_cifar", "--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["resnet_cifar", "--epochs", "three"], "--epochs must be an integer >= 1, got 'three'"),
    (["resnet_cifar", "--learning-rate", "fast"], "--learning-rate must be a positive number"),
    (["resnet_cifar", "--seed", "-1"], "--seed must be an integer >= 0"),
    (["resnet_cifar", "--model-kwargs", "{width: 8}"], "--model-kwargs must be a JSON object"),
    (["resnet_cifar", "--strategy", "horovod"], "invalid choice: 'horovod'"),
    (["aw_resnet_small_fpn", "--detector-kwargs", "{anchor_size: 2}"],
     r"--detector-kwargs must be a JSON object such as '\{\"pre_logits"),
    (["aw_resnet_small_fpn", "--detector-kwargs", "[2]"], "--detector-kwargs must be a JSON obj"),
])
def test_bad_input_exits_2_with_a_message_and_writes_nothing(capsys, tmp_path, argv, message):
    out = tmp_path / "out"
    status, err = _run(capsys, *argv, "--out", str(out))
    assert status == 2
    assert pytest.importorskip("re").search(message, err), err
    assert not out.exists()


def test_detection_has_its_own_default_batch_size(tmp_path):
    parser = cli.build_parser()
    out = ["--out", str(tmp_path / "out")]
    for argv, batch_size in ((["aw_resnet_small_fpn"], 8), (["resnet_cifar"], 128),
                             (["aw_resnet_small_fpn", "--batch-size", "4"], 4)):
        args = parser.parse_args(argv + out)
        cli.check_early(args)
        assert args.batch_size == batch_size, argv
    assert "128 for classification, 8 for detection" in " ".join(parser.format_help().split())


def test_bad_model_kwargs_for_the_builder_write_nothing(capsys, tmp_path, tiny_folder):
    out = tmp_path / "out"
    status, err = _run(capsys, "resnet_cifar", "--dataset", f"folder:{tiny_folder}",
                       "--batch-size", "8", "--model-kwargs", '{"width": -3}', "--out", str(out))
    assert status == 2 and "Cannot build model 'resnet_cifar'" in err and "width" in err
    assert not out.exists()


def test_batch_larger_than_the_training_split(capsys, tmp_path, tiny_folder):
    out = tmp_path / "out"
    status, err = _run(capsys, "resnet_cifar", "--dataset", f"folder:{tiny_folder}",
                       "--batch-size", "1000", "--out", str(out))
    assert status == 2 and "fewer than one batch" in err and "Use a smaller --batch-size" in err
    assert not out.exists()


def test_output_dir_of_another_run_or_of_other_files_is_never_overwritten(
        capsys, tmp_path, tiny_folder):
    common = ["--dataset", f"folder:{tiny_folder}", "--epochs", "2", "--batch-size", "8"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    identity = {"model": "resnet_cifar", "model_kwargs": {}, "dataset": f"folder:{tiny_folder}",
                "data_dir": None, "preset": "small", "epochs": 2, "batch_size": 8, "seed": 0,
                "train_examples": None, "val_examples": None, "learning_rate": None,
                "mixed_precision": False}
    (run_dir / "run.json").write_text(json.dumps({"identity": identity}))
    (run_dir / "history.json").write_text("[1, 2]")
    before = snapshot(run_dir)

    status, err = _run(capsys, "aw_resnet_cifar", *common, "--out", str(run_dir), "--resume")
    assert status == 2 and "holds a different run" in err and "model: 'resnet_cifar'" in err
    assert "choose another --out, or repeat the original settings with --resume" in err
    status, err = _run(capsys, "resnet_cifar", *common, "--seed", "3", "--out", str(run_dir))
    assert status == 2 and "seed: 0 there vs 3 now" in err
    status, err = _run(capsys, "resnet_cifar", *common, "--out", str(run_dir))
    assert status == 2 and f"--out {str(run_dir)!r} already holds this run. Pass --resume" in err
    assert snapshot(run_dir) == before

    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"not ours")
    status, err = _run(capsys, "resnet_cifar", *common, "--out", str(other))
    assert status == 2 and "holds no aw-train run" in err
    assert snapshot(other) == {str(other / "holiday.jpg"): b"not ours"}


def test_multiworker_without_tf_config(capsys, tmp_path, tiny_folder, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    status, err = _run(capsys, "resnet_cifar", "--dataset", f"folder:{tiny_folder}",
                       "--strategy", "multiworker", "--out", str(tmp_path / "out"))
    assert status == 2 and "--strategy 'multiworker' needs the TF_CONFIG" in err


def test_unprepared_tfds_dataset_names_the_data_dir_option(capsys, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    out = tmp_path / "out"
    status, err = _run(capsys, "resnet_cifar", "--dataset", "tfds:mnist",
                       "--data-dir", str(tmp_path), "--out", str(out))
    assert status == 2 and "not prepared" in err and "then pass DIR as --data-dir" in err, err
    assert not out.exists()


def test_option_message_writes_python_arguments_as_options():
    parser = cli.build_parser()
    message = ("`data_dir` '/x' does not exist; `spec` 'tfds:' needs a name; use a smaller "
               "`batch_size`; pass `resume=True` or choose another `out`; `init_from` 'a.keras'; "
               "see `tfds.list_builders()` and `tfds build NAME --data_dir DIR`; `l2`; "
               "`out=True`")
    assert cli.option_message(message, parser) == (
        "--data-dir '/x' does not exist; --dataset 'tfds:' needs a name; use a smaller "
        "--batch-size; pass --resume or choose another --out; --init-from 'a.keras'; "
        "see `tfds.list_builders()` and `tfds build NAME --data_dir DIR`; `l2`; `out=True`")


def test_run_library_errors_name_the_run_config_field(tmp_path, monkeypatch):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(run.UsageError, match=r"^`out` '.*' exists and is not a directory"):
        run.prepare_output_dir(run.RunConfig("resnet_cifar", out=str(not_a_dir)))
    done = tmp_path / "done"
    done.mkdir()
    config = run.RunConfig("resnet_cifar", out=str(done))
    (done / run.RUN_FILE).write_text(json.dumps({"identity": config.identity()}))
    with pytest.raises(run.UsageError, match=r"already holds this run\. Pass `resume=True`"):
        run.prepare_output_dir(config)
    with pytest.raises(run.UsageError, match="`out` '.*' holds a different run"):
        run.prepare_output_dir(run.RunConfig("resnet_cifar", out=str(done), seed=1))
    (tmp_path / "other" / "a").mkdir(parents=True)
    with pytest.raises(run.UsageError, match="`out` '.*' is not empty and holds no aw-train"):
        run.prepare_output_dir(run.RunConfig("resnet_cifar", out=str(tmp_path / "other")))
    with pytest.raises(run.UsageError, match="`strategy` must be None, 'mirrored' or"):
        run.make_strategy("horovod")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(run.UsageError, match="`strategy` 'multiworker' needs the TF_CONFIG"):
        run.make_strategy("multiworker")

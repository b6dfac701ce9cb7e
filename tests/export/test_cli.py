"""aw-export: end to end in a subprocess, argument errors (exit 2), a failed
check (exit 1), and nothing half-written."""

import json
import os
import subprocess
import sys

import keras
import pytest

from aw_keras.export import cli


def run_main(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["missing_dir/model.keras", "--out", "{out}"], "does not exist"),
        (["aw_resnet_cifer", "--out", "{out}"], "unknown model 'aw_resnet_cifer'.*aw_resnet_cifar"),
        (["aw_resnet_cifar", "--formats", "saved_model,tfjs", "--out", "{out}"], "unknown formats \\['tfjs'\\]"),
        (["aw_resnet_cifar", "--quantization", "int4", "--out", "{out}"], "unknown quantization"),
        (["aw_resnet_cifar", "--weights", "nope.weights.h5", "--out", "{out}"], "weights file"),
        (["aw_resnet_cifar", "--out", "{blocker}/sub"], "Cannot write to output directory"),
        (["aw_resnet_cifar", "--name", "a/b", "--out", "{out}"], "--name 'a/b' is not a file name"),
        (["aw_resnet_cifar", "--class-names", "nope.txt", "--out", "{out}"],
         "class names file 'nope.txt' does not exist"),
    ],
)
def test_usage_errors_exit_2(argv, message, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    argv = [a.format(out=tmp_path / "out", blocker=blocker) for a in argv]
    code, out, err = run_main(argv, capsys)
    assert code == 2
    assert "aw-export: error:" in err
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_end_to_end_subprocess(tmp_path):
    out = tmp_path / "artifacts"
    # TensorFlow's own setting removed: the command keeps its start-up lines out by itself
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "AW_KERAS_TF_LOGS")}
    done = subprocess.run(
        [sys.executable, "-m", "aw_keras.export.cli", "aw_resnet_cifar", "--input-size", "32",
         "--classes", "10", "--formats", "saved_model,tflite,onnx", "--quantization", "none,float16",
         "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for noise in ("cudart_stub", "cuInit", "cpu_feature_guard", "absl::InitializeLog"):
        assert noise not in done.stdout + done.stderr, (noise, done.stderr[-3000:])
    import re

    # each artifact from the model through its own target's policy
    for target, folded in (("saved_model", 0), ("tflite_float32", None), ("tflite_float16", None),
                           ("onnx", 0)):
        match = re.search(rf"{target}: (\d+) AWConv2D as \['taps'\], (\d+) BatchNorm folded",
                          done.stdout)
        assert match, (target, done.stdout[:3000])
        assert int(match.group(1)) > 0
        assert int(match.group(2)) == (int(match.group(1)) if folded is None else folded)
    assert "| artifact | format |" in done.stdout
    names = sorted(os.listdir(out))
    assert names == ["aw_resnet_cifar.onnx", "aw_resnet_cifar_float16.tflite", "aw_resnet_cifar_float32.tflite",
                     "saved_model", "verification.json", "verification.md"]
    assert os.listdir(out / "saved_model") == ["1"]
    report = json.loads((out / "verification.json").read_text())
    assert report["failures"] == []
    assert [r["precision"] for r in report["results"]] == ["float32", "float32", "float16", "float32"]
    assert all(r["passed"] for r in report["results"])
    assert all(r["latency_ms"] > 0 for r in report["results"])


def test_keras_file_and_failed_check_exit_1(tmp_path, capsys, monkeypatch):
    import dataclasses

    from aw_keras.export import policy
    inputs = keras.Input((16, 16, 3))
    from aw_keras.layers import AWConv2D

    x = AWConv2D(4, 3, padding="same")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    path = tmp_path / "tiny.keras"
    model.save(path)
    # a bound no artifact can meet: the command must report FAIL and exit 1
    monkeypatch.setitem(policy.TARGETS, "tflite_float32", dataclasses.replace(
        policy.TARGETS["tflite_float32"], check=("max_abs_error", -1.0)))
    code, out, err = run_main([str(path), "--formats", "tflite", "--out", str(tmp_path / "o")], capsys)
    assert code == 1
    assert "FAIL" in out and "check failed" in err
    # named after the .keras file, not after Keras's model name
    assert os.listdir(tmp_path / "o").count("tiny_float32.tflite") == 1
    assert not any(name.startswith(model.name) for name in os.listdir(tmp_path / "o"))


@pytest.mark.parametrize("flag,expected", [([], None), (["--split-residual"], True),
                                           (["--no-split-residual"], False)])
def test_split_residual_reaches_the_int8_tflite_export_only(flag, expected, tmp_path, capsys,
                                                           monkeypatch):
    from aw_keras.export import tflite

    calls = {}

    def record(model, path, quantization=None, **kwargs):
        calls[quantization] = kwargs["split_residual"]
        raise RuntimeError("not exported in this test")

    monkeypatch.setattr(tflite, "export_tflite", record)
    code, out, err = run_main(["aw_resnet_cifar", "--input-size", "32", "--classes", "10",
                               "--formats", "tflite", "--quantization", "none,int8",
                               "--out", str(tmp_path / "out")] + flag, capsys)
    assert code == 1 and "not exported in this test" in err
    assert calls == {None: None, "int8": expected}


def test_help_and_a_missing_file_need_no_tensorflow(tmp_path):
    """`aw-export --help` and a usage error about a missing file answer before
    TensorFlow is imported (no start-up time, no TensorFlow start-up lines)."""
    code = (
        "import sys\n"
        "from aw_keras.export import cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit as exit_:\n"
        "    assert exit_.code == 0, exit_.code\n"
        f"assert cli.main([{str(tmp_path / 'none.keras')!r}, '--out', {str(tmp_path / 'o')!r}]) == 2\n"
        "print('imported:', sorted({'tensorflow', 'keras'} & set(sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "usage: aw-export" in done.stdout and "does not exist" in done.stderr
    assert "imported: []" in done.stdout, done.stdout[-500:]


def test_a_saved_export_model_loads_whatever_the_import_order(tmp_path):
    """`import aw_keras.export` imports no TensorFlow, yet its layers are
    registered once Keras is imported (here by TensorFlow), so a saved export
    model loads."""
    from aw_keras.export import export_model
    from aw_keras.layers import AWConv2D

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, AWConv2D(4, 3, padding="same")(inputs))
    path = str(tmp_path / "exported.keras")
    export_model(model, "onnx").save(path)
    code = (
        "import sys\n"
        "import aw_keras.export\n"
        "assert 'tensorflow' not in sys.modules\n"
        "import tensorflow\n"
        "import keras\n"
        f"model = keras.saving.load_model({path!r}, safe_mode=True)\n"
        "print('loaded', type(model.layers[1]).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loaded AWConvExport" in done.stdout

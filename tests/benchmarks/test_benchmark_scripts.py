"""The benchmark scripts still run and print their tables (tiny sizes, one round).

They are not timed tests: these runs only check that each script runs end to end
on the current library and prints a table with one row per candidate and a
baseline ratio of exactly 1.00 (a script that silently dropped a candidate or
mixed up its baseline would fail here). Timings themselves are meaningless at
these sizes.
"""

import contextlib
import importlib.util
import io
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def usage_error(script, *args):
    """stderr of ``benchmarks/<script>``'s ``main(args)``, run in this process (no
    second TensorFlow start-up), which must end in a usage error (exit status 2)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(f"benchmark_{script[:-3]}",
                                                      os.path.join(ROOT, "benchmarks", script))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = module.main(list(args))
        except SystemExit as exit_:
            status = exit_.code
    assert status == 2, stderr.getvalue()[-2000:]
    return stderr.getvalue()


def run_script(name, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", name), *args],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def table_rows(text):
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("|---")
    ][1:]  # drop the header


@pytest.mark.slow  # ~40 s: exports and times three MobileNets in a subprocess
def test_export_latency_times_every_model_of_the_family_interleaved():
    out = run_script("export_latency.py", "--size", "32", "--repeats", "2",
                     "--pairs", "mobilenet", "--quantizations", "float32")
    rows = table_rows(out)
    assert [row[0] for row in rows] == ["mobilenet", "aw_mobilenet", "se_mobilenet (reference)"]
    assert all(row[1] == "float32" for row in rows)
    assert rows[0][3] == "1.00x"  # the baseline is the plain model
    for row in rows:
        assert float(row[2]) > 0 and float(row[4]) > 0  # latency ms, size MB
        assert "XNNPACK" in row[5] or "builtin" in row[5]
    assert "interleaved" in out


def test_export_latency_rejects_an_unknown_family():
    stderr = usage_error("export_latency.py", "--pairs", "vgg")
    assert "--pairs" in stderr and "vgg" in stderr


def test_layer_speed_prints_a_row_per_implementation(tmp_path):
    markdown = tmp_path / "layer.md"
    out = run_script("layer_speed.py", "--batch", "2", "--repeats", "1", "--shapes", "6x6x8",
                     "--implementations", "auto", "taps", "per_sample", "--markdown", str(markdown))
    rows = table_rows(out)
    names = [row[1] for row in rows]
    assert names[0] == "Conv2D" and names[1].startswith("auto (")
    assert names[2:] == ["taps", "per_sample"]
    assert float(rows[0][3]) == 1.0 and float(rows[0][5]) == 1.0
    assert all(float(row[2]) > 0 and float(row[4]) > 0 for row in rows)
    assert table_rows(markdown.read_text()) == rows


@pytest.mark.slow  # ~25 s: builds and times two MobileNets in a subprocess
def test_model_speed_prints_ratios_against_the_plain_model(tmp_path):
    output = tmp_path / "models.md"
    run_script("model_speed.py", "--repeats", "1", "--batch", "1", "--size", "32",
               "--models", "MobileNet,AWMobileNet", "--output", str(output))
    rows = table_rows(output.read_text())
    assert [row[0] for row in rows] == ["MobileNet", "AWMobileNet"]
    assert rows[0][2] == "1.00x"
    assert all(float(row[1]) > 0 and float(row[3]) > 0 for row in rows)


@pytest.mark.slow  # ~1 min: builds and times three FPN + RetinaNet models in a subprocess
def test_detection_speed_times_every_variant_against_the_plain_fpn(tmp_path):
    output = tmp_path / "detection.md"
    run_script("detection_speed.py", "--body", "resnet_small", "--size", "64", "--batch", "1",
               "--repeats", "1", "--variants", "aw,se", "--output", str(output))
    rows = table_rows(output.read_text())
    assert [row[0] for row in rows] == ["resnet_small_fpn", "aw_resnet_small_fpn",
                                        "se_resnet_small_fpn"]
    assert rows[0][2::2] == ["1.00x"] * 4  # every ratio of the baseline
    assert all(float(value) > 0 for row in rows for value in row[1::2])


@pytest.mark.slow  # ~1.5 min: builds and times two Faster R-CNNs in a subprocess
def test_detection_speed_faster_rcnn_rows(tmp_path):
    output = tmp_path / "detection.md"
    run_script("detection_speed.py", "--body", "resnet_small", "--size", "64", "--batch", "1",
               "--repeats", "1", "--variants", "plain", "--faster-rcnn", "aw",
               "--output", str(output))
    text = output.read_text()
    assert "### Faster R-CNN" in text
    rows = table_rows(text.split("### Faster R-CNN")[1])
    assert [row[0] for row in rows] == ["resnet_small_fpn", "aw_resnet_small_fpn"]
    assert rows[0][2::2] == ["1.00x"] * 2
    assert all(float(value) > 0 for row in rows for value in row[1::2])


def test_detection_speed_rejects_an_unknown_variant():
    stderr = usage_error("detection_speed.py", "--variants", "aw,eca")
    assert "--variants" in stderr and "eca" in stderr


def _detection_speed_usage_error(*args):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "detection_speed.py"), *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stderr


def test_torchvision_peer_needs_faster_rcnn_the_resnet50_body_and_a_python(tmp_path):
    assert "--faster-rcnn" in _detection_speed_usage_error("--torchvision-python",
                                                            sys.executable)
    stderr = _detection_speed_usage_error("--faster-rcnn", "plain", "--body", "resnet_small",
                                          "--torchvision-python", sys.executable)
    assert "--body must be resnet50" in stderr and "resnet_small" in stderr
    missing = str(tmp_path / "no-venv" / "bin" / "python")
    stderr = _detection_speed_usage_error("--faster-rcnn", "plain", "--torchvision-python",
                                          missing)
    assert "not an executable file" in stderr and missing in stderr


def test_torchvision_peer_that_cannot_start_is_a_usage_error_before_any_model_is_built():
    # this Python has no torch: the peer exits at its import, the driver says so
    stderr = _detection_speed_usage_error("--faster-rcnn", "plain", "--torchvision-python",
                                          sys.executable)
    assert "torchvision peer exited" in stderr
    assert "built and warmed up" not in stderr


def test_torchvision_peer_protocol_answers_each_command_in_order():
    import io

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import torchvision_peer
    finally:
        sys.path.pop(0)
    calls = []

    def failing():
        raise RuntimeError("out of\nmemory")

    commands = {"train": lambda: calls.append("train"), "infer": lambda: calls.append("infer"),
                "broken": failing}
    stdout = io.StringIO()
    torchvision_peer.serve(commands, ("2.0", "0.1"),
                           io.StringIO("train\ninfer\nbroken\nnope\ntrain\nquit\ninfer\n"), stdout)
    lines = stdout.getvalue().splitlines()
    assert lines[0] == "ready 2.0 0.1"
    assert [line.split()[0] for line in lines[1:]] == ["ok", "ok", "error", "error", "ok"]
    assert all(float(line.split()[1]) >= 0 for line in lines[1:] if line.startswith("ok"))
    assert lines[3] == "error RuntimeError: out of memory"  # one line per answer
    assert "'nope'" in lines[4]
    assert calls == ["train", "infer", "train"]  # nothing after quit


@pytest.mark.slow  # builds ResNet50-FPN Faster R-CNNs on both sides
@pytest.mark.skipif(not os.environ.get("AW_TORCHVISION_PYTHON"),
                    reason="set AW_TORCHVISION_PYTHON to a Python with torch and torchvision "
                           "(e.g. a venv made with `pip install torch==2.14.1 "
                           "torchvision==0.29.1`) to run the peer end to end")
def test_detection_speed_torchvision_peer_row(tmp_path):
    output = tmp_path / "detection.md"
    run_script("detection_speed.py", "--size", "128", "--batch", "1", "--repeats", "1",
               "--variants", "plain", "--faster-rcnn", "plain",
               "--torchvision-python", os.environ["AW_TORCHVISION_PYTHON"],
               "--output", str(output))
    text = output.read_text().split("### Faster R-CNN")[1]
    rows = table_rows(text)
    assert rows[0][0] == "resnet50_fpn" and rows[1][0].startswith("torchvision ")
    assert all(float(value) > 0 for row in rows for value in row[1::2])
    assert "Our plain Faster R-CNN as a ratio to it: train step" in text


def _int8_conv_then_div(path):
    """An int8 .tflite: CONV_2D, then a DIV by a per-channel vector computed from the
    input (XNNPACK has no int8 DIV)."""
    import numpy as np
    import tensorflow as tf

    kernel = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 4, 8)), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec((1, 8, 8, 4), tf.float32)])
    def model(x):
        y = tf.nn.conv2d(x, kernel, 1, "SAME")
        return y / (1.0 + tf.sigmoid(tf.reduce_mean(y, axis=[1, 2], keepdims=True)))

    def representative():
        for _ in range(8):
            yield [np.random.default_rng(1).random((1, 8, 8, 4), dtype=np.float32)]

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [model.get_concrete_function()], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path.write_bytes(converter.convert())
    return path


def test_xnnpack_delegation_names_the_operator_xnnpack_refuses(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import xnnpack_delegation
    finally:
        sys.path.pop(0)
    result = xnnpack_delegation.report(_int8_conv_then_div(tmp_path / "div.tflite"))
    assert result["operators"]["CONV_2D"] == 1 and result["operators"]["DIV"] == 1
    assert result["refused"]["DIV"] == 1 and result["refused"]["CONV_2D"] == 0
    assert result["partitions"] >= 1  # the conv's partition; the DIV runs outside it
    assert "DIV" in result["examples"] and "CONV_2D" not in result["examples"]


def test_xnnpack_delegation_rejects_a_missing_file(tmp_path):
    assert "none.tflite" in usage_error("xnnpack_delegation.py", str(tmp_path / "none.tflite"))


def test_op_profile_times_every_operator_and_compares_types(tmp_path):
    model = _int8_conv_then_div(tmp_path / "div.tflite")
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import op_profile
    finally:
        sys.path.pop(0)
    sample = op_profile.model_input(model)
    rows = op_profile.time_operators(model, sample, repeats=3, threads=1)
    flat = op_profile.load(model)
    expected = [op_profile.operator_name(flat, op) for op in flat.subgraphs[0].operators]
    assert [kind for _, kind, _, _ in rows] == expected  # every operator, in order
    assert {"CONV_2D", "DIV"} <= set(expected)
    assert all(seconds > 0 for *_, seconds in rows)
    out = run_script("op_profile.py", str(model), "--against", str(model), "--repeats", "2")
    by_type = {row[0]: row for row in table_rows(out)[: len(set(expected))]}
    assert set(by_type) == set(expected)
    for kind, row in by_type.items():  # the same file on both sides: counts equal
        assert row[1] == row[3] == str(expected.count(kind))
    assert "whole model" in out and "Top 12 layers" in out


def test_op_profile_rejects_a_missing_file(tmp_path):
    assert "none.tflite" in usage_error("op_profile.py", str(tmp_path / "none.tflite"))


@pytest.mark.parametrize("quantization", ["int8", "float32"])
def test_int8_layer_forms_measures_every_form_against_the_plain_conv(quantization):
    out = run_script("int8_layer_forms.py", "--size", "32", "--repeats", "1", "--stages", "8",
                     "--calibration", "2", "--quantization", quantization)
    rows = table_rows(out)
    int8 = quantization == "int8"
    assert [row[1] for row in rows] == (["plain", "taps", "split", "matmul", "split_matmul"]
                                        if int8 else ["plain", "taps", "matmul"])
    assert all(row[0] == "8x8x64" for row in rows)
    assert rows[0][3] == "1.00x"
    assert all(row[4] == "1" for row in rows), rows  # XNNPACK takes every form whole
    if int8:
        assert all(0 < float(row[5]) < 0.2 for row in rows), rows
    else:  # float32: the same function up to float rounding
        assert all(float(row[5]) < 1e-4 for row in rows), rows
    assert f"x plain {quantization} conv" in out


def test_int8_layer_forms_rejects_an_unknown_stage():
    stderr = usage_error("int8_layer_forms.py", "--size", "32", "--stages", "5",
                         "--calibration", "1")
    assert "--stages: no stage with map size [5]" in stderr


@pytest.mark.parametrize("quantization", [
    "float32", pytest.param("int8", marks=pytest.mark.slow)])  # int8: +14 s, same script path
def test_aw_form_probes_time_every_form_against_the_plain_conv(quantization):
    out = run_script("aw_form_probes.py", "--stages", "7", "--repeats", "1",
                     "--quantization", quantization)
    rows = table_rows(out)
    forms = ["plain", "taps", "matmul", "tap_matmul"]
    assert [row[1] for row in rows] == forms + ([] if quantization == "int8" else ["runtime_filter"])
    assert all(row[0] == "7x7x512" for row in rows) and rows[0][3] == "1.00x"
    errors = [float(row[5]) for row in rows]
    if quantization == "int8":  # int8 rounding, not a wrong graph
        assert all(0 < error < 0.1 for error in errors), rows
    else:  # every form is the same function up to float rounding
        assert all(error < 1e-5 for error in errors), rows
    assert f"; {quantization}, batch 1" in out


def test_aw_form_probes_rejects_an_unknown_stage():
    stderr = usage_error("aw_form_probes.py", "--stages", "9")
    assert "expected map sizes among [7, 14, 28, 56]" in stderr


@pytest.mark.slow  # ~1 min: trains a small model and exports it to int8 twice
def test_int8_split_agreement_reports_both_forms_per_training(tmp_path):
    out_json = tmp_path / "rows.json"
    out = run_script("int8_split_agreement.py", "--steps", "20", "--seeds", "0", "--images", "64",
                     "--out", str(out_json))
    rows = table_rows(out)
    assert [row[0] for row in rows] == ["0", "mean"]
    import json

    saved = json.loads(out_json.read_text())
    assert [r["seed"] for r in saved] == [0]
    for form in ("split", "no_split"):
        first64, all_images = saved[0][form]
        assert 0.0 <= first64 <= 1.0 and first64 == all_images  # 64 images: the same set
    assert "no split - split on 64 images" in out


def test_int8_split_agreement_rejects_too_few_images():
    assert "--images must be at least 64, received 10" in usage_error(
        "int8_split_agreement.py", "--images", "10")

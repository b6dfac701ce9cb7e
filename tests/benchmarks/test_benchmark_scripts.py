"""The benchmark scripts still run and print their tables (tiny sizes, one round).

They are not timed tests: these runs only check that each script runs end to end
on the current library and prints a table with one row per candidate and a
baseline ratio of exactly 1.00 (a script that silently dropped a candidate or
mixed up its baseline would fail here). Timings themselves are meaningless at
these sizes.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "export_latency.py"), "--pairs", "vgg"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 2
    assert "--pairs" in result.stderr and "vgg" in result.stderr


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


def test_model_speed_prints_ratios_against_the_plain_model(tmp_path):
    output = tmp_path / "models.md"
    run_script("model_speed.py", "--repeats", "1", "--batch", "1", "--size", "32",
               "--models", "MobileNet,AWMobileNet", "--output", str(output))
    rows = table_rows(output.read_text())
    assert [row[0] for row in rows] == ["MobileNet", "AWMobileNet"]
    assert rows[0][2] == "1.00x"
    assert all(float(row[1]) > 0 and float(row[3]) > 0 for row in rows)


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
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "detection_speed.py"),
         "--variants", "aw,eca"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 2
    assert "--variants" in result.stderr and "eca" in result.stderr

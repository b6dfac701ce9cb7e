"""benchmarks/backend_speed.py (and the --backend of layer_speed.py / model_speed.py,
and benchmarks/gpu/run.sh): usage errors, and tiny real runs on JAX.

Usage errors run ``main()`` in this process (argparse exits 2 before Keras is
touched). The real runs are subprocesses with ``KERAS_BACKEND`` set to a
*different* backend than the one asked for with ``--backend`` and TensorFlow
made unimportable, as on the GPU machine; they check the table's shape, that
every time is positive and that each ratio is AW ms / baseline ms, never how
fast anything is (timings at these sizes mean nothing).
"""

import contextlib
import importlib.util
import io
import os
import subprocess
import sys

import pytest

from other_backends import BLOCK_TENSORFLOW

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
HEADER = ["section", "shape/model", "mode", "baseline ms", "AW ms", "AW/baseline"]

needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                               reason="jax is not installed (pip install 'aw_keras[jax]')")


def usage_error(script, *args):
    """stderr of ``benchmarks/<script>``'s ``main(args)`` run in this process, which
    must end in an argparse usage error (SystemExit 2)."""
    sys.path.insert(0, BENCHMARKS)
    try:
        spec = importlib.util.spec_from_file_location(f"speed_{script[:-3]}",
                                                      os.path.join(BENCHMARKS, script))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            with pytest.raises(SystemExit) as exit_:
                module.main(list(args))
    finally:
        sys.path.remove(BENCHMARKS)
    assert exit_.value.code == 2, stderr.getvalue()[-2000:]
    return stderr.getvalue()


# TensorFlow unimportable, as on the GPU machine (tests/other_backends.py), then the
# script as __main__.
WITHOUT_TENSORFLOW = BLOCK_TENSORFLOW + """
import runpy
import os
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))  # as `python script` would
runpy.run_path(script, run_name="__main__")
"""


def run_script(script, *args, timeout=600):
    """stdout of ``benchmarks/<script> args`` in a fresh process without TensorFlow,
    ``KERAS_BACKEND=torch`` (so ``--backend`` must do the selecting); asserts exit 0."""
    env = dict(os.environ, KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="3",
               CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, os.path.join(BENCHMARKS, script), *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def table(text):
    """(line above the table, [header, *rows]) of backend_speed's markdown."""
    lines = text.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| section"))
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in lines[start:] if line.startswith("| ") and not line.startswith("|---")]
    return lines[start - 2], rows


def check_rows(rows, expected):
    """Rows are ``expected`` [(section, name, mode)] in order, each with positive
    times and the ratio AW / baseline (as far as the printed ms, rounded to 0.01,
    and the ratio, rounded to 0.01, allow)."""
    assert [tuple(row[:3]) for row in rows] == expected
    for row in rows:
        base, aw = float(row[3]), float(row[4])
        assert base > 0 and aw > 0, row
        assert row[5].endswith("x")
        low, high = (aw - 0.005) / (base + 0.005), (aw + 0.005) / max(base - 0.005, 1e-9)
        assert low - 0.005 <= float(row[5][:-1]) <= high + 0.005, row


# --- usage errors ---------------------------------------------------------------------

@pytest.mark.parametrize("value", ["layer,gpu", "", "model,,detection"])
def test_unknown_section_is_a_usage_error_naming_the_choices(value):
    stderr = usage_error("backend_speed.py", "--sections", value)
    assert "--sections" in stderr and repr(value) in stderr
    assert "layer, model, retinanet" in stderr


@pytest.mark.parametrize("flag", ["--batch", "--repeats", "--size", "--detection-size"])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_non_positive_counts_are_usage_errors(flag, value):
    stderr = usage_error("backend_speed.py", flag, value)
    assert f"argument {flag}" in stderr and repr(value) in stderr
    assert "expected a positive integer" in stderr


@pytest.mark.parametrize("value", ["8x8", "8x8x0", "8x8xC", "56x56x64,7x7"])
def test_bad_shapes_are_usage_errors(value):
    stderr = usage_error("backend_speed.py", "--shapes", value)
    assert "argument --shapes" in stderr and "HxWxC" in stderr
    assert repr(value.split(",")[-1]) in stderr  # the offending shape


def test_unknown_backend_and_dtype_are_usage_errors():
    assert "invalid choice: 'mxnet'" in usage_error("backend_speed.py", "--backend", "mxnet")
    assert "invalid choice: 'float16'" in usage_error("backend_speed.py", "--dtype", "float16")


def test_default_sections_and_shapes_are_the_documented_ones():
    sys.path.insert(0, BENCHMARKS)
    try:
        spec = importlib.util.spec_from_file_location("speed_defaults",
                                                      os.path.join(BENCHMARKS, "backend_speed.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(BENCHMARKS)
    args = module.build_parser().parse_args([])
    assert args.sections == ["layer", "model", "retinanet"]
    assert args.shapes == [(56, 56, 64), (28, 28, 128), (14, 14, 256), (7, 7, 512)]
    assert (args.batch, args.repeats, args.size, args.detection_size) == (64, 10, 224, 512)
    assert args.backend == "tensorflow" and args.dtype == "float32"


def test_layer_speed_other_backend_refuses_tensorflow_only_options():
    stderr = usage_error("layer_speed.py", "--backend", "jax", "--implementations", "taps")
    assert "--implementations and --jit-compile" in stderr and "--backend jax" in stderr
    stderr = usage_error("layer_speed.py", "--backend", "torch", "--shapes", "8x8")
    assert "argument --shapes" in stderr and "'8x8'" in stderr
    stderr = usage_error("layer_speed.py", "--dtype", "bfloat16")  # TensorFlow: float32 only
    assert "--dtype bfloat16" in stderr


def test_model_speed_other_backend_refuses_models_and_bad_sizes():
    stderr = usage_error("model_speed.py", "--backend", "jax", "--models", "MobileNet")
    assert "--models" in stderr and "MobileNet" in stderr and "--backend jax" in stderr
    stderr = usage_error("model_speed.py", "--backend", "torch", "--size", "8")
    assert "--size at least 32" in stderr and "received 10, 16, 8" in stderr


# --- real runs on JAX (CPU) -------------------------------------------------------------

@needs_jax
def test_layer_section_on_jax_has_a_row_per_shape_and_mode(tmp_path):
    markdown = tmp_path / "layer.md"
    out = run_script("backend_speed.py", "--backend", "jax", "--sections", "layer",
                     "--shapes", "8x8x8,4x4x16", "--batch", "2", "--repeats", "2",
                     "--markdown", str(markdown))
    title, rows = table(out)
    assert rows[0] == HEADER
    check_rows(rows[1:], [("layer", shape, mode) for shape in ("8x8x8", "4x4x16")
                          for mode in ("inference", "train")])
    for fact in ("Backend jax (jax ", "Keras 3.", "dtype float32", "batch 2",
                 "median of 2 interleaved rounds", "Device: ", "(backend computes on CPU)"):
        assert fact in title
    assert markdown.read_text() == out[out.index("Backend jax"):]  # the same table


@needs_jax
def test_layer_speed_backend_jax_reuses_the_layer_section():
    out = run_script("layer_speed.py", "--backend", "jax", "--shapes", "6x6x8", "--batch", "2",
                     "--repeats", "2")
    title, rows = table(out)
    assert "Backend jax" in title
    check_rows(rows[1:], [("layer", "6x6x8", "inference"), ("layer", "6x6x8", "train")])


@pytest.mark.slow  # ~1.5 min: two ResNet50s and two RetinaNets compiled by XLA on CPU
@needs_jax
def test_model_and_retinanet_sections_on_jax_in_bfloat16():
    pytest.importorskip("keras_hub", reason="keras-hub (the 'detection' extra) is not installed")
    out = run_script("backend_speed.py", "--backend", "jax", "--dtype", "bfloat16",
                     "--sections", "model,retinanet", "--size", "32", "--detection-size", "64",
                     "--batch", "1", "--repeats", "2")
    title, rows = table(out)
    assert "dtype bfloat16 (policy mixed_bfloat16)" in title
    check_rows(rows[1:], [("model", "AWResNet50 vs ResNet50 32x32", "inference"),
                          ("model", "AWResNet50 vs ResNet50 32x32", "train"),
                          ("retinanet", "aw_resnet50_fpn vs resnet50_fpn 64x64", "train")])


@pytest.mark.slow  # ~1 min: two ResNet50s compiled by XLA on CPU
@needs_jax
def test_model_speed_backend_jax_reuses_the_model_section(tmp_path):
    output = tmp_path / "models.md"
    run_script("model_speed.py", "--backend", "jax", "--size", "32", "--batch", "1",
               "--repeats", "2", "--output", str(output))
    title, rows = table(output.read_text())
    assert "Backend jax" in title
    check_rows(rows[1:], [("model", "AWResNet50 vs ResNet50 32x32", "inference"),
                          ("model", "AWResNet50 vs ResNet50 32x32", "train")])


@pytest.mark.slow  # ~3 min: the GPU script at smoke sizes, JAX only, on CPU
@needs_jax
def test_gpu_run_script_smoke_writes_every_table(tmp_path):
    pytest.importorskip("keras_hub", reason="keras-hub (the 'detection' extra) is not installed")
    env = dict(os.environ, AW_GPU_SMOKE="1", OUT=str(tmp_path), PYTHON=sys.executable,
               AW_GPU_BACKENDS="jax", AW_GPU_SITE=str(tmp_path / "site"))
    done = subprocess.run(["bash", os.path.join(BENCHMARKS, "gpu", "run.sh")], env=env,
                          capture_output=True, text=True, timeout=1500, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = (tmp_path / "gpu_speed.md").read_text()
    assert "device: " in text and "Total " in text
    for dtype in ("float32", "bfloat16"):
        for part in ("layers", "ResNet50", "RetinaNet"):
            section = text.split(f"## jax {dtype}: {part}\n")[1].split("\n## ")[0]
            title, rows = table(section)
            assert f"dtype {dtype}" in title
            assert len(rows) > 1 and all(float(row[3]) > 0 for row in rows[1:])

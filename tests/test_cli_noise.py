"""The command-line tools start without TensorFlow's start-up noise, `--help`
needs no TensorFlow, and `import aw_keras` is light while every class aw_keras
registers stays loadable by keras.saving.load_model."""

import os
import subprocess
import sys
import textwrap

import pytest

from aw_keras.utils import tf_quiet

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796665971.557507    4943 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "I0000 00:00:1796665971.642761    4943 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    "with the appropriate compiler flags.",
    "fully_quantize: 0, inference_type: 6, input_inference_type: INT8, output_inference_type: "
    "INT8",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "E0000 00:00:1796666062.972108    6260 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
]
REAL = [
    "E0000 00:00:1796666062.972108    6260 op_kernel.cc:1857] OP_REQUIRES failed at "
    "conv_ops.cc:12 : INVALID_ARGUMENT: bad shape",
    "Traceback (most recent call last):",
    "  something the user must see",
]


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", tf_quiet.ENV_VARIABLE)}
    env.update(PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="", TF_NUM_INTRAOP_THREADS="1",
               TF_NUM_INTEROP_THREADS="1", **extra)
    return env


def test_filtered_stderr_drops_start_up_noise_and_replays_the_rest(capfd, monkeypatch):
    monkeypatch.delenv(tf_quiet.ENV_VARIABLE, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU asked for: cuInit failing is noise
    lines = [NOISE[0], REAL[0], *NOISE[1:], *REAL[1:]]
    with tf_quiet.filtered_stderr():
        os.write(2, ("\n".join(lines) + "\n").encode())  # as TensorFlow's C++ code writes
    assert capfd.readouterr().err.splitlines() == REAL

    with pytest.raises(RuntimeError):  # an exception still gets its lines written back
        with tf_quiet.filtered_stderr():
            os.write(2, (NOISE[1] + "\n" + REAL[0] + "\n").encode())
            raise RuntimeError("x")
    assert capfd.readouterr().err.splitlines() == [REAL[0]]

    monkeypatch.setenv(tf_quiet.ENV_VARIABLE, "1")  # the user asked for TensorFlow's output
    with tf_quiet.filtered_stderr():
        os.write(2, ("\n".join(NOISE) + "\n").encode())
    assert capfd.readouterr().err.splitlines() == NOISE


def test_is_noise():
    assert all(tf_quiet.is_noise(line + "\n") for line in NOISE[:6])
    assert not any(tf_quiet.is_noise(line) for line in REAL + ["", "Epoch 1/2"])


def test_help_needs_no_tensorflow():
    """`aw-train --help` and `aw-compare --help` import neither TensorFlow nor Keras
    (they took 6 s and printed TensorFlow's C++ lines), nor does `import aw_keras`."""
    code = textwrap.dedent("""
        import sys
        import aw_keras
        assert "tensorflow" not in sys.modules, "import aw_keras imported TensorFlow"
        from aw_keras.train import cli, compare
        for main in (cli.main, compare.main):
            try:
                main(["--help"])
            except SystemExit as exit_:
                assert exit_.code == 0, exit_.code
        print("imported:", sorted({"tensorflow", "keras"} & set(sys.modules)))
        """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=_env(), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage: aw-train" in result.stdout and "usage: aw-compare" in result.stdout
    assert " ".join(result.stdout.split()).count("AW_KERAS_TF_LOGS=1 shows them") == 2
    assert "imported: []" in result.stdout, result.stdout[-500:]
    assert result.stderr == "", result.stderr


def test_import_aw_keras_resolves_subpackages_lazily():
    import aw_keras
    from aw_keras.layers import AWConv2D

    assert aw_keras.layers.AWConv2D is AWConv2D
    assert callable(aw_keras.applications.get_model)
    assert {"layers", "optimizers", "utils", "applications", "detection"} <= set(dir(aw_keras))
    with pytest.raises(AttributeError, match="has no attribute 'layerz'"):
        aw_keras.layerz


def test_every_registered_class_is_in_the_table_with_its_module():
    """aw_keras.SERIALIZABLE lists exactly the classes the subpackages register,
    each with a module whose import registers it (so loading finds them)."""
    pytest.importorskip("keras_hub", reason="keras-hub (the 'detection' extra) is not installed")
    import keras

    import aw_keras
    import aw_keras.applications  # noqa: F401
    import aw_keras.detection  # noqa: F401
    import aw_keras.export.layers  # noqa: F401
    import aw_keras.layers  # noqa: F401
    import aw_keras.optimizers  # noqa: F401

    registered = {name for name in keras.saving.get_custom_objects()
                  if name.startswith("aw_keras>")}
    assert registered == set(aw_keras.SERIALIZABLE)
    for name, module in aw_keras.SERIALIZABLE.items():
        cls = keras.saving.get_registered_object(name)
        assert cls.__module__ == module or cls.__module__.startswith(module + "."), (
            name, cls.__module__, module)
        assert keras.saving.get_registered_name(cls) == name

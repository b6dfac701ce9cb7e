"""The layers on Keras's other backends, from the TensorFlow test process.

Each check runs a fresh Python process on JAX (Keras fixes its backend at
import): ``import aw_keras`` and training without TensorFlow importable, and
``.keras`` files crossing between TensorFlow and JAX with the same outputs.
(The oracle, gradient and harness tests themselves run on JAX in their own
pytest process: `scripts/test.sh`.)"""

import os
import subprocess
import sys

import numpy as np
import pytest

import keras
from aw_keras.layers import AWConv2D
from aw_keras.layers import CBAM
from aw_keras.layers import SqueezeExcite

from other_backends import BLOCK_TENSORFLOW  # noqa: E402
from other_backends import TENSORFLOW_LOADED  # noqa: E402
from other_backends import other_backend_params  # noqa: E402
from other_backends import run_on  # noqa: E402


def build_model(seed=0):
    """AWConv2D (stride 2, r_C1 = 2, and a 1x1), SqueezeExcite and CBAM, with
    non-trivial BatchNorm statistics."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((11, 13, 4))
    x = AWConv2D(8, 3, strides=2, padding="same", input_channel_reduction=2,
                 reduction_ratio=2)(inputs)
    x = SqueezeExcite(reduction_ratio=2)(x)
    x = AWConv2D(6, 1, activation="relu", reduction_ratio=2)(x)
    x = CBAM(reduction_ratio=2)(x)
    x = AWConv2D(5, 3, attention_mode="multiplicative", reduction_ratio=2)(x)
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if "moving_variance" in weight.path:
            weight.assign(rng.uniform(0.5, 2.0, weight.shape).astype("float32"))
        elif "moving_mean" in weight.path or "beta" in weight.path:
            weight.assign(rng.normal(0, 0.3, weight.shape).astype("float32"))
    return model


CHILD = """
import json, sys
import numpy as np, keras, aw_keras
from aw_keras.layers import AWConv2D
sys.path[:0] = [{tests!r}, {tests_root!r}]
from test_backends import build_model

# 1. the file saved on TensorFlow, on this backend
loaded = keras.saving.load_model({path!r})
x = np.load({inputs!r})
np.save({loaded_out!r}, np.asarray(loaded.predict(x, verbose=0)))
# 2. a model built, trained one step and saved here, for TensorFlow to load
model = build_model(seed=1)
model.compile("sgd", "mse")
model.fit(x, np.zeros(model.output_shape[1:], "float32")[None].repeat(len(x), 0),
          epochs=1, batch_size=3, verbose=0)
model.save({saved!r})
np.save({saved_out!r}, np.asarray(model.predict(x, verbose=0)))
print(json.dumps({{"backend": keras.backend.backend(),
                   "tensorflow_loaded": {loaded},
                   "strategies": sorted({{l.resolved_implementation(
                       (3,) + tuple(l.input.shape[1:]), False)
                       for l in loaded.layers if isinstance(l, AWConv2D)}})}}))
"""


@pytest.mark.parametrize("backend", other_backend_params())
def test_keras_files_cross_between_tensorflow_and_another_backend(tmp_path, backend):
    """A .keras file saved on TensorFlow gives the same outputs on JAX / PyTorch,
    and one trained and saved there the same on TensorFlow (float32, 1e-5
    relative); that process never imports TensorFlow."""
    model = build_model()
    x = np.random.default_rng(2).normal(size=(6, 11, 13, 4)).astype("float32")
    paths = {name: str(tmp_path / name) for name in
             ("tf.keras", "inputs.npy", "loaded.npy", "other.keras", "other_out.npy")}
    model.save(paths["tf.keras"])
    np.save(paths["inputs.npy"], x)
    report = run_on(backend, BLOCK_TENSORFLOW + CHILD.format(
        loaded=TENSORFLOW_LOADED, tests=os.path.dirname(__file__), tests_root=os.path.dirname(os.path.dirname(__file__)),
        path=paths["tf.keras"], inputs=paths["inputs.npy"],
        loaded_out=paths["loaded.npy"], saved=paths["other.keras"], saved_out=paths["other_out.npy"]))
    assert report == {"backend": backend, "tensorflow_loaded": False,
                      "strategies": ["taps"]}, report
    np.testing.assert_allclose(np.load(paths["loaded.npy"]), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    from_other = keras.saving.load_model(paths["other.keras"])
    np.testing.assert_allclose(from_other.predict(x, verbose=0), np.load(paths["other_out.npy"]),
                               rtol=1e-5, atol=1e-5)
    # the step there trained: its weights are not the seed-1 initial ones
    assert not all(np.array_equal(a, b) for a, b in
                   zip(from_other.get_weights(), build_model(seed=1).get_weights()))


NO_TENSORFLOW_CHILD = """
import contextlib, io, json, sys
import numpy as np
import aw_keras, aw_keras.layers, aw_keras.optimizers, aw_keras.applications
from aw_keras.layers import AWConv2D
report = {}
layer = AWConv2D(4, 3, implementation="fused")
try:
    layer(np.zeros((1, 5, 5, 2), "float32"))
    report["fused"] = "ran"
except ValueError as error:
    report["fused"] = str(error)
report["registry"] = aw_keras.applications.is_model("aw_resnet50")
# the TensorFlow-only parts: an ImportError that says what to install
for name, attempt in [
        ("data", lambda: __import__("aw_keras.data")),
        ("export", lambda: aw_keras.export.export_tflite),
        ("faster_rcnn", lambda: __import__("aw_keras.detection").detection.FasterRCNN)]:
    try:
        attempt()
        report[name] = "imported"
    except ImportError as error:
        report[name] = str(error)
from aw_keras.train import cli
stderr = io.StringIO()
with contextlib.redirect_stderr(stderr):
    try:
        cli.main(["aw_resnet_cifar", "--out", "unused"])
    except SystemExit as exit:
        report["aw_train"] = [exit.code, stderr.getvalue()]
report["tensorflow_loaded"] = TENSORFLOW_LOADED
print(json.dumps(report))
"""


@pytest.mark.parametrize("backend", other_backend_params())
def test_without_tensorflow_the_layers_run_and_the_tensorflow_parts_say_so(backend, tmp_path):
    """``import aw_keras``, its layers, optimizers and model families run without
    TensorFlow; the parts that are TensorFlow's (tf.data pipelines, export, the
    fused op, Faster R-CNN, aw-train) each say what to install."""
    pytest.importorskip("keras_hub", reason="keras-hub (the 'detection' extra) is not installed")
    report = run_on(backend, "import os; os.chdir(%r)\n" % str(tmp_path)
                    + BLOCK_TENSORFLOW + NO_TENSORFLOW_CHILD.replace("TENSORFLOW_LOADED", TENSORFLOW_LOADED))
    assert report["tensorflow_loaded"] is False
    assert f"does not run on the {backend} backend" in report["fused"], report
    assert report["registry"] is True
    for name, feature in (("data", "aw_keras.data"), ("export", "aw_keras.export.export_tflite"),
                          ("faster_rcnn", "FasterRCNN")):
        assert feature in report[name] and "pip install tensorflow" in report[name], report[name]
    status, stderr = report["aw_train"]
    assert status == 2 and "aw-train (its input pipelines are tf.data) needs TensorFlow" in stderr
    assert not (tmp_path / "unused").exists()


def test_aw_export_without_tensorflow_is_a_usage_error(tmp_path):
    """aw-export runs on TensorFlow whatever the backend; without it installed the
    command says what to install (exit 2) and writes nothing."""
    code = BLOCK_TENSORFLOW + (
        "from aw_keras.export.cli import main\n"
        f"sys.exit(main(['aw_resnet_cifar', '--out', {str(tmp_path / 'out')!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "aw-export (SavedModel, TFLite and ONNX come from TensorFlow) needs TensorFlow" in \
        done.stderr and "pip install tensorflow" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "out").exists()

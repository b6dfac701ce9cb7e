"""The layers on Keras's other backends, from the TensorFlow test process.

Each check runs a fresh Python process on JAX (Keras fixes its backend at
import): ``import aw_keras`` and training without TensorFlow importable, and
``.keras`` files crossing between TensorFlow and JAX with the same outputs.
(The oracle, gradient and harness tests themselves run on JAX in their own
pytest process: `scripts/test.sh`.)"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras
from aw_keras.layers import AWConv2D
from aw_keras.layers import CBAM
from aw_keras.layers import SqueezeExcite

pytest.importorskip("jax", reason="JAX is not installed (pip install 'aw_keras[jax]')")

# Makes `import tensorflow` fail in the child, as on a machine without it.
BLOCK_TENSORFLOW = """
import importlib.abc, sys
class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, _NoTensorFlow())
"""


def _run(code, backend="jax", timeout=300):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


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
sys.path.insert(0, {tests!r})
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
                   "tensorflow_loaded": "tensorflow" in sys.modules,
                   "strategies": sorted({{l.resolved_implementation(
                       (3,) + tuple(l.input.shape[1:]), False)
                       for l in loaded.layers if isinstance(l, AWConv2D)}})}}))
"""


def test_keras_files_cross_between_tensorflow_and_jax(tmp_path):
    """A .keras file saved on TensorFlow gives the same outputs on JAX, and one
    trained and saved on JAX the same on TensorFlow (float32, 1e-5 relative);
    the JAX process never imports TensorFlow."""
    model = build_model()
    x = np.random.default_rng(2).normal(size=(6, 11, 13, 4)).astype("float32")
    paths = {name: str(tmp_path / name) for name in
             ("tf.keras", "inputs.npy", "loaded.npy", "jax.keras", "jax_out.npy")}
    model.save(paths["tf.keras"])
    np.save(paths["inputs.npy"], x)
    report = _run(BLOCK_TENSORFLOW + CHILD.format(
        tests=os.path.dirname(__file__), path=paths["tf.keras"], inputs=paths["inputs.npy"],
        loaded_out=paths["loaded.npy"], saved=paths["jax.keras"], saved_out=paths["jax_out.npy"]))
    assert report == {"backend": "jax", "tensorflow_loaded": False,
                      "strategies": ["taps"]}, report
    np.testing.assert_allclose(np.load(paths["loaded.npy"]), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    from_jax = keras.saving.load_model(paths["jax.keras"])
    np.testing.assert_allclose(from_jax.predict(x, verbose=0), np.load(paths["jax_out.npy"]),
                               rtol=1e-5, atol=1e-5)
    # the JAX step trained: its weights are not the seed-1 initial ones
    assert not all(np.array_equal(a, b) for a, b in
                   zip(from_jax.get_weights(), build_model(seed=1).get_weights()))


def test_import_aw_keras_needs_no_tensorflow_on_jax():
    """``import aw_keras`` and its layers without TensorFlow; the TensorFlow-only
    parts say which extra they need."""
    report = _run(BLOCK_TENSORFLOW + """
import json, sys
import aw_keras, aw_keras.layers, aw_keras.optimizers
from aw_keras.layers import AWConv2D
layer = AWConv2D(4, 3, implementation="fused")
try:
    layer(__import__("numpy").zeros((1, 5, 5, 2), "float32"))
    fused = "ran"
except ValueError as error:
    fused = str(error)
print(json.dumps({"tensorflow_loaded": "tensorflow" in sys.modules, "fused": fused}))
""")
    assert report["tensorflow_loaded"] is False
    assert "does not run on the jax backend" in report["fused"], report

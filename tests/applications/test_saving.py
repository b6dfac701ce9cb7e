"""`.keras` save/load in a fresh process gives identical outputs (one model per family)."""

import os
import subprocess
import sys

import numpy as np

import keras

from aw_keras import applications

# Runs in a fresh interpreter: loads each model with only `import aw_keras`
# (registration) and compares against the outputs saved by the parent.
LOADER = """
import sys
import numpy as np
import keras
import aw_keras  # noqa: F401  (registers the custom layers for deserialization)
for path in sys.argv[1:]:
    model = keras.models.load_model(path + ".keras")
    x = np.load(path + "_x.npy")
    expected = np.load(path + "_y.npy")
    got = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_array_equal(got, expected)
    print("OK", model.name)
"""


def _models():
    yield applications.AWSEResNetCIFAR(input_shape=(28, 28, 1), classes=3)
    yield applications.AWCBAMMobileNet(input_shape=(32, 32, 3), alpha=0.25, classes=3)
    yield applications.ResNet(
        (1, 1, 1), stage_filters=(4, 8, 16), stem="cifar", input_shape=(16, 16, 2), classes=3,
        attention="cbam", use_aw=True, aw_kwargs={"reduction_ratio": 2}, name="aw_cbam_tiny")


def test_keras_format_round_trip_in_fresh_process(tmp_path):
    paths = []
    for index, model in enumerate(_models()):
        # Move BN statistics off their initial values so loading them matters.
        x = np.random.default_rng(index).random((4,) + model.input_shape[1:], dtype=np.float32)
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        model.fit(x, np.arange(4) % 3, epochs=1, verbose=0)
        path = str(tmp_path / model.name)
        model.save(path + ".keras")
        np.save(path + "_x.npy", x)
        np.save(path + "_y.npy", keras.ops.convert_to_numpy(model(x, training=False)))
        paths.append(path)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", LOADER, *paths], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("OK") == 3, result.stdout

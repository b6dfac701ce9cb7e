"""Running a check in a fresh Python process on another Keras backend.

Keras fixes its backend at import, so a test on TensorFlow reaches JAX or
PyTorch through a child process. `run_on` runs code there and returns the JSON
its last line prints; `BLOCK_TENSORFLOW` makes ``import tensorflow`` fail in
the child, as on a machine without TensorFlow (`TENSORFLOW_LOADED` checks it
stayed out).
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

# The finder answers for TensorFlow with a spec whose loader fails: `import
# tensorflow` raises ModuleNotFoundError, as when it is not installed, and
# "tensorflow" never enters sys.modules (Keras looks there to decide whether it
# may use TensorFlow). The spec has no origin, so code that only asks whether
# TensorFlow is findable (PyTorch's dynamo) skips it.
BLOCK_TENSORFLOW = """
import importlib.abc, importlib.machinery, sys
class _NoTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r} (blocked by the test)",
                                  name=spec.name)
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, _NoTensorFlow())
"""
# the child's check that TensorFlow was never imported
TENSORFLOW_LOADED = 'sys.modules.get("tensorflow") is not None'

# the backends besides TensorFlow, and the module each needs
OTHER_BACKENDS = {"jax": "jax", "torch": "torch"}


def other_backend_params():
    """pytest params of the other backends, each skipped with the reason when
    its package is missing (PyTorch is not in the dev install: it is several GB;
    `bash scripts/test.sh torch` installs it)."""
    params = []
    for backend, module in OTHER_BACKENDS.items():
        missing = importlib.util.find_spec(module) is None
        params.append(pytest.param(backend, marks=pytest.mark.skipif(
            missing, reason=f"{module} is not installed (pip install 'aw_keras[{backend}]')")))
    return params


def run_on(backend, code, timeout=600):
    """Runs ``code`` in a fresh process with ``KERAS_BACKEND=backend``; asserts it
    exits 0 and returns the JSON of its last output line."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])

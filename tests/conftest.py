import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# `tests/reference.py` is imported as a plain module by the layer tests.
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """On a backend other than TensorFlow (``KERAS_BACKEND=jax``), tests marked
    ``tensorflow_only`` are skipped with the reason."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow-only test; this process runs Keras on {backend}")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _skip_fused_without_kernel(request):
    """Tests parametrized with implementation="fused" need the fused CPU kernel,
    which is compiled on first use; without a C++ compiler they are skipped and
    the reason is printed."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None or callspec.params.get("implementation") != "fused":
        return
    from aw_keras.layers import fused_op

    if not fused_op.available():
        pytest.skip(f"fused AWConv2D kernel unavailable: {fused_op.unavailable_reason()}")

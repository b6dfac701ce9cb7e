"""Choosing Keras's backend from a command, before Keras is imported.

>>> import os
>>> select_backend(os.environ.get("KERAS_BACKEND", "tensorflow")) in ("tensorflow", "jax", "torch")
True
"""

import os
import sys


def select_backend(backend):
    """Makes ``backend`` Keras's backend for this process (``KERAS_BACKEND``,
    read when Keras is first imported) and returns it. Raises ValueError when
    Keras is already imported on another backend here (it cannot switch)."""
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != backend:
            raise ValueError(f"Keras is already running on {keras.backend.backend()} in this "
                             f"process, not {backend}.")
    os.environ["KERAS_BACKEND"] = backend
    return backend


def gpu_available():
    """Whether the running Keras backend sees a GPU (TensorFlow's, JAX's or
    PyTorch's device list)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))

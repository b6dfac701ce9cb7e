"""The TensorFlow-only parts of aw_keras, and the error they give without it.

aw_keras's layers, model families and RetinaNet run on every Keras backend
without TensorFlow. What is TensorFlow's by nature needs it installed: the
``tf.data`` input pipelines (`aw_keras.data`, and so ``aw-train`` /
``aw-compare``), the exporters (`aw_keras.export`, ``aw-export``),
``tf.distribute``, the fused CPU op and `aw_keras.detection.FasterRCNN`.

>>> require_tensorflow("the tf.data input pipelines").__name__
'tensorflow'
"""

# TensorFlow is in aw_keras's default install (setup.cfg's install_requires);
# an install without it (pip install --no-deps, a JAX- or PyTorch-only machine)
# gets this hint.
INSTALL_HINT = "pip install tensorflow (aw_keras's default install includes it)"


def require_tensorflow(feature):
    """``import tensorflow`` and return the module, or an ImportError saying that
    ``feature`` needs TensorFlow and how to install it."""
    try:
        import tensorflow
    except ImportError as error:
        raise ImportError(f"{feature} needs TensorFlow, which is not installed here: "
                          f"{INSTALL_HINT}.") from error
    return tensorflow

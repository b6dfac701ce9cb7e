"""Rebuilding saved detectors: the dtype policy they were saved with.

Used by `RetinaNet.from_config` and `FasterRCNN.from_config`:

>>> with saved_policy(config):                # doctest: +SKIP
...     backbone = keras.saving.deserialize_keras_object(config["backbone"])
"""

import contextlib

import keras


@contextlib.contextmanager
def saved_policy(config):
    """The global dtype policy set to a saved detector's while it is rebuilt from
    ``config``: the FPN backbone and the heads are rebuilt by constructors that take
    the global policy, so a model saved under ``mixed_bfloat16`` would otherwise come
    back float32 in a float32 process. The policy is ``config["dtype"]``, else the
    serialized backbone's (keras-hub's RetinaNet config has no ``dtype``)."""
    dtype = config.get("dtype")
    backbone = config.get("backbone")
    if dtype is None and isinstance(backbone, dict):
        dtype = backbone.get("config", {}).get("dtype")
    policy = keras.dtype_policies.get(dtype) if dtype is not None else None
    previous = keras.mixed_precision.global_policy()
    if policy is None or policy.name == previous.name:
        yield
        return
    keras.mixed_precision.set_global_policy(policy.name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)

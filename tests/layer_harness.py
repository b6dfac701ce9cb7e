"""A shared test harness for aw_keras layers, in the spirit of keras-hub's TestCase.

`run_layer_test(cls, init_kwargs, input_shape, ...)` checks, for one layer
configuration:

- serialization: every ``__init__`` argument is in ``get_config()``,
  ``from_config(get_config())`` and ``serialize/deserialize_keras_object``
  round trips keep the config;
- eager and symbolic calls give the expected output shape, and
  ``compute_output_shape`` agrees;
- the expected numbers of trainable / non-trainable weights;
- a fit step changes every trainable weight that has a gradient;
- ``mixed_float16`` / ``mixed_bfloat16``: the layer computes in the half dtype,
  keeps float32 variables, and every sublayer follows the layer's dtype policy;
- a ``.keras`` round trip (``safe_mode=True``) gives identical outputs.

Import it as a plain module (``tests/`` is on ``sys.path``, see conftest.py).
"""

import inspect
import json
import os
import tempfile

import keras
import numpy as np

POLICIES = ("mixed_float16", "mixed_bfloat16")


def sublayers(layer):
    """The layers held as attributes of ``layer`` (AWConv2D's ``squeeze_bn``, ...)."""
    found = []
    for value in vars(layer).values():
        values = value if isinstance(value, (list, tuple)) else [value]
        found.extend(v for v in values if isinstance(v, keras.layers.Layer) and v is not layer)
    return found


def _inputs(input_shape, seed=0):
    return np.random.default_rng(seed).normal(size=input_shape).astype("float32")


def run_serialization_test(cls, init_kwargs):
    layer = cls(**init_kwargs)
    config = layer.get_config()
    arguments = [name for name, parameter in inspect.signature(cls.__init__).parameters.items()
                 if name != "self" and parameter.kind not in (parameter.VAR_KEYWORD,
                                                               parameter.VAR_POSITIONAL)]
    missing = [name for name in arguments if name not in config]
    assert not missing, f"{cls.__name__}.get_config() misses the arguments {missing}"
    revived = cls.from_config(config)
    assert revived.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == f"aw_keras>{cls.__name__}"
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(restored) is cls and restored.get_config() == config
    return config


def run_call_test(cls, init_kwargs, input_shape, expected_output_shape):
    layer = cls(**init_kwargs)
    outputs = layer(_inputs(input_shape))
    assert tuple(outputs.shape) == tuple(expected_output_shape)
    symbolic = cls(**init_kwargs)(keras.Input(input_shape[1:], batch_size=None))
    assert tuple(symbolic.shape) == (None,) + tuple(expected_output_shape[1:])
    assert tuple(layer.compute_output_shape(input_shape)) == tuple(expected_output_shape)
    return layer


def run_fit_test(cls, init_kwargs, input_shape):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(input_shape[1:])
    layer = cls(**init_kwargs)
    model = keras.Model(inputs, layer(inputs))
    x = _inputs(input_shape)
    target = model.predict(x, verbose=0) + np.random.default_rng(1).normal(
        size=model.output.shape[1:]).astype("float32")
    before = [keras.ops.convert_to_numpy(w) for w in layer.trainable_weights]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, target, epochs=1, batch_size=input_shape[0], verbose=0)
    unchanged = [w.path for w, b in zip(layer.trainable_weights, before)
                 if np.array_equal(keras.ops.convert_to_numpy(w), b)]
    assert not unchanged, f"a fit step left {unchanged} unchanged"


def run_precision_test(cls, init_kwargs, input_shape):
    x = _inputs(input_shape)
    for policy in POLICIES:
        layer = cls(**{**init_kwargs, "dtype": policy})
        outputs = layer(x)
        compute = keras.DTypePolicy(policy).compute_dtype
        assert keras.backend.standardize_dtype(outputs.dtype) == compute, (policy, outputs.dtype)
        for weight in layer.weights:
            assert weight.dtype == "float32", (policy, weight.path, weight.dtype)
        for sublayer in sublayers(layer):
            assert sublayer.dtype_policy.name == policy, (
                f"{cls.__name__}.{sublayer.name} runs under {sublayer.dtype_policy.name}, "
                f"not the layer's {policy}")


def run_model_saving_test(cls, init_kwargs, input_shape):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(input_shape[1:])
    model = keras.Model(inputs, cls(**init_kwargs)(inputs))
    x = _inputs(input_shape)
    expected = model.predict(x, verbose=0)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)


def run_layer_test(cls, init_kwargs, input_shape, expected_output_shape,
                   expected_num_trainable_weights=None, expected_num_non_trainable_weights=None,
                   run_training=True, run_precision=True, run_saving=True):
    """All the checks above for one configuration of ``cls``."""
    run_serialization_test(cls, init_kwargs)
    layer = run_call_test(cls, init_kwargs, input_shape, expected_output_shape)
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights, [
            w.path for w in layer.trainable_weights]
    if expected_num_non_trainable_weights is not None:
        assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights, [
            w.path for w in layer.non_trainable_weights]
    if run_training:
        run_fit_test(cls, init_kwargs, input_shape)
    if run_precision:
        run_precision_test(cls, init_kwargs, input_shape)
    if run_saving:
        run_model_saving_test(cls, init_kwargs, input_shape)

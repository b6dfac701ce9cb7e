"""export_model: a new model with the same function in the target's export
form, the original never touched (also while it runs in another thread),
nested models and branches, every AWConv2D implementation, the policy table,
the export layers through the shared layer harness, and .keras round trips of
exported models in a fresh process."""

import os
import subprocess
import sys
import textwrap
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from aw_keras.export import AWConvExport
from aw_keras.export import ExportError
from aw_keras.export import ExportPolicy
from aw_keras.export import export_model
from aw_keras.export import export_onnx
from aw_keras.export import export_tflite
from aw_keras.export import list_ops
from aw_keras.export import policy_for
from aw_keras.export import verify
from aw_keras.export.layers import Absorbed
from aw_keras.export.policy import TARGETS
from aw_keras.export.transform import aw_layers
from aw_keras.layers import AWConv2D
from aw_keras.layers import adaptive_average_pool
from aw_keras.layers.aw_conv2d import IMPLEMENTATIONS
from layer_harness import run_layer_test


def tiny_model(implementation="auto", size=10):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((size, size, 4))
    x = AWConv2D(8, 3, padding="same", implementation=implementation, name="aw_a")(inputs)
    x = keras.layers.ReLU()(x)
    x = AWConv2D(8, 3, strides=2, padding="valid", implementation=implementation, name="aw_b")(x)
    x = AWConv2D(6, 1, implementation=implementation, name="aw_c")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def set_trained_statistics(model, seed=0):
    """BatchNorm statistics and shifts away from their initial values, so that
    folding is visible in the numbers."""
    rng = np.random.default_rng(seed)
    for layer in aw_layers(model) + [l for l in _all_layers(model)
                                     if isinstance(l, keras.layers.BatchNormalization)]:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 2.0, n))
            layer.beta.assign(rng.normal(0.5, 1.0, n))
            layer.moving_mean.assign(rng.normal(0, 0.5, n))
            layer.moving_variance.assign(rng.uniform(0.2, 2.0, n))


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def branchy_nested_model():
    """Two branches merged by an add: a nested functional block (AW -> BN ->
    ReLU6) on one, a nested Sequential (AW -> BN) on the other."""
    keras.utils.set_random_seed(4)
    block_in = keras.Input((8, 8, 6))
    y = AWConv2D(6, 1, use_bias=False, name="inner_pw")(block_in)
    y = keras.layers.BatchNormalization(name="inner_bn")(y)
    y = keras.layers.ReLU(6.0, name="inner_relu")(y)
    block = keras.Model(block_in, y, name="block")
    sequential = keras.Sequential([
        keras.Input((8, 8, 6)),
        AWConv2D(6, 3, padding="same", use_bias=False, name="seq_aw"),
        keras.layers.BatchNormalization(name="seq_bn"),
    ], name="seq")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="stem")(inputs)
    left = block(x)
    right = sequential(x)
    x = keras.layers.Add(name="merge")([left, right, x])
    x = AWConv2D(5, 3, strides=2, padding="same", name="head_aw")(x)
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(x), name="branchy")
    set_trained_statistics(model)
    return model


def test_library_pool_with_uneven_static_bins_traces_without_einsum():
    # Constant-matrix einsums broke .tflite loading with a dynamic batch; the
    # uneven case must use plain MATMULs.
    fn = tf.function(lambda t: adaptive_average_pool(t, (3, 3)),
                     input_signature=[tf.TensorSpec((None, 10, 10, 4), tf.float32)])
    ops = {op.type for op in fn.get_concrete_function().graph.get_operations()}
    assert "Einsum" not in ops
    assert ops & {"MatMul", "BatchMatMulV2", "BatchMatMulV3"}


def test_policy_table():
    assert policy_for("tflite_int8") == ExportPolicy(True, True, False, "auto",
                                                     ("top1_agreement", 0.95))
    assert policy_for("saved_model").fold_batch_norms is False
    assert policy_for("tflite_float16").check == ("max_abs_error", 1e-2)
    # turning the folding off turns the clipped form off, unless it is asked for
    assert policy_for("tflite_int8", fold_batch_norms=False).clip_blocks is False
    with pytest.raises(ValueError, match="clip_blocks"):
        policy_for("tflite_int8", fold_batch_norms=False, clip_blocks=True)
    with pytest.raises(ValueError, match="target"):
        policy_for("tflite_int4")
    with pytest.raises(ValueError, match="implementation"):
        policy_for("onnx", implementation="fused")
    with pytest.raises(TypeError, match="fold"):
        policy_for("onnx", fold=True)
    assert set(TARGETS) == {"saved_model", "onnx", "tflite_float32", "tflite_float16",
                            "tflite_dynamic_range", "tflite_int8"}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_export_model_computes_the_same_function(target):
    model = branchy_nested_model()
    x = np.random.default_rng(0).normal(0, 1, (3, 8, 8, 3)).astype("float32")
    expected = np.asarray(model(x, training=False))
    exported = export_model(model, target)
    assert exported is not model and exported.name == model.name
    np.testing.assert_allclose(np.asarray(exported(x, training=False)), expected, atol=3e-5)
    # every AWConv2D, nested ones included, is an export layer; none is shared with the original
    assert aw_layers(exported) and all(isinstance(l, AWConvExport) for l in aw_layers(exported))
    originals = {id(l) for l in _all_layers(model)}
    assert not [l.name for l in _all_layers(exported) if id(l) in originals]
    forms = {l.name: l.form for l in aw_layers(exported)}
    policy = policy_for(target)
    if policy.clip_blocks:
        # seq_aw's 8x8 output, 3 input channels: the auto rule's matmul
        assert forms == {"inner_pw": "clipped", "seq_aw": "matmul", "head_aw": "taps"}
    else:
        assert set(forms.values()) == {"taps"}
    absorbed = {l.name: l.absorbed_into for l in _all_layers(exported) if isinstance(l, Absorbed)}
    if policy.fold_batch_norms:
        expected_absorbed = {"inner_bn": "inner_pw", "seq_bn": "seq_aw", "head_bn": "head_aw"}
        if policy.clip_blocks:
            expected_absorbed["inner_relu"] = "inner_pw"
        assert absorbed == expected_absorbed
    else:
        assert absorbed == {}


def test_a_batch_norm_feeding_two_layers_or_an_output_is_not_folded():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((6, 6, 3))
    a = AWConv2D(4, 3, padding="same", use_bias=False, name="aw_shared")(inputs)
    b = keras.layers.BatchNormalization(name="bn_after")(a)
    c = keras.layers.Add()([a, b])  # the AWConv2D output has two consumers
    d = AWConv2D(4, 1, name="aw_act", activation="relu")(c)  # an activation: no folding
    e = keras.layers.BatchNormalization(name="bn_act")(d)
    model = keras.Model(inputs, e)
    set_trained_statistics(model)
    exported = export_model(model, "tflite_float32")
    assert not [l for l in exported.layers if isinstance(l, Absorbed)]
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(exported(x), model(x), atol=2e-5)


def test_the_original_is_never_touched_while_it_runs(capsys):
    """A serving loop keeps running the original in another thread during the
    export: its outputs never change, nor its weights, its layers' own call
    methods or their strategies."""
    model = branchy_nested_model()
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    serve = tf.function(lambda images: model(images, training=False))
    expected = serve(x).numpy()
    weights = [w.copy() for w in model.get_weights()]
    implementations = [l.implementation for l in aw_layers(model)]
    stop, outputs, errors = threading.Event(), [], []

    def serving_loop():
        try:
            while not stop.is_set():
                outputs.append(serve(x).numpy())
        except Exception as error:  # reported below
            errors.append(error)

    thread = threading.Thread(target=serving_loop)
    thread.start()
    try:
        for target in ("tflite_int8", "tflite_float32", "saved_model"):
            export_model(model, target)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert len(outputs) >= 3
    for got in outputs:
        np.testing.assert_array_equal(got, expected)
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert [l.implementation for l in aw_layers(model)] == implementations
    assert not [l.name for l in _all_layers(model) if "call" in vars(l)]
    assert all(type(l) is AWConv2D for l in aw_layers(model))


def test_subclassed_models_get_a_clear_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.aw = AWConv2D(4, 3, padding="same")

        def call(self, inputs):
            return self.aw(inputs)

    net = Net()
    net(np.zeros((1, 6, 6, 3), "float32"))
    with pytest.raises(ExportError, match="functional and Sequential"):
        export_model(net, "onnx")
    with pytest.raises(TypeError, match="keras.Model"):
        export_model(AWConv2D(4, 3), "onnx")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_every_implementation_exports(implementation, tmp_path):
    """Whatever strategy the model's layers use, the exported artifacts hold
    builtin ops only and match Keras at batch 1, 3 and 4."""
    model = tiny_model(implementation)
    inputs = np.random.default_rng(0).random((4, 10, 10, 4), dtype=np.float32)
    tfl = export_tflite(model, tmp_path / "m.tflite")
    onnx_path = export_onnx(model, tmp_path / "m.onnx", implementation="matmul")
    assert [l.implementation for l in aw_layers(model)] == [implementation] * 3
    assert not [op for op in list_ops(tfl) if op.startswith("Flex") or op == "WHILE"]
    for artifact in (tfl, onnx_path):
        result = verify(artifact, model, inputs, batch_sizes=(1, 3, 4), latency_repeats=0)
        assert result.max_abs_error <= 1e-4, (implementation, result)
        assert result.passed


def test_depthwise_traced_as_is_does_not_convert(tmp_path):
    """Why the exporters rewrite the model instead of tracing the user's layers:
    an explicit implementation="depthwise" folds the batch into channels, which
    the TFLite converter rejects with a dynamic batch."""
    import aw_keras.export.tflite as tflite_module

    model = tiny_model("depthwise")
    model.export(str(tmp_path / "as_is"), format="tf_saved_model", verbose=False)
    with pytest.raises(ExportError, match="TFLite"):
        tflite_module.convert_saved_model(str(tmp_path / "as_is"))
    export_model(model, "tflite_float32").export(str(tmp_path / "rewritten"), verbose=False)
    assert tflite_module.convert_saved_model(str(tmp_path / "rewritten"))


@pytest.mark.parametrize("init_kwargs, input_shape, output_shape", [
    (dict(filters=8, kernel_size=3, padding="same", form="taps", dilation_rate=2,
          input_channel_reduction=2, name="export_taps"), (2, 9, 9, 4), (2, 9, 9, 8)),
    (dict(filters=6, kernel_size=3, strides=2, form="matmul", use_bias=False),
     (1, 7, 7, 3), (1, 3, 3, 6)),
    (dict(filters=6, kernel_size=(3, 1), padding="same", form="split", activation="relu"),
     (3, 5, 5, 4), (3, 5, 5, 6)),
    (dict(filters=4, kernel_size=1, strides=2, form="clipped", clip_activation="relu6"),
     (2, 5, 5, 4), (2, 3, 3, 4)),
])
def test_export_layers_pass_the_layer_harness(init_kwargs, input_shape, output_shape):
    run_layer_test(AWConvExport, init_kwargs, input_shape, output_shape)


def test_absorbed_passes_the_layer_harness():
    run_layer_test(Absorbed, {"absorbed_into": "aw"}, (2, 3, 3, 4), (2, 3, 3, 4), 0, 0,
                   run_training=False)


@pytest.mark.parametrize("kwargs, message", [
    (dict(form="fast"), "form"),
    (dict(form="clipped"), "clip_activation"),
    (dict(form="taps", clip_activation="relu"), "clip_activation"),
    (dict(form="clipped", clip_activation="gelu"), "clip_activation"),
    (dict(form="split", attention_mode="multiplicative"), "residual"),
    (dict(form="clipped", clip_activation="relu", kernel_size=3), "1x1"),
    (dict(form="clipped", clip_activation="relu", kernel_size=1, use_bias=False), "use_bias"),
])
def test_export_layer_rejects_bad_forms(kwargs, message):
    arguments = {"filters": 4, "kernel_size": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        AWConvExport(**arguments)


def _run_python(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_exported_model_round_trips_as_keras_file_in_a_fresh_process(tmp_path):
    model = branchy_nested_model()
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    exported = export_model(model, "tflite_int8", split_residual=True)
    path = tmp_path / "exported.keras"
    exported.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", np.asarray(exported(x, training=False)))
    result = _run_python(f"""
        import numpy as np, keras
        import aw_keras.export  # registers the export layers
        model = keras.saving.load_model({str(path)!r}, safe_mode=True)
        x = np.load({str(tmp_path / "x.npy")!r})
        got = np.asarray(model(x, training=False))
        np.testing.assert_array_equal(got, np.load({str(tmp_path / "expected.npy")!r}))
        print(sorted({{getattr(l, "form", "") for l in model.layers}} - {{""}}))
        """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "['split']"

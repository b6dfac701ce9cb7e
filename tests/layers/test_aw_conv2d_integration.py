"""AWConv2D in real Keras workflows (config round trips: test_layer_harness.py): .keras files, precision, XLA, fit, distribute."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import keras
from aw_keras.layers import AWConv2D
from aw_keras.layers.aw_conv2d import IMPLEMENTATIONS


def tiny_model(implementation="auto", dtype=None, channels=4, size=(12, 12)):
    inputs = keras.Input(size + (channels,))
    x = AWConv2D(8, 3, padding="same", implementation=implementation, dtype=dtype, name="aw1")(inputs)
    x = keras.layers.BatchNormalization(dtype=dtype)(x)
    x = keras.layers.ReLU(dtype=dtype)(x)
    x = AWConv2D(8, 3, strides=2, padding="same", implementation=implementation, dtype=dtype,
                 name="aw2")(x)
    x = keras.layers.GlobalAveragePooling2D(dtype=dtype)(x)
    outputs = keras.layers.Dense(3, dtype="float32")(x)
    return keras.Model(inputs, outputs)


def test_keras_file_loads_in_a_fresh_process_with_identical_outputs(tmp_path):
    keras.utils.set_random_seed(1)
    model = tiny_model()
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 4)).astype("float32")
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, np.zeros((2, 3), "float32"), epochs=1, verbose=0)  # non-trivial BN stats
    expected = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import numpy as np, keras
        import aw_keras  # registers the layers
        model = keras.saving.load_model({str(path)!r}, safe_mode=True)
        assert not any(type(l).__name__ == "Lambda" for l in model.layers)
        np.save({str(tmp_path / 'y.npy')!r}, model.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, env=dict(os.environ))
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_mixed_precision(policy, implementation):
    keras.utils.set_random_seed(2)
    layer = AWConv2D(8, 3, padding="same", implementation=implementation, dtype=policy)
    reference = AWConv2D(8, 3, padding="same", implementation=implementation)
    x = np.random.default_rng(1).normal(size=(2, 9, 9, 4)).astype("float32")
    out = layer(x)
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    assert layer.kernel.dtype == "float32"
    assert layer.squeeze_bn.gamma.dtype == "float32"
    assert layer.excite_bn.moving_variance.dtype == "float32"
    assert out.dtype == layer.compute_dtype
    tolerance = 2e-2 if policy == "mixed_float16" else 1e-1
    np.testing.assert_allclose(np.asarray(out, "float32"), np.asarray(reference(x)),
                               rtol=tolerance, atol=tolerance)


# per_sample and depthwise under XLA: slow (~12 s each); `auto` reaches XLA's choices.
@pytest.mark.parametrize("implementation", [
    pytest.param(name, marks=pytest.mark.slow) if name in ("per_sample", "depthwise") else name
    for name in IMPLEMENTATIONS])
def test_jit_compile_fit_and_predict(implementation):
    keras.utils.set_random_seed(3)
    model = tiny_model(implementation)
    model.compile(optimizer="adam", loss="mse", jit_compile=True)
    x = np.random.default_rng(2).normal(size=(4, 12, 12, 4)).astype("float32")
    if implementation == "fused":  # a custom CPU op: no XLA kernel, a clear error
        with pytest.raises(ValueError, match="no XLA kernel"):
            model.predict(x, verbose=0)
        return
    eager = model(x, training=False).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), eager, rtol=1e-4, atol=1e-4)
    history = model.fit(x, np.ones((4, 3), "float32"), epochs=2, batch_size=4, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_fit_updates_every_weight_and_reduces_loss():
    keras.utils.set_random_seed(4)
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 12, 12, 4)).astype("float32")
    y = rng.normal(size=(16, 3)).astype("float32")
    layer = model.get_layer("aw1")
    before = {w.path: w.numpy().copy() for w in layer.trainable_weights}
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=5, batch_size=8, verbose=0)
    assert model.evaluate(x, y, verbose=0) < first
    for weight in layer.trainable_weights:
        assert not np.allclose(weight.numpy(), before[weight.path]), f"{weight.path} did not train"
    # Trainable: kernel, bias, squeeze conv, excite conv, 2 BN x (gamma, beta).
    assert len(layer.trainable_weights) == 8
    assert len(layer.non_trainable_weights) == 4  # BN moving statistics


def test_mirrored_strategy_trains_with_two_replicas(tmp_path):
    """Two logical CPUs, MirroredStrategy, model.fit: replicas stay in sync."""
    script = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from aw_keras.layers import AWConv2D
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            inputs = keras.Input((10, 10, 3))
            x = AWConv2D(6, 3, padding="same")(inputs)
            x = keras.layers.GlobalAveragePooling2D()(x)
            model = keras.Model(inputs, keras.layers.Dense(2)(x))
            model.compile(optimizer="sgd", loss="mse")
        rng = np.random.default_rng(0)
        x = rng.normal(size=(16, 10, 10, 3)).astype("float32")
        y = rng.normal(size=(16, 2)).astype("float32")
        before = model.layers[1].kernel.numpy().copy()
        history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        kernel = model.layers[1].kernel
        replicas = [v.numpy() for v in kernel.value.values]
        assert len(replicas) == 2
        np.testing.assert_array_equal(replicas[0], replicas[1])
        assert not np.allclose(replicas[0], before)
        print("MIRRORED_OK")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "MIRRORED_OK" in result.stdout, result.stderr[-3000:]


def test_changing_implementation_keeps_outputs():
    keras.utils.set_random_seed(5)
    layer = AWConv2D(6, 3, padding="same")
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 4)).astype("float32")
    outputs = {}
    for implementation in IMPLEMENTATIONS:
        layer.implementation = implementation
        outputs[implementation] = np.asarray(layer(x))
    for implementation, out in outputs.items():
        np.testing.assert_allclose(out, outputs["taps"], rtol=1e-5, atol=1e-5, err_msg=implementation)


def test_auto_picks_per_sample_for_large_outputs_and_taps_for_large_kernels():
    early = AWConv2D(64, 3, padding="same")
    early.build((None, 56, 56, 64))
    late = AWConv2D(512, 3, padding="same")
    late.build((None, 7, 7, 512))
    assert early.resolved_implementation((None, 56, 56, 64), fused=False) == "per_sample"
    assert late.resolved_implementation((None, 7, 7, 512), fused=False) == "taps"
    assert late.resolved_implementation((None, None, None, 512), fused=False) == "taps"
    # XLA training: map_fn per-sample was measured 36-40x the XLA conv -> matmul / taps
    assert early.resolved_implementation((None, 56, 56, 64), training=True, xla=True) == "matmul"
    assert late.resolved_implementation((None, 7, 7, 512), training=True, xla=True) == "taps"
    assert early.resolved_implementation((None, 56, 56, 64), training=False, xla=True) == "per_sample"


def test_auto_uses_the_fused_kernel_where_allowed():
    early = AWConv2D(64, 3, padding="same")
    early.build((None, 56, 56, 64))
    deep = AWConv2D(256, 3, padding="same")
    deep.build((None, 14, 14, 256))
    pointwise = AWConv2D(256, 1)
    pointwise.build((None, 14, 14, 256))
    # Inference: fused except per_sample for a static batch and a large output.
    assert deep.resolved_implementation((None, 14, 14, 256), fused=True) == "fused"
    assert early.resolved_implementation((16, 56, 56, 64), fused=True) == "per_sample"
    middle = AWConv2D(128, 3, padding="same")
    middle.build((None, 28, 28, 128))
    assert middle.resolved_implementation((16, 28, 28, 128), fused=True) == "fused"
    assert early.resolved_implementation((None, 56, 56, 64), fused=True) == "fused"  # not map_fn
    # Training: fused for every k x k kernel; 1x1 stays a plain conv + scale.
    assert early.resolved_implementation((None, 56, 56, 64), training=True, fused=True) == "fused"
    assert pointwise.resolved_implementation((None, 14, 14, 256), training=True, fused=True) == "taps"
    # XLA always wins over fused (no XLA kernel).
    assert deep.resolved_implementation((None, 14, 14, 256), training=True, xla=True) == "matmul"


def test_fused_is_never_allowed_for_other_dtypes_or_xla():
    from aw_keras.layers import aw_kernels

    assert not aw_kernels.fused_allowed(tf.float16)
    assert not aw_kernels.fused_allowed(tf.float32, xla=True)


def test_portable_traces_use_taps():
    """A trace that may leave the process (save context; unknown batch with
    training unspecified) gets the portable strategy; Keras's loops, which say
    training, and eager calls keep the fastest one."""
    from tensorflow.python.saved_model import save_context, save_options

    from aw_keras.layers import aw_kernels

    layer = AWConv2D(64, 3, padding="same")
    layer.build((None, 56, 56, 64))
    seen = {}

    def probe(name, batch, training):
        def fn():
            seen[name] = layer.resolved_implementation((batch, 56, 56, 64), training, fused=False)
            return tf.constant(0)
        return fn

    tf.function(probe("unknown_unspecified", None, None))()
    tf.function(probe("unknown_inference", None, False))()
    tf.function(probe("static_unspecified", 4, None))()
    seen["eager"] = layer.resolved_implementation((None, 56, 56, 64), None, fused=False)
    with save_context.save_context(save_options.SaveOptions()):
        tf.function(probe("saving", 4, False))()
    assert seen == {
        "unknown_unspecified": aw_kernels.PORTABLE,
        "unknown_inference": "per_sample",
        "static_unspecified": "per_sample",
        "eager": "per_sample",
        "saving": aw_kernels.PORTABLE,
    }


def test_in_xla_context_is_true_only_while_tracing_for_xla():
    from aw_keras.layers import aw_kernels

    seen = {}

    def probe(name):
        def fn(x):
            seen[name] = aw_kernels.in_xla_context()
            return x + 1
        return fn

    assert not aw_kernels.in_xla_context()
    tf.function(probe("graph"))(tf.ones(2))
    tf.function(probe("xla"), jit_compile=True)(tf.ones(2))
    assert seen == {"graph": False, "xla": True}


def _op_types(fn, x):
    return {op.type for op in fn.get_concrete_function(x).graph.get_operations()}


def test_training_under_xla_avoids_map_fn_and_matches_graph_mode():
    from aw_keras.layers import aw_kernels

    keras.utils.set_random_seed(4)
    layer = AWConv2D(6, 3, padding="same")  # 4 * 4 <= 16 * 16: per_sample without XLA
    x = tf.random.normal((3, 16, 16, 4), seed=2)
    layer(x)

    def step(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(tf.square(layer(inputs, training=True)))
        return [loss] + tape.gradient(loss, [inputs, layer.kernel])

    graph, xla = tf.function(step), tf.function(step, jit_compile=True)
    graph_ops = _op_types(graph, x)
    if aw_kernels.fused_allowed():  # graph mode trains through the fused kernel
        assert "AwConvForward" in graph_ops and "AwConvBackward" in graph_ops
    else:
        assert any("While" in op for op in graph_ops)  # map_fn
    xla_ops = _op_types(xla, x)
    assert not any("While" in op for op in xla_ops)
    assert xla_ops & {"BatchMatMulV2", "BatchMatMulV3"}
    for got, want in zip(xla(x), graph(x)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)

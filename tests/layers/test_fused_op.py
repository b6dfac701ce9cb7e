"""The fused AW-convolution CPU kernel: build, cache, fallback, every blocking,
and that it never reaches an exported graph."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import keras
from aw_keras.layers import AWConv2D, aw_kernels, fused_op

needs_kernel = pytest.mark.skipif(
    not fused_op.available(),
    reason=f"fused AWConv2D kernel unavailable: {fused_op.unavailable_reason()}",
)

# (input shape, kernel shape, groups, strides, dilation, padding)
GEOMETRIES = [
    ((2, 7, 9, 4), (3, 3, 4, 6), 1, (1, 1), (1, 1), "same"),
    ((2, 7, 9, 4), (3, 3, 4, 6), 1, (2, 2), (1, 1), "same"),
    ((3, 15, 15, 4), (3, 3, 4, 5), 1, (1, 1), (2, 2), "valid"),
    ((1, 8, 8, 4), (5, 5, 4, 3), 1, (1, 1), (1, 1), "same"),
    ((2, 8, 8, 4), (3, 1, 4, 3), 1, (2, 1), (1, 1), "same"),
    ((2, 7, 9, 4), (3, 3, 4, 6), 2, (1, 1), (1, 1), "same"),
    ((2, 6, 6, 8), (1, 1, 8, 6), 1, (2, 2), (1, 1), "valid"),
    ((2, 2, 2, 16), (3, 3, 16, 4), 1, (1, 1), (1, 1), "same"),  # C1 >= 2*Ho*Wo
    ((2, 9, 6, 3), (2, 4, 3, 5), 1, (1, 1), (1, 1), "same"),  # even kernel: odd padding
    ((2, 9, 7, 4), (3, 2, 4, 5), 2, (1, 1), (1, 1), "valid"),
    ((2, 5, 17, 8), (3, 3, 8, 64), 2, (1, 1), (1, 1), "same"),  # direct: 2 panels, 14 + 3 rows
    ((1, 4, 6, 3), (2, 3, 3, 32), 1, (1, 1), (1, 1), "valid"),
]


def _run_python(code, env_updates):
    env = dict(os.environ, **env_updates)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=600)


@needs_kernel
@pytest.mark.parametrize("mode", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "x".join(map(str, g[0] + g[1])))
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_every_blocking_matches_taps_forward_and_backward(geometry, mode, dtype):
    """Modes: 0 by shape, 1 kernel-scaled im2col, 2 output-scaled (G=1 only; G>1
    falls back to 1), 3 kernel-scaled per tap (forward; backward as 1), 4
    kernel-scaled on overlapping padded rows (unit strides and dilations; else as 1),
    5 direct AVX-512 tiles (float32, unit steps, C2 % 32 == 0, forward; else as 1)."""
    shape, kernel_shape, groups, strides, dilation, padding = geometry
    kh, kw, _, channels_out = kernel_shape
    conv = aw_kernels.ConvGeometry((kh, kw), strides, dilation, padding)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=shape), dtype)
    kernel = tf.constant(rng.normal(size=kernel_shape), dtype)
    scale = tf.constant(1 + 0.3 * rng.normal(size=(shape[0], kh, kw, groups, channels_out)), dtype)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, kernel, scale])
        # `taps` as the reference: TF's float64 conv has no dilated CPU gradient.
        want = aw_kernels.taps(x, kernel, scale, conv)
        got = fused_op.aw_conv(x, kernel, scale, conv, mode=mode)
        upstream = tf.constant(rng.normal(size=want.shape), dtype)
        loss_want = tf.reduce_sum(want * upstream)
        loss_got = tf.reduce_sum(got * upstream)
    tolerance = 1e-5 if dtype == tf.float32 else 1e-12

    def assert_close(actual, desired, name):
        # Relative to the tensor's scale: sums of C2 * taps products cancel.
        scale_of = max(1.0, float(np.abs(desired).max()))
        np.testing.assert_allclose(actual, desired, rtol=tolerance,
                                   atol=tolerance * scale_of, err_msg=name)

    assert got.shape == want.shape and got.dtype == dtype
    assert_close(got, want, "outputs")
    for name, g_want, g_got in zip(("inputs", "kernel", "scale"),
                                   tape.gradient(loss_want, [x, kernel, scale]),
                                   tape.gradient(loss_got, [x, kernel, scale])):
        assert_close(g_got, g_want, name)


@needs_kernel
def test_half_precision_is_computed_in_float32_and_cast_back():
    conv = aw_kernels.ConvGeometry((3, 3), (1, 1), (1, 1), "same")
    rng = np.random.default_rng(1)
    x, kernel = rng.normal(size=(2, 6, 6, 4)), rng.normal(size=(3, 3, 4, 5))
    scale = 1 + 0.3 * rng.normal(size=(2, 3, 3, 1, 5))
    want = aw_kernels.per_sample(*(tf.constant(v, tf.float32) for v in (x, kernel, scale)), conv)
    got = fused_op.aw_conv(*(tf.constant(v, tf.float16) for v in (x, kernel, scale)), conv)
    assert got.dtype == tf.float16
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=2e-2, atol=5e-2)


@needs_kernel
def test_unknown_batch_and_spatial_sizes_in_a_graph():
    conv = aw_kernels.ConvGeometry((3, 3), (2, 2), (1, 1), "same")
    kernel = tf.random.normal((3, 3, 4, 6), seed=1)
    spec = tf.TensorSpec((None, None, None, 4))
    fn = tf.function(lambda x, s: fused_op.aw_conv(x, kernel, s, conv),
                     input_signature=[spec, tf.TensorSpec((None, 3, 3, 1, 6))])
    concrete = fn.get_concrete_function()
    assert concrete.structured_outputs.shape.as_list() == [None, None, None, 6]
    for size in ((1, 9, 7), (3, 10, 10)):
        x = tf.random.normal(size + (4,), seed=2)
        s = 1 + tf.random.normal((size[0], 3, 3, 1, 6), seed=3)
        np.testing.assert_allclose(fn(x, s), aw_kernels.per_sample(x, kernel, s, conv),
                                   rtol=1e-5, atol=1e-4)


@needs_kernel
def test_inconsistent_shapes_are_rejected_by_the_op():
    module = fused_op.load()
    errors = (tf.errors.InvalidArgumentError, ValueError)
    with pytest.raises(errors, match="inconsistent|rank|Shape"):
        module.aw_conv_forward(tf.zeros((2, 5, 5, 4)), tf.zeros((3, 3, 3, 6)),
                               tf.zeros((2, 3, 3, 1, 6)), strides=[1, 1], dilations=[1, 1],
                               padding="SAME")
    with pytest.raises(errors, match="mode"):
        module.aw_conv_forward(tf.zeros((2, 5, 5, 4)), tf.zeros((3, 3, 4, 6)),
                               tf.zeros((2, 3, 3, 1, 6)), strides=[1, 1], dilations=[1, 1],
                               padding="SAME", mode=7)


@needs_kernel
def test_auto_layer_trains_through_the_fused_kernel_and_matches_taps():
    keras.utils.set_random_seed(0)
    x = tf.random.normal((3, 10, 10, 8), seed=0)
    auto = AWConv2D(8, 3, padding="same")
    taps = AWConv2D(8, 3, padding="same", implementation="taps")
    auto.build(x.shape)
    taps.build(x.shape)
    taps.set_weights(auto.get_weights())

    def step(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x, training=True)))
        return [loss] + tape.gradient(loss, [x] + [w.value for w in layer.trainable_weights])

    ops = {op.type for op in tf.function(lambda: step(auto)).get_concrete_function()
           .graph.get_operations()}
    assert {"AwConvForward", "AwConvBackward"} <= ops
    for got, want in zip(step(auto), step(taps)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@needs_kernel
def test_exported_graphs_never_contain_the_fused_op(tmp_path):
    """auto uses the fused op in ordinary traces, never in a portable trace (a
    SavedModel save context, or an unknown batch with training unspecified) nor
    in the models aw_keras.export writes."""
    from tensorflow.python.saved_model import save_context, save_options

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 32))  # 4 * C1 > Ho * Wo: auto infers with the fused op
    model = keras.Model(inputs, AWConv2D(8, 3, padding="same", name="aw")(inputs))
    spec = tf.TensorSpec((None, 6, 6, 32))

    def op_types(call):
        fn = tf.function(call).get_concrete_function(spec)
        return {op.type for op in fn.graph.get_operations()}

    assert "AwConvForward" in op_types(lambda x: model(x, training=False))
    assert "AwConvForward" not in op_types(lambda x: model(x))  # training unspecified
    with save_context.save_context(save_options.SaveOptions()):
        assert "AwConvForward" not in op_types(lambda x: model(x, training=False))
    from aw_keras.export import export_saved_model

    served = export_saved_model(model, tmp_path / "served")
    # Keras's model.export traces inside tf.saved_model.save's save context: clean too.
    model.export(str(tmp_path / "keras_plain"), verbose=False)
    tf.saved_model.save(model, str(tmp_path / "tf_saved"))
    paths = [str(served), str(tmp_path / "keras_plain"), str(tmp_path / "tf_saved")]
    result = _run_python(f"""
        import tensorflow as tf  # without aw_keras: the op library is not loaded
        from tensorflow.core.protobuf import saved_model_pb2

        for path in {paths!r}:
            proto = saved_model_pb2.SavedModel()
            with open(path + "/saved_model.pb", "rb") as handle:
                proto.ParseFromString(handle.read())
            ops = set()
            for meta in proto.meta_graphs:
                ops |= {{node.op for node in meta.graph_def.node}}
                for function in meta.graph_def.library.function:
                    ops |= {{node.op for node in function.node_def}}
            if "AwConvForward" in ops:
                print("FUSED")
            else:
                tf.saved_model.load(path)  # loads without the custom op library
                print("CLEAN")
        """, {"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.stdout.split() == ["CLEAN"] * 3, result.stdout + result.stderr[-2000:]


@needs_kernel
def test_tflite_conversion_of_a_hand_traced_function():
    """TFLiteConverter.from_keras_model converts as is; a concrete function the user
    traces himself converts when it leaves `training` unspecified or traces the
    model from export_model, and holds the fused op when it says training=False."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 32))
    model = keras.Model(inputs, AWConv2D(8, 3, padding="same", name="aw")(inputs))
    assert tf.lite.TFLiteConverter.from_keras_model(model).convert()
    spec = tf.TensorSpec((None, 6, 6, 32))

    from aw_keras.export import export_model

    def trace(target, **kwargs):
        return tf.function(lambda x: target(x, **kwargs)).get_concrete_function(spec)

    with pytest.raises(Exception, match="AwConvForward"):
        tf.lite.TFLiteConverter.from_concrete_functions([trace(model, training=False)], model).convert()
    assert tf.lite.TFLiteConverter.from_concrete_functions([trace(model)], model).convert()
    exported = export_model(model, "tflite_float32")
    concrete = trace(exported, training=False)
    assert tf.lite.TFLiteConverter.from_concrete_functions([concrete], exported).convert()


def test_disabled_by_environment_falls_back_to_builtin_ops(tmp_path):
    result = _run_python("""
        from aw_keras.layers import AWConv2D, fused_op
        layer = AWConv2D(256, 3, padding="same")
        layer.build((None, 14, 14, 256))
        print(fused_op.available(), fused_op.unavailable_reason())
        print(layer.resolved_implementation((None, 14, 14, 256), training=True))
        """, {"AW_KERAS_FUSED": "0", "AW_KERAS_CACHE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("False disabled by AW_KERAS_FUSED='0'")
    assert lines[1] in ("per_sample", "taps", "matmul")
    assert not list(tmp_path.iterdir())  # nothing built


def test_missing_compiler_warns_and_the_layer_still_works(tmp_path):
    result = _run_python("""
        import numpy as np
        from aw_keras.layers import AWConv2D, fused_op
        layer = AWConv2D(6, 3, padding="same")
        y = layer(np.ones((2, 8, 8, 4), "float32"), training=True)
        print("SHAPE", tuple(y.shape), fused_op.available())
        """, {"CXX": str(tmp_path / "no-such-compiler"), "AW_KERAS_CACHE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SHAPE (2, 8, 8, 6) False" in result.stdout
    assert "fused AWConv2D kernel unavailable" in result.stderr
    assert "no-such-compiler" in result.stderr
    assert not list(tmp_path.glob("*.so")) and not list(tmp_path.glob(".*.tmp-*"))  # no partial


FAKE_COMPILER = """#!/bin/sh
# Writes a file that is not a library to the -o path, after a pause.
while [ $# -gt 0 ]; do
    if [ "$1" = "-o" ]; then out="$2"; fi
    shift
done
echo run >> "$(dirname "$0")/runs.log"
sleep 0.5
echo "not a library" > "$out"
"""


def test_builds_that_start_together_compile_once_and_clean_up_dead_writers(
        tmp_path, monkeypatch, caplog):
    """Three builders at once (threads, each with its own lock handle, as processes
    have) compile once; the temporary of a writer that was killed is removed."""
    import logging
    import threading

    compiler = tmp_path / "bin" / "fake-c++"
    compiler.parent.mkdir()
    compiler.write_text(FAKE_COMPILER)
    compiler.chmod(0o755)
    cache = tmp_path / "cache"
    cache.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = cache / f".aw_conv_op-{fused_op._library_key()}.so.tmp-{dead.pid}-abcd"
    leftover.write_text("half a library")
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("AW_KERAS_CACHE_DIR", str(cache))
    monkeypatch.delenv(fused_op.DISABLE_ENV, raising=False)
    results = []
    with caplog.at_level(logging.WARNING, logger="aw_keras"):
        threads = [threading.Thread(target=lambda: results.append(fused_op._build_and_load()))
                   for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert len(results) == 3
    assert all(module is None and reason.startswith("cannot load") for module, reason in results)
    assert (tmp_path / "bin" / "runs.log").read_text().split() == ["run"]  # compiled once
    assert [p.name for p in cache.glob("*.so")] == [leftover.name.split(".tmp-")[0][1:]]
    assert not list(cache.glob(".*.tmp-*"))
    building = [r.getMessage() for r in caplog.records if "building the fused" in r.getMessage()]
    assert len(building) == 1 and "about a minute" in building[0]


@needs_kernel
def test_the_built_library_is_reused_from_the_cache():
    cached = list(fused_op.cache_dir().glob("aw_conv_op-*.so"))
    assert cached, "load() should have left the library in the cache directory"
    result = _run_python("""
        from aw_keras.layers import fused_op
        print(fused_op.available())
        """, {})
    assert result.stdout.strip() == "True", result.stderr[-2000:]
    assert "building the fused" not in result.stderr


def test_the_kernel_source_ships_with_the_package():
    """A wheel must carry the C++ source, or installed copies could never build it."""
    import configparser
    import fnmatch
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    patterns = config["options.package_data"]["aw_keras.layers"].split()
    relative = fused_op.SOURCE.relative_to(root / "aw_keras" / "layers").as_posix()
    assert fused_op.SOURCE.exists()
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), patterns


@needs_kernel
def test_gradients_are_bitwise_reproducible_under_op_determinism():
    """With tf.config.experimental.enable_op_determinism() the kernel gradient is
    summed over samples in a fixed order (one block on the calling thread)."""
    result = _run_python("""
        import numpy as np, tensorflow as tf
        tf.config.experimental.enable_op_determinism()
        from aw_keras.layers import aw_kernels, fused_op
        conv = aw_kernels.ConvGeometry((3, 3), (1, 1), (1, 1), "same")
        rng = np.random.default_rng(0)
        for shape, channels in (((8, 6, 6, 16), 16), ((8, 2, 2, 64), 8)):  # per sample; output-scaled
            x = tf.constant(rng.normal(size=shape), tf.float32)
            kernel = tf.constant(rng.normal(size=(3, 3, shape[-1], channels)), tf.float32)
            scale = tf.constant(rng.normal(size=(shape[0], 3, 3, 1, channels)), tf.float32)
            def grads():
                with tf.GradientTape() as tape:
                    tape.watch([x, kernel, scale])
                    loss = tf.reduce_sum(tf.sin(fused_op.aw_conv(x, kernel, scale, conv)))
                return [g.numpy() for g in tape.gradient(loss, [x, kernel, scale])]
            first = grads()
            for _ in range(4):
                assert all(np.array_equal(a, b) for a, b in zip(first, grads()))
        print("REPRODUCIBLE")
        """, {"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert "REPRODUCIBLE" in result.stdout, result.stderr[-3000:]

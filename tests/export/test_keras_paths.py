"""Every export path a Keras user may take without aw_keras.export gives a
builtin-op graph in the portable form (no custom op, no per-sample WHILE/Loop),
run in its runtime at batch 1 and 3: model.export in each format,
tf.saved_model.save, TFLiteConverter.from_keras_model and tf2onnx on a
SavedModel. And aw-export writes the same float TFLite files as export_tflite."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from aw_keras.export import count_ops
from aw_keras.export import export_tflite
from aw_keras.export import verify
from aw_keras.export.verify import OnnxRunner
from aw_keras.export.verify import TFLiteRunner
from aw_keras.layers import AWConv2D

LOOPS_AND_CUSTOM = {"WHILE", "Loop", "While", "StatelessWhile", "AwConvForward", "CUSTOM"}


def auto_model():
    """Two AWConv2D layers with implementation="auto" at shapes where the
    fastest strategies are not exportable: the fused kernel (deep: 4*C1 >
    Ho*Wo) and per-sample convolutions (wide: 4*C1 <= Ho*Wo), then a BN."""
    keras.utils.set_random_seed(7)
    inputs = keras.Input((12, 12, 4))
    x = AWConv2D(32, 3, padding="same", name="aw_wide")(inputs)   # 4*4 <= 144
    x = keras.layers.MaxPooling2D(2)(x)
    x = AWConv2D(16, 3, padding="same", use_bias=False, name="aw_deep")(x)  # 4*32 > 36
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(x), name="auto_model")


@pytest.fixture(scope="module")
def model():
    return auto_model()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((3, 12, 12, 4), dtype=np.float32)


def saved_model_ops(path):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
        proto.ParseFromString(handle.read())
    ops = set()
    for meta in proto.meta_graphs:
        ops |= {node.op for node in meta.graph_def.node}
        for function in meta.graph_def.library.function:
            ops |= {node.op for node in function.node_def}
    return ops


def onnx_ops(path):
    import onnx

    graph = onnx.load(str(path)).graph
    return {node.op_type for node in graph.node} | {
        f"{node.domain}:{node.op_type}" for node in graph.node if node.domain}


def assert_runs_like_keras(runner, model, images):
    expected = np.asarray(model(images, training=False))
    for batch in (1, 3):
        got = np.concatenate([runner(images[i:i + batch]) for i in range(0, 3, batch)])
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_keras_tf_saved_model_and_tf_saved_model_save(model, images, tmp_path):
    keras_dir, tf_dir = str(tmp_path / "keras"), str(tmp_path / "tf")
    model.export(keras_dir, format="tf_saved_model", verbose=False)
    tf.saved_model.save(model, tf_dir)
    for path in (keras_dir, tf_dir):
        ops = saved_model_ops(path)
        assert not ops & LOOPS_AND_CUSTOM, (path, ops & LOOPS_AND_CUSTOM)
    loaded = tf.saved_model.load(keras_dir)
    assert_runs_like_keras(lambda x: loaded.serve(tf.constant(x)).numpy(), model, images)
    result = verify(tf_dir, model, images, batch_sizes=(1, 3), latency_repeats=0)
    assert result.passed, result


def test_keras_onnx_export(model, images, tmp_path):
    path = tmp_path / "keras.onnx"
    model.export(str(path), format="onnx", verbose=False)
    assert not onnx_ops(path) & LOOPS_AND_CUSTOM
    assert_runs_like_keras(OnnxRunner(path), model, images)


def test_keras_litert_export(model, images, tmp_path):
    path = tmp_path / "keras.tflite"
    model.export(str(path), format="litert", verbose=False)
    ops = set(count_ops(path))
    assert not ops & LOOPS_AND_CUSTOM and not [op for op in ops if op.startswith("Flex")], ops
    assert "ADD_N" in ops or "ADD" in ops
    assert_runs_like_keras(TFLiteRunner(path), model, images)


def test_tflite_converter_from_keras_model(model, images, tmp_path):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    path = tmp_path / "converter.tflite"
    path.write_bytes(converter.convert())
    assert not set(count_ops(path)) & LOOPS_AND_CUSTOM
    assert_runs_like_keras(TFLiteRunner(path), model, images)


def test_tf2onnx_on_a_keras_saved_model(model, images, tmp_path):
    from aw_keras.export.onnx import convert_saved_model

    saved = str(tmp_path / "saved")
    model.export(saved, format="tf_saved_model", verbose=False)
    path = tmp_path / "tf2onnx.onnx"
    convert_saved_model(saved, path)
    assert not onnx_ops(path) & LOOPS_AND_CUSTOM
    assert_runs_like_keras(OnnxRunner(path), model, images)


@pytest.mark.slow  # ~40 s: four float exports; test_cli covers the command's files by default
def test_aw_export_and_export_tflite_write_the_same_float_files(model, images, tmp_path, capsys):
    """One policy: the command's float32/float16 files are the API's (both folded)."""
    keras_file = tmp_path / "auto_model.keras"
    model.save(keras_file)
    code, out, err = run_main_export([str(keras_file), "--formats", "tflite", "--quantization",
                                      "none,float16", "--out", str(tmp_path / "cli")], capsys)
    assert code == 0, err
    for quantization, label in ((None, "float32"), ("float16", "float16")):
        command_file = tmp_path / "cli" / f"auto_model_{label}.tflite"
        api_file = export_tflite(model, tmp_path / f"api_{label}.tflite", quantization=quantization)
        assert count_ops(command_file) == count_ops(api_file)
        assert count_ops(api_file)["MUL"] < count_ops(
            export_tflite(model, tmp_path / f"unfolded_{label}.tflite", quantization=quantization,
                          fold_batch_norms=False))["MUL"]
        np.testing.assert_array_equal(TFLiteRunner(command_file)(images),
                                      TFLiteRunner(api_file)(images))


def run_main_export(argv, capsys):
    from aw_keras.export.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err

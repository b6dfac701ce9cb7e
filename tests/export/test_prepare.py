"""Strategy switching, export-safe pooling, and: every AWConv2D
implementation either exports (TFLite builtins and ONNX, matching Keras at
batch 1, 3 and 4) or is switched automatically."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aw_keras.export import ExportError
from aw_keras.export import export_onnx
from aw_keras.export import export_tflite
from aw_keras.export import list_ops
from aw_keras.export import prepare
from aw_keras.export import verify
from aw_keras.layers import AWConv2D
from aw_keras.layers import adaptive_average_pool
from aw_keras.layers.aw_conv2d import IMPLEMENTATIONS


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


def test_library_pool_with_uneven_static_bins_traces_without_einsum():
    # Constant-matrix einsums broke .tflite loading with a dynamic batch; the
    # uneven case must use plain MATMULs (tiny_model's 10x10 -> 3x3 and
    # 4x4 -> 3x3 pools are exported and run at batch 1, 3, 4 below).
    fn = tf.function(lambda t: adaptive_average_pool(t, (3, 3)),
                     input_signature=[tf.TensorSpec((None, 10, 10, 4), tf.float32)])
    ops = {op.type for op in fn.get_concrete_function().graph.get_operations()}
    assert "Einsum" not in ops
    assert ops & {"MatMul", "BatchMatMulV2", "BatchMatMulV3"}


def test_exportable_switches_logs_and_restores(capsys):
    model = tiny_model("per_sample")
    model.get_layer("aw_c").implementation = "matmul"
    with prepare.exportable(model):
        assert [l.implementation for l in prepare.aw_layers(model)] == ["taps"] * 3
    assert "switched 3 of 3 AWConv2D" in capsys.readouterr().out
    assert [l.implementation for l in prepare.aw_layers(model)] == ["per_sample", "per_sample", "matmul"]
    with pytest.raises(RuntimeError, match="boom"):
        with prepare.exportable(model, "matmul"):
            raise RuntimeError("boom")
    assert [l.implementation for l in prepare.aw_layers(model)] == ["per_sample", "per_sample", "matmul"]


def test_exportable_keeps_exportable_strategies_when_asked():
    model = tiny_model("depthwise")
    model.get_layer("aw_c").implementation = "per_sample"
    with prepare.exportable(model, implementation=None):
        got = [l.implementation for l in prepare.aw_layers(model)]
    assert got == ["taps", "taps", "per_sample"]


def test_exportable_rejects_non_exportable_choice():
    with pytest.raises(ValueError, match="implementation"):
        with prepare.exportable(tiny_model(), "depthwise"):
            pass


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_every_implementation_exports_or_is_switched(implementation, tmp_path, capsys):
    """implementation=None keeps each strategy unless it cannot export."""
    model = tiny_model(implementation)
    inputs = np.random.default_rng(0).random((4, 10, 10, 4), dtype=np.float32)
    tfl = export_tflite(model, tmp_path / "m.tflite", implementation=None)
    onnx_path = export_onnx(model, tmp_path / "m.onnx", implementation=None)
    log = capsys.readouterr().out
    assert ("switched" in log) == (implementation in prepare.NOT_EXPORTABLE)
    assert [l.implementation for l in prepare.aw_layers(model)] == [implementation] * 3
    assert not [op for op in list_ops(tfl) if op.startswith("Flex")]
    for artifact in (tfl, onnx_path):
        result = verify(artifact, model, inputs, batch_sizes=(1, 3, 4), latency_repeats=0)
        assert result.max_abs_error <= 1e-4, (implementation, result)
        assert result.passed


def test_depthwise_traced_as_is_does_not_convert(tmp_path):
    """Why "depthwise" is switched: it folds the batch into channels, which the
    TFLite converter rejects with a dynamic batch. Bypass the switch with
    Keras's own export and convert that SavedModel; "taps" converts."""
    import aw_keras.export.tflite as tflite_module

    for implementation, converts in (("depthwise", False), ("taps", True)):
        model = tiny_model(implementation)
        path = tmp_path / implementation
        model.export(str(path), format="tf_saved_model", verbose=False)
        if converts:
            assert tflite_module.convert_saved_model(str(path))
        else:
            with pytest.raises(ExportError, match="TFLite"):
                tflite_module.convert_saved_model(str(path))

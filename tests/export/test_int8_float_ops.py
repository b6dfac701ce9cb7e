"""Operators XNNPACK has no int8 kernel for (`tflite.FLOAT_IN_INT8`: DIV) stay
in float inside int8 models, so that XNNPACK takes the whole graph; the
model's interface still has the asked-for type."""

import keras
import numpy as np
import pytest

from aw_keras.export import export_tflite
from aw_keras.export import tflite
from aw_keras.export.verify import TFLiteRunner
from aw_keras.layers import AWConv2D


def clipped_block_model():
    """An AW 1x1 -> BatchNorm -> ReLU6 block (the clipped form, which divides
    by the attention scale) and a small head."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 4))
    x = AWConv2D(16, 1, name="aw_pw")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(6.0, name="relu")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(x)
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(3)
    bn = model.get_layer("bn")
    bn.beta.assign(rng.normal(1.0, 2.0, 16).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.2, 2.0, 16).astype("float32"))
    aw = model.get_layer("aw_pw")
    aw.squeeze_bn.beta.assign(np.full(aw.squeeze_bn.beta.shape, 0.5, np.float32))
    return model


def operator_tensor_types(path, op_name):
    """[(input types, output types)] of every ``op_name`` operator."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    details = {t["index"]: np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    return [([details[i] for i in op["inputs"] if i >= 0], [details[o] for o in op["outputs"]])
            for op in interpreter._get_ops_details() if op["op_name"] == op_name]


@pytest.mark.parametrize("io_dtype", ["int8", "uint8", "float32"])
def test_int8_divisions_run_in_float_and_xnnpack_takes_the_graph(io_dtype, tmp_path, capsys):
    model = clipped_block_model()
    images = np.random.default_rng(4).random((32, 8, 8, 4), dtype=np.float32)
    path = export_tflite(model, tmp_path / "m.tflite", quantization="int8",
                         representative_data=images, io_dtype=io_dtype)
    assert "1 DIV kept in float" in capsys.readouterr().out
    divisions = operator_tensor_types(path, "DIV")
    assert len(divisions) == 1
    assert all(t == np.float32 for inputs, outputs in divisions for t in inputs + outputs)
    assert tflite.count_ops(path)["CONV_2D"] >= 2  # the rest is still int8 convolutions
    runner = TFLiteRunner(path)
    assert np.dtype(runner.input["dtype"]) == np.dtype(io_dtype)
    assert np.dtype(runner.output["dtype"]) == np.dtype(io_dtype)
    if io_dtype != "float32":  # float io adds a DEQUANTIZE partition of its own
        assert runner.partitions == 1, runner.note
    expected = np.asarray(model(images[:4], training=False))
    got = runner(images[:4])
    assert np.max(np.abs(got - expected)) <= 0.05 * float(np.max(np.abs(expected)))


def test_int8_without_divisions_is_converted_once(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(tflite, "_int8_with_float_ops",
                        lambda *args: calls.append(args) or b"")
    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    images = np.random.default_rng(4).random((8, 8, 8, 4), dtype=np.float32)
    export_tflite(model, tmp_path / "m.tflite", quantization="int8", representative_data=images)
    assert calls == [] and "kept in float" not in capsys.readouterr().out


def test_int8_model_with_clipped_blocks_is_converted_once(tmp_path, monkeypatch, capsys):
    # the clipped form is known to divide: straight to the selective conversion
    conversions = []
    convert = tflite._convert
    monkeypatch.setattr(tflite, "_convert",
                        lambda function, quantization: conversions.append(quantization)
                        or convert(function, quantization))
    images = np.random.default_rng(4).random((16, 8, 8, 4), dtype=np.float32)
    path = export_tflite(clipped_block_model(), tmp_path / "m.tflite", quantization="int8",
                         representative_data=images)
    assert conversions == ["int8"]
    assert "1 DIV kept in float" in capsys.readouterr().out
    assert len(operator_tensor_types(path, "DIV")) == 1

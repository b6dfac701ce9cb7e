"""TFLite specifics: builtins only (a clear error naming the op), the op
listing, dynamic batch in the flatbuffer, argument errors, atomic files."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from aw_keras.export import ExportError
from aw_keras.export import count_ops
from aw_keras.export import export_tflite
from aw_keras.export import list_ops
from aw_keras.export.verify import TFLiteRunner
from aw_keras.layers import AWConv2D


class Erfinv(keras.layers.Layer):
    """A layer whose op has no TFLite builtin (needs Flex)."""

    def call(self, inputs):
        return tf.math.erfinv(tf.clip_by_value(inputs, -0.5, 0.5))


def small_model(extra=None):
    inputs = keras.Input((12, 12, 3))
    x = AWConv2D(6, 3, padding="same")(inputs)
    if extra is not None:
        x = extra(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))


def test_flex_op_is_refused_by_name(tmp_path):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"previous good artifact")
    with pytest.raises(ExportError, match=r"\['Erfinv'\].*Flex"):
        export_tflite(small_model(Erfinv()), target)
    assert target.read_bytes() == b"previous good artifact"
    assert sorted(os.listdir(tmp_path)) == ["m.tflite"]


def test_ops_listed_and_dynamic_batch(tmp_path):
    path = export_tflite(small_model(), tmp_path / "m.tflite")
    ops = list_ops(path)
    counts = count_ops(path)
    assert sorted(counts) == ops and counts["SOFTMAX"] == 1
    assert counts["CONV_2D"] >= 9  # one per tap of the 3x3 AW layer (+ the attention branch)
    assert {"CONV_2D", "STRIDED_SLICE", "MUL", "LOGISTIC", "SOFTMAX"} <= set(ops)
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"]
    runner = TFLiteRunner(path)
    assert list(runner.input["shape_signature"]) == [-1, 12, 12, 3]
    x = np.random.default_rng(0).random((4, 12, 12, 3), dtype=np.float32)
    for batch in (1, 4, 2):
        assert runner(x[:batch]).shape == (batch, 4)


def test_argument_errors(tmp_path):
    model = small_model()
    with pytest.raises(ValueError, match="quantization"):
        export_tflite(model, tmp_path / "m.tflite", quantization="int4")
    with pytest.raises(ValueError, match="representative_data"):
        export_tflite(model, tmp_path / "m.tflite", quantization="int8")
    with pytest.raises(ValueError, match="io_dtype"):
        export_tflite(model, tmp_path / "m.tflite", quantization="int8", representative_data=[],
                      io_dtype="int16")
    with pytest.raises(ExportError, match="not a SavedModel"):
        export_tflite(str(tmp_path), tmp_path / "m.tflite")
    assert not os.path.exists(tmp_path / "m.tflite")


def test_int8_near_constant_activations_are_reported_and_explain_xnnpack(tmp_path, capsys):
    from ai_edge_litert.interpreter import Interpreter
    from aw_keras.export.tflite import near_constant_activations

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 8))
    layer = AWConv2D(16, 1, name="aw")  # one squeeze unit; zero BN betas at init
    model = keras.Model(inputs, layer(inputs))
    images = np.random.default_rng(0).random((16, 16, 16, 8), dtype=np.float32)
    image = np.zeros((1, 16, 16, 8), np.int8)

    def runs_with_xnnpack(path):
        interpreter = Interpreter(model_path=path)  # XNNPACK is the default delegate
        try:
            interpreter.allocate_tensors()
        except RuntimeError as error:
            assert "XNNPACK" in str(error)
            return False
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
        interpreter.invoke()
        return True

    flat_path = export_tflite(model, tmp_path / "flat.tflite", quantization="int8",
                              representative_data=images)
    flat = near_constant_activations(flat_path)
    assert flat and all("aw" in name for name in flat)
    assert "~0 range over the calibration data" in capsys.readouterr().out
    assert not runs_with_xnnpack(flat_path)
    # aw_keras's runner never hands such a graph to XNNPACK (whose failure path aborted
    # the process with "double free" on an int8 AW-MobileNet): reference kernels, said so.
    runner = TFLiteRunner(flat_path)
    assert "builtin kernels" in runner.note and "not tried" in runner.note, runner.note
    assert runner(np.zeros((1, 16, 16, 8), np.float32)).shape == (1, 16, 16, 16)

    # Non-degenerate attention activations (as after training): nothing reported, XNNPACK runs.
    layer.squeeze_bn.beta.assign(np.ones(layer.squeeze_bn.beta.shape, np.float32))
    layer.excite_bn.beta.assign(np.full(layer.excite_bn.beta.shape, 0.5, np.float32))
    good_path = export_tflite(model, tmp_path / "good.tflite", quantization="int8",
                              representative_data=images)
    assert near_constant_activations(good_path) == []
    assert "~0 range" not in capsys.readouterr().out
    assert runs_with_xnnpack(good_path)


def bn_model():
    """AWConv2D -> BatchNorm -> ReLU6, with non-trivial BN statistics."""
    inputs = keras.Input((10, 10, 4))
    x = AWConv2D(8, 1, use_bias=False, name="aw")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(6.0)(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    rng = np.random.default_rng(3)
    norm = model.get_layer("bn")
    norm.gamma.assign(rng.uniform(0.5, 2.0, 8).astype("float32"))
    norm.beta.assign(rng.uniform(-0.5, 0.5, 8).astype("float32"))
    norm.moving_mean.assign(rng.uniform(-0.3, 0.3, 8).astype("float32"))
    norm.moving_variance.assign(rng.uniform(0.5, 2.0, 8).astype("float32"))
    return model


@pytest.mark.parametrize("quantization", [None, "float16"])
def test_float_export_folds_the_batch_norm_by_default(tmp_path, quantization):
    """Folded, the BN's MUL over the AW output disappears (one pass less per AW
    layer); the numbers stay those of the Keras model, whose weights are untouched."""
    model = bn_model()
    before = [w.numpy().copy() for w in model.weights]
    x = np.random.default_rng(0).random((3, 10, 10, 4), dtype=np.float32)
    expected = model(x, training=False).numpy()
    folded = export_tflite(model, tmp_path / "folded.tflite", quantization=quantization)
    unfolded = export_tflite(model, tmp_path / "unfolded.tflite", quantization=quantization,
                             fold_batch_norms=False)
    assert count_ops(unfolded)["MUL"] == count_ops(folded)["MUL"] + 1
    tolerance = 1e-4 if quantization is None else 1e-2
    for path in (folded, unfolded):
        np.testing.assert_allclose(TFLiteRunner(path)(x), expected, atol=tolerance)
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(weight.numpy(), value)


def test_dynamic_range_export_does_not_fold_by_default(tmp_path, capsys):
    model = bn_model()
    export_tflite(model, tmp_path / "dr.tflite", quantization="dynamic_range")
    assert "0 BatchNorm folded" in capsys.readouterr().out
    export_tflite(model, tmp_path / "f32.tflite")
    assert "1 BatchNorm folded" in capsys.readouterr().out


def test_int8_aw_kxk_layer_is_one_xnnpack_partition(tmp_path, capsys):
    """Every operator of an int8 3x3 AW layer (split form: conv + attention taps)
    is delegated: the per-tap attention scales are 4-D slices. Sliced from the 5-D
    (N, kh, kw, 1, C) tensor they fell off XNNPACK, which split int8 AW-ResNet50
    into 17 partitions with builtin kernels between them."""

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 8))
    layer = AWConv2D(16, 3, padding="same", name="aw")
    x = layer(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, keras.layers.ReLU()(x))
    layer.squeeze_bn.beta.assign(np.ones(layer.squeeze_bn.beta.shape, np.float32))
    layer.excite_bn.beta.assign(np.full(layer.excite_bn.beta.shape, 0.5, np.float32))
    images = np.random.default_rng(0).random((16, 12, 12, 8), dtype=np.float32)
    path = export_tflite(model, tmp_path / "aw.tflite", quantization="int8",
                         representative_data=images, implementation="taps")
    assert count_ops(path)["STRIDED_SLICE"] >= 9  # the taps are there
    assert "XNNPACK takes the whole int8 model (1 partition)" in capsys.readouterr().out
    runner = TFLiteRunner(path)
    assert runner.partitions == 1 and runner.note == "ai_edge_litert (XNNPACK, 1 partition)"
    assert runner(images[:1]).shape == (1, 12, 12, 16)

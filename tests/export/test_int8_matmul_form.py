"""The im2col + batched-matmul form of int8 AW layers: where ``auto`` uses it,
that it computes the layer, that XNNPACK takes it whole once its per-sample
kernel has zero point 0 (`symmetric_matmul_operands`), and the fallback to
the taps when XNNPACK does not."""

import keras
import numpy as np
import pytest

from aw_keras.export import export_model
from aw_keras.export import export_tflite
from aw_keras.export import policy_for
from aw_keras.export import tflite
from aw_keras.export.policy import auto_form
from aw_keras.export.transform import aw_layers
from aw_keras.export.transform import plan_rewrites
from aw_keras.export.verify import TFLiteRunner
from aw_keras.layers import AWConv2D


def _quantization(interpreter, index):
    detail = interpreter._get_tensor_details(index, 0)
    return detail["quantization_parameters"]["zero_points"], detail["name"]


def runtime_matmul_operands(path):
    """(zero points, name) of the right-hand operand of every BATCH_MATMUL."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return [_quantization(interpreter, op["inputs"][1]) for op in interpreter._get_ops_details()
            if op["op_name"] == "BATCH_MATMUL"]


def large_map_model(positive_kernel=False, seed=0):
    """A 3x3 AW layer on a 20x20x4 map (400 positions >= 4 * 4: matmul under
    ``auto``), then a BatchNorm and ReLU, and a 3x3 AW layer on 5x5x8 (25 < 4 * 8:
    taps)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((20, 20, 4))
    layer = AWConv2D(8, 3, padding="same", use_bias=False, name="aw_large")
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn")(layer(inputs)))
    x = keras.layers.MaxPooling2D(4)(x)
    x = AWConv2D(6, 3, padding="same", name="aw_small")(x)
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(seed)
    if positive_kernel:  # a one-signed per-sample kernel: its calibrated zero point is -128
        layer.kernel.assign(np.abs(layer.kernel.numpy()) + 0.05)
    bn = model.get_layer("bn")
    bn.beta.assign(rng.uniform(0.1, 0.5, 8).astype("float32"))
    for aw in aw_layers(model):
        aw.squeeze_bn.beta.assign(np.full(aw.squeeze_bn.beta.shape, 0.5, np.float32))
    return model


def images(count=16, seed=1):
    return np.random.default_rng(seed).random((count, 20, 20, 4), dtype=np.float32)


def test_auto_uses_matmul_on_large_maps_only():
    assert auto_form((3, 3), 1, (56, 56), 64) == "matmul"
    assert auto_form((3, 3), 1, (28, 28), 128) == "matmul"
    assert auto_form((3, 3), 1, (14, 14), 256) == "taps"
    assert auto_form((3, 3), 2, (56, 56), 64) == "taps"  # grouped input channels
    assert auto_form((1, 1), 1, (56, 56), 64) == "taps"
    assert auto_form((3, 3), 1, (None, None), 64) == "taps"
    model = large_map_model()
    plan = plan_rewrites(model, policy_for("tflite_int8"))
    assert {layer.name: plan[id(layer)][0] for layer in aw_layers(model)} == {
        "aw_large": "matmul", "aw_small": "taps"}
    # with the split, the matmul layer is still not split (it accumulates every
    # tap in int32 already)
    plan = plan_rewrites(model, policy_for("tflite_int8", split_residual=True))
    assert [plan[id(layer)][0] for layer in aw_layers(model)] == ["matmul", "split"]
    # asked for explicitly, the matmul form is split like the taps
    plan = plan_rewrites(model, policy_for("tflite_int8", implementation="matmul",
                                           split_residual=True))
    assert [plan[id(layer)][0] for layer in aw_layers(model)] == ["split_matmul", "split_matmul"]
    plan = plan_rewrites(model, policy_for("tflite_float32"))
    assert [plan[id(layer)][0] for layer in aw_layers(model)] == ["taps", "taps"]


@pytest.mark.parametrize("split", [True, False])
def test_matmul_forms_compute_the_layer(split):
    model = large_map_model()
    x = images(3)
    expected = np.asarray(model(x, training=False))
    exported = export_model(model, "tflite_int8", split_residual=split, implementation="matmul")
    assert exported.get_layer("aw_large").form == ("split_matmul" if split else "matmul")
    np.testing.assert_allclose(np.asarray(exported(x, training=False)), expected, atol=3e-5)


def test_int8_matmul_operand_is_made_symmetric_and_delegated(tmp_path, monkeypatch, capsys):
    model = large_map_model(positive_kernel=True)
    data = images()
    # without the fix the converter calibrates a non-zero zero point (and XNNPACK
    # splits the graph: the fallback is kept out of the way to see it)
    monkeypatch.setattr(tflite, "symmetric_matmul_operands", lambda content: (content, 0))
    monkeypatch.setattr(tflite, "delegated_partitions", lambda content: 1)
    raw = export_tflite(model, tmp_path / "raw.tflite", quantization="int8",
                        representative_data=data, io_dtype="float32", implementation="matmul",
                        split_residual=False)
    assert any(int(zero_points[0]) != 0 for zero_points, _ in runtime_matmul_operands(raw))
    assert TFLiteRunner(raw).partitions > 1
    monkeypatch.undo()
    capsys.readouterr()
    path = export_tflite(model, tmp_path / "fixed.tflite", quantization="int8",
                         representative_data=data, io_dtype="float32", implementation="matmul",
                         split_residual=False)
    assert "BATCH_MATMUL operand(s) made symmetric" in capsys.readouterr().out
    operands = runtime_matmul_operands(path)
    assert operands and all(int(zero_points[0]) == 0 for zero_points, _ in operands)
    runner = TFLiteRunner(path)
    assert runner.partitions == 1
    # the same quantized graph on LiteRT's reference kernels gives the same numbers
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    reference = Interpreter(model_path=str(path),
                            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    reference.allocate_tensors()
    reference.set_tensor(reference.get_input_details()[0]["index"], data[:1])
    reference.invoke()
    on_reference = reference.get_tensor(reference.get_output_details()[0]["index"])
    on_xnnpack = runner(data[:1])
    scale = float(np.max(np.abs(on_reference)))
    assert np.max(np.abs(on_xnnpack - on_reference)) <= 0.02 * scale
    # and close to the float model (int8 rounding only)
    expected = np.asarray(model(data[:1], training=False))
    assert np.max(np.abs(on_xnnpack - expected)) <= 0.06 * float(np.max(np.abs(expected)))


def test_int8_falls_back_to_taps_when_xnnpack_splits_the_matmul_form(tmp_path, monkeypatch, capsys):
    model = large_map_model()
    calls = []

    def split_in_two(content):
        calls.append(content)
        return 2

    monkeypatch.setattr(tflite, "delegated_partitions", split_in_two)
    path = export_tflite(model, tmp_path / "m.tflite", quantization="int8",
                         representative_data=images(), io_dtype="float32")
    out = capsys.readouterr().out
    assert len(calls) == 2  # once per conversion; the second (taps) one is not re-exported
    assert "1 AWConv2D layer(s) as 2 partition(s), not 1: exporting again with the taps" in out
    assert "runs as 2 XNNPACK partitions" in out
    assert "BATCH_MATMUL" not in tflite.list_ops(path)
    assert "2 AWConv2D as ['taps']" in out.split("exporting again")[1]


def test_int8_auto_export_keeps_the_matmul_form_when_delegated(tmp_path, capsys):
    model = large_map_model()
    path = export_tflite(model, tmp_path / "m.tflite", quantization="int8",
                         representative_data=images(), io_dtype="float32")
    out = capsys.readouterr().out
    assert "exporting again" not in out
    assert tflite.count_ops(path)["BATCH_MATMUL"] == 1
    assert TFLiteRunner(path).partitions == 1


def _int8_matmul_graph(slice_operand):
    """int8 bytes of ``x (1, 6, 4) @ k`` where the runtime operand ``k`` is a MUL
    of a constant by a per-sample positive scale (zero point -128 once
    calibrated), reshaped to (1, 4, 3), or with ``slice_operand`` taken by a
    STRIDED_SLICE from a larger MUL output."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    constant = tf.constant(rng.uniform(0.1, 1.0, (2, 4, 3)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([1, 6, 4], tf.float32)])
    def graph(x):
        scale = 1.0 + tf.sigmoid(tf.reduce_mean(x, axis=[1, 2]))[:, None, None, None]
        if slice_operand:
            operand = (scale * constant[None])[:, 1]  # (1, 2, 4, 3) -> (1, 4, 3)
        else:
            operand = tf.reshape(scale * constant[None, 1], [1, 4, 3])
        return tf.matmul(x, operand)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [graph.get_concrete_function()], graph)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    data = rng.random((8, 1, 6, 4)).astype("float32")
    converter.representative_dataset = lambda: ([sample] for sample in data)
    return converter.convert()


def test_symmetric_operand_only_behind_a_requantizing_producer(tmp_path):
    for slice_operand in (False, True):
        content = _int8_matmul_graph(slice_operand)
        path = tmp_path / f"slice_{slice_operand}.tflite"
        path.write_bytes(content)
        [(zero_points, _)] = runtime_matmul_operands(path)
        assert int(zero_points[0]) != 0  # something to fix in both graphs
        fixed, changed = tflite.symmetric_matmul_operands(content)
        if not slice_operand:
            # MUL -> RESHAPE -> BATCH_MATMUL: the MUL requantizes into the new scale
            path.write_bytes(fixed)
            assert changed == 1 and int(runtime_matmul_operands(path)[0][0][0]) == 0
        else:
            # MUL -> STRIDED_SLICE -> BATCH_MATMUL: the slice copies bytes, so its output
            # alone cannot take another quantization (every value would read wrongly)
            assert "STRIDED_SLICE" in tflite.list_ops(content)
            assert changed == 0 and fixed == content

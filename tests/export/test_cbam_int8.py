"""int8 TFLite of a CBAM spatial gate: the channel-gated features keep their
own int8 range. With ``spatial_conv(concat([max, mean]))`` the converter gave
the CONCATENATION's scale to REDUCE_MAX's input, the gated features, whose
negative values were then clipped (CBAM-ResNet50 int8 agreement 0.90); the
layer now sums two single-channel convs instead (see CBAM._spatial_logits)."""

import keras
import numpy as np

from aw_keras.export import export_tflite
from aw_keras.export import list_ops
from aw_keras.layers import CBAM


def cbam_model():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = CBAM(reduction_ratio=4, use_max_pool=False, use_spatial=True, name="cbam")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(5, name="logits")(x))
    bn = model.get_layer("bn")
    rng = np.random.default_rng(4)
    bn.gamma.assign(rng.uniform(0.5, 2.0, 16))
    bn.beta.assign(rng.normal(0.0, 1.0, 16))  # features of both signs, as before a residual add
    return model


def test_channel_gated_features_keep_their_negative_range(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model = cbam_model()
    calibration = np.random.default_rng(5).random((32, 8, 8, 3), dtype=np.float32)
    # float range of the channel-gated features (the first MUL of the CBAM)
    layer = model.get_layer("cbam")
    features = keras.Model(model.input, model.get_layer("bn").output)(calibration)
    gate = keras.ops.sigmoid(layer.mlp_expand(layer.mlp_reduce(
        keras.ops.mean(features, axis=(1, 2), keepdims=True))))
    lowest = float(np.min(np.asarray(features * gate)))
    assert lowest < -0.5

    path = export_tflite(model, tmp_path / "cbam_int8.tflite", quantization="int8",
                         representative_data=calibration)
    assert "CONCATENATION" not in list_ops(path)
    interpreter = Interpreter(model_path=str(path))
    ranges = {}
    for op in interpreter._get_ops_details():
        out = interpreter._get_tensor_details(op["outputs"][0], 0)
        if op["op_name"] == "MUL" and "cbam" in out["name"]:
            scale, zero_point = out["quantization"]
            ranges[out["name"]] = (-128 - zero_point) * scale
    gated = [low for name, low in ranges.items() if name.endswith("/mul")]
    assert len(gated) == 1, ranges
    assert gated[0] <= 0.9 * lowest, (gated[0], lowest)

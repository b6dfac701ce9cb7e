"""FPN backbones (the paper's Table 2 variants): pyramid sizes ceil(H / 2**l) at
odd sizes, the top-down path against a literal NumPy FPN, attention placement
counted per variant, the body left plain, configuration and fresh-process
.keras round trips, and bad arguments."""

import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from aw_keras import applications
from aw_keras.applications.fpn import FPNBackbone
from aw_keras.layers import AWConv2D
from aw_keras.layers import CBAM
from aw_keras.layers import SqueezeExcite

VARIANT_PREFIXES = ("", "se_", "cbam_", "aw_", "aw_se_", "aw_cbam_")


@pytest.mark.parametrize("shape", [(100, 100, 3), (97, 131, 3), (64, 64, 3)])
@pytest.mark.parametrize("levels, expected_levels", [("retinanet", range(3, 8)),
                                                     ("two_stage", range(2, 7))])
def test_pyramid_sizes_at_odd_input_sizes(shape, levels, expected_levels):
    backbone = applications.get_model("aw_resnet_small_fpn", input_shape=shape, levels=levels)
    outputs = backbone(np.zeros((2,) + shape, "float32"))
    assert sorted(outputs) == [f"P{level}" for level in expected_levels]
    for level in expected_levels:
        expected = (2, math.ceil(shape[0] / 2**level), math.ceil(shape[1] / 2**level), 64)
        assert tuple(outputs[f"P{level}"].shape) == expected, level
    assert (backbone.min_level, backbone.max_level) == (expected_levels[0], expected_levels[-1])
    assert sorted(backbone.pyramid_outputs) == sorted(outputs)


def _nearest(x, height, width):
    """torchvision's F.interpolate(mode="nearest") to (height, width), literally."""
    rows = [math.floor(i * x.shape[1] / height) for i in range(height)]
    cols = [math.floor(j * x.shape[2] / width) for j in range(width)]
    return x[:, rows][:, :, cols]


def test_top_down_path_matches_a_literal_fpn():
    """P3 of the plain FPN recomputed in NumPy from the body's C3..C5 and the FPN's
    weights: lateral 1x1 convs, nearest upsampling to the lateral's exact size,
    sums, 3x3 output conv."""
    shape = (97, 131, 3)
    backbone = applications.get_model("resnet_small_fpn", input_shape=shape)
    x = np.random.default_rng(0).uniform(0, 255, (1,) + shape).astype("float32")
    c = keras.Model(backbone.inputs, [backbone.get_layer(f"conv{l}_block1_out").output
                                      for l in (3, 4, 5)])(x)
    c = {level: keras.ops.convert_to_numpy(t).astype(np.float64) for level, t in zip((3, 4, 5), c)}

    def conv(t, layer_name, padding):
        kernel, bias = (keras.ops.convert_to_numpy(w).astype(np.float64) for w in backbone.get_layer(layer_name).weights)
        kh = kernel.shape[0]
        t = np.pad(t, ((0, 0), (kh // 2,) * 2, (kh // 2,) * 2, (0, 0))) if padding else t
        out_h, out_w = t.shape[1] - kh + 1, t.shape[2] - kh + 1
        out = np.zeros((t.shape[0], out_h, out_w, kernel.shape[-1]))
        for i in range(kh):
            for j in range(kh):
                out += t[:, i:i + out_h, j:j + out_w] @ kernel[i, j]
        return out + bias

    merged5 = conv(c[5], "fpn_lateral5", False)
    lateral4 = conv(c[4], "fpn_lateral4", False)
    merged4 = lateral4 + _nearest(merged5, *lateral4.shape[1:3])
    lateral3 = conv(c[3], "fpn_lateral3", False)
    merged3 = lateral3 + _nearest(merged4, *lateral3.shape[1:3])
    expected = conv(merged3, "fpn_output3", True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(backbone(x)["P3"]), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prefix", VARIANT_PREFIXES)
@pytest.mark.parametrize("levels, fpn_convs", [("retinanet", 6), ("two_stage", 8)])
def test_attention_placement_per_variant(prefix, levels, fpn_convs):
    """AW: every lateral and output conv is an AWConv2D; SE/CBAM: a block right
    before each of them; extra levels and the ResNet body stay plain."""
    backbone = applications.get_model(f"{prefix}resnet_small_fpn", levels=levels)
    layers = backbone.layers
    aw = [l.name for l in layers if isinstance(l, AWConv2D)]
    se = [l.name for l in layers if isinstance(l, SqueezeExcite)]
    cbam = [l.name for l in layers if isinstance(l, CBAM)]
    fpn_conv_names = sorted(l.name for l in layers
                            if l.name.startswith(("fpn_lateral", "fpn_output"))
                            and isinstance(l, (keras.layers.Conv2D, AWConv2D)))
    assert len(fpn_conv_names) == fpn_convs
    assert sorted(aw) == (fpn_conv_names if "aw_" in prefix else [])
    expected_blocks = sorted(f"{n}_{'se' if 'se_' in prefix else 'cbam'}" for n in fpn_conv_names)
    assert sorted(se) == (expected_blocks if "se_" in prefix else [])
    assert sorted(cbam) == (expected_blocks if "cbam_" in prefix else [])
    assert not [l.name for l in layers if l.name.startswith(("conv", "fpn_p"))
                and isinstance(l, (AWConv2D, SqueezeExcite, CBAM))]


def test_attention_in_body_is_an_option_beyond_the_paper():
    backbone = applications.get_model("aw_resnet_small_fpn", attention_in_body=True)
    body_aw = [l.name for l in backbone.layers if isinstance(l, AWConv2D)
               and l.name.startswith("conv")]
    assert body_aw == [f"conv{s}_block1_2_conv" for s in range(2, 6)]


def test_body_layer_names_are_the_resnet_names():
    fpn = applications.get_model("aw_resnet_small_fpn")
    body = applications.ResNet((1, 1, 1, 1), stage_filters=(16, 32, 64, 128), include_top=False,
                               input_shape=(128, 128, 3))
    body_names = {l.name for l in body.layers if not isinstance(l, keras.layers.InputLayer)}
    fpn_names = {l.name for l in fpn.layers}
    assert body_names <= fpn_names


def test_config_round_trip_and_bad_arguments():
    backbone = applications.get_model("aw_se_resnet_small_fpn", input_shape=(64, 96, 3),
                                      levels="two_stage", fpn_channels=32, reduction_ratio=4)
    config = backbone.get_config()
    for key, value in dict(body="resnet_small", variant="aw_se", image_shape=(64, 96, 3),
                           levels="two_stage", fpn_channels=32, reduction_ratio=4).items():
        assert config[key] == value, key
    clone = FPNBackbone.from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == backbone.count_params()
    for kwargs, message in [(dict(levels="p3p7"), "levels"), (dict(fpn_channels=0), "fpn_channels"),
                            (dict(input_shape=(16, 16, 3)), "image_shape"),
                            (dict(weights="imagenet"), "imagenet")]:
        with pytest.raises(ValueError, match=message):
            applications.get_model("resnet_small_fpn", **kwargs)
    with pytest.raises(ValueError, match="body"):
        FPNBackbone(body="resnet18")


def test_keras_round_trip_in_a_fresh_process(tmp_path):
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    for name in ("aw_resnet_small_fpn", "cbam_resnet_small_fpn"):
        backbone = applications.get_model(name, input_shape=(64, 64, 3))
        backbone.save(tmp_path / f"{name}.keras")
        np.save(tmp_path / f"{name}.npy", keras.ops.convert_to_numpy(backbone(x)["P4"]))
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(f"""
        import numpy as np, keras
        import aw_keras.applications  # registers the backbone and layers
        x = np.load({str(tmp_path / 'x.npy')!r})
        for name in ("aw_resnet_small_fpn", "cbam_resnet_small_fpn"):
            model = keras.saving.load_model({str(tmp_path)!r} + f"/{{name}}.keras", safe_mode=True)
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)["P4"]),
                                          np.load({str(tmp_path)!r} + f"/{{name}}.npy"))
            print(type(model).__name__, model.min_level, model.max_level)
        """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["FPNBackbone", "3", "7"] * 2


def test_aw_fpn_starts_at_the_plain_fpns_feature_scale():
    """No norm follows an FPN conv: AW's initial gain (mean 1 + A = 1.5 per conv) would
    compound to ~2.2x the plain FPN's features (measured before the kernel started 1/1.5
    smaller; the heads then began with a focal loss of ~10 instead of ~1.6)."""
    images = np.random.default_rng(0).uniform(0, 255, (4, 96, 96, 3)).astype("float32")
    spreads = {}
    for prefix in ("", "aw_"):
        keras.utils.set_random_seed(0)
        backbone = applications.get_model(f"{prefix}resnet_small_fpn", input_shape=(96, 96, 3))
        levels = backbone(images, training=True)
        spreads[prefix] = np.array([float(np.std(keras.ops.convert_to_numpy(levels[f"P{l}"])))
                                    for l in (3, 4, 5)])
    ratio = spreads["aw_"] / spreads[""]
    assert np.all((ratio > 0.75) & (ratio < 1.33)), ratio

"""ResNet builders: keras.applications structure, attention placement, arguments."""

import numpy as np
import pytest

import keras

from aw_keras import applications
from aw_keras.layers import AWConv2D
from aw_keras.layers import CBAM
from aw_keras.layers import SqueezeExcite


def _named_layers(model):
    return [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]


def test_resnet50_matches_keras_applications_structure():
    ours = applications.ResNet50(input_shape=(64, 64, 3))
    reference = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    ours_layers, ref_layers = _named_layers(ours), _named_layers(reference)
    assert [l.name for l in ours_layers] == [l.name for l in ref_layers]
    for a, b in zip(ours_layers, ref_layers):
        assert a.output.shape == b.output.shape, a.name
        assert type(a) is type(b), a.name
    # The only parameter difference: keras' convs carry a bias, ours do not.
    conv_biases = sum(l.filters for l in ref_layers if isinstance(l, keras.layers.Conv2D))
    assert reference.count_params() - ours.count_params() == conv_biases


def test_block_details():
    model = applications.ResNet50(input_shape=(64, 64, 3))
    first = model.get_layer("conv3_block1_1_conv")
    assert first.strides == (2, 2) and model.get_layer("conv3_block1_2_conv").strides == (1, 1)
    assert model.get_layer("conv3_block1_0_conv").strides == (2, 2)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(convs) == 53 and not any(l.use_bias for l in convs)
    assert all(l.epsilon == 1.001e-5 for l in model.layers
               if isinstance(l, keras.layers.BatchNormalization))
    assert model.get_layer("conv4_block6_2_conv") is not None
    with pytest.raises(ValueError):
        model.get_layer("conv4_block7_1_conv")


@pytest.mark.parametrize(
    "builder, cls, flags",
    [
        (applications.SEResNet50, SqueezeExcite, None),
        (applications.CBAMResNet50, CBAM, (True, True)),
        (lambda **k: applications.AWCBAMResNet50(cbam_variant="maxpool", **k), CBAM, (True, False)),
        (lambda **k: applications.AWCBAMResNet50(cbam_variant="spatial", **k), CBAM, (False, True)),
    ],
)
def test_attention_after_last_bn_before_add(builder, cls, flags):
    model = builder(input_shape=(32, 32, 3), classes=2)
    suffix = "se" if cls is SqueezeExcite else "cbam"
    for block in ("conv2_block1", "conv5_block3"):
        layer = model.get_layer(f"{block}_{suffix}")
        assert isinstance(layer, cls)
        assert layer.input is model.get_layer(f"{block}_3_bn").output
        add_inputs = model.get_layer(f"{block}_add").input
        assert any(t is layer.output for t in add_inputs)
        if flags:
            assert (layer.use_max_pool, layer.use_spatial) == flags
    assert sum(isinstance(l, cls) for l in model.layers) == 16


def test_aw_replaces_only_the_3x3_conv():
    model = applications.AWSEResNet50(input_shape=(32, 32, 3), aw_reduction_ratio=8)
    aw = [l for l in model.layers if isinstance(l, AWConv2D)]
    assert len(aw) == 16 and all(l.name.endswith("_2_conv") for l in aw)
    assert all(l.kernel_size == (3, 3) and not l.use_bias and l.reduction_ratio == 8 for l in aw)
    assert isinstance(model.get_layer("conv4_block6_2_conv"), AWConv2D)


def test_resnet152_block_counts():
    model = applications.AWResNet152(include_top=False, input_shape=(32, 32, 3))
    names = {l.name for l in model.layers}
    assert "conv3_block8_2_conv" in names and "conv4_block36_2_conv" in names
    assert "conv4_block37_1_conv" not in names
    assert model.output_shape == (None, 1, 1, 2048)


@pytest.mark.parametrize("pooling, shape", [("avg", (None, 256)), ("max", (None, 256)),
                                            (None, (None, 4, 4, 256))])
def test_include_top_false_pooling(pooling, shape):
    model = applications.AWSEResNetCIFAR(include_top=False, pooling=pooling,
                                         input_shape=(28, 28, 1))
    assert model.output_shape == shape
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    assert model(x).shape[1:] == shape[1:]


@pytest.mark.parametrize("channels", [1, 4])
@pytest.mark.parametrize("include_top", [True, False])
def test_channel_counts(channels, include_top):
    model = applications.AWResNetCIFAR(include_top=include_top, pooling="avg", classes=7,
                                       input_shape=(32, 32, channels))
    x = np.ones((1, 32, 32, channels), np.float32)
    assert model(x).shape == ((1, 7) if include_top else (1, 256))


def test_default_input_shapes():
    assert applications.ResNet50().input_shape == (None, 224, 224, 3)
    assert applications.ResNet50(include_top=False).input_shape == (None, None, None, 3)
    assert applications.ResNetCIFAR().input_shape == (None, 32, 32, 3)


def test_dynamic_spatial_size():
    model = applications.ResNetCIFAR(include_top=False, pooling="avg",
                                     input_shape=(None, None, 3))
    for size in (28, 40):
        assert model(np.ones((1, size, size, 3), np.float32)).shape == (1, 256)


def test_classes_and_classifier_activation():
    model = applications.SEResNetCIFAR(classes=3, classifier_activation=None,
                                       input_shape=(28, 28, 1))
    out = keras.ops.convert_to_numpy(model(np.ones((2, 28, 28, 1), np.float32)))
    assert out.shape == (2, 3) and not np.allclose(out.sum(axis=1), 1.0)
    assert applications.ResNet50(classes=17, input_shape=(32, 32, 3)).output_shape == (None, 17)


def test_input_tensor_keras_input():
    inputs = keras.Input((28, 28, 1))
    model = applications.AWResNetCIFAR(input_tensor=inputs, classes=5)
    assert model.inputs[0] is inputs and model.output_shape == (None, 5)


def test_input_tensor_from_upstream_layers():
    raw = keras.Input((28, 28, 1))
    scaled = keras.layers.Rescaling(1 / 255.0)(raw)
    model = applications.ResNetCIFAR(input_tensor=scaled, classes=5)
    assert model.inputs[0] is raw
    assert "rescaling" in [l.name.split("_")[0] for l in model.layers]


def test_weights_from_file(tmp_path):
    model = applications.AWSEResNetCIFAR(input_shape=(28, 28, 1))
    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    clone = applications.AWSEResNetCIFAR(input_shape=(28, 28, 1), weights=path)
    x = np.random.default_rng(3).random((2, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)),
                               keras.ops.convert_to_numpy(clone(x)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"weights": "imagenet", "classes": 10}, ValueError, "classes=1000"),
        ({"weights": "/nonexistent/x.weights.h5"}, ValueError, "does not exist"),
        ({"weights": 3}, TypeError, "weights"),
        ({"pooling": "sum"}, ValueError, "pooling"),
        ({"classes": 0}, ValueError, "classes"),
        ({"input_shape": (16, 16, 3)}, ValueError, "at least 32"),
        ({"input_shape": (64, 64)}, ValueError, "3 entries"),
        ({"input_shape": (64, 64, 0)}, ValueError, "channel"),
        ({"input_shape": 64}, TypeError, "input_shape"),
        ({"cbam_variant": "both"}, ValueError, "cbam_variant"),
    ],
)
def test_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        applications.CBAMResNet50(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"width": 0}, "width"), ({"blocks": (1, 1)}, "blocks"), ({"stem_stride": 3}, "stem_stride"),
     ({"input_shape": (4, 4, 1)}, "at least 8")],
)
def test_cifar_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        applications.ResNetCIFAR(**kwargs)

"""FPN backbones from pretrained plain models (issue #17): every variant from a plain
FPN with the same pyramid, body-only sources (classification ResNets, ImageNet)
with the body's C2..C5 reproduced and the FPN fresh, the "caffe" input
preprocessing bit for bit keras.applications' preprocess_input, weights="imagenet"
from a fake Keras cache, and what is refused.

Sources have random weights (nothing pretrained is available offline), with BN
statistics, BN affine parameters and conv biases moved off their initial values so
that every transplanted number matters. Small bodies at 64x64 with 16 FPN channels.
"""

import functools

import numpy as np
import pytest

import keras
import tensorflow as tf

from aw_keras import applications
from aw_keras.applications import pretrained
from aw_keras.applications.fpn import FPNBackbone
from aw_keras.layers import AWConv2D
from aw_keras.layers import CBAM
from aw_keras.layers import SqueezeExcite
from app_helpers import gate_variables
from app_helpers import randomize_like_trained

SHAPE = (64, 64, 3)
SMALL_FPN = dict(input_shape=SHAPE, fpn_channels=16)
FPN_VARIANTS = applications.list_models("*resnet_small_fpn*")
NOTOP_50 = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


def images(n=2, seed=1, shape=SHAPE):
    """RGB images in [0, 255]: a per-sample colour and contrast plus noise (i.i.d.
    noise alone averages out in deep layers)."""
    rng = np.random.default_rng(seed)
    colour = rng.uniform(40.0, 215.0, (n, 1, 1, shape[-1]))
    contrast = rng.uniform(10.0, 60.0, (n, 1, 1, 1))
    x = colour + contrast * rng.normal(size=(n,) + shape)
    return np.clip(x, 0.0, 255.0).astype(keras.config.floatx())


def randomize(model, seed=0):
    """`randomize_like_trained` with BN statistics of one batch of this file's inputs."""
    return randomize_like_trained(model, images(n=8, seed=seed + 100, shape=tuple(model.input_shape[1:])), seed)


@functools.lru_cache(maxsize=None)
def plain_fpn():
    keras.utils.set_random_seed(0)
    return randomize(applications.get_model("resnet_small_fpn", **SMALL_FPN))


def small_body(stage_blocks=(1, 1, 1, 1), stage_filters=(16, 32, 64, 128), **kwargs):
    """A classification ResNet with the small FPN body's layers (names and shapes)."""
    keras.utils.set_random_seed(1)
    return randomize(applications.ResNet(stage_blocks, stage_filters=stage_filters,
                                         input_shape=SHAPE, classes=4, name="small_resnet",
                                         **kwargs))


def pyramid(model, x):
    return {k: keras.ops.convert_to_numpy(v) for k, v in model(x, training=False).items()}


def features(model, x, names=None):
    """C2..C5 of ``model`` (an FPN backbone, or a ResNet when ``names`` are given)."""
    names = names or list(model.feature_layer_names.values())
    extractor = keras.Model(model.inputs[0], [model.get_layer(n).output for n in names])
    return [keras.ops.convert_to_numpy(t) for t in extractor(x, training=False)]


def body_input(backbone, x):
    """What the FPN's body sees: the output of its input preprocessing."""
    model = keras.Model(backbone.inputs[0], backbone.get_layer("conv1_pad").input)
    return keras.ops.convert_to_numpy(model(x))


def assert_close(expected, got, tolerance):
    """Max |difference| <= tolerance * max(1, max |expected|) over all arrays."""
    scale = max(1.0, max(float(np.max(np.abs(e))) for e in expected))
    difference = max(float(np.max(np.abs(e - g))) for e, g in zip(expected, got))
    assert difference <= tolerance * scale, (difference, scale)


def attention_layers(model):
    return [layer for layer in model.layers if isinstance(layer, (AWConv2D, SqueezeExcite, CBAM))]


# ------------------------------------------------------------ FPN -> FPN variants


@pytest.mark.parametrize("name", FPN_VARIANTS)
def test_every_variant_from_a_plain_fpn_has_the_same_pyramid_and_learns(name):
    src = plain_fpn()
    x = images()
    model = applications.from_pretrained(src, name)
    expected = pyramid(src, x)
    assert sorted(pyramid(model, x)) == ["P3", "P4", "P5", "P6", "P7"]
    assert np.ptp(expected["P3"], axis=0).max() > 0.01  # depends on the input
    got = pyramid(model, x)
    keys = sorted(expected)
    if not name.startswith("aw_"):  # SE / CBAM compensated by a power of two: bit for bit
        for key in keys:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert_close([expected[k] for k in keys], [got[k] for k in keys], 1e-5)
    new = attention_layers(model)
    assert bool(new) == (name != "resnet_small_fpn")
    if not new:
        return
    # A training step: every new gate gets a gradient, an SGD step changes it and the pyramid.
    gates = [v for layer in new for v in gate_variables(layer)]
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        outputs = model(x, training=True)
        loss = tf.add_n([tf.reduce_mean(tf.square(p)) for p in outputs.values()])
    grads = dict(zip((id(v) for v in variables), tape.gradient(loss, variables)))
    for variable in gates:
        assert np.any(keras.ops.convert_to_numpy(grads[id(variable)]) != 0), variable.path
    before = [keras.ops.convert_to_numpy(v).copy() for v in gates]
    keras.optimizers.SGD(0.1).apply_gradients([(grads[id(v)], v) for v in variables])
    for variable, old in zip(gates, before):
        assert not np.array_equal(keras.ops.convert_to_numpy(variable), old), variable.path
    assert not np.allclose(pyramid(model, x)["P3"], expected["P3"], atol=1e-6)


def test_fpn_sources_as_files_and_detectors(tmp_path):
    """.keras and .weights.h5 of the plain backbone, and a detector on it (in memory
    and as .keras): the detector's backbone is the source."""
    src = plain_fpn()
    x = images()
    expected = pyramid(src, x)
    src.save(tmp_path / "plain.keras")
    src.save_weights(tmp_path / "plain.weights.h5")
    converted = [
        applications.from_pretrained(str(tmp_path / "plain.keras"), "aw_resnet_small_fpn"),
        applications.from_pretrained(str(tmp_path / "plain.weights.h5"), "aw_se_resnet_small_fpn",
                                     **SMALL_FPN),
    ]
    try:
        from aw_keras.detection import RetinaNet
    except ImportError:
        RetinaNet = None
    if RetinaNet is not None:
        detector = RetinaNet(src, num_classes=3, pre_logits_num_conv_layers=1)
        detector.save(tmp_path / "detector.keras")
        converted += [applications.from_pretrained(detector, "cbam_resnet_small_fpn"),
                      applications.from_pretrained(str(tmp_path / "detector.keras"),
                                                   "aw_cbam_resnet_small_fpn")]
    for model in converted:
        assert isinstance(model, FPNBackbone) and model.fpn_channels == 16
        assert model.input_shape == (None,) + SHAPE
        got = pyramid(model, x)
        assert_close([expected[k] for k in sorted(expected)], [got[k] for k in sorted(got)],
                     1e-5)
    with pytest.raises(ValueError, match="pass the builder arguments it was saved with"):
        applications.from_pretrained(str(tmp_path / "plain.weights.h5"), "aw_resnet_small_fpn")


def test_levels_and_preprocessing_come_from_an_fpn_source():
    keras.utils.set_random_seed(2)
    src = randomize(applications.get_model("resnet_small_fpn", input_shape=(96, 64, 3),
                                           fpn_channels=8, levels="two_stage",
                                           input_preprocessing="caffe"))
    model = applications.from_pretrained(src, "aw_se_resnet_small_fpn")
    assert (model.levels, model.fpn_channels, model.input_preprocessing) == (
        "two_stage", 8, "caffe")
    x = images(shape=(96, 64, 3))
    expected, got = pyramid(src, x), pyramid(model, x)
    assert sorted(got) == ["P2", "P3", "P4", "P5", "P6"]
    assert_close([expected[k] for k in sorted(expected)], [got[k] for k in sorted(got)], 1e-5)


# ------------------------------------------------------- body-only sources


@pytest.mark.parametrize("include_top", [True, False])
def test_body_only_source_transplants_the_body_and_keeps_the_fpn_fresh(include_top):
    src = small_body(include_top=include_top)
    keras.utils.set_random_seed(3)
    target = applications.get_model("aw_se_resnet_small_fpn", **SMALL_FPN)
    fpn_before = {v.path: keras.ops.convert_to_numpy(v).copy() for layer in target.layers
                  if layer.name.startswith("fpn_") for v in layer.weights}
    assert pretrained.transplant(src, target) is target
    # The FPN's own layers (convs, AW branches, SE blocks) keep the builder's initialisation.
    for layer in target.layers:
        for v in layer.weights if layer.name.startswith("fpn_") else ():
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), fpn_before[v.path],
                                          err_msg=v.path)
    se = target.get_layer("fpn_output3_se")
    assert np.any(keras.ops.convert_to_numpy(se.expand.kernel) != 0)  # not a compensated gate
    # The body is the source's: C2..C5 equal the source's on the FPN's preprocessed input.
    x = images()
    names = list(target.feature_layer_names.values())
    assert names == [f"conv{level}_block1_out" for level in range(2, 6)]
    expected = features(src, body_input(target, x), names)
    np.testing.assert_array_equal(body_input(target, x), x * np.float32(1 / 255))  # "scale"
    for e, g in zip(expected, features(target, x)):
        np.testing.assert_array_equal(g, e)  # no bias to fold: bit for bit
    # from_pretrained does the same (our ResNet: the builder's "scale" preprocessing).
    model = applications.from_pretrained(src, "aw_resnet_small_fpn", fpn_channels=16)
    assert model.input_preprocessing == "scale" and model.input_shape == (None,) + SHAPE
    assert_close(expected, features(model, x), 1e-6)


@pytest.mark.parametrize("stage_blocks, stage_filters, message", [
    ((1, 2, 1, 1), (16, 32, 64, 128),
     "source layer 'conv3_block2_1_conv' \\(Conv2D\\) has no counterpart in the target"),
    ((1, 1, 1), (16, 32, 64),
     "target layer 'conv5_block1_\\d_conv' \\(Conv2D\\) has no counterpart in the source"),
    ((1, 1, 1, 1), (8, 32, 64, 128),
     "layer 'conv2_block1_\\d_conv': weight 'kernel' has shape"),
])
def test_mismatching_body_is_refused_naming_the_first_layer(stage_blocks, stage_filters,
                                                            message):
    src = small_body(stage_blocks, stage_filters)
    target = applications.get_model("aw_resnet_small_fpn", **SMALL_FPN)
    before = [keras.ops.convert_to_numpy(w).copy() for w in target.weights]
    with pytest.raises(pretrained.ConversionError, match=message):
        pretrained.transplant(src, target)
    assert all(np.array_equal(b, keras.ops.convert_to_numpy(w))
               for b, w in zip(before, target.weights))


def test_fresh_layers_exist_only_for_fpn_targets_of_body_only_sources():
    # An FPN source must match the target's FPN: other levels are refused.
    keras.utils.set_random_seed(4)
    two_stage = applications.get_model("resnet_small_fpn", levels="two_stage", **SMALL_FPN)
    with pytest.raises(pretrained.ConversionError, match="Cannot convert .*'fpn_"):
        applications.from_pretrained(two_stage, "aw_resnet_small_fpn", levels="retinanet")
    # A classification target with an unknown new layer is refused, fpn_ name or not.
    def classifier(extra):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
        if extra:
            x = keras.layers.Conv2D(4, 1, name="fpn_extra")(x)
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return keras.Model(inputs, keras.layers.Dense(2, name="predictions")(x))

    with pytest.raises(pretrained.ConversionError,
                       match="target layer 'fpn_extra' \\(Conv2D\\) has no counterpart"):
        pretrained.transplant(classifier(False), classifier(True))
    assert pretrained.fresh_layer_names(classifier(False), classifier(True)) == set()
    assert pretrained.fresh_layer_names(plain_fpn(), plain_fpn()) == set()


# ------------------------------------------------------------- preprocessing


def test_caffe_preprocessing_is_keras_preprocess_input_bit_for_bit():
    backbone = applications.get_model("resnet_small_fpn", input_preprocessing="caffe",
                                      **SMALL_FPN)
    assert backbone.preprocessing_layer_names == ("rgb_to_bgr", "imagenet_mean")
    for x in (images(), np.random.default_rng(5).uniform(0, 255, (2,) + SHAPE).astype("float32")):
        expected = keras.applications.resnet.preprocess_input(x.copy())
        np.testing.assert_array_equal(body_input(backbone, x), expected)
    assert applications.get_model("resnet_small_fpn", **SMALL_FPN).input_preprocessing == "scale"


def test_preprocessing_config_and_keras_round_trip(tmp_path):
    backbone = applications.get_model("aw_resnet_small_fpn", input_preprocessing="caffe",
                                      **SMALL_FPN)
    config = backbone.get_config()
    assert config["input_preprocessing"] == "caffe"
    clone = FPNBackbone.from_config(config)
    assert clone.get_config() == config and clone.input_preprocessing == "caffe"
    x = images()
    backbone.save(tmp_path / "caffe.keras")
    loaded = keras.saving.load_model(tmp_path / "caffe.keras", safe_mode=True)
    assert loaded.input_preprocessing == "caffe"
    for key, value in pyramid(backbone, x).items():
        np.testing.assert_array_equal(pyramid(loaded, x)[key], value)
    # Configs written before the argument existed load as before.
    old = {k: v for k, v in applications.get_model("resnet_small_fpn", **SMALL_FPN)
           .get_config().items() if k != "input_preprocessing"}
    assert FPNBackbone.from_config(old).preprocessing_layer_names == ("rescale",)
    unscaled = FPNBackbone.from_config({**old, "input_scale": None})
    assert unscaled.preprocessing_layer_names == ()
    np.testing.assert_array_equal(body_input(unscaled, x), x)
    none = FPNBackbone(body="resnet_small", image_shape=SHAPE, input_preprocessing=None)
    assert none.preprocessing_layer_names == () and none.get_config()["input_preprocessing"] is None
    with pytest.raises(ValueError, match="`input_preprocessing` must be one of"):
        FPNBackbone(body="resnet_small", image_shape=SHAPE, input_preprocessing="torch")
    with pytest.raises(ValueError, match="`input_preprocessing='caffe'` needs RGB"):
        FPNBackbone(body="resnet_small", image_shape=(64, 64, 1), input_preprocessing="caffe")


# ---------------------------------------------------------- weights="imagenet"


@pytest.fixture(scope="module")
def imagenet_cache(tmp_path_factory):
    """A temporary Keras cache holding a random keras.applications ResNet50 body
    (include_top=False, 64x64) under the ImageNet notop file name (the real file is
    never downloaded here); yields (KERAS_HOME, the plain model)."""
    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    keras.utils.set_random_seed(6)
    plain = randomize(keras.applications.ResNet50(weights=None, include_top=False,
                                                  input_shape=SHAPE))
    plain.save(home / "models" / NOTOP_50)  # the legacy .h5 format keras.applications loads
    return home, plain


def test_imagenet_weights_from_the_keras_cache_feed_the_body_caffe_inputs(imagenet_cache,
                                                                          monkeypatch):
    """The converted FPN takes [0, 255] RGB; its C2..C5 equal keras.applications
    ResNet50's on preprocess_input(images)."""
    home, plain = imagenet_cache
    monkeypatch.setenv("KERAS_HOME", str(home))
    backbone = applications.AWSEResNet50FPN(weights="imagenet", input_shape=SHAPE,
                                            fpn_channels=16)
    assert backbone.input_preprocessing == "caffe"
    x = images()
    names = list(backbone.feature_layer_names.values())
    assert names == ["conv2_block3_out", "conv3_block4_out", "conv4_block6_out",
                     "conv5_block3_out"]
    expected = features(plain, keras.applications.resnet.preprocess_input(x.copy()), names)
    # float32 to 1e-5 of the largest feature (the stem conv's bias is folded into conv1_bn).
    assert_close(expected, features(backbone, x), 1e-5)
    assert isinstance(backbone.get_layer("fpn_lateral3"), AWConv2D)


def test_imagenet_missing_or_misnamed_file_and_small_body(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    directory = str(tmp_path / "keras_home" / "models")
    with pytest.raises(ValueError) as error:
        applications.AWResNet50FPN(weights="imagenet")
    message = str(error.value)
    assert repr(NOTOP_50) in message and repr(directory) in message
    assert "keras-applications/resnet/" + NOTOP_50 + " failed" in message  # offline (conftest)
    with pytest.raises(ValueError, match="'resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5'"
                                         ". It is not in " + repr(directory)):
        applications.from_pretrained("imagenet", "se_resnet101_fpn", input_shape=SHAPE)
    top = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    top.write_bytes(b"")
    with pytest.raises(ValueError, match="needs " + repr(NOTOP_50)):
        applications.ResNet50FPN(weights=str(top), input_shape=SHAPE)
    with pytest.raises(ValueError, match="no keras.applications ImageNet weights exist for the "
                                         "'resnet_small' body"):
        applications.get_model("aw_resnet_small_fpn", weights="imagenet")
    with pytest.raises(ValueError, match="no keras.applications ImageNet weights"):
        applications.from_pretrained("imagenet", "resnet_small_fpn")


@pytest.mark.slow
def test_imagenet_file_by_path_and_keras_applications_instances(imagenet_cache):
    """The notop file given by its path, and keras.applications ResNet50 instances
    (with and without the classifier) as from_pretrained sources: "caffe" is chosen."""
    home, plain = imagenet_cache
    x = images()
    names = list(applications.get_model("resnet50_fpn", input_shape=SHAPE, fpn_channels=8)
                 .feature_layer_names.values())
    expected = features(plain, keras.applications.resnet.preprocess_input(x.copy()), names)
    with_top = keras.applications.ResNet50(weights=None, input_shape=SHAPE, classes=4)
    with_top.set_weights(plain.get_weights() + with_top.get_weights()[len(plain.weights):])
    for model in (applications.CBAMResNet50FPN(weights=str(home / "models" / NOTOP_50),
                                               input_shape=SHAPE, fpn_channels=8),
                  applications.from_pretrained(plain, "aw_resnet50_fpn", fpn_channels=8),
                  applications.from_pretrained(with_top, "resnet50_fpn", fpn_channels=8)):
        assert model.input_preprocessing == "caffe"
        assert_close(expected, features(model, x), 1e-5)
    # A ResNet50 body is not a ResNet101 one.
    with pytest.raises(pretrained.ConversionError,
                       match="target layer 'conv4_block7_\\d_conv' \\(Conv2D\\) has no counterpart"):
        applications.from_pretrained(plain, "resnet101_fpn", fpn_channels=8)

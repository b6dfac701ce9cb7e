"""Registry: the issue's names, lookup, errors; every cheap model builds and runs."""

import os
import subprocess
import sys

import numpy as np
import pytest

import keras

from aw_keras import applications
from aw_keras.layers import AWConv2D
from app_helpers import fit_one_step
from app_helpers import small_kwargs

ISSUE_NAMES = [
    f"{prefix}resnet{depth}{suffix}"
    for depth in (50, 101, 152)
    for prefix, suffix in (
        ("", ""), ("se_", ""), ("cbam_", ""), ("cbam_", "_maxpool"), ("cbam_", "_spatial"),
        ("aw_", ""), ("aw_se_", ""), ("aw_cbam_", "_maxpool"), ("aw_cbam_", "_spatial"),
    )
] + [
    "mobilenet", "se_mobilenet", "cbam_mobilenet_spatial", "aw_mobilenet", "aw_se_mobilenet",
    "aw_cbam_mobilenet_spatial",
    "resnet_cifar", "aw_resnet_cifar", "se_resnet_cifar", "aw_se_resnet_cifar",
]

# Default run: every ResNet50 / MobileNet / CIFAR variant (101 and 152 only
# differ in block counts; they are built by test_table1 and the slow sweep).
CHEAP = [n for n in applications.list_models(task="classification") if "101" not in n and "152" not in n]


def test_all_issue_names_registered():
    assert sorted(ISSUE_NAMES) == applications.list_models(task="classification")


def test_list_models_pattern():
    assert applications.list_models("aw_se_*", task="classification") == [
        "aw_se_mobilenet", "aw_se_resnet101", "aw_se_resnet152", "aw_se_resnet50",
        "aw_se_resnet_cifar",
    ]
    assert applications.list_models("nothing*") == []
    assert applications.list_models("aw_se_*", task="detection_backbone") == [
        "aw_se_resnet101_fpn", "aw_se_resnet50_fpn", "aw_se_resnet_small_fpn"]
    assert applications.model_task("aw_resnet50_fpn") == "detection_backbone"
    assert applications.model_task("aw_resnet50") == "classification"
    with pytest.raises(ValueError, match="task"):
        applications.list_models(task="segmentation")


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="aw_se_resnet50"):
        applications.get_model("aw_se_resnet_50")


def test_get_model_bad_name_type():
    with pytest.raises(TypeError, match="string"):
        applications.get_model(50)


def test_register_model_decorator_and_duplicates():
    @applications.register_model("test_tiny_resnet_cifar", blocks=(1, 1, 1), width=4)
    def tiny(**kwargs):
        return applications.ResNetCIFAR(**kwargs)

    assert "test_tiny_resnet_cifar" in applications.list_models("test_*")
    model = applications.get_model("test_tiny_resnet_cifar", input_shape=(16, 16, 1))
    assert model.name == "test_tiny_resnet_cifar"
    assert model.get_layer("conv2_block1_1_conv").filters == 4
    with pytest.raises(ValueError, match="already registered"):
        applications.register_variant("test_tiny_resnet_cifar", applications.ResNetCIFAR)
    with pytest.raises(ValueError, match="lower-case"):
        applications.register_variant("Bad", applications.ResNetCIFAR)


def test_variant_defaults_and_overrides():
    model = applications.get_model("cbam_resnet50_maxpool", input_shape=(32, 32, 3), classes=3)
    cbam = model.get_layer("conv2_block1_cbam")
    assert (cbam.use_max_pool, cbam.use_spatial) == (True, False)
    assert model.name == "cbam_resnet50_maxpool"
    assert model.output_shape == (None, 3)
    renamed = applications.get_model("resnet_cifar", name="custom", input_shape=(28, 28, 1))
    assert renamed.name == "custom"


@pytest.mark.parametrize("name", CHEAP)
def test_builds_and_runs(name):
    kwargs = small_kwargs(name)
    model = applications.get_model(name, **kwargs)
    x = np.random.default_rng(0).random((2,) + kwargs["input_shape"], dtype=np.float32)
    out = keras.ops.convert_to_numpy(model(x, training=False))
    assert out.shape == (2, kwargs["classes"])
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)  # softmax head
    has_aw = any(isinstance(layer, AWConv2D) for layer in model.layers)
    assert has_aw == name.startswith("aw_")
    has_se = any(layer.name.endswith("_se") for layer in model.layers)
    assert has_se == ("_se_" in f"_{name}_")
    has_cbam = any(layer.name.endswith("_cbam") for layer in model.layers)
    assert has_cbam == ("cbam" in name)


@pytest.mark.parametrize(
    "name", ["resnet_cifar", "aw_resnet_cifar", "se_resnet_cifar", "aw_se_resnet_cifar",
             "aw_cbam_mobilenet_spatial"],
)
def test_one_fit_step(name):
    kwargs = small_kwargs(name)
    model = applications.get_model(name, **kwargs)
    x = np.random.default_rng(1).random((4,) + kwargs["input_shape"], dtype=np.float32)
    loss, changed = fit_one_step(model, x, kwargs["classes"])
    assert np.isfinite(loss) and changed


# On every backend (the JAX pass of scripts/test.sh runs these again): AW with SE on
# a ResNet by default; the MobileNet family and the plain ResNet slow (~50 s and ~20 s
# on JAX's CPU backend, mostly XLA compilation).
REPRESENTATIVE = ["aw_se_resnet_cifar",
                  pytest.param("aw_cbam_mobilenet_spatial", marks=pytest.mark.slow),
                  pytest.param("resnet_cifar", marks=pytest.mark.slow)]


@pytest.mark.backends
@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_representative_models_fit_and_round_trip_on_every_backend(name, tmp_path):
    kwargs = small_kwargs(name)
    model = applications.get_model(name, **kwargs)
    x = np.random.default_rng(3).random((4,) + kwargs["input_shape"], dtype=np.float32)
    loss, changed = fit_one_step(model, x, kwargs["classes"])
    assert np.isfinite(loss) and changed
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)),
                                  expected)


@pytest.mark.backends
def test_fpn_backbone_fits_and_round_trips_on_every_backend(tmp_path):
    model = applications.get_model("aw_resnet_small_fpn", input_shape=(64, 64, 3),
                                   fpn_channels=16)
    x = np.random.default_rng(4).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    outputs = model(x, training=False)
    assert sorted(outputs) == ["P3", "P4", "P5", "P6", "P7"]
    path = str(tmp_path / "fpn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)(x, training=False)
    for key, value in outputs.items():
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded[key]),
                                      keras.ops.convert_to_numpy(value))


SWEEP_LOADER = """
import sys
import numpy as np
import keras
import aw_keras  # noqa: F401  (registers the custom layers)
model = keras.models.load_model(sys.argv[1])
got = keras.ops.convert_to_numpy(model(np.load(sys.argv[2]), training=False))
np.testing.assert_array_equal(got, np.load(sys.argv[3]))
print("IDENTICAL", model.name)
"""


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize("name", applications.list_models(task="classification"))
def test_every_model_full_sweep(name, tmp_path):
    """Every registered model (small input, 4 classes): forward, fit step, `.keras`
    save/load in a fresh process with identical outputs, headless poolings, a
    custom input tensor, and 1- and 4-channel inputs."""
    kwargs = small_kwargs(name)
    x = np.random.default_rng(2).random((2,) + kwargs["input_shape"], dtype=np.float32)
    model = applications.get_model(name, **kwargs)
    assert keras.ops.convert_to_numpy(model(x)).shape == (2, kwargs["classes"])
    loss, changed = fit_one_step(model, x, kwargs["classes"])
    assert np.isfinite(loss) and changed

    path = str(tmp_path / "model.keras")
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", keras.ops.convert_to_numpy(model(x, training=False)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    loaded = subprocess.run(
        [sys.executable, "-c", SWEEP_LOADER, path, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True, text=True, env=env, timeout=300)
    assert loaded.returncode == 0 and "IDENTICAL" in loaded.stdout, loaded.stderr[-3000:]

    # Headless: each pooling once, with 1 and 4 input channels and a custom input tensor.
    height, width = kwargs["input_shape"][:2]
    classes = {k: v for k, v in kwargs.items() if k != "input_shape"}
    for pooling, channels in (("avg", 1), ("max", 4)):
        shape = (height, width, channels)
        headless = applications.get_model(name, include_top=False, pooling=pooling,
                                          input_shape=shape, **classes)
        features = headless(np.ones((1,) + shape, np.float32))
        assert len(features.shape) == 2 and features.shape[0] == 1
    inputs = keras.Input(kwargs["input_shape"])
    scaled = keras.layers.Rescaling(0.5)(inputs)
    on_tensor = applications.get_model(name, include_top=False, pooling=None,
                                       input_tensor=scaled, **classes)
    assert on_tensor.inputs[0] is inputs
    assert len(on_tensor(x).shape) == 4

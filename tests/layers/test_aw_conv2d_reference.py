"""AWConv2D against the literal NumPy oracle of Eq. 4-8 (tests/reference.py).

Runs on every backend (``scripts/test.sh`` runs it again under JAX), each
backend's strategies (`IMPLEMENTATIONS` is the running backend's)."""

import numpy as np
import pytest

import keras
import reference
from aw_keras.layers import AWConv2D
from aw_keras.layers.aw_conv2d import IMPLEMENTATIONS

pytestmark = pytest.mark.backends

# The two grids below on JAX / PyTorch: the forms `auto` never picks there
# (vectorized_map, batch-folded grouped conv; 5-25x a Conv2D) are slow; by default
# they are checked by the dynamic-size test and the gradient checks.
NEVER_AUTO = ("per_sample", "grouped") if keras.backend.backend() != "tensorflow" else ()
GRID_IMPLEMENTATIONS = [pytest.param(name, marks=pytest.mark.slow) if name in NEVER_AUTO
                        else name for name in IMPLEMENTATIONS]

TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def randomize_batch_norms(layer, rng):
    """Non-trivial BN statistics, so inference and training modes differ."""
    for bn in (layer.squeeze_bn, layer.excite_bn):
        channels = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 1.5, channels).astype("float32"))
        bn.beta.assign(rng.normal(0, 0.5, channels).astype("float32"))
        bn.moving_mean.assign(rng.normal(0, 0.3, channels).astype("float32"))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))


def make_layer(input_shape, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    layer = AWConv2D(**kwargs)
    layer.build(input_shape)
    randomize_batch_norms(layer, np.random.default_rng(seed))
    if layer.bias is not None:
        layer.bias.assign(np.random.default_rng(seed + 1).normal(size=layer.filters).astype("float32"))
    return layer


def check_against_reference(layer_kwargs, input_shape, implementation, training, seed=0):
    x = np.random.default_rng(seed + 2).normal(size=input_shape).astype("float32")
    layer = make_layer(input_shape, seed=seed, implementation=implementation, **layer_kwargs)
    expected = reference.aw_conv2d(x, reference.layer_weights(layer), layer.get_config(), training)
    got = keras.ops.convert_to_numpy(layer(x, training=training))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, **TOLERANCE)
    return layer, x


GEOMETRIES = {
    "1x1": (dict(filters=6, kernel_size=1), (3, 7, 9, 4)),
    "1x1_stride2": (dict(filters=6, kernel_size=1, strides=2), (3, 7, 9, 4)),
    "3x3_same": (dict(filters=6, kernel_size=3, padding="same"), (5, 7, 9, 4)),
    "3x3_valid_15x15": (dict(filters=5, kernel_size=3), (2, 15, 15, 3)),
    "3x3_stride2_same": (dict(filters=6, kernel_size=3, strides=2, padding="same"), (3, 7, 9, 4)),
    "3x3_stride2_valid": (dict(filters=6, kernel_size=3, strides=2), (3, 15, 15, 4)),
    "3x3_stride_2x1": (dict(filters=6, kernel_size=3, strides=(2, 1), padding="same"), (2, 7, 9, 4)),
    "3x3_dilation2_same": (dict(filters=6, kernel_size=3, dilation_rate=2, padding="same"), (3, 7, 9, 4)),
    "3x3_dilation2_valid": (dict(filters=6, kernel_size=3, dilation_rate=2), (2, 9, 9, 4)),
    "5x5_same": (dict(filters=4, kernel_size=5, padding="same"), (2, 7, 9, 3)),
    "5x5_valid": (dict(filters=4, kernel_size=5), (2, 9, 11, 3)),
    "3x1_same": (dict(filters=6, kernel_size=(3, 1), padding="same"), (3, 7, 9, 4)),
    "batch1": (dict(filters=6, kernel_size=3, padding="same"), (1, 7, 9, 4)),
    "bias_and_activation": (
        dict(filters=6, kernel_size=3, padding="same", use_bias=True, activation="relu"),
        (3, 7, 9, 4),
    ),
    "no_bias": (dict(filters=6, kernel_size=3, use_bias=False), (3, 7, 9, 4)),
    # C1 >= 2 * Ho * Wo: `taps` takes its batched-matmul path when training.
    "deep_small_output": (dict(filters=6, kernel_size=3, padding="same"), (3, 2, 2, 8)),
    "deep_small_output_stride2": (dict(filters=6, kernel_size=3, strides=2, padding="same"), (3, 3, 3, 8)),
    # taps that read only "same" padding (skipped by `taps`, see padding_only_taps)
    "padding_only_taps_2x2_stride2": (dict(filters=6, kernel_size=3, strides=2, padding="same"), (3, 2, 2, 1)),
    "padding_only_taps_5x5_on_1x3": (dict(filters=4, kernel_size=5, padding="same"), (2, 1, 3, 2)),
    "padding_only_taps_dilation3": (dict(filters=4, kernel_size=3, dilation_rate=3, padding="same"), (2, 3, 3, 2)),
}


@pytest.mark.tensorflow_only
def test_padding_only_taps():
    import tensorflow as tf

    from aw_keras.layers.aw_kernels import ConvGeometry
    from aw_keras.layers.aw_kernels import padding_only_taps

    def dead(shape, kernel, strides=(1, 1), dilation=(1, 1), padding="same"):
        return padding_only_taps(tf.zeros(shape), ConvGeometry(kernel, strides, dilation, padding))

    # 2x2 -> 1x1 with stride 2: "same" pads 0 before, 1 after: row/column 2 is padding
    assert dead((1, 2, 2, 1), (3, 3), (2, 2)) == {(2, 0), (2, 1), (2, 2), (0, 2), (1, 2)}
    # 1x3 map, 5x5 kernel: only the middle kernel row ever meets the input; every column does
    assert dead((1, 1, 3, 1), (5, 5)) == {(j, k) for j in range(5) for k in range(5) if j != 2}
    assert dead((1, 3, 3, 1), (3, 3), dilation=(3, 3)) == {(j, k) for j in range(3) for k in range(3)} - {(1, 1)}
    assert dead((1, 7, 9, 1), (3, 3)) == set()
    assert dead((1, 2, 2, 1), (3, 3), padding="valid") == set()
    found = []  # unknown spatial size: nothing can be skipped
    geometry = ConvGeometry((3, 3), (2, 2), (1, 1), "same")
    tf.function(lambda t: found.append(padding_only_taps(t, geometry)) or t,
                input_signature=[tf.TensorSpec((None, None, None, 1))]).get_concrete_function()
    assert found == [set()]


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("implementation", GRID_IMPLEMENTATIONS)
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_geometries_match_reference(geometry, implementation, training):
    kwargs, input_shape = GEOMETRIES[geometry]
    check_against_reference(kwargs, input_shape, implementation, training)


@pytest.mark.parametrize("attention_mode", ["residual", "multiplicative"])
@pytest.mark.parametrize("implementation", GRID_IMPLEMENTATIONS)
@pytest.mark.parametrize("spatial_reduction", [1, 3])
@pytest.mark.parametrize("output_channel_reduction", [1, 2])
@pytest.mark.parametrize("input_channel_reduction", [None, 1, 2])
def test_reductions_match_reference(
    input_channel_reduction, output_channel_reduction, spatial_reduction, implementation,
    attention_mode,
):
    kwargs = dict(
        filters=6,
        kernel_size=3,
        padding="same",
        reduction_ratio=2,
        input_channel_reduction=input_channel_reduction,
        output_channel_reduction=output_channel_reduction,
        spatial_reduction=spatial_reduction,
        attention_mode=attention_mode,
    )
    # Alternate the BN mode across the grid so both are covered for every setting.
    training = (output_channel_reduction + spatial_reduction) % 2 == 0
    check_against_reference(kwargs, (3, 7, 9, 4), implementation, training)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_dynamic_batch_and_spatial_sizes(implementation):
    """A model on Input((None, None, C)) follows the reference at several sizes."""
    layer = make_layer((None, None, None, 4), filters=6, kernel_size=3, padding="same",
                       strides=2, input_channel_reduction=2, implementation=implementation)
    inputs = keras.Input((None, None, 4))
    model = keras.Model(inputs, layer(inputs))
    weights = reference.layer_weights(layer)
    for batch, height, width in [(1, 7, 9), (3, 15, 15), (2, 5, 12)]:
        x = np.random.default_rng(batch).normal(size=(batch, height, width, 4)).astype("float32")
        expected = reference.aw_conv2d(x, weights, layer.get_config(), training=False)
        np.testing.assert_allclose(model.predict(x, verbose=0), expected, **TOLERANCE)


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_unknown_batch_in_a_traced_function(implementation):
    """The graph path with an unknown batch (map_fn for `per_sample`) is exact too."""
    import tensorflow as tf

    layer = make_layer((None, 7, 9, 4), filters=6, kernel_size=3, padding="same",
                       implementation=implementation)
    traced = tf.function(
        lambda x: layer(x, training=False),
        input_signature=[tf.TensorSpec((None, 7, 9, 4), tf.float32)],
    )
    x = np.random.default_rng(3).normal(size=(5, 7, 9, 4)).astype("float32")
    expected = reference.aw_conv2d(x, reference.layer_weights(layer), layer.get_config())
    np.testing.assert_allclose(traced(x).numpy(), expected, **TOLERANCE)


def test_attention_maps_follow_equation_8():
    layer = make_layer((3, 7, 9, 4), filters=6, kernel_size=3, reduction_ratio=2,
                       input_channel_reduction=2, output_channel_reduction=2)
    x = np.random.default_rng(4).normal(size=(3, 7, 9, 4)).astype("float32")
    maps = keras.ops.convert_to_numpy(layer.attention_maps(x))
    assert maps.shape == (3, 3, 3, 4, 6)  # (N, kh, kw, C1, C2): the kernel's layout
    expected = reference.attention_maps(x, reference.layer_weights(layer), layer.get_config(), False)
    np.testing.assert_allclose(maps, np.transpose(expected, (0, 3, 4, 2, 1)), **TOLERANCE)
    # Groups of r_C1 = 2 input channels and r_C2 = 2 output channels share a value.
    np.testing.assert_array_equal(maps[..., 0, :], maps[..., 1, :])
    np.testing.assert_array_equal(maps[..., 0], maps[..., 1])
    assert not np.allclose(maps[..., 0, :], maps[..., 2, :])


def test_attention_changes_the_output():
    """Sanity: AW output differs from the plain conv with the same kernel."""
    layer, x = check_against_reference(dict(filters=6, kernel_size=3, padding="same", use_bias=False),
                                       (2, 7, 9, 4), "auto", False)
    plain = keras.ops.convert_to_numpy(keras.ops.conv(x, layer.kernel, padding="same"))
    assert np.abs(keras.ops.convert_to_numpy(layer(x)) - plain).max() > 1e-2


@pytest.mark.parametrize("attention_mode", ["residual", "multiplicative"])
def test_public_attention_api_follows_equations_6_to_8(attention_mode):
    """compact_attention is A with one value per input-channel group, and
    attention_scale is the factor S of AK = S * K (Eq. 6) in the same layout."""
    layer = make_layer((2, 7, 9, 4), filters=6, kernel_size=3, reduction_ratio=2,
                       input_channel_reduction=2, attention_mode=attention_mode)
    x = np.random.default_rng(5).normal(size=(2, 7, 9, 4)).astype("float32")
    expected = np.transpose(
        reference.attention_maps(x, reference.layer_weights(layer), layer.get_config(), False),
        (0, 3, 4, 2, 1))                                  # (N, kh, kw, C1, C2)
    compact = keras.ops.convert_to_numpy(layer.compact_attention(x))
    assert compact.shape == (2, 3, 3, 2, 6)               # G1 = C1 / r_C1 = 2
    np.testing.assert_allclose(compact, expected[..., ::2, :], **TOLERANCE)
    scale = keras.ops.convert_to_numpy(layer.attention_scale(x))
    np.testing.assert_allclose(scale, compact + 1.0 if attention_mode == "residual" else compact,
                               **TOLERANCE)

"""adaptive_average_pool follows PyTorch AdaptiveAvgPool2d bins, static and dynamic."""

import numpy as np
import pytest

import keras
import reference
from aw_keras.layers.pooling import adaptive_average_pool, adaptive_bin_matrix

pytestmark = pytest.mark.backends  # runs on every Keras backend

SIZES = [(7, 9), (15, 15), (2, 5), (3, 3), (1, 1), (6, 12), (56, 56)]
OUTPUTS = [(3, 3), (1, 1), (5, 5), (3, 1), (2, 3)]


@pytest.mark.parametrize("output_size", OUTPUTS)
@pytest.mark.parametrize("size", SIZES)
def test_static_and_dynamic_shapes_match_pytorch_bins(size, output_size):
    x = np.random.default_rng(0).normal(size=(2,) + size + (3,)).astype("float32")
    expected = reference.adaptive_avg_pool(x, *output_size)
    got = keras.ops.convert_to_numpy(adaptive_average_pool(x, output_size))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(adaptive_average_pool(x, output_size, sliced=True)), expected,
        atol=1e-6)
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf  # a graph with unknown sizes: TensorFlow's dynamic bins

    dynamic = tf.function(
        lambda t: adaptive_average_pool(t, output_size),
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)],
    )
    np.testing.assert_allclose(dynamic(x).numpy(), expected, atol=1e-6)


def test_bins_overlap_when_they_do_not_divide():
    # PyTorch: 5 rows into 3 bins -> [0, 2), [1, 4), [3, 5)
    matrix = adaptive_bin_matrix(5, 3)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    assert np.count_nonzero(matrix[0]) == 2 and np.count_nonzero(matrix[1]) == 3
    assert matrix[0, 1] > 0 and matrix[1, 1] > 0  # row 1 is shared


def test_rejects_non_positive_output_size():
    with pytest.raises(ValueError, match="`output_size`"):
        adaptive_average_pool(np.zeros((1, 4, 4, 1), "float32"), (0, 2))


def _ops(fn, spec):
    import tensorflow as tf


    return {op.type for op in fn.get_concrete_function(spec).graph.get_operations()}


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("size,output_size", [((7, 9), (3, 3)), ((56, 56), (3, 3)), ((15, 15), (2, 3))])
def test_sliced_pooling_gives_the_same_bins(size, output_size):
    import tensorflow as tf

    x = np.random.default_rng(1).normal(size=(2,) + size + (3,)).astype("float32")
    expected = reference.adaptive_avg_pool(x, *output_size)
    spec = tf.TensorSpec((None,) + size + (3,))
    sliced = tf.function(lambda t: adaptive_average_pool(t, output_size, sliced=True))
    np.testing.assert_allclose(sliced(x).numpy(), expected, atol=1e-6)
    sliced_ops = _ops(sliced, spec)
    assert "Mean" in sliced_ops and not sliced_ops & {"MatMul", "BatchMatMulV2", "BatchMatMulV3"}
    assert "Mean" not in _ops(tf.function(lambda t: adaptive_average_pool(t, output_size)), spec)


@pytest.mark.tensorflow_only
def test_only_the_export_layer_pools_by_slices():
    import tensorflow as tf

    from aw_keras.export import AWConvExport
    from aw_keras.layers import AWConv2D

    spec = tf.TensorSpec((None, 10, 10, 3))
    for layer_class, sliced in ((AWConv2D, False), (AWConvExport, True)):
        layer = layer_class(4, 3, padding="same")
        layer.build(spec.shape)
        assert ("Mean" in _ops(tf.function(lambda t: layer(t)), spec)) == sliced

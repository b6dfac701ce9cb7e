"""adaptive_average_pool follows PyTorch AdaptiveAvgPool2d bins, static and dynamic."""

import numpy as np
import pytest
import tensorflow as tf

import reference
from aw_keras.layers.pooling import adaptive_average_pool, adaptive_bin_matrix, sliced_pooling

SIZES = [(7, 9), (15, 15), (2, 5), (3, 3), (1, 1), (6, 12), (56, 56)]
OUTPUTS = [(3, 3), (1, 1), (5, 5), (3, 1), (2, 3)]


@pytest.mark.parametrize("output_size", OUTPUTS)
@pytest.mark.parametrize("size", SIZES)
def test_static_and_dynamic_shapes_match_pytorch_bins(size, output_size):
    x = np.random.default_rng(0).normal(size=(2,) + size + (3,)).astype("float32")
    expected = reference.adaptive_avg_pool(x, *output_size)
    np.testing.assert_allclose(adaptive_average_pool(x, output_size).numpy(), expected, atol=1e-6)
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
        adaptive_average_pool(tf.zeros((1, 4, 4, 1)), (0, 2))


@pytest.mark.parametrize("size,output_size", [((7, 9), (3, 3)), ((56, 56), (3, 3)), ((15, 15), (2, 3))])
def test_sliced_pooling_gives_the_same_bins(size, output_size):
    x = np.random.default_rng(1).normal(size=(2,) + size + (3,)).astype("float32")
    expected = reference.adaptive_avg_pool(x, *output_size)
    with sliced_pooling():
        fn = tf.function(lambda t: adaptive_average_pool(t, output_size))
        graph_ops = {op.type for op in fn.get_concrete_function(tf.TensorSpec((None,) + size + (3,))).graph.get_operations()}
        np.testing.assert_allclose(fn(x).numpy(), expected, atol=1e-6)
    assert "Mean" in graph_ops and not graph_ops & {"MatMul", "BatchMatMulV2", "BatchMatMulV3"}
    plain = {op.type for op in tf.function(lambda t: adaptive_average_pool(t, output_size))
             .get_concrete_function(tf.TensorSpec((None,) + size + (3,))).graph.get_operations()}
    assert "Mean" not in plain  # the context is gone after the block

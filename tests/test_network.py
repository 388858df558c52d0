"""Tests of what both MLP backends share: layout, initialisation, targets, predictions
and accuracy counting (momcore._network)."""

import numpy as np
import pytest

from momcore import _network as network
from momcore import registry

DTYPES = [np.float32, np.float64]
SIZES = [[3, 4, 2], [5, 7, 6, 3], [2, 1, 2]]


def sizes_id(sizes):
    return "-".join(map(str, sizes))


# --------------------------------------------------------------------------- layout


def test_n_params_and_offsets():
    assert network.n_params([3, 4, 2]) == 3 * 4 + 4 + 4 * 2 + 2
    assert network.layer_offsets([3, 4, 2]) == [(0, 12), (16, 24)]
    assert network.n_params([5, 7, 6, 3]) == 35 + 7 + 42 + 6 + 18 + 3
    assert network.layer_offsets([5, 7, 6, 3]) == [(0, 35), (42, 84), (90, 108)]


@pytest.mark.parametrize("sizes", [[3], [], [3, 0, 2], [3, 2.0], "ab"])
def test_bad_sizes(sizes):
    with pytest.raises(ValueError, match="sizes|width"):
        network.n_params(sizes)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", SIZES, ids=sizes_id)
def test_views_are_views(sizes, dtype):
    flat = np.arange(network.n_params(sizes), dtype=dtype)
    weights, biases = network.views(flat, sizes)
    offsets = network.layer_offsets(sizes)
    for i, (W, b) in enumerate(zip(weights, biases)):
        assert W.shape == (sizes[i], sizes[i + 1]) and b.shape == (sizes[i + 1],)
        assert W.dtype == dtype and b.dtype == dtype
        assert np.shares_memory(W, flat) and np.shares_memory(b, flat)
        assert W.flags.c_contiguous
        # Row-major W[i] starts at its offset, b[i] right after it.
        w_offset, b_offset = offsets[i]
        np.testing.assert_array_equal(W.ravel(), np.arange(w_offset, w_offset + W.size))
        np.testing.assert_array_equal(b, np.arange(b_offset, b_offset + b.size))
        assert b_offset == w_offset + W.size
    weights[-1][-1, -1] = -1.0
    biases[0][0] = -2.0
    assert flat[offsets[-1][1] - 1] == -1.0
    assert flat[offsets[0][1]] == -2.0


def test_views_reject_bad_buffers():
    sizes = [3, 4, 2]
    n = network.n_params(sizes)
    with pytest.raises(ValueError, match="n_params"):
        network.views(np.zeros(n + 1), sizes)
    with pytest.raises(ValueError, match="contiguous"):
        network.views(np.zeros(2 * n)[::2], sizes)
    with pytest.raises(TypeError, match="float32 or float64"):
        network.views(np.zeros(n, dtype=np.int64), sizes)


# --------------------------------------------------------------------------- init


@pytest.mark.parametrize("hidden", registry.HIDDEN)
def test_init_matches_documented_draw_order(hidden):
    sizes = [5, 7, 6, 3]
    flat = np.full(network.n_params(sizes), np.nan)
    network.init_params(flat, sizes, hidden, np.random.default_rng(42))
    rng = np.random.default_rng(42)
    weights, biases = network.views(flat, sizes)
    for i, (W, b) in enumerate(zip(weights, biases)):
        fan_in, fan_out = sizes[i], sizes[i + 1]
        is_hidden = i < len(weights) - 1
        he = hidden == "relu" and is_hidden
        r = np.sqrt(6 / fan_in) if he else np.sqrt(6 / (fan_in + fan_out))
        np.testing.assert_array_equal(W, rng.uniform(-r, r, size=(fan_in, fan_out)))
        assert np.abs(W).max() <= r
        np.testing.assert_array_equal(b, 0)


def test_init_reproducible_and_cast():
    sizes = [4, 8, 3]
    first = np.empty(network.n_params(sizes))
    second = np.empty(network.n_params(sizes))
    single = np.empty(network.n_params(sizes), dtype=np.float32)
    network.init_params(first, sizes, "sigmoid", np.random.default_rng(7))
    network.init_params(second, sizes, "sigmoid", np.random.default_rng(7))
    network.init_params(single, sizes, "sigmoid", np.random.default_rng(7))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(single, first.astype(np.float32))
    other = np.empty(network.n_params(sizes))
    network.init_params(other, sizes, "sigmoid", np.random.default_rng(8))
    assert not np.array_equal(first, other)


# --------------------------------------------------------------------------- targets


@pytest.mark.parametrize("dtype", DTYPES)
def test_encode_labels_one_hot(dtype):
    T = network.encode_targets(np.array([2, 0, 1, 2]), 3, "softmax", dtype)
    assert T.dtype == dtype
    np.testing.assert_array_equal(T, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_encode_2d_is_cast_copy():
    y = np.array([[0.5, -2.0], [1.0, 3.0]])
    T = network.encode_targets(y, 2, "identity", np.float32)
    assert T.dtype == np.float32 and not np.shares_memory(T, y)
    np.testing.assert_array_equal(T, y)
    same_dtype = network.encode_targets(y, 2, "identity", np.float64)
    assert not np.shares_memory(same_dtype, y)
    soft = np.array([[0.2, 0.8], [0.5, 0.5]])
    np.testing.assert_array_equal(network.encode_targets(soft, 2, "softmax", np.float64), soft)


@pytest.mark.parametrize(
    "y, n_out, output, match",
    [
        (np.array([0, 3]), 3, "softmax", r"\[0, 3\)"),
        (np.array([-1, 0]), 3, "softmax", r"\[0, 3\)"),
        (np.array([0.0, 1.0]), 3, "softmax", "integer class labels"),
        (np.array([True, False]), 2, "sigmoid", "integer class labels"),
        (np.zeros((2, 4)), 3, "identity", "3 columns"),
        (np.zeros((2, 3, 1)), 3, "identity", "1-D integer labels or a 2-D"),
        (np.array(1), 3, "identity", "1-D integer labels or a 2-D"),
        (np.array([[np.nan, 0.0]]), 2, "identity", "finite"),
        (np.array([[0.5, 0.6]]), 2, "softmax", "probability"),
        (np.array([[1.5, -0.5]]), 2, "softmax", "probability"),
        (np.array([["a", "b"]]), 2, "identity", "real numbers"),
        (np.array([0, 1]), 0, "softmax", "n_out"),
        (np.array([0, 1]), 2, "tanh", "output"),
    ],
)
def test_encode_errors(y, n_out, output, match):
    with pytest.raises(ValueError, match=match):
        network.encode_targets(y, n_out, output, np.float64)

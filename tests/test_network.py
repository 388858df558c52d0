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


@pytest.mark.parametrize("dtype", DTYPES)
def test_encode_multilabel_indicators(dtype):
    y = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1]])
    T = network.encode_targets(y, 3, "sigmoid", dtype, loss="binary_cross_entropy")
    assert T.dtype == dtype and T.shape == (3, 3) and not np.shares_memory(T, y)
    np.testing.assert_array_equal(T, y)
    as_bool = network.encode_targets(y.astype(bool), 3, "sigmoid", dtype,
                                     loss="binary_cross_entropy")
    np.testing.assert_array_equal(as_bool, y)
    soft = np.array([[0.0, 0.3, 1.0]])
    np.testing.assert_array_equal(
        network.encode_targets(soft, 3, "sigmoid", np.float64, loss="binary_cross_entropy"), soft)


def test_encode_labels_for_binary_cross_entropy():
    # One output unit: 0/1 labels give a 0/1 column; several units: one-hot rows.
    T = network.encode_targets(np.array([1, 0, 1]), 1, "sigmoid", np.float64,
                               loss="binary_cross_entropy")
    np.testing.assert_array_equal(T, [[1], [0], [1]])
    T = network.encode_targets(np.array([2, 0]), 3, "sigmoid", np.float64,
                               loss="binary_cross_entropy")
    np.testing.assert_array_equal(T, [[0, 0, 1], [1, 0, 0]])


@pytest.mark.parametrize(
    "y, dtype, match",
    [
        (np.array([[1, 2, 0]]), np.float64, r"\[0, 1\]"),
        (np.array([[0.5, -0.1, 0.0]]), np.float64, r"\[0, 1\]"),
        # rounds to 1 in float32, but the values given lie outside [0, 1]
        (np.array([[1 + 1e-9, 0.0, 0.0]]), np.float32, r"\[0, 1\]"),
        (np.array([[0.5, np.nan, 0.0]]), np.float64, "finite"),
        (np.array([[0.5, 0.5]]), np.float64, "3 columns"),
        (np.array([0, 2]), np.float64, r"\[0, 2\)"),  # labels for one output unit
    ],
)
def test_encode_binary_cross_entropy_errors(y, dtype, match):
    n_out = 1 if y.ndim == 1 else 3
    with pytest.raises(ValueError, match=match):
        network.encode_targets(y, n_out, "sigmoid", dtype, loss="binary_cross_entropy")


def test_encode_squared_error_takes_any_real_targets():
    y = np.array([[1.5, -0.5]])
    for output in ("sigmoid", "identity"):
        np.testing.assert_array_equal(network.encode_targets(y, 2, output, np.float64), y)
        np.testing.assert_array_equal(
            network.encode_targets(y, 2, output, np.float64, loss="squared_error"), y)


@pytest.mark.parametrize(
    "output, loss",
    [("softmax", "binary_cross_entropy"), ("identity", "binary_cross_entropy"),
     ("sigmoid", "cross_entropy")],
)
def test_encode_rejects_unpaired_loss(output, loss):
    with pytest.raises(ValueError, match="does not pair"):
        network.encode_targets(np.array([[0.0, 1.0]]), 2, output, np.float64, loss=loss)


# --------------------------------------------------------------------------- predictions


def test_predicted_class():
    out = np.array([[0.1, 0.7, 0.2], [0.4, 0.2, 0.4], [0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(network.predicted_class(out), [1, 0, 2])  # first max on ties
    column = np.array([[0.49], [0.5], [0.9]])
    np.testing.assert_array_equal(network.predicted_class(column), [0, 1, 1])


def test_predict_labels_multilabel_thresholds_every_unit():
    out = np.array([[0.2, 0.5, 0.9], [0.49, 0.51, 0.0]], dtype=np.float32)
    labels = network.predict_labels(out, multilabel=True)
    assert labels.shape == (2, 3) and labels.dtype.kind == "i"
    np.testing.assert_array_equal(labels, [[0, 1, 1], [0, 1, 0]])
    np.testing.assert_array_equal(network.predict_labels(out), [2, 1])  # one label per row
    with pytest.raises(ValueError, match="2-D"):
        network.predict_labels(np.zeros(3), multilabel=True)


# --------------------------------------------------------------------------- accuracy


def test_count_correct_argmax():
    out = np.array([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]])
    T = np.array([[0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]], dtype=float)
    # row 0 right; row 1 a tie resolved to unit 0, wrong; row 2 right; row 3 wrong
    assert network.count_correct(out, T, "argmax") == 2
    assert network.count_correct(out, out, "argmax") == 4
    soft = np.array([[0.2, 0.5, 0.3]] * 4)  # argmax of soft targets: unit 1
    assert network.count_correct(out, soft, "argmax") == 1


def test_count_correct_threshold():
    out = np.array([[0.9, 0.1, 0.5], [0.9, 0.6, 0.2], [0.49, 0.0, 1.0], [0.2, 0.2, 0.2]])
    T = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 0, 1]], dtype=float)
    # row 0: every unit on its target's side (0.5 counts as on); row 1: unit 1 wrong;
    # row 2: right; row 3: unit 2 wrong
    assert network.count_correct(out, T, "threshold") == 2
    single = np.array([[0.7], [0.3], [0.5]])
    assert network.count_correct(single, np.array([[1.0], [1.0], [0.0]]), "threshold") == 1


def test_count_correct_none_and_errors():
    out = np.array([[0.9, 0.1]])
    assert network.count_correct(out, np.array([[1.0, 0.0]]), "none") == 0
    assert type(network.count_correct(out, np.array([[1.0, 0.0]]), "argmax")) is int
    with pytest.raises(ValueError, match="accuracy must be one of"):
        network.count_correct(out, out, "top5")
    with pytest.raises(ValueError, match="one shape"):
        network.count_correct(out, out.T, "argmax")


def test_default_accuracy():
    assert network.default_accuracy(1) == "threshold"
    assert network.default_accuracy(2) == "argmax"
    assert network.default_accuracy(10) == "argmax"
    assert set(map(network.default_accuracy, [1, 2])) <= set(network.ACCURACY)

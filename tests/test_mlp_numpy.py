"""Tests of the pure-numpy multilayer perceptron (the reference backend)."""

import itertools

import numpy as np
import pytest

from momcore import _mlp_numpy as mlp
from momcore import _network as network
from momcore import registry
from momcore.datasets import load_iris

DTYPES = [np.float32, np.float64]
SIZES = [[3, 4, 2], [5, 7, 6, 3], [2, 1, 2]]
GRAD_RTOL = 1e-6  # relative error of back-propagation against central differences, float64
FD_EPS = 1e-6
# Smallest |pre-activation| allowed in a relu gradient check: far enough from the kink at 0
# that a parameter step of FD_EPS cannot cross it.
RELU_MARGIN = 1e-3


def sizes_id(sizes):
    return "-".join(map(str, sizes))


def random_params(sizes, rng, dtype=np.float64, scale=0.7):
    """A flat buffer with random weights and nonzero biases."""
    return rng.normal(scale=scale, size=network.n_params(sizes)).astype(dtype)


def random_targets(output, n_rows, n_out, rng, dtype=np.float64, loss=None):
    if output == "softmax":
        return network.encode_targets(rng.integers(0, n_out, size=n_rows), n_out, output, dtype)
    if loss == "binary_cross_entropy":  # multilabel 0/1 indicators
        return rng.integers(0, 2, size=(n_rows, n_out)).astype(dtype)
    if output == "sigmoid":
        return rng.uniform(0.05, 0.95, size=(n_rows, n_out)).astype(dtype)
    return rng.normal(size=(n_rows, n_out)).astype(dtype)


def pre_activations(flat, sizes, X, hidden, output):
    """The pre-activations z[i+1] = a[i] @ W[i] + b[i] of every layer."""
    weights, biases = network.views(flat, sizes)
    activations = mlp.forward(flat, sizes, X, hidden, output)
    return [a @ W + b for a, W, b in zip(activations[:-1], weights, biases)]


def central_differences(flat, sizes, X, T, hidden, output, eps=FD_EPS, loss=None):
    """dE/dparams by central differences of the mean loss."""

    def mean_loss(params):
        out = mlp.forward(params, sizes, X, hidden, output)[-1]
        return mlp.loss_from_output(out, T, output, loss)

    approx = np.empty_like(flat)
    probe = flat.copy()
    for k in range(flat.size):
        probe[k] = flat[k] + eps
        plus = mean_loss(probe)
        probe[k] = flat[k] - eps
        minus = mean_loss(probe)
        probe[k] = flat[k]
        approx[k] = (plus - minus) / (2 * eps)
    return approx


def relative_error(grad, approx):
    return np.linalg.norm(grad - approx) / max(np.linalg.norm(grad), np.linalg.norm(approx))


# Every output/loss pair of the registry; None where the loss is the output's default, so
# that the default path is the one exercised there.
OUTPUT_LOSS = [
    (output, None if name == registry.DEFAULT_LOSS[output] else name)
    for name, loss in registry.LOSSES.items()
    for output in loss.outputs
]


def sigmoid_scalar(z):
    return 1.0 / (1.0 + np.exp(-z))


# --------------------------------------------------------------------------- activations


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_finite_at_extremes(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = mlp.sigmoid(z)
        p = mlp.softmax(z)
    assert s.dtype == dtype and p.dtype == dtype
    np.testing.assert_array_equal(s, [[1, 0, 0.5], [0, 0, 1]])
    np.testing.assert_array_equal(p, [[1, 0, 0], [0, 0, 1]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_values(dtype):
    z = np.linspace(-30, 30, 61)
    expected = 1 / (1 + np.exp(-z))
    rtol = {np.float32: 1e-6, np.float64: 1e-14}[dtype]
    np.testing.assert_allclose(mlp.sigmoid(z.astype(dtype)), expected, rtol=rtol)


def test_softmax_values():
    z = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 1000.0]])
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(mlp.softmax(z), [e / e.sum(), [1 / 3] * 3], rtol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output", registry.OUTPUTS)
@pytest.mark.parametrize("hidden", registry.HIDDEN)
def test_forward_huge_inputs_finite(hidden, output, dtype):
    sizes = [3, 4, 2]
    flat = random_params(sizes, np.random.default_rng(0), dtype, scale=3.0)
    X = np.array([[1e4, -1e4, 1e4], [-1e4, 1e4, -1e4]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        activations = mlp.forward(flat, sizes, X, hidden, output)
        T = network.encode_targets(np.array([0, 1]), 2, output, dtype)
        loss = mlp.loss_from_output(activations[-1], T, output)
    assert all(np.all(np.isfinite(a)) and a.dtype == dtype for a in activations)
    assert np.isfinite(loss)


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_layers(dtype):
    sizes = [3, 4, 2]
    rng = np.random.default_rng(1)
    flat = random_params(sizes, rng, dtype)
    X = rng.normal(size=(5, 3))
    (W0, W1), (b0, b1) = network.views(flat, sizes)
    activations = mlp.forward(flat, sizes, X, "tanh", "softmax")
    assert len(activations) == 3
    np.testing.assert_array_equal(activations[0], X.astype(dtype))
    hidden = np.tanh(X.astype(dtype) @ W0 + b0)
    rtol = {np.float32: 1e-5, np.float64: 1e-13}[dtype]
    np.testing.assert_allclose(activations[1], hidden, rtol=rtol)
    np.testing.assert_allclose(activations[2], mlp.softmax(hidden @ W1 + b1), rtol=rtol)
    assert [a.shape for a in activations] == [(5, 3), (5, 4), (5, 2)]


# --------------------------------------------------------------------------- losses


def test_cross_entropy_by_hand():
    out = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])
    T = np.array([[1.0, 0, 0], [0, 0, 1.0]])
    np.testing.assert_allclose(mlp.per_sample_loss(out, T, "softmax"), [-np.log(0.7), -np.log(0.5)])
    expected = (-np.log(0.7) - np.log(0.5)) / 2
    assert mlp.loss_from_output(out, T, "softmax") == pytest.approx(expected, rel=1e-15)
    assert isinstance(mlp.loss_from_output(out, T, "softmax"), float)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_clamps_zero_probability(dtype):
    out = np.array([[0.0, 1.0]], dtype=dtype)
    T = np.array([[1.0, 0.0]], dtype=dtype)
    with np.errstate(divide="raise", invalid="raise"):
        loss = mlp.loss_from_output(out, T, "softmax")
    assert loss == pytest.approx(-np.log(np.finfo(dtype).tiny), rel=1e-6)


@pytest.mark.parametrize("output", ["sigmoid", "identity"])
def test_squared_error_by_hand(output):
    out = np.array([[0.5, 0.2], [0.9, 0.0]])
    T = np.array([[1.0, 0.0], [1.0, 1.0]])
    # 1/2 (0.25 + 0.04) = 0.145 and 1/2 (0.01 + 1) = 0.505
    np.testing.assert_allclose(mlp.per_sample_loss(out, T, output), [0.145, 0.505], rtol=1e-15)
    assert mlp.loss_from_output(out, T, output) == pytest.approx(0.325, rel=1e-15)


def test_binary_cross_entropy_by_hand():
    out = np.array([[0.8, 0.3], [0.6, 0.1], [0.5, 0.5]])
    T = np.array([[1.0, 0.0], [0.0, 1.0], [0.25, 1.0]])
    # Row 0: -(log 0.8 + log 0.7); row 1: -(log 0.4 + log 0.1);
    # row 2 (a soft target): -(0.25 log 0.5 + 0.75 log 0.5) - log 0.5 = 2 log 2.
    expected = [-np.log(0.8) - np.log(0.7), -np.log(0.4) - np.log(0.1), 2 * np.log(2)]
    per_row = mlp.per_sample_loss(out, T, "sigmoid", "binary_cross_entropy")
    np.testing.assert_allclose(per_row, expected, rtol=1e-15)
    mean = mlp.loss_from_output(out, T, "sigmoid", "binary_cross_entropy")
    assert isinstance(mean, float)
    assert mean == pytest.approx(sum(expected) / 3, rel=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_zero_coefficient_adds_nothing(dtype):
    """Outputs of exactly 0 and 1: a term whose coefficient is 0 adds nothing (no 0 * inf),
    and a term whose log would be -inf is clamped at log(tiny)."""
    out = np.array([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]], dtype=dtype)
    T = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.25]], dtype=dtype)
    log_tiny = float(np.log(np.finfo(dtype).tiny))
    with np.errstate(divide="raise", invalid="raise", over="raise"):
        per_row = mlp.per_sample_loss(out, T, "sigmoid", "binary_cross_entropy")
    assert per_row.dtype == dtype
    assert per_row[0] == 0  # every output is exactly on its target
    # t = 1, y = 0 and t = 0, y = 1 each cost -log(tiny); t = 1/4, y = 0 costs -1/4 log(tiny).
    assert per_row[1] == pytest.approx(-2.25 * log_tiny, rel=1e-6)


@pytest.mark.parametrize("output", ["sigmoid", "identity"])
def test_squared_error_named_or_default_agree(output):
    out = np.array([[0.5, 0.2], [0.9, 0.0]])
    T = np.array([[1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_array_equal(mlp.per_sample_loss(out, T, output, "squared_error"),
                                  mlp.per_sample_loss(out, T, output))
    np.testing.assert_allclose(mlp.per_sample_loss(out, T, output, "squared_error"),
                               [0.145, 0.505], rtol=1e-15)


@pytest.mark.parametrize(
    "output, loss",
    [("softmax", "binary_cross_entropy"), ("identity", "cross_entropy"),
     ("softmax", "squared_error"), ("identity", "binary_cross_entropy")],
)
def test_loss_must_pair_with_output(output, loss):
    sizes = [2, 3, 2]
    flat = np.zeros(network.n_params(sizes))
    X = np.zeros((2, 2))
    T = np.full((2, 2), 0.5)
    with pytest.raises(ValueError, match="does not pair"):
        mlp.per_sample_loss(T, T, output, loss)
    with pytest.raises(ValueError, match="does not pair"):
        mlp.gradients(flat, sizes, X, T, "sigmoid", output, np.zeros_like(flat), loss=loss)
    with pytest.raises(ValueError, match="loss must be one of"):
        mlp.loss_from_output(T, T, output, "hinge")


def test_loss_of_empty_batch_rejected():
    with pytest.raises(ValueError, match="empty"):
        mlp.loss_from_output(np.zeros((0, 2)), np.zeros((0, 2)), "identity")


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("sizes", SIZES, ids=sizes_id)
@pytest.mark.parametrize(
    "hidden, output, loss",
    [(hidden, output, loss) for hidden in registry.HIDDEN for output, loss in OUTPUT_LOSS],
    ids=lambda name: name or "default",
)
def test_gradients_match_central_differences(hidden, output, loss, sizes):
    n_rows = 6
    rng = np.random.default_rng(sum(map(ord, hidden + output + (loss or ""))) + 100 * len(sizes))
    for _ in range(100):
        flat = random_params(sizes, rng)
        X = rng.normal(size=(n_rows, sizes[0]))
        hidden_z = pre_activations(flat, sizes, X, hidden, output)[:-1]
        if hidden != "relu" or min(np.abs(z).min() for z in hidden_z) > RELU_MARGIN:
            break
    else:
        pytest.fail("no draw kept every relu pre-activation away from the kink")
    T = random_targets(output, n_rows, sizes[-1], rng, loss=loss)

    grad = np.full_like(flat, np.nan)
    mean_loss = mlp.gradients(flat, sizes, X, T, hidden, output, grad, loss=loss)
    approx = central_differences(flat, sizes, X, T, hidden, output, loss=loss)

    out = mlp.forward(flat, sizes, X, hidden, output)[-1]
    assert mean_loss == mlp.loss_from_output(out, T, output, loss)
    assert np.linalg.norm(grad) > 1e-3  # a check on a zero gradient would prove nothing
    error = relative_error(grad, approx)
    assert error < GRAD_RTOL, f"relative error {error:.3g}"


@pytest.mark.parametrize("batch", [1, 2, 9])
@pytest.mark.parametrize("targets", ["multilabel", "soft", "labels"])
@pytest.mark.parametrize("hidden", ["sigmoid", "tanh"])
def test_binary_cross_entropy_gradients_match_central_differences(hidden, targets, batch):
    """dE/dz = (y - t)/B at the output, against central differences of the mean BCE."""
    sizes = [4, 5, 3] if targets != "labels" else [4, 5, 1]
    rng = np.random.default_rng(batch + 10 * len(targets) + 100 * len(hidden))
    flat = random_params(sizes, rng, scale=1.0)
    X = rng.normal(size=(batch, sizes[0]))
    if targets == "multilabel":
        y = rng.integers(0, 2, size=(batch, sizes[-1]))
    elif targets == "soft":
        y = rng.uniform(0, 1, size=(batch, sizes[-1]))
    else:
        y = rng.integers(0, 2, size=batch)
    T = network.encode_targets(y, sizes[-1], "sigmoid", np.float64, loss="binary_cross_entropy")

    grad = np.full_like(flat, np.nan)
    mean_loss = mlp.gradients(flat, sizes, X, T, hidden, "sigmoid", grad,
                              loss="binary_cross_entropy")
    approx = central_differences(flat, sizes, X, T, hidden, "sigmoid",
                                 loss="binary_cross_entropy")
    # The loss from its definition, written out here.
    out = mlp.forward(flat, sizes, X, hidden, "sigmoid")[-1]
    by_definition = -np.mean(np.sum(T * np.log(out) + (1 - T) * np.log(1 - out), axis=1))
    assert mean_loss == pytest.approx(by_definition, rel=1e-13)
    assert np.linalg.norm(grad) > 1e-3
    error = relative_error(grad, approx)
    assert error < GRAD_RTOL, f"relative error {error:.3g}"
    # The output-layer bias gradient is the column mean of y - t.
    _, (*_, grad_b_out) = network.views(grad, sizes)
    np.testing.assert_allclose(grad_b_out, (out - T).mean(axis=0), rtol=1e-13, atol=1e-16)


def test_default_loss_equals_named_default():
    sizes = [3, 4, 2]
    rng = np.random.default_rng(5)
    flat = random_params(sizes, rng)
    X = rng.normal(size=(4, 3))
    for output, loss in registry.DEFAULT_LOSS.items():
        T = random_targets(output, 4, 2, rng)
        named, default = np.empty_like(flat), np.empty_like(flat)
        assert (mlp.gradients(flat, sizes, X, T, "tanh", output, named, loss=loss)
                == mlp.gradients(flat, sizes, X, T, "tanh", output, default))
        np.testing.assert_array_equal(named, default)


def test_gradients_float32_match_float64():
    sizes = [5, 7, 6, 3]
    rng = np.random.default_rng(3)
    flat = random_params(sizes, rng)
    X = rng.normal(size=(8, 5))
    T = random_targets("softmax", 8, 3, rng)
    grad64 = np.empty_like(flat)
    grad32 = np.empty(flat.size, dtype=np.float32)
    loss64 = mlp.gradients(flat, sizes, X, T, "sigmoid", "softmax", grad64)
    loss32 = mlp.gradients(flat.astype(np.float32), sizes, X, T, "sigmoid", "softmax", grad32)
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    np.testing.assert_allclose(grad32, grad64, rtol=1e-4, atol=1e-6)


def test_gradients_reject_bad_buffers():
    sizes = [3, 4, 2]
    flat = np.zeros(network.n_params(sizes))
    X = np.zeros((2, 3))
    T = np.zeros((2, 2))
    with pytest.raises(TypeError, match="dtype"):
        mlp.gradients(flat, sizes, X, T, "sigmoid", "identity", np.zeros(flat.size, np.float32))
    with pytest.raises(ValueError, match="grad_out"):
        mlp.gradients(flat, sizes, X, T, "sigmoid", "identity", np.zeros(flat.size - 1))
    with pytest.raises(ValueError, match="X"):
        mlp.gradients(flat, sizes, np.zeros((2, 4)), T, "sigmoid", "identity", np.zeros_like(flat))
    with pytest.raises(ValueError, match="T"):
        mlp.gradients(flat, sizes, X, np.zeros((2, 3)), "sigmoid", "identity", np.zeros_like(flat))
    with pytest.raises(ValueError, match="hidden"):
        mlp.gradients(flat, sizes, X, T, "softplus", "identity", np.zeros_like(flat))
    with pytest.raises(ValueError, match="output"):
        mlp.gradients(flat, sizes, X, T, "sigmoid", "tanh", np.zeros_like(flat))
    with pytest.raises(ValueError, match="empty"):
        mlp.gradients(flat, sizes, X[:0], T[:0], "sigmoid", "identity", np.zeros_like(flat))


# --------------------------------------------------------------------------- lecture notes


def test_lecture_note_rule_one_sigmoid_step():
    """Sizes [2, 2, 1], sigmoid units, squared error, one sample, one classical step."""
    sizes = [2, 2, 1]
    lr, momentum = 0.25, 0.9
    rng = np.random.default_rng(11)
    flat = random_params(sizes, rng, scale=1.0)
    delta_prev = rng.normal(scale=0.1, size=flat.size)  # the previous weight change
    x = np.array([0.35, 0.9])
    t = np.array([0.5])
    (W0, W1), (b0, b1) = network.views(flat, sizes)

    # Forward by hand; a bias is a weight from a unit whose output is always 1.
    y_hidden = [sigmoid_scalar(sum(x[k] * W0[k, j] for k in range(2)) + b0[j]) for j in range(2)]
    y_out = [
        sigmoid_scalar(sum(y_hidden[j] * W1[j, i] for j in range(2)) + b1[i]) for i in range(1)
    ]
    # delta_j = (t_j - y_j) y_j (1 - y_j) at the output,
    # delta_j = y_j (1 - y_j) sum_i delta_i w_ji at the hidden layer.
    delta_out = [(t[i] - y_out[i]) * y_out[i] * (1 - y_out[i]) for i in range(1)]
    delta_hidden = [
        y_hidden[j] * (1 - y_hidden[j]) * sum(delta_out[i] * W1[j, i] for i in range(1))
        for j in range(2)
    ]
    # Delta w_kj = lr delta_j y_k + momentum Delta w_kj(previous), in the flat layout.
    expected_delta = np.empty_like(flat)
    (dW0, dW1), (db0, db1) = network.views(expected_delta, sizes)
    (pW0, pW1), (pb0, pb1) = network.views(delta_prev, sizes)
    for k in range(2):
        for j in range(2):
            dW0[k, j] = lr * delta_hidden[j] * x[k] + momentum * pW0[k, j]
    for j in range(2):
        db0[j] = lr * delta_hidden[j] * 1.0 + momentum * pb0[j]
        for i in range(1):
            dW1[j, i] = lr * delta_out[i] * y_hidden[j] + momentum * pW1[j, i]
    db1[0] = lr * delta_out[0] + momentum * pb1[0]

    # The gradient is dE/dw_kj = -delta_j y_k.
    grad = np.empty_like(flat)
    loss = mlp.gradients(flat, sizes, x[None, :], t[None, :], "sigmoid", "sigmoid", grad)
    assert loss == pytest.approx(0.5 * (t[0] - y_out[0]) ** 2, rel=1e-14)
    expected_grad = -(expected_delta - momentum * delta_prev) / lr
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-16)

    weights_before = flat.copy()
    state = delta_prev.copy()
    sum_loss, n_correct, _, _ = mlp.train_epoch(
        flat, state, sizes, x[None, :], t[None, :], np.array([0], dtype=np.int64), 1,
        "sigmoid", "sigmoid", lr=lr, momentum=momentum, rule="classical", dampening=0.0,
        weight_decay=0.0, grad_buf=np.empty_like(flat),
    )
    np.testing.assert_allclose(state, expected_delta, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(flat, weights_before + expected_delta, rtol=1e-12, atol=1e-16)
    assert sum_loss == pytest.approx(loss, rel=1e-14)
    assert n_correct == 1  # one output unit: y and t = 1/2 lie on one side of 1/2


# --------------------------------------------------------------------------- train_epoch


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", [1, 4, 10, 32])
def test_train_epoch_walks_order_in_chunks(batch_size, dtype):
    """Chunks of `order`, gradients at the current weights, classical steps, summed losses."""
    sizes = [3, 5, 4]
    lr, momentum = 0.1, 0.8
    rng = np.random.default_rng(batch_size)
    flat = random_params(sizes, rng, dtype)
    state = rng.normal(scale=0.01, size=flat.size).astype(dtype)
    X = rng.normal(size=(10, 3))
    y = rng.integers(0, 4, size=10)
    T = network.encode_targets(y, 4, "softmax", dtype)
    order = rng.permutation(10)

    expected_flat, expected_state = flat.copy(), state.copy()
    expected_loss, expected_correct = 0.0, 0
    grad = np.empty_like(flat)
    for start in range(0, 10, batch_size):
        rows = order[start:start + batch_size]
        out = mlp.forward(expected_flat, sizes, X[rows], "tanh", "softmax")[-1]
        expected_correct += int(np.sum(out.argmax(1) == y[rows]))
        expected_loss += len(rows) * mlp.gradients(
            expected_flat, sizes, X[rows], T[rows], "tanh", "softmax", grad
        )
        expected_state = momentum * expected_state - lr * grad
        expected_flat = expected_flat + expected_state

    sum_loss, n_correct, _, _ = mlp.train_epoch(
        flat, state, sizes, X, T, order, batch_size, "tanh", "softmax", lr=lr,
        momentum=momentum, rule="classical", dampening=0.0, weight_decay=0.0,
        grad_buf=np.empty_like(flat),
    )
    assert flat.dtype == dtype and state.dtype == dtype
    assert type(sum_loss) is float and type(n_correct) is int
    rtol = {np.float32: 1e-5, np.float64: 1e-12}[dtype]
    assert sum_loss == pytest.approx(expected_loss, rel=rtol)
    assert n_correct == expected_correct
    np.testing.assert_allclose(flat, expected_flat, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(state, expected_state, rtol=rtol, atol=rtol)


def test_train_epoch_forwards_optimizer_arguments(monkeypatch):
    import momcore.reference

    calls = []

    def record(w, g, state, **kwargs):
        calls.append((g.copy(), kwargs))
        return True

    monkeypatch.setattr(momcore.reference, "momentum_step", record)
    sizes = [2, 3, 2]
    flat = random_params(sizes, np.random.default_rng(0))
    X = np.arange(10.0).reshape(5, 2) / 10
    T = network.encode_targets(np.array([0, 1, 1, 0, 1]), 2, "sigmoid", np.float64)
    settings = dict(lr=0.05, momentum=0.5, rule="velocity", dampening=0.25, weight_decay=1e-3)
    mlp.train_epoch(
        flat, np.zeros_like(flat), sizes, X, T, np.array([4, 0, 2, 1, 3]), 2, "relu",
        "sigmoid", grad_buf=np.empty_like(flat), **settings,
    )
    assert len(calls) == 3  # chunks of 2, 2 and 1 rows
    for _, kwargs in calls:
        assert kwargs == settings
    grad = np.empty_like(flat)
    mlp.gradients(flat, sizes, X[[3]], T[[3]], "relu", "sigmoid", grad)
    np.testing.assert_array_equal(calls[-1][0], grad)


def test_train_epoch_rejects_bad_arguments():
    sizes = [2, 3, 2]
    flat = np.zeros(network.n_params(sizes))
    X = np.zeros((4, 2))
    T = np.zeros((4, 2))
    common = dict(lr=0.1, momentum=0.9, rule="classical", dampening=0.0, weight_decay=0.0)

    def run(order=np.arange(4), batch_size=1, state=None, grad_buf=None):
        return mlp.train_epoch(
            flat, np.zeros_like(flat) if state is None else state, sizes, X, T, order,
            batch_size, "sigmoid", "identity",
            grad_buf=np.zeros_like(flat) if grad_buf is None else grad_buf, **common,
        )

    with pytest.raises(ValueError, match="batch_size"):
        run(batch_size=0)
    with pytest.raises(ValueError, match="order"):
        run(order=np.array([0, 4]))
    with pytest.raises(ValueError, match="order"):
        run(order=np.array([-1, 0]))
    with pytest.raises(ValueError, match="order"):
        run(order=np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match="state"):
        run(state=np.zeros(flat.size, np.float32))
    with pytest.raises(ValueError, match="grad_buf"):
        run(grad_buf=np.zeros(flat.size + 1))
    assert run(order=np.array([], dtype=np.int64)) == (0.0, 0, 0, False)


def test_online_training_learns_iris():
    """Online learning, 4-8-3 sigmoid/softmax, lr 0.1, momentum 0.9, standardised iris."""
    data = load_iris()
    X = (data.X - data.X.mean(axis=0)) / data.X.std(axis=0)
    sizes = [4, 8, 3]
    flat = np.empty(network.n_params(sizes))
    network.init_params(flat, sizes, "sigmoid", np.random.default_rng(0))
    state = np.zeros_like(flat)
    grad_buf = np.empty_like(flat)
    T = network.encode_targets(data.y, 3, "softmax", flat.dtype)
    shuffle = np.random.default_rng(1)
    losses, accuracy = [], 0.0
    for _ in range(40):
        sum_loss, *_ = mlp.train_epoch(
            flat, state, sizes, X, T, shuffle.permutation(len(X)), 1, "sigmoid", "softmax",
            lr=0.1, momentum=0.9, rule="classical", dampening=0.0, weight_decay=0.0,
            grad_buf=grad_buf,
        )
        losses.append(sum_loss / len(X))
        predicted = mlp.forward(flat, sizes, X, "sigmoid", "softmax")[-1].argmax(axis=1)
        accuracy = np.mean(predicted == data.y)
        if accuracy >= 0.95:
            break
    assert accuracy >= 0.95, f"training accuracy {accuracy:.3f} after {len(losses)} epochs"
    assert losses[-1] < 0.5 * np.log(3)  # well below the loss of a uniform guess


def multilabel_problem(n_rows=32, seed=0):
    """Inputs (n, 4) and three labels per row, each a different function of the inputs."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, 4))
    Y = np.stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0, X[:, 3] < 0.5], axis=1).astype(np.int64)
    return X, Y


@pytest.mark.parametrize("batch_size", [1, 5])
def test_train_epoch_binary_cross_entropy_steps_are_gradients_plus_momentum_step(batch_size):
    from momcore.reference import momentum_step

    sizes = [4, 6, 3]
    X, Y = multilabel_problem(13)
    T = network.encode_targets(Y, 3, "sigmoid", np.float64, loss="binary_cross_entropy")
    rng = np.random.default_rng(batch_size)
    flat = random_params(sizes, rng)
    state = rng.normal(scale=0.01, size=flat.size)
    order = rng.permutation(13)
    settings = dict(lr=0.3, momentum=0.8, rule="nesterov", dampening=0.0, weight_decay=1e-3)

    expected_flat, expected_state = flat.copy(), state.copy()
    expected_loss, expected_correct = 0.0, 0
    grad = np.empty_like(flat)
    for start in range(0, 13, batch_size):
        rows = order[start:start + batch_size]
        out = mlp.forward(expected_flat, sizes, X[rows], "tanh", "sigmoid")[-1]
        for y_row, t_row in zip(out, Y[rows]):
            expected_correct += all(int(y >= 0.5) == t for y, t in zip(y_row, t_row))
        expected_loss += len(rows) * mlp.gradients(
            expected_flat, sizes, X[rows], T[rows], "tanh", "sigmoid", grad,
            loss="binary_cross_entropy")
        momentum_step(expected_flat, grad, expected_state, **settings)

    sum_loss, n_correct, n_steps, stopped = mlp.train_epoch(
        flat, state, sizes, X, T, order, batch_size, "tanh", "sigmoid",
        grad_buf=np.empty_like(flat), loss="binary_cross_entropy", accuracy="threshold",
        **settings)
    assert (n_steps, stopped) == (-(-13 // batch_size), False)
    np.testing.assert_array_equal(flat, expected_flat)
    np.testing.assert_array_equal(state, expected_state)
    assert sum_loss == pytest.approx(expected_loss, rel=1e-12)
    assert n_correct == expected_correct


def test_train_epoch_binary_cross_entropy_learns_multilabel():
    sizes = [4, 8, 3]
    X, Y = multilabel_problem(64)
    T = network.encode_targets(Y, 3, "sigmoid", np.float64, loss="binary_cross_entropy")
    flat = np.empty(network.n_params(sizes))
    network.init_params(flat, sizes, "tanh", np.random.default_rng(0))
    state, grad_buf = np.zeros_like(flat), np.empty_like(flat)
    shuffle = np.random.default_rng(1)
    losses, accuracies = [], []
    for _ in range(60):
        sum_loss, n_correct, _, stopped = mlp.train_epoch(
            flat, state, sizes, X, T, shuffle.permutation(64), 4, "tanh", "sigmoid",
            lr=0.2, momentum=0.9, rule="classical", dampening=0.0, weight_decay=0.0,
            grad_buf=grad_buf, loss="binary_cross_entropy", accuracy="threshold")
        assert not stopped
        losses.append(sum_loss / 64)
        accuracies.append(n_correct / 64)
    # A constant 1/2 on every unit costs 3 log 2 per row.
    assert losses[0] < 3 * np.log(2) + 0.5
    assert losses[-1] < 0.25 * losses[0], losses
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    out = mlp.forward(flat, sizes, X, "tanh", "sigmoid")[-1]
    labels = network.predict_labels(out, multilabel=True)
    assert np.mean(np.all(labels == Y, axis=1)) >= 0.9
    assert accuracies[-1] >= 0.8


def test_train_epoch_default_accuracy_and_bad_names():
    sizes = [2, 3, 2]
    flat = random_params(sizes, np.random.default_rng(2))
    X = np.array([[0.5, -1.0], [1.0, 2.0], [-0.5, 0.3]])
    T = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])  # multilabel rows

    def run(**kwargs):
        return mlp.train_epoch(
            flat.copy(), np.zeros_like(flat), sizes, X, T, np.arange(3), 3, "tanh", "sigmoid",
            lr=0.0, momentum=0.0, rule="classical", dampening=0.0, weight_decay=0.0,
            grad_buf=np.empty_like(flat), loss="binary_cross_entropy", **kwargs)

    out = mlp.forward(flat, sizes, X, "tanh", "sigmoid")[-1]
    argmax_hits = sum(int(np.argmax(y) == np.argmax(t)) for y, t in zip(out, T))
    threshold_hits = sum(int(np.all((y >= 0.5) == (t >= 0.5))) for y, t in zip(out, T))
    assert argmax_hits != threshold_hits  # so that the two modes are told apart below
    assert run()[1] == argmax_hits  # two output units: argmax by default
    assert run(accuracy="argmax")[1] == argmax_hits
    assert run(accuracy="threshold")[1] == threshold_hits
    assert run(accuracy="none")[1] == 0
    with pytest.raises(ValueError, match="accuracy"):
        run(accuracy="top1")


@pytest.mark.parametrize("output, loss", [("softmax", None), ("sigmoid", "binary_cross_entropy")])
def test_nan_output_gives_nan_loss(output, loss):
    """The clamp at tiny must not hide a NaN output (np.maximum propagates NaN)."""
    out = np.array([[np.nan, 0.5], [0.5, 0.5]])
    T = np.array([[0.0, 1.0], [1.0, 0.0]])
    with np.errstate(invalid="ignore"):
        per_row = mlp.per_sample_loss(out, T, output, loss)
    assert np.isnan(per_row[0]) and np.isfinite(per_row[1])

"""The L2 penalty on the weights (MLP(l2=...)): the compiled passes against finite
differences of the penalised loss and against the numpy reference, on both sides of the
gemm threshold, folded and not, float32 and float64; the loss bookkeeping of an epoch."""
from __future__ import annotations

import numpy as np
import pytest

from momcore import MLP, _core
from momcore import _mlp_numpy as ref
from momcore.datasets import load_digits

from test_mlp import (
    BACKEND_RTOL,
    FD_RTOL,
    GRAD_BACKEND_RTOL,
    GRAD_CASES,
    OUTPUTS,
    _assert_gemm_sides,
    _central_differences,
    _flat_gradient,
    _gradient_problem,
    _rel_diff,
)

L2 = 0.7  # large enough that the l2 term is a good part of every gradient


def _penalised(batch, sizes, hidden, output, backend="c"):
    net, X, y = _gradient_problem(batch, sizes, hidden, output, backend=backend)
    net.l2 = L2
    return net, X, y


@pytest.mark.parametrize("batch, sizes, sides", GRAD_CASES)
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("hidden", ["tanh", "relu"])
def test_c_gradients_match_central_differences_of_penalised_loss(hidden, output, batch,
                                                                  sizes, sides):
    _assert_gemm_sides(batch, sizes, sides)
    net, X, y = _penalised(batch, sizes, hidden, output)
    analytic = _flat_gradient(net, X, y)
    approx = _central_differences(net, X, y)  # net.loss includes the l2 term
    error = np.linalg.norm(analytic - approx) / np.linalg.norm(approx)
    assert error < FD_RTOL, f"relative error {error:.2e}"
    # the l2 term matters: without it the gradient is far off
    net.l2 = 0.0
    plain = _flat_gradient(net, X, y)
    assert np.linalg.norm(plain - approx) / np.linalg.norm(approx) > 100 * FD_RTOL


@pytest.mark.parametrize("batch, sizes, sides", GRAD_CASES)
@pytest.mark.parametrize("output", OUTPUTS)
def test_c_gradients_equal_numpy_gradients_with_l2(output, batch, sizes, sides):
    _assert_gemm_sides(batch, sizes, sides)
    c_net, X, y = _penalised(batch, sizes, "tanh", output, backend="c")
    np_net, _, _ = _penalised(batch, sizes, "tanh", output, backend="numpy")
    c_grad, np_grad = _flat_gradient(c_net, X, y), _flat_gradient(np_net, X, y)
    np.testing.assert_allclose(c_grad, np_grad, rtol=GRAD_BACKEND_RTOL,
                               atol=GRAD_BACKEND_RTOL * np.abs(np_grad).max())
    assert c_net.loss(X, y) == pytest.approx(np_net.loss(X, y), rel=1e-13)


def test_biases_get_no_l2_term():
    net, X, y = _penalised(3, [5, 7, 3], "tanh", "softmax")
    _, db = net.gradients(X, y)
    net.l2 = 0.0
    _, db_plain = net.gradients(X, y)
    for mine, plain in zip(db, db_plain):
        np.testing.assert_array_equal(mine, plain)


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return data.X[:300] / 16, data.y[:300]


# batch 16: layer 0 (16*64*40) on gemm, layer 1 (16*40*10) on loops; batch 1: the online
# loops; the full batch: both on gemm
BATCHES = [pytest.param(1, id="online"), pytest.param(16, id="batch16"),
           pytest.param(300, id="full")]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("batch_size", BATCHES)
@pytest.mark.parametrize("rule", ["classical", "nesterov"], ids=["fold", "no-fold"])
def test_backends_agree_after_epochs_with_l2(digits, rule, batch_size, dtype):
    X, y = digits
    assert 16 * 64 * 40 >= _core.GEMM_MIN_MACS > 16 * 40 * 10
    nets, histories = {}, {}
    for backend in ("c", "numpy"):
        # l2/B the same for every batch size: a weight shrinks by lr*0.5 per step
        net = MLP([64, 40, 10], seed=1, dtype=dtype, l2=0.5 * batch_size, backend=backend)
        histories[backend] = net.fit(X, y, epochs=3, batch_size=batch_size, lr=0.01,
                                     momentum=0.9, rule=rule)
        nets[backend] = net
    assert nets["c"].optimizer.folds == (rule == "classical")
    rtol = BACKEND_RTOL[dtype]
    assert _rel_diff(nets["c"].params, nets["numpy"].params) < rtol
    assert _rel_diff(nets["c"].optimizer_state, nets["numpy"].optimizer_state) < rtol
    np.testing.assert_allclose(histories["c"].loss, histories["numpy"].loss, rtol=10 * rtol)
    # the l2 term changed the weights: against the same run without it
    plain = MLP([64, 40, 10], seed=1, dtype=dtype, backend="c")
    plain.fit(X, y, epochs=3, batch_size=batch_size, lr=0.01, momentum=0.9, rule=rule)
    assert _rel_diff(plain.params, nets["c"].params) > 100 * rtol


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("batch_size", [1, 7, 300])
def test_epoch_loss_adds_the_l2_term_of_each_batch(digits, backend, batch_size):
    """With lr = 0 the weights stay put: the epoch's loss is the mean loss plus, per
    batch, l2/2 ||W||^2, over the rows (scikit-learn's accumulated loss)."""
    X, y = digits
    net = MLP([64, 20, 10], seed=2, l2=0.25, backend=backend)
    data_loss = ref.loss_from_output(net.predict_proba(X), np.eye(10)[y], "softmax")
    squares = ref.weight_squares(net.params, net.sizes)
    history = net.fit(X, y, epochs=1, batch_size=batch_size, lr=0.0, momentum=0.0)
    n_batches = -(-len(X) // batch_size)
    expected = data_loss + n_batches * 0.5 * 0.25 * squares / len(X)
    assert history.loss[0] == pytest.approx(expected, rel=1e-12)


def test_net_core_reports_the_epoch_penalty(digits):
    X, y = digits
    net = MLP([64, 20, 10], seed=2, l2=0.25)
    T = net.encode_targets(y, len(X))
    core = net._core_for_fit(10, "none")
    squares = ref.weight_squares(net.params, net.sizes)
    sum_loss, _, steps, _ = core.train_epoch(X, T, np.arange(len(X)), 10, lr=0.0,
                                             momentum=0.0)
    assert core.epoch_penalty == pytest.approx(steps * 0.5 * 0.25 * squares, rel=1e-12)
    assert sum_loss > core.epoch_penalty > 0


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "0.1", True])
def test_bad_l2(value):
    with pytest.raises(ValueError, match="l2"):
        MLP([4, 3], l2=value)
    net = MLP([4, 3])
    with pytest.raises(ValueError, match="l2"):
        net.l2 = value
    assert net.l2 == 0.0


def test_l2_is_saved(tmp_path):
    net = MLP([4, 5, 3], l2=0.125)
    net.save(tmp_path / "m.npz")
    assert MLP.load(tmp_path / "m.npz").l2 == 0.125
    assert "l2=0.125" in repr(net)


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("rule", ["classical", "nesterov"], ids=["fold", "no-fold"])
def test_overflowing_penalty_stops_before_the_step(backend, rule):
    """A weight whose square overflows, on an input that is always 0: the data loss is
    finite, the l2 term is not; training stops before any step."""
    X = np.zeros((6, 3))
    X[:, 1:] = np.random.default_rng(0).normal(size=(6, 2))
    y = np.arange(6) % 2
    net = MLP([3, 4, 2], hidden="tanh", l2=1e-3, backend=backend)
    net.weights[0][0, 0] = 1e200
    before = net.params.copy()
    with pytest.raises(FloatingPointError):
        net.fit(X, y, epochs=1, batch_size=2, lr=0.1, rule=rule)
    assert net.params.tobytes() == before.tobytes()
    assert net.steps == 0


@pytest.mark.parametrize("sizes", [[64, 40, 10], [64, 600, 10]],
                         ids=["loops-nesterov-folded", "gemm-layer-not-folded"])
@pytest.mark.parametrize("l2", [0.0, 0.5])
def test_online_nesterov_agrees_with_reference(digits, sizes, l2):
    """Online Nesterov steps are folded into the backward loops unless a layer runs on
    gemm at one row (64*600 >= GEMM_MIN_MACS); both agree with the reference."""
    assert (sizes[0] * sizes[1] >= _core.GEMM_MIN_MACS) == (sizes[1] == 600)
    X, y = digits[0][:100], digits[1][:100]
    nets = {}
    for backend in ("c", "numpy"):
        net = MLP(sizes, seed=4, l2=l2, backend=backend)
        net.fit(X, y, epochs=2, batch_size=1, lr=0.01, momentum=0.9, rule="nesterov")
        nets[backend] = net
    assert _rel_diff(nets["c"].params, nets["numpy"].params) < BACKEND_RTOL[np.float64]
    assert _rel_diff(nets["c"].optimizer_state, nets["numpy"].optimizer_state) < 1e-9
    np.testing.assert_allclose(nets["c"].history_.loss, nets["numpy"].history_.loss,
                               rtol=1e-12)


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: d.__name__)
def test_gradient_shares_add_up_to_the_gradient_of_the_global_batch(backend, dtype):
    # What each process of a data-parallel run computes: shares of one batch of 7 rows
    # (one of them empty), the l2 term in one share only.
    rng = np.random.default_rng(4)
    net = MLP([5, 7, 3], l2=0.3, dtype=dtype, seed=1, backend=backend)
    X = rng.standard_normal((20, 5)).astype(dtype)
    y = rng.integers(0, 3, 20)
    T = net.encode_targets(y, 20)
    batch = np.array([3, 7, 1, 19, 4, 0, 12])
    dW, db = net.gradients(X[batch], y[batch])
    expected = np.concatenate([a.ravel() for pair in zip(dW, db) for a in pair])
    total, loss, right = np.zeros_like(net.params), 0.0, 0
    for rows, l2 in ((batch[:3], 0.3), (batch[3:], 0.0), (batch[:0], 0.0)):
        grad = np.full_like(net.params, np.nan)  # every element is written
        kernel = net.gradient_kernel(grad, 4, accuracy="argmax", l2=0.0)
        part_loss, part_right, squares = kernel.gradient_share(X, T, rows, 7, l2)
        assert (squares > 0) == (l2 > 0)
        total += grad
        loss += part_loss + 0.5 * l2 * squares
        right += part_right
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert np.abs(total - expected).max() <= tol * np.abs(expected).max()
    assert loss / 7 == pytest.approx(net.loss(X[batch], y[batch]), rel=tol)
    assert right == int(np.sum(net.predict(X[batch]) == y[batch]))


def test_a_gradient_share_refuses_rows_it_cannot_take():
    net = MLP([2, 3, 2])
    X, T = np.ones((4, 2)), net.encode_targets(np.array([0, 1, 0, 1]), 4)
    core = _core.NetCore(net.params, net.optimizer_state, np.zeros_like(net.params),
                         net.sizes, net.hidden, net.output, 2)
    with pytest.raises(ValueError, match="not a row of X"):
        core.gradient_share(X, T, np.array([0, 4]), 2)
    with pytest.raises(ValueError, match="at most 2 rows"):
        core.gradient_share(X, T, np.array([0, 1, 2]), 3)
    with pytest.raises(ValueError, match="divisor"):
        core.gradient_share(X, T, np.array([0, 1]), 1)
    with pytest.raises(TypeError, match="int64"):
        core.gradient_share(X, T, np.array([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match="l2"):
        core.gradient_share(X, T, np.array([0, 1]), 2, -1.0)

"""The online (batch 1) training epoch of the compiled MLP passes against the same
samples stepped one epoch call at a time: within an epoch, each folded step's sweep of
the first layer also forms the next sample's product with the updated weights, which a
call of one sample never does (its forward pass forms it). Both sum the same terms in
the same order, so the weights and the state agree bit for bit; products with the
weights before the step would differ by the step itself. Only the l2 penalty of a
call's first sample is summed by a sweep of its own (the others by the step's sweep),
so with l2 the sums of losses agree to rounding."""
from __future__ import annotations

import numpy as np
import pytest

from momcore import _core

SIZES = [[5, 7, 3], [6, 9, 7, 4], [4, 40, 3]]


def _close(dtype):
    """Tolerances of a few units in the last place of a sum of 23 losses."""
    return dict(rtol=1e-12, atol=0) if dtype == np.float64 else dict(rtol=1e-5, atol=0)


def _n_params(sizes):
    return sum(sizes[i] * sizes[i + 1] + sizes[i + 1] for i in range(len(sizes) - 1))


def _net(sizes, dtype, hidden, l2, with_grad):
    rng = np.random.default_rng(3)
    n = _n_params(sizes)
    params = (0.5 * rng.standard_normal(n)).astype(dtype)
    state = np.zeros(n, dtype)
    grad = np.zeros(n, dtype) if with_grad else None
    core = _core.NetCore(params, state, grad, sizes, hidden, "softmax", 1, l2=l2)
    return core, params, state


def _data(sizes, dtype, n=23, nan_row=None):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    if nan_row is not None:
        X[nan_row, 1] = np.nan
    T = np.eye(sizes[-1], dtype=dtype)[rng.integers(0, sizes[-1], n)]
    return X, T, rng.permutation(n)


# (rule, whether a gradient buffer is given): classical folded into the backward pass,
# Nesterov folded into its loops, classical through the gradient buffer and the step
RULES = [("classical", False), ("nesterov", True), ("classical", True)]


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hidden", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("l2", [0.0, 0.01])
@pytest.mark.parametrize("rule,with_grad", RULES, ids=["classical-fold", "nesterov",
                                                       "classical-grad"])
def test_epoch_equals_one_sample_calls(sizes, dtype, hidden, l2, rule, with_grad):
    X, T, order = _data(sizes, dtype)
    hyper = dict(lr=0.05, momentum=0.9, rule=rule)
    core, params, state = _net(sizes, dtype, hidden, l2, with_grad)
    loss, correct, steps, stopped = core.train_epoch(X, T, order, 1, **hyper)
    one, one_params, one_state = _net(sizes, dtype, hidden, l2, with_grad)
    sums = [0.0, 0, 0]
    for row in order:
        r = one.train_epoch(X, T, np.array([row]), 1, **hyper)
        sums = [sums[0] + r[0], sums[1] + r[1], sums[2] + r[2]]
    assert not stopped and steps == len(order) == sums[2]
    assert correct == sums[1]
    if l2 == 0:
        assert loss == sums[0]
    else:
        np.testing.assert_allclose(loss, sums[0], **_close(dtype))
    np.testing.assert_array_equal(params, one_params)
    np.testing.assert_array_equal(state, one_state)
    assert not np.array_equal(params, _net(sizes, dtype, hidden, l2, with_grad)[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule,with_grad", RULES[:2], ids=["classical-fold", "nesterov"])
def test_epoch_stops_at_a_nonfinite_sample_as_one_sample_calls_do(dtype, rule, with_grad):
    sizes = [5, 7, 3]
    X, T, order = _data(sizes, dtype, nan_row=11)
    stop_at = int(np.flatnonzero(order == 11)[0])
    assert 0 < stop_at < len(order) - 1
    hyper = dict(lr=0.05, momentum=0.9, rule=rule)
    core, params, state = _net(sizes, dtype, "tanh", 0.0, with_grad)
    loss, correct, steps, stopped = core.train_epoch(X, T, order, 1, **hyper)
    one, one_params, one_state = _net(sizes, dtype, "tanh", 0.0, with_grad)
    total = 0.0
    for row in order[:stop_at]:
        total += one.train_epoch(X, T, np.array([row]), 1, **hyper)[0]
    assert one.train_epoch(X, T, np.array([order[stop_at]]), 1, **hyper)[3]
    assert stopped and steps == stop_at
    assert loss == total
    np.testing.assert_array_equal(params, one_params)
    np.testing.assert_array_equal(state, one_state)


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("l2", [0.0, 0.01])
@pytest.mark.parametrize("rule,with_grad", RULES[:2], ids=["classical-fold", "nesterov"])
def test_epoch_equals_one_sample_calls_on_every_simd_path(sizes, dtype, l2, rule, with_grad):
    hyper = dict(lr=0.05, momentum=0.9, rule=rule)
    X, T, order = _data(sizes, dtype)
    before = _core.simd_path()
    try:
        for path in _core.simd_supported():
            _core.select_simd(path)
            core, params, state = _net(sizes, dtype, "tanh", l2, with_grad)
            core.train_epoch(X, T, order, 1, **hyper)
            one, one_params, one_state = _net(sizes, dtype, "tanh", l2, with_grad)
            for row in order:
                one.train_epoch(X, T, np.array([row]), 1, **hyper)
            np.testing.assert_array_equal(params, one_params, err_msg=path)
            np.testing.assert_array_equal(state, one_state, err_msg=path)
    finally:
        _core.select_simd(before)

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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_checked_epoch_stops_before_a_bad_row_as_one_sample_calls_do(dtype, bad):
    sizes = [5, 7, 3]
    X, T, order = _data(sizes, dtype)
    X[order[6], 2] = bad
    hyper = dict(lr=0.05, momentum=0.9)
    core, params, state = _net(sizes, dtype, "tanh", 0.0, False)
    with pytest.raises(_core.NonFiniteRows, match="order\\[6\\]; the 6 steps"):
        core.train_epoch(X, T, order, 1, check_rows=True, **hyper)
    assert core.steps_applied == 6
    one, one_params, one_state = _net(sizes, dtype, "tanh", 0.0, False)
    for row in order[:6]:
        one.train_epoch(X, T, np.array([row]), 1, check_rows=True, **hyper)
    np.testing.assert_array_equal(params, one_params)
    np.testing.assert_array_equal(state, one_state)
    # without the check the row is trained on: NaN makes its loss NaN, which stops the
    # epoch before its step; inf saturates tanh, the step takes it into the weights, and
    # the next loss stops the epoch
    assert core.train_epoch(X, T, order, 1, **hyper)[2:] == (6 if bad != bad else 7, True)


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


# ---- layers narrower than, as wide as and wider than a vector ------------------------
#
# The compiled passes take a layer whose width is at most a vector's lanes (2 to 16 by
# dtype and SIMD path) as masked vectors: rows exactly as wide as a vector one vector
# each, narrower rows as flat chunks of whole vectors, wider ones row by row with the
# last vector masked. WIDTHS covers every width up to one past the widest vector of
# any path, so that each path meets each case and its boundaries; a first layer of
# 200 inputs splits a narrow layer's step into several chunks (of 32 rows).

WIDTHS = range(1, 18)
HIDDEN = ["sigmoid", "tanh", "relu"]
OUTPUTS = ["softmax", "sigmoid", "identity"]


def _targets(output, n, width, rng, dtype):
    if output == "softmax":
        return np.eye(width, dtype=dtype)[rng.integers(0, width, n)]
    if output == "sigmoid":
        return (rng.random((n, width)) < 0.5).astype(dtype)
    return rng.standard_normal((n, width)).astype(dtype)


def _width_cases():
    """(sizes, hidden, output, l2): every width as the hidden and as the output layer,
    each with every hidden activation and output, l2 on every other one; and networks
    of one layer, and with a first layer on gemm."""
    for width in WIDTHS:
        for hidden in HIDDEN:
            for output in OUTPUTS:
                l2 = 0.01 if (width + len(hidden)) % 2 else 0.0
                yield [6, width, 4], hidden, output, l2
                yield [6, 5, width], hidden, output, l2
    for width in (3, 7):  # narrow layers over several chunks
        yield [200, width, 2], "tanh", "softmax", 0.01
        yield [200, width, 2], "sigmoid", "identity", 0.0
    for width in (1, 3, 8, 9, 16, 17):  # one layer: its look-ahead is the output
        yield [5, width], "tanh", OUTPUTS[width % 3], 0.01 * (width % 2)
    for width in (3, 17):  # a first layer on gemm (B I O >= GEMM_MIN_MACS at B = 1)
        yield [300, 120, width], "relu", "softmax", 0.0


def _width_net(sizes, dtype, hidden, output, l2, with_grad):
    rng = np.random.default_rng(7)
    n = _n_params(sizes)
    params = (0.5 * rng.standard_normal(n)).astype(dtype)
    state = (0.01 * rng.standard_normal(n)).astype(dtype)
    grad = np.zeros(n, dtype) if with_grad else None
    return _core.NetCore(params, state, grad, sizes, hidden, output, 1, l2=l2), params, state


def _width_data(sizes, output, dtype, n=9):
    rng = np.random.default_rng(8)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    return X, _targets(output, n, sizes[-1], rng, dtype), rng.permutation(n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule,with_grad", RULES, ids=["classical-fold", "nesterov",
                                                       "classical-grad"])
def test_every_width_epoch_equals_one_sample_calls(simd, dtype, rule, with_grad):
    assert 300 * 120 >= _core.GEMM_MIN_MACS > 200 * 7  # the cases' first layers
    hyper = dict(lr=0.05, momentum=0.9, rule=rule)
    for sizes, hidden, output, l2 in _width_cases():
        X, T, order = _width_data(sizes, output, dtype)
        core, params, state = _width_net(sizes, dtype, hidden, output, l2, with_grad)
        before = params.copy()
        loss, correct, steps, _ = core.train_epoch(X, T, order, 1, **hyper)
        one, one_params, one_state = _width_net(sizes, dtype, hidden, output, l2, with_grad)
        sums = [0.0, 0]
        for row in order:
            r = one.train_epoch(X, T, np.array([row]), 1, **hyper)
            sums = [sums[0] + r[0], sums[1] + r[1]]
        case = f"{simd} {sizes} {hidden} {output} l2={l2}"
        assert steps == len(order) and correct == sums[1], case
        np.testing.assert_array_equal(params, one_params, err_msg=case)
        np.testing.assert_array_equal(state, one_state, err_msg=case)
        np.testing.assert_allclose(loss, sums[0], **_close(dtype), err_msg=case)
        assert not np.array_equal(params, before), case


# an online epoch of 9 samples against the numpy backend's, relative to the largest
# weight: rounding only (a lane read from the wrong row or past it shows at 1e-3 or more)
EPOCH_RTOL = {np.float32: 2e-5, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule,with_grad", RULES, ids=["classical-fold", "nesterov",
                                                       "classical-grad"])
def test_every_width_epoch_agrees_with_the_numpy_backend(simd, dtype, rule, with_grad):
    from momcore import _mlp_numpy

    # lr 0.01: with larger steps an identity output over relu units grows fast enough
    # to amplify rounding differences into the tolerance within 9 samples
    hyper = dict(lr=0.01, momentum=0.9, rule=rule)
    for sizes, hidden, output, l2 in _width_cases():
        X, T, order = _width_data(sizes, output, dtype)
        core, params, state = _width_net(sizes, dtype, hidden, output, l2, with_grad)
        _, ref_params, ref_state = _width_net(sizes, dtype, hidden, output, l2, with_grad)
        loss, correct, steps, _ = core.train_epoch(X, T, order, 1, **hyper)
        ref = _mlp_numpy.train_epoch(ref_params, ref_state, sizes, X, T, order, 1, hidden,
                                     output, dampening=0.0, weight_decay=0.0, l2=l2,
                                     grad_buf=np.zeros_like(ref_params), **hyper)
        case = f"{simd} {sizes} {hidden} {output} l2={l2}"
        assert (steps, correct) == (ref[2], ref[1]), case
        scale = np.abs(ref_params).max()
        assert np.abs(params - ref_params).max() <= EPOCH_RTOL[dtype] * scale, case
        assert (np.abs(state - ref_state).max()
                <= EPOCH_RTOL[dtype] * np.abs(ref_state).max()), case
        np.testing.assert_allclose(loss, ref[0], rtol=10 * EPOCH_RTOL[dtype], err_msg=case)


# outputs of the forward pass against the numpy backend's, relative to the largest
# (vmath's exp and tanh within a few ulp)
FORWARD_RTOL = {np.float32: 1e-5, np.float64: 1e-13}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_width_forward_agrees_with_the_numpy_backend(simd, dtype):
    from momcore import _mlp_numpy

    rng = np.random.default_rng(9)
    for sizes, hidden, output, _ in _width_cases():
        n = _n_params(sizes)
        params = (0.5 * rng.standard_normal(n)).astype(dtype)
        # rows enough for several per batch, inputs up to far into the saturation
        X = (rng.standard_normal((11, sizes[0])) * np.geomspace(0.1, 20, 11)[:, None])
        X = X.astype(dtype)
        core = _core.NetCore(params, np.zeros_like(params), None, sizes, hidden, output, 4)
        y = core.predict(X, np.empty((len(X), sizes[-1]), dtype))
        ref = _mlp_numpy.forward(params, sizes, X, hidden, output)[-1]
        case = f"{simd} {sizes} {hidden} {output}"
        assert np.isfinite(y).all(), case
        assert np.abs(y - ref).max() <= FORWARD_RTOL[dtype] * np.abs(ref).max(), case

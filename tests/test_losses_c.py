"""Losses and accuracy modes of the compiled MLP passes (NetCore): binary cross-entropy
against its formula and central finite differences, multilabel targets, accuracy
modes, and training epochs against gradients + the reference step."""
from __future__ import annotations

import numpy as np
import pytest

from momcore import _core
from momcore import reference as ref

TINY = np.finfo(np.float64).tiny


def _n_params(sizes):
    return sum(sizes[i] * sizes[i + 1] + sizes[i + 1] for i in range(len(sizes) - 1))


def _core_for(sizes, hidden="tanh", output="sigmoid", max_batch=128, seed=0, scale=0.5,
              **kw):
    rng = np.random.default_rng(seed)
    n = _n_params(sizes)
    params = scale * rng.standard_normal(n)
    return _core.NetCore(params, np.zeros(n), np.zeros(n), sizes, hidden, output, max_batch,
                         **kw)


def bce(y, t):
    """The documented per-sample binary cross-entropy, summed over units, written in
    plain numpy: -sum t log max(y, tiny) + (1 - t) log max(1 - y, tiny), a term with a
    zero coefficient skipped."""
    on = np.where(t != 0, t * np.log(np.maximum(y, TINY)), 0.0)
    off = np.where(1 - t != 0, (1 - t) * np.log(np.maximum(1 - y, TINY)), 0.0)
    return -(on + off).sum(axis=1)


def _mean_bce(core, X, T):
    y = core.predict(X, np.empty((X.shape[0], T.shape[1])))
    return bce(y, T).mean()


def _data(sizes, B, seed=1, soft=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, sizes[0]))
    T = rng.random((B, sizes[-1])) if soft else (rng.random((B, sizes[-1])) < 0.5) * 1.0
    return X, T


# (sizes, batch): batch 1, a small batch of plain loops, and a batch whose first layer
# product (B*I*O multiply-adds) reaches the gemm threshold while the second stays below
CASES = [([3, 5, 2], 1), ([3, 5, 4], 7), ([20, 40, 5], 64)]


def test_cases_straddle_the_gemm_threshold():
    (s0, b0), (s1, b1), (s2, b2) = CASES
    assert b1 * s1[0] * s1[1] < _core.GEMM_MIN_MACS
    assert b2 * s2[0] * s2[1] >= _core.GEMM_MIN_MACS > b2 * s2[1] * s2[2]


@pytest.mark.parametrize("soft", [False, True], ids=["0/1 targets", "soft targets"])
@pytest.mark.parametrize("sizes, B", CASES, ids=lambda c: str(c))
def test_bce_gradient_matches_central_differences(simd, sizes, B, soft):
    core = _core_for(sizes, loss="binary_cross_entropy")
    X, T = _data(sizes, B, soft=soft)
    loss, _ = core.gradients(X, T)
    np.testing.assert_allclose(loss, _mean_bce(core, X, T), rtol=1e-13)
    grad = core.grad.copy()
    p = core.params
    rng = np.random.default_rng(2)
    idx = rng.choice(p.size, size=min(p.size, 80), replace=False)
    eps = 1e-6
    numeric = np.empty(idx.size)
    for k, i in enumerate(idx):
        keep = p[i]
        p[i] = keep + eps
        up = _mean_bce(core, X, T)
        p[i] = keep - eps
        down = _mean_bce(core, X, T)
        p[i] = keep
        numeric[k] = (up - down) / (2 * eps)
    np.testing.assert_allclose(grad[idx], numeric, rtol=1e-5, atol=1e-8)


def test_bce_loss_formula_with_saturated_outputs():
    # One output unit driven to exactly 0 or 1: the clamp at tiny keeps the loss finite.
    sizes = [1, 1]
    n = _n_params(sizes)
    params = np.array([1.0, 0.0])  # y = sigmoid(x)
    core = _core.NetCore(params, np.zeros(n), np.zeros(n), sizes, "identity", "sigmoid", 4,
                         loss="binary_cross_entropy")
    X = np.array([[800.0], [-800.0], [800.0], [0.0]])
    T = np.array([[0.0], [1.0], [1.0], [0.25]])
    y = core.predict(X, np.empty((4, 1)))
    assert y[0, 0] == 1.0 and y[1, 0] == 0.0
    loss, correct = core.gradients(X, T)
    want = np.array([-np.log(TINY), -np.log(TINY), 0.0,
                     -(0.25 * np.log(0.5) + 0.75 * np.log(0.5))])
    np.testing.assert_allclose(bce(y, T), want, rtol=1e-15)
    np.testing.assert_allclose(loss, want.mean(), rtol=1e-15)
    # delta = (y - t)/B: dE/dw = mean over rows of (y - t) x, dE/db = mean of (y - t)
    np.testing.assert_allclose(core.grad, [((y - T) * X).mean(), (y - T).mean()],
                               rtol=1e-15)
    # threshold (one output unit): rows 0 and 1 on the wrong side, row 2 right, row 3
    # wrong (y = 1/2 counts as class 1, t = 0.25 as class 0)
    assert correct == 1


def test_multilabel_threshold_accuracy_counts_rows_with_every_unit_right():
    sizes = [4, 6, 3]
    X, T = _data(sizes, 50, seed=3)
    y = _core_for(sizes, seed=3, scale=1.5).predict(X, np.empty((50, 3)))
    want = int(np.all((y >= 0.5) == (T >= 0.5), axis=1).sum())
    argmax = int((y.argmax(axis=1) == T.argmax(axis=1)).sum())
    assert 0 < want < 50 and want != argmax  # the two modes count differently here
    for accuracy, expected in (("threshold", want), ("argmax", argmax), ("none", 0)):
        core = _core_for(sizes, seed=3, scale=1.5, loss="binary_cross_entropy",
                         accuracy=accuracy)
        loss, correct = core.gradients(X, T)
        assert correct == expected, accuracy
        np.testing.assert_allclose(loss, bce(y, T).mean(), rtol=1e-13)
        total, correct_epoch, steps, stopped = core.train_epoch(
            X, T, np.arange(50, dtype=np.int64), 50, lr=0.0, momentum=0.0)
        assert (correct_epoch, steps, stopped) == (expected, 1, False)
        np.testing.assert_allclose(total, bce(y, T).sum(), rtol=1e-13)


def test_defaults_follow_the_registry_and_the_output_width():
    assert _core_for([2, 3]).loss == "squared_error"
    assert _core_for([2, 3], output="softmax").loss == "cross_entropy"
    assert _core_for([2, 3], output="identity").loss == "squared_error"
    assert _core_for([2, 3]).accuracy == "argmax"
    assert _core_for([2, 1]).accuracy == "threshold"
    assert _core_for([2, 3], loss="binary_cross_entropy").loss == "binary_cross_entropy"


@pytest.mark.parametrize("kw, match", [
    (dict(output="softmax", loss="binary_cross_entropy"), "does not pair with output"),
    (dict(output="identity", loss="cross_entropy"), "does not pair with output"),
    (dict(loss="hinge"), "loss must be one of"),
    (dict(accuracy="top5"), "accuracy must be one of 'none', 'argmax', 'threshold'"),
    (dict(hidden="gelu"), "hidden must be one of"),
    (dict(output="tanh"), "output must be one of"),
])
def test_bad_loss_accuracy_or_activation_is_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        _core_for([2, 3], **kw)


def test_squared_error_delta_by_hand_is_unchanged():
    # one identity unit: E = 1/2 (t - y)^2, dE/dw = (y - t) x, dE/db = y - t
    core = _core.NetCore(np.array([2.0, 1.0]), np.zeros(2), np.zeros(2), [1, 1], "identity",
                         "identity", 1)
    loss, correct = core.gradients(np.array([[3.0]]), np.array([[5.0]]))
    assert loss == 0.5 * (5.0 - 7.0) ** 2 and correct == 1  # y = 7 >= 1/2, t >= 1/2
    np.testing.assert_array_equal(core.grad, [2.0 * 3.0, 2.0])


@pytest.mark.parametrize("rule, hyper", [
    ("classical", dict(lr=0.3, momentum=0.9)),  # the step folded into the products
    ("velocity", dict(lr=0.3, momentum=0.8, dampening=0.25, weight_decay=1e-3)),
    ("nesterov_velocity", dict(lr=0.1, momentum=0.9)),
])
@pytest.mark.parametrize("sizes, batch", [([3, 5, 4], 1), ([3, 5, 4], 7), ([20, 40, 5], 64)],
                         ids=str)
def test_train_epoch_with_bce_equals_gradients_and_reference_steps(simd, sizes, batch, rule,
                                                                  hyper):
    n_rows = 3 * batch + 2  # a last, smaller batch
    X, T = _data(sizes, n_rows, seed=5)
    order = np.random.default_rng(6).permutation(n_rows).astype(np.int64)
    epoch = _core_for(sizes, max_batch=batch, loss="binary_cross_entropy")
    loop = _core_for(sizes, max_batch=batch, loss="binary_cross_entropy")
    total, correct, steps, stopped = epoch.train_epoch(X, T, order, batch, rule=rule, **hyper)
    want_total, want_correct = 0.0, 0
    for start in range(0, n_rows, batch):
        rows = order[start:start + batch]
        loss, c = loop.gradients(X[rows], T[rows])
        want_total += loss * rows.size
        want_correct += c
        ref.momentum_step(loop.params, loop.grad, loop.state, rule=rule, **hyper)
    assert (steps, stopped, correct) == (-(-n_rows // batch), False, want_correct)
    np.testing.assert_allclose(total, want_total, rtol=1e-12)
    np.testing.assert_allclose(epoch.params, loop.params, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(epoch.state, loop.state, rtol=1e-12, atol=1e-15)

"""The compiled momentum step against the numpy reference, and against hand-worked math."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import DTYPES, RTOL, RULES

import momcore
from momcore import _core
from momcore import reference as ref
from momcore import registry

SIZES = [0, 1, 7, 15, 16, 17, 31, 33, 63, 65, 1000, 65537, 2**20 + 3]
STEPS = 3
HYPER = dict(lr=0.05, momentum=0.9)


def _hyper(rule):
    """HYPER, with a dampening for the rules that take one."""
    return {**HYPER, "dampening": 0.1} if rule in registry.rules_taking("dampening") else HYPER


def _operands(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(n).astype(dtype)
    state = np.zeros(n, dtype)
    # Positive gradients keep every state element away from zero (no cancellation),
    # so a skipped element shows as a zero state.
    grads = [(0.5 + np.abs(rng.standard_normal(n))).astype(dtype) for _ in range(STEPS)]
    return w, state, grads


def _run_both(n, dtype, rule, weight_decay, **extra):
    w, s, grads = _operands(n, dtype)
    w_ref, s_ref = w.copy(), s.copy()
    for g in grads:
        assert momcore.momentum_step(w, g, s, rule=rule, weight_decay=weight_decay,
                                     **_hyper(rule), **extra) is True
        assert ref.momentum_step(w_ref, g, s_ref, rule=rule, weight_decay=weight_decay,
                                 **_hyper(rule), **extra) is True
    return (w, s), (w_ref, s_ref)


def _assert_same(got, want):
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b, strict=True)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01], ids=["no_wd", "wd"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("rule", RULES)
def test_matches_reference(rule, dtype, n, weight_decay):
    got, want = _run_both(n, dtype, rule, weight_decay)
    _assert_same(got, want)
    # Every element's state was written, tail included (it starts at zero).
    assert np.all(got[1] != 0)


@pytest.mark.parametrize("n", [1, 17, 33, 65, 1000, 65537 + 15])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("rule", RULES)
def test_every_simd_path_matches_reference(simd, rule, dtype, n):
    got, want = _run_both(n, dtype, rule, 0.01)
    _assert_same(got, want)


@pytest.mark.parametrize("offset", [1, 3, 5])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_unaligned_start_matches_reference(simd, dtype, offset):
    # Views starting a few elements into a buffer: the vector loop meets a
    # start that is not on a vector boundary.
    n = 1000 + offset
    w, s, grads = _operands(n, dtype)
    w_ref, s_ref = w.copy(), s.copy()
    for g in grads:
        momcore.momentum_step(w[offset:], g[offset:], s[offset:], **HYPER)
        ref.momentum_step(w_ref[offset:], g[offset:], s_ref[offset:], **HYPER)
    _assert_same((w, s), (w_ref, s_ref))


@pytest.mark.parametrize("shape", [(), (1,), (3, 5), (2, 3, 7), (4, 1, 9, 2)],
                         ids=lambda s: "x".join(map(str, s)) or "0d")
def test_any_shape(shape):
    rng = np.random.default_rng(1)
    w, g = rng.standard_normal(shape), rng.standard_normal(shape)
    s = np.zeros(shape)
    w_ref, s_ref = w.copy(), s.copy()
    for _ in range(2):
        momcore.momentum_step(w, g, s, rule="nesterov", **HYPER)
        ref.momentum_step(w_ref, g, s_ref, rule="nesterov", **HYPER)
    _assert_same((w, s), (w_ref, s_ref))
    assert w.shape == shape


# ---- hand-worked examples ----------------------------------------------------------


def test_one_step_worked_example():
    # w = 3.56, lr = 0.01, momentum = 0.5, previous step 0.044, gradient -2.70
    # (descent direction +2.70): w = 3.56 + 0.027 + 0.022 = 3.609.
    for impl in (momcore, ref):
        w, g, s = np.array([3.56]), np.array([-2.70]), np.array([0.044])
        impl.momentum_step(w, g, s, lr=0.01, momentum=0.5, rule="one_step")
        assert w[0] == pytest.approx(3.609, abs=1e-12)
        assert s[0] == pytest.approx(0.027, abs=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_classical_sequence_by_hand(dtype):
    # lr = 1/4, momentum = 1/2, g = 1 each step; dyadic numbers, so exact:
    # Delta: -1/4, -1/8-1/4 = -3/8, -3/16-1/4 = -7/16; w: 3/4, 3/8, -1/16.
    w, g, s = np.ones(5, dtype), np.ones(5, dtype), np.zeros(5, dtype)
    deltas, weights = [], []
    for _ in range(3):
        momcore.momentum_step(w, g, s, lr=0.25, momentum=0.5)
        deltas.append(s[0])
        weights.append(w[0])
    assert deltas == [-0.25, -0.375, -0.4375]
    assert weights == [0.75, 0.375, -0.0625]


def test_nesterov_ema_velocity_first_steps_by_hand():
    g = np.array([1.0])
    w, s = np.array([1.0]), np.array([0.0])
    momcore.momentum_step(w, g, s, lr=0.25, momentum=0.5, rule="nesterov")
    assert (s[0], w[0]) == (-0.25, 1.0 + 0.5 * -0.25 - 0.25)
    # momcore starts the velocity at zero and dampens from the first step.
    w, s = np.array([1.0]), np.array([0.0])
    momcore.momentum_step(w, g, s, lr=0.25, momentum=0.5, rule="velocity", dampening=0.5)
    assert (s[0], w[0]) == (0.5, 1.0 - 0.125)
    w, s = np.array([1.0]), np.array([0.0])
    momcore.momentum_step(w, g, s, lr=0.25, momentum=0.75, rule="ema")
    assert (s[0], w[0]) == (0.25, 1.0 - 0.0625)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_nesterov_velocity_by_hand(dtype):
    # PyTorch's Nesterov (lr outside the buffer): buf = m*buf + g' ; w -= lr*(g' + m*buf).
    # Every value below is a short binary fraction, exact in float32 and float64.
    w, g, s = (np.array([x], dtype) for x in (1.0, 0.5, 0.25))
    momcore.momentum_step(w, g, s, lr=0.5, momentum=0.5, weight_decay=0.5,
                          rule="nesterov_velocity")
    # g' = 0.5 + 0.5*1 = 1; s = 0.5*0.25 + 1 = 1.125; w = 1 - 0.5*(1 + 0.5625) = 0.21875
    assert (s[0], w[0], g[0]) == (1.125, 0.21875, 0.5)
    momcore.momentum_step(w, g, s, lr=0.5, momentum=0.5, rule="nesterov_velocity")
    # s = 0.5625 + 0.5 = 1.0625; w = 0.21875 - 0.5*(0.5 + 0.53125) = -0.296875
    assert (s[0], w[0]) == (1.0625, -0.296875)


def test_nesterov_velocity_equals_nesterov_at_constant_lr():
    # With Delta = -lr*v the two Nesterov forms are the same iteration (up to rounding).
    rng = np.random.default_rng(4)
    grads = rng.standard_normal((6, 40))
    w_a, s_a = rng.standard_normal(40), np.zeros(40)
    w_b, s_b = w_a.copy(), np.zeros(40)
    for g in grads:
        momcore.momentum_step(w_a, g, s_a, lr=0.1, momentum=0.9, rule="nesterov")
        momcore.momentum_step(w_b, g, s_b, lr=0.1, momentum=0.9, rule="nesterov_velocity")
    np.testing.assert_allclose(w_b, w_a, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(-0.1 * s_b, s_a, rtol=1e-13, atol=1e-15)


def test_weight_decay_is_coupled_by_hand():
    w, g, s = np.array([2.0]), np.array([0.5]), np.array([0.0])
    momcore.momentum_step(w, g, s, lr=0.25, momentum=0.5, weight_decay=0.25)
    # g' = 0.5 + 0.25*2 = 1; Delta = -0.25; w = 1.75; g itself unchanged.
    assert (s[0], w[0], g[0]) == (-0.25, 1.75, 0.5)


def test_classical_equals_velocity_at_constant_lr_and_differs_when_lr_changes():
    rng = np.random.default_rng(3)
    grads = rng.standard_normal((6, 50))
    w0 = rng.standard_normal(50)

    def run(rule, lrs):
        w, s = w0.copy(), np.zeros(50)
        for g, lr in zip(grads, lrs):
            momcore.momentum_step(w, g, s, lr=lr, momentum=0.9, rule=rule)
        return w

    constant = [0.1] * 6
    np.testing.assert_allclose(run("classical", constant), run("velocity", constant),
                               rtol=1e-13, atol=1e-13)
    changing = [0.1, 0.1, 0.1, 0.01, 0.01, 0.01]
    assert np.abs(run("classical", changing) - run("velocity", changing)).max() > 1e-3


def test_classical_is_an_exponentially_weighted_memory():
    # Delta_t = -lr * sum_k momentum^k g_{t-k}
    rng = np.random.default_rng(4)
    grads = rng.standard_normal((12, 40))
    lr, mom = 0.03, 0.8
    w, s = np.zeros(40), np.zeros(40)
    for g in grads:
        momcore.momentum_step(w, g, s, lr=lr, momentum=mom)
    weights = mom ** np.arange(len(grads))[::-1]
    np.testing.assert_allclose(s, -lr * weights @ grads, rtol=1e-12, atol=1e-15)


# ---- many ---------------------------------------------------------------------------


def test_many_matches_reference_over_mixed_shapes_and_dtypes():
    rng = np.random.default_rng(5)
    shapes = [(3, 4), (17,), (), (0,), (65537,), (2, 2, 33)]
    dtypes = [np.float32, np.float64, np.float64, np.float32, np.float32, np.float64]
    ws = [rng.standard_normal(sh).astype(dt) for sh, dt in zip(shapes, dtypes)]
    ss = [np.zeros_like(w) for w in ws]
    ws_ref, ss_ref = [w.copy() for w in ws], [s.copy() for s in ss]
    for _ in range(STEPS):
        gs = [rng.standard_normal(w.shape).astype(w.dtype) for w in ws]
        assert momcore.momentum_step_many(ws, gs, ss, rule="nesterov", weight_decay=0.1,
                                          **HYPER) is True
        ref.momentum_step_many(ws_ref, gs, ss_ref, rule="nesterov", weight_decay=0.1,
                               **HYPER)
    _assert_same(ws + ss, ws_ref + ss_ref)


def test_many_of_nothing_is_a_no_op():
    assert momcore.momentum_step_many([], [], [], lr=0.1, momentum=0.5) is True


def test_one_gradient_may_serve_two_parameters():
    g = np.ones(8)
    ws, ss = [np.zeros(8), np.zeros(8)], [np.zeros(8), np.zeros(8)]
    momcore.momentum_step_many(ws, [g, g], ss, lr=0.5, momentum=0.0)
    assert ws[0][0] == ws[1][0] == -0.5


# ---- threads --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2**16, 2**16 + 17, 2**20 + 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("rule", RULES)
def test_one_and_two_threads_agree_bit_for_bit(threads, rule, dtype, n):
    results = []
    for nt in (1, 2):
        momcore.set_num_threads(nt)
        w, s, grads = _operands(n, dtype)
        for g in grads:
            momcore.momentum_step(w, g, s, rule=rule, **_hyper(rule))
        results.append((w.tobytes(), s.tobytes()))
    assert results[0] == results[1]


def test_thread_count_settings(threads):
    momcore.set_num_threads(1)
    assert momcore.get_num_threads() == 1
    momcore.set_num_threads(2)
    assert momcore.get_num_threads() == (2 if _core.have_openmp() else 1)
    with pytest.raises(ValueError, match="n must be >= 1"):
        momcore.set_num_threads(0)


def test_show_config_reports_the_paths_in_use(capsys):
    cfg = momcore.show_config()
    out = capsys.readouterr().out
    assert cfg["simd"]["in use"] == _core.simd_path() in out
    assert cfg["openmp"]["threads"] == momcore.get_num_threads()
    assert "cython_blas" in out


def test_unknown_simd_path_is_refused():
    with pytest.raises(ValueError, match="not available"):
        _core.select_simd("sse9")

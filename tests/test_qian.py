"""The per-weight momentum rule "qian": the kernel with a momenta buffer against the
reference (bit for bit, every SIMD path), its checks, and the rule against Qian's
theory on diagonal and rotated quadratics."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import DTYPES

import momcore
from momcore import _core, theory
from momcore import reference as ref
from momcore.curvature import PerWeightMomentum

SIZES = [0, 1, 7, 15, 16, 17, 31, 33, 63, 65, 1000, 65537, 2**20 + 3]


def _operands(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(n).astype(dtype)
    p = rng.uniform(0.0, 0.99, n).astype(dtype)
    grads = [(0.5 + np.abs(rng.standard_normal(n))).astype(dtype) for _ in range(3)]
    return w, p, grads


def _both(n, dtype, weight_decay=0.0):
    w, p, grads = _operands(n, dtype)
    s = np.zeros_like(w)
    w_ref, s_ref = w.copy(), s.copy()
    for g in grads:
        assert momcore.momentum_step(w, g, s, lr=0.05, momentum=0.0, rule="qian",
                                     weight_decay=weight_decay, momenta=p)
        assert ref.momentum_step(w_ref, g, s_ref, lr=0.05, momentum=0.0, rule="qian",
                                 weight_decay=weight_decay, momenta=p)
    return (w, s), (w_ref, s_ref)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01], ids=["no_wd", "wd"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_per_weight_momenta_match_the_reference_bit_for_bit(dtype, n, weight_decay):
    got, want = _both(n, dtype, weight_decay)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b, strict=True)


@pytest.mark.parametrize("n", [1, 17, 33, 65, 1000, 65537 + 15])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_every_simd_path_matches_the_reference(simd, dtype, n):
    got, want = _both(n, dtype, 0.01)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b, strict=True)


def test_each_weight_uses_its_own_momentum():
    w, s, g = np.zeros(3), np.ones(3), np.zeros(3)
    p = np.array([0.0, 0.5, 0.9])
    momcore.momentum_step(w, g, s, lr=0.1, momentum=0.0, rule="qian", momenta=p)
    np.testing.assert_array_equal(s, p)
    np.testing.assert_array_equal(w, p)


def test_without_momenta_qian_is_classical():
    w, p, grads = _operands(1001, np.float64)
    a, b = w.copy(), w.copy()
    sa, sb = np.zeros_like(w), np.zeros_like(w)
    for g in grads:
        momcore.momentum_step(a, g, sa, lr=0.05, momentum=0.9, rule="qian")
        momcore.momentum_step(b, g, sb, lr=0.05, momentum=0.9, rule="classical")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("impl", [_core, ref], ids=["c", "reference"])
def test_momenta_many_and_groups_match(impl):
    ws = [np.linspace(-1, 1, n) for n in (5, 70)]
    gs = [np.ones_like(w) for w in ws]
    ps = [np.full_like(w, 0.5) for w in ws]
    states = [np.ones_like(w) for w in ws]
    impl.momentum_step_many(ws, gs, states, lr=0.1, momentum=0.0, rule="qian", momenta=ps)
    np.testing.assert_array_equal(states[1], np.full(70, 0.5 - 0.1))
    hyper = dict(lr=0.1, momentum=0.0, rule="qian", dampening=0.0, weight_decay=0.0)
    impl.step_groups([(ws[:1], gs[:1], states[:1], hyper, ps[:1]),
                      (ws[1:], gs[1:], states[1:], hyper)])
    np.testing.assert_array_equal(states[0], np.full(5, 0.4 * 0.5 - 0.1))
    np.testing.assert_array_equal(states[1], np.full(70, 0.4 * 0.0 - 0.1))


@pytest.mark.parametrize("impl", [_core, ref], ids=["c", "reference"])
def test_momenta_are_checked(impl):
    w, g, s = np.zeros(4), np.zeros(4), np.zeros(4)
    with pytest.raises(ValueError, match="momenta is taken only by rule 'qian'"):
        impl.momentum_step(w, g, s, lr=0.1, momentum=0.0, momenta=np.zeros(4))
    with pytest.raises(ValueError, match="momenta must have the dtype and shape"):
        impl.momentum_step(w, g, s, lr=0.1, momentum=0.0, rule="qian", momenta=np.zeros(3))
    with pytest.raises(ValueError, match="share memory"):
        impl.momentum_step(w, g, s, lr=0.1, momentum=0.0, rule="qian", momenta=w)
    with pytest.raises(ValueError, match="one array per parameter"):
        impl.momentum_step_many([w], [g], [s], lr=0.1, momentum=0.0, rule="qian",
                                momenta=[])


# ---- the rule against the theory ----------------------------------------------------


def _run_quadratic(H, lr, steps, w0, per_weight=None):
    """SGD(rule="qian") on E = 1/2 w^T H w, observing the exact diagonal every step."""
    w = w0.copy()
    opt = momcore.SGD([w], lr=lr, rule="qian", per_weight=per_weight)
    diag = np.diag(H).copy()
    trace = []
    for _ in range(steps):
        opt.observe_curvature([diag])
        opt.step([H @ w])
        trace.append(w.copy())
    return np.array(trace), opt


K_DIAG = np.geomspace(1e-3, 0.5, 12)


@pytest.mark.parametrize("lr", [1.0, float(theory.tune(K_DIAG.min(), K_DIAG.max()).lr)],
                         ids=["lr=1/2kmax", "lr=polyak"])
def test_on_a_diagonal_quadratic_each_coordinate_reaches_its_optimal_rate(lr):
    k = K_DIAG
    trace, opt = _run_quadratic(np.diag(k), lr, 301, np.ones(12))
    np.testing.assert_allclose(opt.momenta[0], theory.optimal_momentum(lr, k), rtol=1e-9)
    t0, t1 = 150, 300
    measured = (np.abs(trace[t1]) / np.abs(trace[t0])) ** (1 / (t1 - t0))
    # at critical damping the two roots coincide: w_t = (a + b t) r^t, whose extra
    # factor (t1/t0)^(1/(t1-t0)) is divided out
    measured /= (t1 / t0) ** (1 / (t1 - t0))
    np.testing.assert_allclose(measured, theory.optimal_rate(lr, k), rtol=0.01)
    polyak = theory.tune(k.min(), k.max())
    if lr == polyak.lr:
        # at Polyak's lr, p* equals Polyak's momentum at both ends of the spectrum and
        # every curvature inside contracts faster than Polyak's single pair
        assert (measured <= polyak.rate * 1.01).all()
        assert (measured[1:-1] < polyak.rate).all()
    else:
        # at a small global lr (every lr k <= 1) the flattest coordinate is slower
        # than Polyak's pair: 1 - sqrt(lr k_min) against 1 - 2/(sqrt(K) + 1)
        assert measured[0] > polyak.rate


def test_the_floor_keeps_flat_weights_from_momentum_one():
    k = np.array([1e-9, 1e-6, 1.0])
    _, opt = _run_quadratic(np.diag(k), 1.0, 3, np.ones(3),
                            PerWeightMomentum(floor=1e-2, max_momentum=0.95))
    # floored at 1e-2 * max k: p = (1 - sqrt(0.01))^2 = 0.81 for both flat weights
    np.testing.assert_allclose(opt.momenta[0], [0.81, 0.81, 0.0], atol=1e-12)


def _rotated(k, seed):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((k.size, k.size)))
    return Q @ np.diag(k) @ Q.T


@pytest.mark.parametrize("seed", range(6))
def test_on_a_rotated_quadratic_it_converges_where_result_3_says(seed):
    # Result 3 for each eigenvalue with the smallest per-weight momentum:
    # lr k < 2 (1 + min p) guarantees convergence for every scalar p >= min p; the
    # per-weight iteration, coupled by the rotation, must converge there too.
    k = np.geomspace(1e-2, 1.0, 8)
    H = _rotated(k, seed)
    lr = 1.0 / k.max()  # from the diagonal, 1 / max h_ii can exceed 2 / k_max
    trace, opt = _run_quadratic(H, lr, 3000, np.ones(8))
    p = opt.momenta[0]
    assert (lr * k < 2 * (1 + p.min())).all()
    assert np.linalg.norm(trace[-1]) < 1e-6 * np.linalg.norm(trace[0])
    # the measured contraction is the spectral radius of the coupled iteration
    n = k.size
    M = np.block([[np.eye(n) - lr * H + np.diag(p), -np.diag(p)],
                  [np.eye(n), np.zeros((n, n))]])
    radius = np.abs(np.linalg.eigvals(M)).max()
    assert radius < 1
    late = (np.linalg.norm(trace[-1]) / np.linalg.norm(trace[-501])) ** (1 / 500)
    assert late == pytest.approx(radius, abs=0.01)


def test_sgd_state_dict_round_trips_the_per_weight_state():
    w = np.ones(5)
    opt = momcore.SGD([w], lr=0.5, rule="qian")
    opt.observe_curvature([np.linspace(0.1, 1, 5)])
    opt.step([w.copy()])
    saved = opt.state_dict()
    other = momcore.SGD([np.ones(5)], lr=0.5, rule="qian")
    other.load_state_dict(saved)
    np.testing.assert_array_equal(other.momenta[0], opt.momenta[0])
    np.testing.assert_array_equal(other.curvature[0], opt.curvature[0])
    assert other.curvature_observations == 1


def test_observe_curvature_needs_the_rule():
    with pytest.raises(ValueError, match="needs rule 'qian'"):
        momcore.SGD([np.ones(3)], lr=0.1).observe_curvature([np.ones(3)])
    with pytest.raises(ValueError, match="per_weight is taken only"):
        momcore.SGD([np.ones(3)], lr=0.1, per_weight=PerWeightMomentum())


def test_mlp_fit_with_qian_agrees_between_backends_and_learns():
    X, y = momcore.datasets.load_iris()[:2]
    X = (X - X.mean(0)) / X.std(0)
    nets = [momcore.MLP([4, 8, 3], seed=0, backend=b) for b in ("c", "numpy")]
    for net in nets:
        net.fit(X, y, epochs=20, batch_size=30, lr=0.5, rule="qian")
    np.testing.assert_allclose(nets[0].params, nets[1].params, rtol=1e-8, atol=1e-10)
    assert nets[0].score(X, y) > 0.9
    assert nets[0].optimizer.curvature_observations == nets[0].steps


# ---- the tuner -------------------------------------------------------------------------


def test_the_cubic_root_solves_yellowfins_equation():
    from momcore.curvature import _cubic_momentum
    for q in (1e-3, 0.5, 3.0, 100.0):
        x = np.sqrt(_cubic_momentum(1.0, np.sqrt(2 * q), 1.0))  # D^2 k^2 / (2C) = q
        y = x - 1
        assert abs(y ** 3 + q * y + q) < 1e-9 * max(1, q)


def test_tuner_with_exact_curvature_sets_polyaks_pair_and_reaches_its_rate():
    from momcore.curvature import Tuner
    k = np.geomspace(1e-3, 1.0, 10)
    w = np.ones(10)
    opt = momcore.SGD([w], lr=0.1, momentum=0.0)
    tuner = Tuner(opt, stochastic=False)
    norms = []
    for _ in range(301):
        g = k * w
        tuner.observe([g], curvature=[k])
        opt.step([g])
        norms.append(np.linalg.norm(w))
    want = theory.tune(k.min(), k.max())
    assert opt.lr == pytest.approx(want.lr, rel=1e-12)
    assert opt.momentum == pytest.approx(want.momentum, rel=1e-12)
    measured = (norms[300] / norms[150]) ** (1 / 150)
    assert measured == pytest.approx(want.rate, rel=0.01)


def test_tuner_from_gradient_norms_alone_converges_on_a_quadratic():
    from momcore.curvature import Tuner
    k = np.geomspace(1e-2, 1.0, 10)
    w = np.ones(10)
    opt = momcore.SGD([w], lr=0.1, momentum=0.0)
    tuner = Tuner(opt, stochastic=False)
    start = 0.5 * np.sum(k * w * w)
    for _ in range(2000):
        g = k * w
        tuner.observe([g])
        opt.step([g])
    assert 0.5 * np.sum(k * w * w) < 1e-6 * start

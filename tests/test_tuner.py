"""The automatic tuner (momcore.curvature.Tuner) against the theory: on quadratics of
condition 10, 100 and 1000, axis-aligned and rotated, it must find the spectrum's ends
from the gradients alone and converge about as fast as the heavy ball with Polyak's
pair for the true spectrum (theory.tune)."""
from __future__ import annotations

import numpy as np
import pytest

import momcore
from momcore import theory
from momcore.curvature import Tuner

N = 50
TOL = 1e-8  # energy reduction asked for
SLACK = 1.15  # see test_tuner_converges_at_polyaks_rate
WARMUP = 10


def _quadratic(cond: float, rotated: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = np.geomspace(1.0 / cond, 1.0, N)
    H = np.diag(k)
    if rotated:
        Q, _ = np.linalg.qr(rng.standard_normal((N, N)))
        H = Q @ H @ Q.T
    return H, rng.standard_normal(N)


def _steps(H: np.ndarray, w0: np.ndarray, step, limit: int = 20000) -> int:
    """Steps until E = w^T H w / 2 falls below TOL * E(w0); step(w, g) makes one."""
    w = w0.copy()
    e0 = 0.5 * w @ H @ w
    for t in range(1, limit + 1):
        step(w, H @ w)
        e = 0.5 * w @ H @ w
        if not np.isfinite(e):
            return limit
        if e < TOL * e0:
            return t
    return limit


def _polyak_steps(H, w0, cond):
    lr, momentum, _ = theory.tune(1.0 / cond, 1.0)
    velocity = np.zeros_like(w0)

    def step(w, g):
        velocity[...] = momentum * velocity - lr * g
        w += velocity
    return _steps(H, w0, step)


def _tuned(H, w0, **kw):
    state = {}

    def step(w, g):
        if "opt" not in state:
            state["opt"] = momcore.SGD([w], lr=1e-3)
            state["tuner"] = Tuner(state["opt"], stochastic=False, **kw)
        state["tuner"].observe([g])
        state["opt"].step([g])
    return _steps(H, w0, step), state["tuner"]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("rotated", [False, True], ids=["axis", "rotated"])
@pytest.mark.parametrize("cond", [10.0, 100.0, 1000.0])
def test_tuner_converges_at_polyaks_rate(cond, rotated, seed):
    """Polyak's pair is the best worst-case heavy ball for the range; the tuner, which
    knows nothing of the spectrum, may take at most SLACK times its steps plus WARMUP.
    WARMUP: the first step uses the initial lr (no pair of gradients yet) and the Ritz
    values need a few steps of the Krylov space to reach the spectrum's ends. SLACK:
    while the k_min estimate still lies above the true k_min (Ritz values lie inside
    the spectrum) the flattest direction contracts a little slower than at Polyak's
    pair; 15 % of the steps covers that transient at every condition number tested.
    (The secant estimate it replaces needed 10 to 15 times Polyak's steps at 1000.)"""
    H, w0 = _quadratic(cond, rotated, seed)
    want = _polyak_steps(H, w0, cond)
    got, tuner = _tuned(H, w0)
    assert got <= SLACK * want + WARMUP, (got, want)
    # Courant-Fischer: the Ritz values lie inside the spectrum. The largest converges
    # fast (the stiff end is well separated on this spectrum); the smallest Ritz value
    # of a 10-step window from a random start stays within 30 % of k_min (the flat end
    # of a geometric spectrum is crowded, so its Ritz value converges slowly).
    assert 1.0 / cond * (1 - 1e-9) <= tuner.k_min <= 1.0 / cond * 1.3
    assert 0.95 <= tuner.k_max <= 1.0 + 1e-9


def test_the_secant_alone_would_not_see_the_range():
    """The reason for Rayleigh-Ritz: with a window of one pair the estimate is the
    secant along the last step, a mean over the spectrum, and the range collapses
    (even with the running extremes, more than twice Polyak's steps)."""
    H, w0 = _quadratic(1000.0, False, 0)
    polyak = _polyak_steps(H, w0, 1000.0)
    got, _ = _tuned(H, w0, window=1)
    assert got > 2 * polyak
    got_window, _ = _tuned(H, w0)
    assert got_window <= SLACK * polyak + WARMUP


def test_stochastic_tuner_still_converges_on_a_quadratic():
    """With stochastic=True (the default) the variance of the gradients along the
    path raises the momentum above Polyak's (YellowFin's cubic): slower, still convergent."""
    H, w0 = _quadratic(100.0, True, 0)
    w = w0.copy()
    opt = momcore.SGD([w], lr=1e-3)
    tuner = Tuner(opt)
    e0 = 0.5 * w @ H @ w
    for _ in range(2000):
        g = H @ w
        tuner.observe([g])
        opt.step([g])
    assert 0.5 * w @ H @ w < TOL * e0


def test_tuner_state_dict_round_trip_continues_identically():
    H, w0 = _quadratic(100.0, True, 1)
    runs = []
    for resume in (False, True):
        w = w0.copy()
        opt = momcore.SGD([w], lr=1e-3)
        tuner = Tuner(opt, stochastic=False)
        for t in range(40):
            if resume and t == 15:
                saved_opt, saved = opt.state_dict(), tuner.state_dict()
                w_saved = w.copy()
                w = w_saved.copy()
                opt = momcore.SGD([w], lr=0.5)
                tuner = Tuner(opt, stochastic=False)
                opt.load_state_dict(saved_opt)
                tuner.load_state_dict(saved)
            g = H @ w
            tuner.observe([g])
            opt.step([g])
        runs.append(w)
    np.testing.assert_array_equal(runs[0], runs[1])


def test_tuner_checks_its_arguments():
    opt = momcore.SGD([np.zeros(3)], lr=0.1)
    for bad in (dict(beta=1.0), dict(beta=-0.1), dict(window=0), dict(window=2.0),
                dict(floor=0.0), dict(floor=2.0)):
        with pytest.raises(ValueError):
            Tuner(opt, **bad)
    tuner = Tuner(opt)
    with pytest.raises(ValueError, match="weights"):
        tuner.observe([np.zeros(4)])
    with pytest.raises(ValueError, match="window"):
        Tuner(opt, window=3).load_state_dict(tuner.state_dict())
    with pytest.raises(ValueError, match="lacks"):
        tuner.load_state_dict({})

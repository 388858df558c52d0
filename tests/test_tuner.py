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


def _least_squares(seed=0, n=2000, d=20):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d)) * np.geomspace(0.1, 3, d)  # H's condition ~ 900
    b = A @ rng.standard_normal(d) + 0.1 * rng.standard_normal(n)
    return A, b


def _minibatch_run(A, b, opt, w, steps=3000, batch=32):
    rng = np.random.default_rng(1)
    for _ in range(steps):
        i = rng.integers(0, A.shape[0], batch)
        opt.step([A[i].T @ (A[i] @ w - b[i]) / batch])


@pytest.mark.parametrize("seed", range(3))
def test_stochastic_tuner_converges_on_mini_batch_least_squares(seed):
    """Mini-batch gradients (batch 32 of 2000 rows): the estimate is noise-limited --
    k_max came out 8 to 23 times the truth over seeds 0-5, so lr is smaller than
    Polyak's -- but it stays bounded and the excess loss falls in 3000 steps (measured
    over seeds 0-5: 5x to 700x; seed 0 is the slowest). What is asserted: no collapse
    of lr (the estimate bounded) and a 4x fall."""
    A, b = _least_squares(seed)
    H = A.T @ A / A.shape[0]
    best = np.linalg.lstsq(A, b, rcond=None)[0]

    def excess(w):
        return 0.5 * (np.mean((A @ w - b) ** 2) - np.mean((A @ best - b) ** 2))
    w = np.zeros(A.shape[1])
    opt = momcore.SGD([w], momentum="auto")
    start = excess(w)
    _minibatch_run(A, b, opt, w)
    assert excess(w) < 0.25 * start
    assert opt.tuner.k_max < 100 * np.linalg.eigvalsh(H).max()


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


# ---- momentum="auto" in momcore.SGD -----------------------------------------------------


def test_sgd_auto_owns_a_tuner_and_matches_driving_one_by_hand():
    H, w0 = _quadratic(100.0, True, 2)
    by_hand, auto = w0.copy(), w0.copy()
    opt = momcore.SGD([by_hand], lr=1e-3)
    tuner = Tuner(opt)
    opt_auto = momcore.SGD([auto], momentum="auto")
    assert isinstance(opt_auto.tuner, Tuner) and opt.tuner is None
    assert opt_auto.lr == momcore.curvature.AUTO_LR
    for _ in range(50):
        g = H @ by_hand
        tuner.observe([g])
        opt.step([g])
        opt_auto.step([H @ auto])
    np.testing.assert_array_equal(auto, by_hand)
    assert opt_auto.momentum == opt.momentum > 0
    assert opt_auto.lr == opt.lr


def test_sgd_auto_state_dict_round_trip():
    H, w0 = _quadratic(100.0, False, 0)
    ws = [w0.copy(), w0.copy()]
    first = momcore.SGD([ws[0]], lr=0.01, momentum="auto")
    for _ in range(12):
        first.step([H @ ws[0]])
    saved = first.state_dict()
    assert saved["tuner"]["pairs"] == 11
    ws[1][...] = ws[0]
    second = momcore.SGD([ws[1]], momentum="auto")
    second.load_state_dict(saved)
    assert (second.lr, second.momentum) == (first.lr, first.momentum)
    for _ in range(20):
        first.step([H @ ws[0]])
        second.step([H @ ws[1]])
    np.testing.assert_array_equal(ws[0], ws[1])
    # a tuner state over other weights is refused, and nothing changes
    other = momcore.SGD([np.zeros(3)], momentum="auto")
    bad = dict(saved, state=[np.zeros(3)])
    with pytest.raises(ValueError):
        other.load_state_dict(bad)
    assert other.tuner.t == 0


def test_sgd_auto_is_refused_where_the_tuner_does_not_apply():
    w = np.zeros(3)
    for rule in ("nesterov", "velocity", "ema", "one_step", "qian"):
        with pytest.raises(ValueError, match="auto"):
            momcore.SGD([w], momentum="auto", rule=rule)
    with pytest.raises(ValueError, match="auto"):
        momcore.SGD([{"params": [w], "rule": "nesterov"}], momentum="auto")
    with pytest.raises(TypeError, match="lr"):
        momcore.SGD([w])
    for bad in ("Auto", "adaptive", None):
        with pytest.raises((TypeError, ValueError)):
            momcore.SGD([w], lr=0.1, momentum=bad)


def test_sgd_auto_skips_nonfinite_gradients_in_the_tuner():
    w = np.ones(3)
    opt = momcore.SGD([w], momentum="auto", nonfinite="skip")
    opt.step([np.ones(3)])
    assert not opt.step([np.array([np.nan, 1.0, 1.0])])
    assert opt.tuner.t == 1
    opt.step([np.ones(3) * 0.5])
    assert opt.tuner.pairs == 1


def test_sgd_auto_tunes_for_the_weight_decayed_objective():
    # weight decay wd adds wd to every curvature: the tuner must see g + wd*w
    k = np.geomspace(1e-3, 1.0, 20)
    w = np.ones(20)
    opt = momcore.SGD([w], momentum="auto", weight_decay=0.05)
    opt.tuner.stochastic = False
    for _ in range(60):
        opt.step([k * w])
    assert opt.tuner.k_min == pytest.approx(k.min() + 0.05, rel=0.3)
    assert opt.tuner.k_max == pytest.approx(k.max() + 0.05, rel=0.05)

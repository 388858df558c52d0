"""momcore.theory against closed forms, independent root finding and the simulated recurrence."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from momcore import theory

# A grid over (lr, momentum, k) that covers real, double and complex roots, convergent and
# divergent iterations (lr k up to 6, momentum beyond (-1, 1)).
LR = np.array([0.0, 1e-3, 0.05, 0.3, 1.0, 2.5]).reshape(-1, 1, 1)
MOMENTUM = np.linspace(-1.4, 1.4, 29).reshape(1, -1, 1)
K = np.array([0.01, 0.5, 1.0, 1.7, 2.4]).reshape(1, 1, -1)


def simulate_log_norm(lr, momentum, k, steps: int) -> np.ndarray:
    """log ||(x_t, x_{t-1})|| of x_{t+1} = (1 + p - lr k) x_t - p x_{t-1}, for t = 0..steps.

    Plain numpy, vectorised over the broadcast parameters. The state is renormalised every
    step (the recurrence is linear), so neither a fast contraction nor a divergence leaves
    the float64 range. A state that reaches exactly zero (a zero spectral radius) has log
    norm -inf from then on.
    """
    lr, momentum, k = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (lr, momentum, k)))
    b = 1.0 + momentum - lr * k
    x, x_prev = np.ones(b.shape), np.full(b.shape, -0.37)  # a start off both eigenvectors
    log_norms = np.empty((steps + 1,) + b.shape)
    log_scale = np.zeros(b.shape)
    for t in range(steps + 1):
        norm = np.hypot(x, x_prev)
        with np.errstate(divide="ignore"):
            log_scale += np.log(norm)
        log_norms[t] = log_scale
        scale = np.where(norm > 0, norm, 1.0)
        x, x_prev = x / scale, x_prev / scale
        x, x_prev = b * x - momentum * x_prev, x
    return log_norms


def measured_rate(lr, momentum, k, steps: int = 3000) -> np.ndarray:
    """The per-step contraction over the second half of a simulated run."""
    log_norms = simulate_log_norm(lr, momentum, k, steps)
    half = steps // 2
    return np.exp((log_norms[steps] - log_norms[half]) / (steps - half))


def radius_by_np_roots(lr: float, momentum: float, k: float) -> float:
    """max |z| over the roots of z^2 - (1 + p - lr k) z + p, by numpy's companion matrix."""
    return float(np.max(np.abs(np.roots([1.0, -(1.0 + momentum - lr * k), momentum]))))


# ----------------------------------------------------------------------------- eigenvalues


def test_eigenvalues_are_roots_of_characteristic_polynomial():
    lambda_1, lambda_2 = theory.eigenvalues(LR, MOMENTUM, K)
    b = 1.0 + MOMENTUM - LR * K
    assert lambda_1.dtype == lambda_2.dtype == np.complex128
    assert lambda_1.shape == lambda_2.shape == (LR.size, MOMENTUM.size, K.size)
    for root in (lambda_1, lambda_2):
        residual = np.abs(root * root - b * root + MOMENTUM)
        scale = np.abs(root) ** 2 + np.abs(b * root) + np.abs(MOMENTUM)
        assert np.all(residual <= 1e-14 * scale)
    shape = lambda_1.shape
    np.testing.assert_allclose(lambda_1 + lambda_2, np.broadcast_to(b, shape), atol=1e-13)
    np.testing.assert_allclose(lambda_1 * lambda_2, np.broadcast_to(MOMENTUM, shape), atol=1e-13)


@pytest.mark.parametrize(
    ("lr", "momentum", "k"),
    [
        pytest.param(0.1, 0.5, 1.0, id="complex-pair"),
        pytest.param(0.1, 0.0, 1.0, id="plain-descent"),
        pytest.param(3.0, 0.2, 1.0, id="negative-b"),
        pytest.param(0.01, 0.81, 1.0, id="double-root"),
        pytest.param(0.5, -0.6, 2.0, id="negative-momentum"),
    ],
)
def test_eigenvalues_follow_the_plus_minus_formula(lr, momentum, k):
    b = 1.0 + momentum - lr * k
    root = np.sqrt(complex(b * b - 4.0 * momentum))
    lambda_1, lambda_2 = theory.eigenvalues(lr, momentum, k)
    assert lambda_1 == pytest.approx((b + root) / 2, abs=1e-12)
    assert lambda_2 == pytest.approx((b - root) / 2, abs=1e-12)


def test_eigenvalues_complex_pair_has_modulus_sqrt_momentum():
    lambda_1, lambda_2 = theory.eigenvalues(0.5, 0.81, 1.0)
    assert lambda_1.imag > 0
    assert lambda_2 == pytest.approx(np.conj(lambda_1), abs=1e-15)
    assert abs(lambda_1) == pytest.approx(0.9, rel=1e-14)


def test_eigenvalues_small_root_is_accurate():
    # lr = 0: z^2 - (1 + p) z + p = (z - 1)(z - p). With p = 1e-12 the textbook formula
    # loses the small root to cancellation (relative error ~3e-5).
    lambda_1, lambda_2 = theory.eigenvalues(0.0, 1e-12, 1.0)
    assert lambda_1 == pytest.approx(1.0, rel=1e-14, abs=0)
    assert lambda_2 == pytest.approx(1e-12, rel=1e-12, abs=0)
    # The same for b < 0, where the roots swap roles: z^2 + 3 z + p with p = 1e-12.
    # Its roots are -p/3 - O(p^2) and -3 + p/3 + O(p^2).
    lambda_1, lambda_2 = theory.eigenvalues(4.0 + 1e-12, 1e-12, 1.0)
    assert lambda_1 == pytest.approx(-1e-12 / 3.0, rel=1e-9, abs=0)
    assert lambda_2 == pytest.approx(-3.0 + 1e-12 / 3.0, rel=1e-14, abs=0)


# ------------------------------------------------------------------------ spectral radius


@pytest.mark.parametrize(
    ("lr", "momentum", "k"),
    [
        pytest.param(0.01, 0.0, 1.0, id="plain-slow"),
        pytest.param(0.5, 0.3, 1.0, id="real-roots"),
        pytest.param(0.2, 0.9, 1.0, id="complex-roots"),
        pytest.param(1.6, 0.5, 2.0, id="lr-k-above-2"),
        pytest.param(0.7, -0.4, 1.0, id="negative-momentum"),
        pytest.param(1.0, 0.9, 4.5, id="divergent-real"),
        pytest.param(0.1, 1.2, 1.0, id="divergent-complex"),
    ],
)
def test_spectral_radius_matches_np_roots(lr, momentum, k):
    expected = radius_by_np_roots(lr, momentum, k)
    assert theory.spectral_radius(lr, momentum, k) == pytest.approx(expected, rel=1e-9)


def test_spectral_radius_is_largest_eigenvalue_modulus_on_grid():
    lambda_1, lambda_2 = theory.eigenvalues(LR, MOMENTUM, K)
    expected = np.maximum(np.abs(lambda_1), np.abs(lambda_2))
    radius = theory.spectral_radius(LR, MOMENTUM, K)
    assert radius.dtype == np.float64
    # Near a double root the modulus moves with sqrt(rounding), hence the loose tolerance.
    np.testing.assert_allclose(radius, expected, rtol=1e-7, atol=1e-7)


def test_spectral_radius_without_momentum_is_abs_one_minus_lr_k():
    radius = theory.spectral_radius(LR, 0.0, K)
    np.testing.assert_allclose(radius, np.abs(1.0 - LR * K), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize(
    ("lr", "momentum", "k", "expected"),
    [
        pytest.param(0.01, 0.0, 1.0, 0.99, id="plain-lr-k-0.01"),
        pytest.param(0.01, 0.81, 1.0, 0.9, id="optimal-lr-k-0.01"),
        pytest.param(0.5, 0.0, 2.0, 0.0, id="newton-step"),
        pytest.param(0.1, 0.64, 1.0, 0.8, id="complex-sqrt-p"),
        pytest.param(0.0, 0.5, 1.0, 1.0, id="zero-lr-stalls"),
    ],
)
def test_spectral_radius_by_hand(lr, momentum, k, expected):
    assert theory.spectral_radius(lr, momentum, k) == pytest.approx(expected, abs=1e-12)


# ------------------------------------------------------------------------------ converges


def test_converges_agrees_with_spectral_radius_away_from_boundary():
    momentum = np.linspace(-1.5, 1.5, 301).reshape(-1, 1)
    lr_k = np.linspace(0.0, 5.0, 251).reshape(1, -1)
    away = (
        (np.abs(np.abs(momentum) - 1.0) > 1e-3)
        & (np.abs(lr_k - (2.0 + 2.0 * momentum)) > 1e-3)
        & (lr_k > 1e-3)
    )
    converge = theory.converges(lr_k, momentum, 1.0)
    radius = theory.spectral_radius(lr_k, momentum, 1.0)
    assert converge.dtype == np.bool_
    np.testing.assert_array_equal(converge[away], (radius < 1.0)[away])
    assert 0 < converge.sum() < converge.size


@pytest.mark.parametrize(
    ("lr", "momentum", "k", "expected"),
    [
        pytest.param(1.0, 0.0, 1.9, True, id="plain-below-2"),
        pytest.param(1.0, 0.0, 2.0, False, id="plain-at-2"),
        pytest.param(1.0, 0.9, 3.0, True, id="momentum-widens-range"),
        pytest.param(1.0, 0.5, 3.0, False, id="at-2-plus-2p"),
        pytest.param(0.0, 0.5, 1.0, False, id="zero-lr"),
        pytest.param(0.1, 1.0, 1.0, False, id="momentum-one"),
        pytest.param(0.1, -1.0, 1.0, False, id="momentum-minus-one"),
        pytest.param(0.1, -0.9, 1.0, True, id="negative-momentum-small-step"),
    ],
)
def test_converges_on_result_3_edges(lr, momentum, k, expected):
    result = theory.converges(lr, momentum, k)
    assert isinstance(result, np.bool_)
    assert result == expected


# --------------------------------------------------------------- simulated recurrence


CONVERGENT = [
    pytest.param(0.01, 0.0, 1.0, id="plain-slow"),
    pytest.param(0.01, 0.81, 1.0, id="optimal-double-root"),
    pytest.param(0.2, 0.9, 1.0, id="under-damped"),
    pytest.param(0.3, 0.1, 1.0, id="over-damped"),
    pytest.param(1.5, 0.6, 2.0, id="lr-k-3-with-momentum"),
    pytest.param(0.8, -0.3, 1.0, id="negative-momentum"),
]

DIVERGENT = [
    pytest.param(1.0, 0.0, 2.2, id="plain-above-2"),
    pytest.param(1.0, 0.9, 3.9, id="above-2-plus-2p"),
    pytest.param(0.3, 1.05, 1.0, id="momentum-above-one"),
    pytest.param(0.3, -1.1, 1.0, id="momentum-below-minus-one"),
]


@pytest.mark.parametrize(("lr", "momentum", "k"), CONVERGENT + DIVERGENT)
def test_simulated_contraction_matches_spectral_radius(lr, momentum, k):
    radius = theory.spectral_radius(lr, momentum, k)
    assert measured_rate(lr, momentum, k) == pytest.approx(radius, rel=0.02)


@pytest.mark.parametrize(("lr", "momentum", "k"), CONVERGENT)
def test_simulation_converges_where_converges_is_true(lr, momentum, k):
    assert theory.converges(lr, momentum, k)
    log_norms = simulate_log_norm(lr, momentum, k, 3000)
    assert log_norms[-1] < np.log(1e-6)


@pytest.mark.parametrize(("lr", "momentum", "k"), DIVERGENT)
def test_simulation_diverges_where_converges_is_false(lr, momentum, k):
    assert not theory.converges(lr, momentum, k)
    log_norms = simulate_log_norm(lr, momentum, k, 3000)
    assert log_norms[-1] > np.log(1e6)


def test_simulation_and_converges_agree_on_a_grid():
    momentum = np.array([-0.9, -0.5, 0.0, 0.4, 0.8, 0.95]).reshape(-1, 1)
    lr_k = np.array([0.05, 0.5, 1.0, 1.5, 1.9, 2.1, 2.9, 3.5, 3.95]).reshape(1, -1)
    margin = np.abs(lr_k - (2.0 + 2.0 * momentum)) > 0.04
    log_norms = simulate_log_norm(lr_k, momentum, 1.0, 4000)
    shrank = log_norms[-1] < np.log(1e-3)
    grew = log_norms[-1] > np.log(1e3)
    converge = theory.converges(lr_k, momentum, 1.0)
    np.testing.assert_array_equal(shrank[margin], converge[margin])
    np.testing.assert_array_equal(grew[margin], ~converge[margin])


# --------------------------------------------------------------------- optimal momentum


@pytest.mark.parametrize(
    ("lr", "k", "momentum", "rate"),
    [
        pytest.param(0.01, 1.0, 0.81, 0.9, id="lr-k-0.01"),
        pytest.param(0.1, 0.1, 0.81, 0.9, id="lr-k-0.01-split"),
        pytest.param(0.25, 1.0, 0.25, 0.5, id="lr-k-0.25"),
        pytest.param(1.0, 1.0, 0.0, 0.0, id="lr-k-1"),
        pytest.param(2.25, 1.0, 0.25, 0.5, id="lr-k-2.25"),
    ],
)
def test_optimal_momentum_and_rate_by_hand(lr, k, momentum, rate):
    assert theory.optimal_momentum(lr, k) == pytest.approx(momentum, abs=1e-14)
    assert theory.optimal_rate(lr, k) == pytest.approx(rate, abs=1e-14)


LR_K_OPTIMAL = np.array([1e-4, 0.01, 0.1, 0.5, 0.9, 1.0, 1.3, 2.0, 3.0, 3.9])


def test_optimal_momentum_makes_the_two_roots_equal():
    p_star = theory.optimal_momentum(LR_K_OPTIMAL, 1.0)
    lambda_1, lambda_2 = theory.eigenvalues(LR_K_OPTIMAL, p_star, 1.0)
    # A double root moves with the square root of the rounding error.
    np.testing.assert_allclose(lambda_1, lambda_2, atol=1e-7)
    np.testing.assert_allclose(lambda_1.real, 1.0 - np.sqrt(LR_K_OPTIMAL), atol=1e-7)


def test_optimal_rate_is_spectral_radius_at_optimal_momentum():
    p_star = theory.optimal_momentum(LR_K_OPTIMAL, 1.0)
    rate = theory.optimal_rate(LR_K_OPTIMAL, 1.0)
    np.testing.assert_allclose(theory.spectral_radius(LR_K_OPTIMAL, p_star, 1.0), rate, atol=1e-7)
    np.testing.assert_allclose(rate, np.sqrt(p_star), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("lr_k", LR_K_OPTIMAL, ids=[f"lr-k-{v:g}" for v in LR_K_OPTIMAL])
def test_optimal_momentum_minimises_spectral_radius_over_momentum(lr_k):
    momentum = np.linspace(-0.999, 0.999, 20001)
    radius = theory.spectral_radius(lr_k, momentum, 1.0)
    p_star = theory.optimal_momentum(lr_k, 1.0)
    best = theory.spectral_radius(lr_k, p_star, 1.0)
    assert best <= radius.min() + 1e-9
    assert momentum[np.argmin(radius)] == pytest.approx(p_star, abs=2e-3)


def test_optimal_rate_beats_plain_descent():
    lr_k = LR_K_OPTIMAL[LR_K_OPTIMAL != 1.0]
    assert np.all(theory.optimal_rate(lr_k, 1.0) < theory.spectral_radius(lr_k, 0.0, 1.0))


# -------------------------------------------------------------------------------- tune


K_RANGES = [(1.0, 1.0), (1.0, 2.0), (0.5, 10.0), (1.0, 100.0), (1e-3, 10.0), (2.0, 2e4)]
K_RANGE_IDS = [f"{lo:g}-{hi:g}" for lo, hi in K_RANGES]


@pytest.mark.parametrize(("k_min", "k_max"), K_RANGES, ids=K_RANGE_IDS)
def test_tune_matches_polyak_closed_form(k_min, k_max):
    tuned = theory.tune(k_min, k_max)
    assert isinstance(tuned, theory.HeavyBall)
    lr, momentum, rate = tuned
    sqrt_condition = np.sqrt(k_max / k_min)
    assert lr == pytest.approx(4.0 / (np.sqrt(k_max) + np.sqrt(k_min)) ** 2, rel=1e-14)
    expected_rate = (sqrt_condition - 1.0) / (sqrt_condition + 1.0)
    assert rate == pytest.approx(expected_rate, rel=1e-12, abs=1e-15)
    assert momentum == pytest.approx(rate**2, rel=1e-14, abs=1e-15)


@pytest.mark.parametrize(("k_min", "k_max"), K_RANGES, ids=K_RANGE_IDS)
def test_tune_rate_is_spectral_radius_at_both_ends(k_min, k_max):
    lr, momentum, rate = theory.tune(k_min, k_max)
    ends = theory.spectral_radius(lr, momentum, np.array([k_min, k_max]))
    np.testing.assert_allclose(ends, rate, atol=1e-7)
    inside = theory.spectral_radius(lr, momentum, np.geomspace(k_min, k_max, 101))
    assert np.all(inside <= rate + 1e-7)


@pytest.mark.parametrize(("k_min", "k_max"), K_RANGES[1:], ids=K_RANGE_IDS[1:])
def test_tune_beats_best_plain_descent(k_min, k_max):
    condition = k_max / k_min
    plain = (condition - 1.0) / (condition + 1.0)
    # That plain-descent value is the worst case of lr = 2 / (k_min + k_max) over the range.
    worst_plain = theory.spectral_radius(2.0 / (k_min + k_max), 0.0, np.array([k_min, k_max]))
    np.testing.assert_allclose(worst_plain, plain, rtol=1e-12)
    assert theory.tune(k_min, k_max).rate < plain


def test_tune_is_vectorised():
    tuned = theory.tune(np.array([1.0, 2.0, 0.1]), 100.0)
    assert tuned.lr.shape == tuned.momentum.shape == tuned.rate.shape == (3,)
    one_by_one = [theory.tune(k_min, 100.0).rate for k_min in (1.0, 2.0, 0.1)]
    np.testing.assert_allclose(tuned.rate, one_by_one, rtol=1e-15)
    assert tuned.rate[0] == pytest.approx(9.0 / 11.0, rel=1e-15)


# ------------------------------------------------------------------------------ physics


def test_from_physics_by_hand():
    lr, momentum = theory.from_physics(1.0, 1.0, 0.1)
    assert lr == pytest.approx(0.01 / 1.1, rel=1e-15)
    assert momentum == pytest.approx(1.0 / 1.1, rel=1e-15)
    assert theory.from_physics(2.0, 0.0, 0.5) == pytest.approx((0.125, 1.0), rel=1e-15)


def test_to_physics_by_hand():
    mass, friction = theory.to_physics(0.01, 0.9, 0.1)
    assert mass == pytest.approx(0.9 * 0.01 / 0.01, rel=1e-15)
    assert friction == pytest.approx(0.1 * 0.1 / 0.01, rel=1e-14)


def test_physics_round_trips():
    lr = np.geomspace(1e-4, 3.0, 7).reshape(-1, 1, 1)
    momentum = np.array([1e-3, 0.1, 0.5, 0.9, 0.999, 1.0]).reshape(1, -1, 1)
    dt = np.array([0.01, 1.0, 7.0]).reshape(1, 1, -1)
    mass, friction = theory.to_physics(lr, momentum, dt)
    assert np.all(mass > 0) and np.all(friction >= 0)
    lr_back, momentum_back = theory.from_physics(mass, friction, dt)
    shape = lr_back.shape
    np.testing.assert_allclose(lr_back, np.broadcast_to(lr, shape), rtol=1e-13)
    np.testing.assert_allclose(momentum_back, np.broadcast_to(momentum, shape), rtol=1e-13)
    mass_back, friction_back = theory.to_physics(*theory.from_physics(mass, friction, dt), dt)
    np.testing.assert_allclose(mass_back, mass, rtol=1e-13)
    np.testing.assert_allclose(friction_back, friction, rtol=1e-12, atol=1e-12 * np.max(friction))


def test_from_physics_small_dt_approaches_continuous_time():
    # lr / dt^2 -> 1 / m and (1 - p) / dt -> mu / m as dt -> 0.
    lr, momentum = theory.from_physics(2.0, 3.0, 1e-6)
    assert lr / 1e-12 == pytest.approx(0.5, rel=1e-5)
    assert (1.0 - momentum) / 1e-6 == pytest.approx(1.5, rel=1e-5)


# -------------------------------------------------------------------- improvement factor


def improvement_by_np_roots(k: float, mass: float, friction: float) -> float:
    """|Re| of the slowest root of m s^2 + mu s + k = 0, over the massless rate k / mu."""
    slowest = np.max(np.roots([mass, friction, k]).real)
    return abs(slowest) / (k / friction)


@pytest.mark.parametrize(
    ("mass", "friction"),
    [(1.0, 1.0), (0.3, 2.0), (5.0, 0.1)],
    ids=["m1-mu1", "m0.3-mu2", "m5-mu0.1"],
)
def test_improvement_factor_landmarks(mass, friction):
    critical = friction**2 / (4.0 * mass)
    assert theory.improvement_factor(critical, mass, friction) == pytest.approx(2.0, rel=1e-14)
    break_even = 2.0 * critical
    assert theory.improvement_factor(break_even, mass, friction) == pytest.approx(1.0, rel=1e-14)
    below = critical * np.array([1e-6, 0.1, 0.5, 0.99, 1.5, 1.99])
    assert np.all(theory.improvement_factor(below, mass, friction) > 1.0)
    beyond = critical * np.array([2.01, 3.0, 10.0, 1e4])
    assert np.all(theory.improvement_factor(beyond, mass, friction) < 1.0)


@pytest.mark.parametrize("k", [1e-3, 0.1, 0.2, 0.25, 0.3, 0.5, 0.8, 4.0], ids=lambda k: f"k-{k:g}")
def test_improvement_factor_matches_np_roots(k):
    # mass 1, friction 1: critical damping at k = 0.25.
    expected = improvement_by_np_roots(k, 1.0, 1.0)
    assert theory.improvement_factor(k, 1.0, 1.0) == pytest.approx(expected, rel=1e-6)


def test_improvement_factor_peaks_at_critical_damping():
    k = np.linspace(1e-3, 2.0, 4001)
    factor = theory.improvement_factor(k, 1.0, 1.0)
    assert factor.max() <= 2.0 + 1e-12
    assert k[np.argmax(factor)] == pytest.approx(0.25, abs=1e-3)


def test_improvement_factor_small_k_tends_to_one():
    # Strongly over-damped: the mass barely matters. The closed form avoids cancellation.
    assert theory.improvement_factor(1e-12, 1.0, 1.0) == pytest.approx(1.0 + 1e-12, rel=1e-14)


# ---------------------------------------------------------------------------- iterations


@pytest.mark.parametrize(
    ("tol", "lr", "momentum", "k", "expected"),
    [
        pytest.param(1e-3, 0.01, 0.0, 1.0, 688, id="plain-0.99"),
        pytest.param(1e-3, 0.01, 0.81, 1.0, 66, id="optimal-0.9"),
        pytest.param(0.25, 0.5, 0.0, 1.0, 2, id="exact-power"),
        pytest.param(0.5, 1.0, 0.0, 1.0, 1, id="zero-radius"),
        pytest.param(0.999, 0.5, 0.0, 1.0, 1, id="loose-tol"),
    ],
)
def test_iterations_to_by_hand(tol, lr, momentum, k, expected):
    steps = theory.iterations_to(tol, lr, momentum, k)
    assert isinstance(steps, np.float64)
    assert steps == expected


def test_iterations_to_is_smallest_t_with_rate_power_below_tol():
    tol = np.array([0.5, 1e-2, 1e-6, 1e-12]).reshape(-1, 1, 1)
    lr = np.array([0.01, 0.2, 0.7, 1.2]).reshape(1, -1, 1)
    momentum = np.linspace(-0.9, 0.95, 38).reshape(1, 1, -1)
    steps = theory.iterations_to(tol, lr, momentum, 1.0)
    rate = np.broadcast_to(theory.spectral_radius(lr, momentum, 1.0), steps.shape)
    tol = np.broadcast_to(tol, steps.shape)
    finite = np.isfinite(steps)
    np.testing.assert_array_equal(finite, rate < 1.0)
    assert finite.any() and not finite.all()
    t, r, eps = steps[finite], rate[finite], tol[finite]
    np.testing.assert_array_equal(t, np.round(t))
    assert np.all(t >= 1)
    assert np.all(r**t <= eps)
    assert np.all((t == 1) | (r ** (t - 1) > eps))


@pytest.mark.parametrize(
    ("lr", "max_power"),
    [(0.5, 40), (0.25, 33), (0.125, 18), (0.0625, 13), (0.375, 20), (1.25, 33), (1.5, 40)],
    ids=lambda v: f"{v:g}",
)
def test_iterations_to_at_exact_powers_of_the_rate(lr, max_power):
    # Without momentum the rate is |1 - lr|, a short binary fraction whose powers are exact
    # floats: tol = rate**n must give n, although log(tol) / log(rate) sometimes rounds
    # just above n; one ulp less than rate**n must cost one more step.
    rate = Fraction(abs(1.0 - lr))
    powers = np.arange(1, max_power + 1)
    tol = np.array([float(rate**int(n)) for n in powers])
    assert theory.spectral_radius(lr, 0.0, 1.0) == float(rate)
    np.testing.assert_array_equal(theory.iterations_to(tol, lr, 0.0, 1.0), powers)
    one_ulp_less = np.nextafter(tol, 0.0)
    np.testing.assert_array_equal(theory.iterations_to(one_ulp_less, lr, 0.0, 1.0), powers + 1)


@pytest.mark.parametrize(
    ("lr", "momentum", "k"),
    [
        pytest.param(2.0, 0.0, 1.0, id="radius-one"),
        pytest.param(3.0, 0.0, 1.0, id="plain-divergent"),
        pytest.param(0.0, 0.5, 1.0, id="zero-lr"),
        pytest.param(0.1, 1.0, 1.0, id="momentum-one"),
    ],
)
def test_iterations_to_is_inf_without_convergence(lr, momentum, k):
    assert not theory.converges(lr, momentum, k)
    assert theory.iterations_to(1e-3, lr, momentum, k) == np.inf


# ------------------------------------------------------------------------- conventions


@pytest.mark.parametrize(
    ("func", "args"),
    [
        pytest.param(theory.spectral_radius, (0.1, 0.5, 1.0), id="spectral_radius"),
        pytest.param(theory.optimal_momentum, (0.1, 1.0), id="optimal_momentum"),
        pytest.param(theory.optimal_rate, (0.1, 1.0), id="optimal_rate"),
        pytest.param(theory.improvement_factor, (0.1, 1.0, 1.0), id="improvement_factor"),
        pytest.param(theory.iterations_to, (0.1, 0.1, 0.5, 1.0), id="iterations_to"),
    ],
)
def test_scalar_in_numpy_scalar_out(func, args):
    assert isinstance(func(*args), np.float64)
    assert func(*(np.full((2, 3), a) for a in args)).shape == (2, 3)


def test_eigenvalues_scalar_and_broadcast_shapes():
    lambda_1, lambda_2 = theory.eigenvalues(0.1, 0.5, 1.0)
    assert isinstance(lambda_1, np.complex128) and isinstance(lambda_2, np.complex128)
    lambda_1, _ = theory.eigenvalues(np.ones((3, 1)), 0.5, np.ones(4, dtype=np.float32))
    assert lambda_1.shape == (3, 4)


def test_integer_and_float32_inputs_are_accepted():
    assert theory.spectral_radius(np.float32(0.01), 0, 1) == pytest.approx(0.99, rel=1e-7)
    assert theory.converges(1, 0, 1)


# ---------------------------------------------------------------------------- bad input


def bad(func, args: tuple, match: str, what: str):
    """A bad-input case with the id ``<function>-<what>``."""
    return pytest.param(func, args, match, id=f"{func.__name__}-{what}")


BAD_INPUT = [
    # k > 0
    bad(theory.eigenvalues, (0.1, 0.5, 0.0), "k must be > 0", "k-zero"),
    bad(theory.spectral_radius, (0.1, 0.5, -1.0), "k must be > 0", "k-negative"),
    bad(theory.converges, (0.1, 0.5, [1.0, 0.0]), "k must be > 0, got 0.0", "k-array"),
    bad(theory.optimal_momentum, (0.1, 0.0), "k must be > 0", "k-zero"),
    bad(theory.optimal_rate, (0.1, -2.0), "k must be > 0", "k-negative"),
    bad(theory.iterations_to, (0.1, 0.1, 0.5, 0.0), "k must be > 0", "k-zero"),
    bad(theory.improvement_factor, (0.0, 1.0, 1.0), "k must be > 0", "k-zero"),
    # lr >= 0 (> 0 for to_physics)
    bad(theory.eigenvalues, (-0.1, 0.5, 1.0), "lr must be >= 0", "lr-negative"),
    bad(theory.spectral_radius, ([0.1, -1e-9], 0.5, 1), "lr must be >= 0, got -1e-09", "lr-array"),
    bad(theory.converges, (-1.0, 0.5, 1.0), "lr must be >= 0", "lr-negative"),
    bad(theory.iterations_to, (0.1, -0.1, 0.5, 1.0), "lr must be >= 0", "lr-negative"),
    bad(theory.optimal_momentum, (-0.1, 1.0), "lr must be >= 0", "lr-negative"),
    bad(theory.to_physics, (0.0, 0.5, 1.0), "lr must be > 0", "lr-zero"),
    # non-finite
    bad(theory.eigenvalues, (np.nan, 0.5, 1.0), "lr must be finite", "lr-nan"),
    bad(theory.spectral_radius, (0.1, np.inf, 1.0), "momentum must be finite", "momentum-inf"),
    bad(theory.converges, (0.1, 0.5, [1.0, np.nan]), "k must be finite, got nan", "k-nan"),
    bad(theory.optimal_rate, (0.1, -np.inf), "k must be finite", "k-minus-inf"),
    bad(theory.iterations_to, (np.nan, 0.1, 0.5, 1.0), "tol must be finite", "tol-nan"),
    bad(theory.tune, (np.nan, 2.0), "k_min must be finite", "k_min-nan"),
    bad(theory.tune, (1.0, np.inf), "k_max must be finite", "k_max-inf"),
    bad(theory.from_physics, (np.inf, 1.0, 1.0), "mass must be finite", "mass-inf"),
    bad(theory.from_physics, (1.0, np.nan, 1.0), "friction must be finite", "friction-nan"),
    bad(theory.to_physics, (0.1, 0.5, np.nan), "dt must be finite", "dt-nan"),
    bad(theory.improvement_factor, (1.0, 1.0, np.inf), "friction must be finite", "friction-inf"),
    # momentum in (0, 1] where the physics needs it
    bad(theory.to_physics, (0.1, 0.0, 1.0), r"momentum must be in \(0, 1\]", "momentum-zero"),
    bad(theory.to_physics, (0.1, -0.5, 1.0), r"momentum must be in \(0, 1\]", "momentum-negative"),
    bad(theory.to_physics, (0.1, 1.01, 1.0), r"momentum must be in \(0, 1\]", "momentum-above-one"),
    # mass > 0, friction >= 0 (> 0 for improvement_factor), dt > 0
    bad(theory.from_physics, (0.0, 1.0, 1.0), "mass must be > 0", "mass-zero"),
    bad(theory.improvement_factor, (1.0, -1.0, 1.0), "mass must be > 0", "mass-negative"),
    bad(theory.from_physics, (1.0, -0.1, 1.0), "friction must be >= 0", "friction-negative"),
    bad(theory.improvement_factor, (1.0, 1.0, 0.0), "friction must be > 0", "friction-zero"),
    bad(theory.from_physics, (1.0, 1.0, 0.0), "dt must be > 0", "dt-zero"),
    bad(theory.to_physics, (0.1, 0.5, -1.0), "dt must be > 0", "dt-negative"),
    # tol in (0, 1)
    bad(theory.iterations_to, (0.0, 0.1, 0.5, 1.0), r"tol must be in \(0, 1\)", "tol-zero"),
    bad(theory.iterations_to, (1.0, 0.1, 0.5, 1.0), r"tol must be in \(0, 1\)", "tol-one"),
    bad(theory.iterations_to, (-0.1, 0.1, 0.5, 1.0), r"tol must be in \(0, 1\)", "tol-negative"),
    # lr*k in (0, 4)
    bad(theory.optimal_momentum, (0.0, 1.0), r"lr\*k must be in \(0, 4\), got 0.0", "lr-zero"),
    bad(theory.optimal_momentum, (2.0, 2.0), r"lr\*k must be in \(0, 4\), got 4.0", "lr-k-4"),
    bad(theory.optimal_rate, (1.0, [1.0, 5.0]), r"lr\*k must be in \(0, 4\), got 5.0", "lr-k-5"),
    bad(theory.optimal_rate, (0.0, 1.0), r"lr\*k must be in \(0, 4\)", "lr-zero"),
    # tune's range
    bad(theory.tune, (0.0, 1.0), "k_min must be > 0", "k_min-zero"),
    bad(theory.tune, (-1.0, 1.0), "k_min must be > 0", "k_min-negative"),
    bad(theory.tune, (2.0, 1.0), "k_max must be >= k_min, got 1.0", "k_max-below-k_min"),
    bad(theory.tune, ([1.0, 3.0], 2.0), "k_max must be >= k_min", "broadcast"),
]


@pytest.mark.parametrize(("func", "args", "match"), BAD_INPUT)
def test_bad_input_raises_value_error(func, args, match):
    with pytest.raises(ValueError, match=match):
        func(*args)


@pytest.mark.parametrize(
    ("func", "args", "match"),
    [
        bad(theory.spectral_radius, (0.1, 0.5 + 0.1j, 1.0), "momentum must be real", "complex"),
        bad(theory.converges, ("0.1", 0.5, 1.0), "lr must be real", "string"),
        bad(theory.tune, (1.0, None), "k_max must be real", "none"),
    ],
)
def test_non_real_input_raises_type_error(func, args, match):
    with pytest.raises(TypeError, match=match):
        func(*args)

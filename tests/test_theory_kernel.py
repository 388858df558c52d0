"""The compiled kernel obeys Qian's theory: momcore.theory.simulate against the closed forms."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from momcore import theory

# A grid of (momentum, lr k) over the whole of Figure 1: real, double and complex roots,
# convergent and divergent settings. k = 1 so that lr = lr k.
GRID_MOMENTUM = np.linspace(-0.9, 0.95, 12)
GRID_LR_K = np.linspace(0.05, 3.95, 14)
GRID = [(float(p), float(lr_k)) for p in GRID_MOMENTUM for lr_k in GRID_LR_K]
GRID_STEPS = 2000
# Settings this close to |lambda| = 1 need far more steps to tell apart, so they are left out.
BOUNDARY_BAND = 0.01
# The measured rate is compared for rates below this; above it the 2 % are not meaningful.
RATE_LIMIT = 0.999
RATE_RTOL = 0.02


@pytest.fixture(scope="module")
def grid_runs():
    """simulate() on every grid point: {(momentum, lr_k): Trajectory}."""
    return {(p, lr_k): theory.simulate(lr_k, p, [1.0], GRID_STEPS) for p, lr_k in GRID}


def test_grid_covers_both_sides_and_all_root_kinds():
    p, lr_k = np.array(GRID).T
    converge = theory.converges(lr_k, p, 1.0)
    discriminant = (1.0 + p - lr_k) ** 2 - 4.0 * p
    assert 0.3 < converge.mean() < 0.7
    assert np.any(discriminant < 0) and np.any(discriminant > 0)


def test_kernel_converges_exactly_where_result_3_says(grid_runs):
    checked = 0
    for (p, lr_k), run in grid_runs.items():
        radius = theory.spectral_radius(lr_k, p, 1.0)
        if abs(radius - 1.0) < BOUNDARY_BAND:
            continue
        expected = bool(theory.converges(lr_k, p, 1.0))
        shrank = np.linalg.norm(run.weights[-1]) < np.linalg.norm(run.weights[0])
        assert (run.contraction < 1.0) == expected, (p, lr_k, radius, run.contraction)
        assert shrank == expected, (p, lr_k, radius)
        checked += 1
    assert checked > 0.9 * len(GRID)


def test_kernel_contraction_matches_spectral_radius(grid_runs):
    checked = 0
    for (p, lr_k), run in grid_runs.items():
        radius = theory.spectral_radius(lr_k, p, 1.0)
        if radius >= RATE_LIMIT:
            continue
        assert run.contraction == pytest.approx(radius, rel=RATE_RTOL, abs=1e-12), (p, lr_k)
        checked += 1
    assert checked > 0.4 * len(GRID)


@pytest.mark.parametrize(
    ("lr", "momentum", "k"),
    [
        pytest.param(0.01, 0.0, 1.0, id="plain-slow"),
        pytest.param(0.01, 0.81, 1.0, id="optimal-double-root"),
        pytest.param(0.2, 0.9, 1.0, id="under-damped"),
        pytest.param(0.02, 0.95, 1.0, id="slow-oscillation"),
        pytest.param(1.5, 0.6, 2.0, id="lr-k-3-with-momentum"),
        pytest.param(0.8, -0.3, 1.0, id="negative-momentum"),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_contraction_in_both_dtypes(lr, momentum, k, dtype):
    run = theory.simulate(lr, momentum, [k], 4000, dtype=dtype)
    assert run.weights.dtype == dtype
    assert run.contraction == pytest.approx(theory.spectral_radius(lr, momentum, k), rel=0.02)


def test_contraction_is_the_slowest_curvature():
    k = np.array([0.5, 1.0, 2.0, 7.0])
    lr, momentum = 0.1, 0.5
    run = theory.simulate(lr, momentum, k, 3000)
    slowest = np.max(theory.spectral_radius(lr, momentum, k))
    assert run.contraction == pytest.approx(slowest, rel=0.01)


def test_newton_step_contracts_to_zero():
    run = theory.simulate(0.5, 0.0, [2.0], 10)
    assert run.contraction == 0.0
    assert np.all(run.weights[1:] == 0.0)


# ------------------------------------------------------------------- what a run holds


def test_weights_follow_the_scalar_recurrence():
    lr, momentum, k, steps = 0.3, 0.7, np.array([0.4, 1.0, 2.5]), 60
    w0 = np.array([1.0, -2.0, 0.5])
    run = theory.simulate(lr, momentum, k, steps, w0=w0)
    x_prev, x = w0.copy(), w0.copy()
    expected = [x]
    for _ in range(steps):
        x, x_prev = (1.0 + momentum - lr * k) * x - momentum * x_prev, x
        expected.append(x)
    np.testing.assert_allclose(run.weights, np.array(expected), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(run.loss, 0.5 * (run.weights**2 @ k), rtol=1e-14)
    assert run.weights.shape == (steps + 1, 3) and run.loss.shape == (steps + 1,)


def test_velocity_rule_gives_the_same_weights_as_classical():
    k = np.array([0.3, 3.0])
    classical = theory.simulate(0.2, 0.8, k, 200)
    velocity = theory.simulate(0.2, 0.8, k, 200, rule="velocity")
    np.testing.assert_allclose(velocity.weights, classical.weights, rtol=1e-12, atol=1e-300)
    assert velocity.contraction == pytest.approx(classical.contraction, rel=1e-9)


def test_divergence_stops_early_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = theory.simulate(1.0, 0.9, [3.9], 100_000)
    assert run.contraction == np.inf
    assert run.weights.shape[0] == run.loss.shape[0] < 2000
    assert np.linalg.norm(run.weights[-1]) > 1e150
    assert np.all(np.isfinite(run.weights))


@pytest.mark.parametrize(
    ("lr", "momentum", "k", "dtype"),
    [
        pytest.param(1e30, 0.0, [1.0], np.float64, id="overflow-in-one-step"),
        pytest.param(1.0, 0.5, [3.5], np.float32, id="float32"),
    ],
)
def test_divergence_is_inf(lr, momentum, k, dtype):
    run = theory.simulate(lr, momentum, k, 5000, dtype=dtype)
    assert run.contraction == np.inf
    assert run.weights.shape[0] < 5001


# --------------------------------------------------------------- Polyak's heavy ball


@pytest.mark.parametrize(("k_min", "k_max"), [(1.0, 100.0), (0.5, 200.0)], ids=["K100", "K400"])
def test_tuned_heavy_ball_beats_best_plain_descent_by_the_predicted_factor(k_min, k_max):
    k = np.linspace(k_min, k_max, 20)
    tol = 1e-16  # of the loss E(w_t) / E(w_0): far enough out for the asymptotic rates
    lr, momentum, rate = theory.tune(k_min, k_max)
    plain_lr = 2.0 / (k_min + k_max)
    condition = k_max / k_min
    plain_rate = (condition - 1.0) / (condition + 1.0)
    predicted = np.log(rate) / np.log(plain_rate)  # the step ratio, about sqrt(K) / 2

    tuned_run = theory.simulate(lr, momentum, k, 1000)
    plain_run = theory.simulate(plain_lr, 0.0, k, 20_000)
    assert tuned_run.contraction == pytest.approx(rate, rel=0.02)
    assert plain_run.contraction == pytest.approx(plain_rate, rel=0.02)
    tuned_steps, plain_steps = tuned_run.steps_to(tol), plain_run.steps_to(tol)
    assert np.isfinite(tuned_steps) and np.isfinite(plain_steps)
    ratio = plain_steps / tuned_steps
    assert 0.5 * predicted < ratio < 2.0 * predicted
    assert ratio > 0.5 * np.sqrt(condition)


# ------------------------------------------------------------------- rotated quadratic


def _rotation(n: int, seed: int = 0) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize(
    ("lr", "momentum"),
    [(0.05, 0.9), (0.3, 0.2), (0.5, -0.2)],
    ids=["complex", "real", "negative-momentum"],
)
def test_rotated_quadratic_matches_the_diagonal_one(lr, momentum):
    k = np.array([0.2, 0.9, 1.7, 3.1, 3.3])
    rotation = _rotation(k.size)
    hessian = rotation @ np.diag(k) @ rotation.T
    w0 = np.array([1.0, -0.5, 0.25, 2.0, 1.0])
    diagonal = theory.simulate(lr, momentum, k, 1500, w0=w0)
    rotated = theory.simulate(lr, momentum, None, 1500, hessian=hessian, w0=rotation @ w0)
    np.testing.assert_allclose(rotated.weights, diagonal.weights @ rotation.T,
                               rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(rotated.loss, diagonal.loss, rtol=1e-8, atol=1e-20)
    assert rotated.contraction == pytest.approx(diagonal.contraction, rel=1e-6)
    # From the default start (all ones in the rotated frame) the same slowest mode dominates.
    default = theory.simulate(lr, momentum, None, 1500, hessian=hessian)
    assert default.contraction == pytest.approx(diagonal.contraction, rel=0.01)
    assert diagonal.contraction == pytest.approx(
        np.max(theory.spectral_radius(lr, momentum, k)), rel=0.02)


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param(dict(lr=-0.1), "lr", id="negative-lr"),
        pytest.param(dict(lr=np.nan), "lr", id="nan-lr"),
        pytest.param(dict(lr=[0.1, 0.2]), "lr must be a scalar", id="array-lr"),
        pytest.param(dict(momentum=1.0), "momentum", id="momentum-one"),
        pytest.param(dict(momentum=-1.2), "momentum", id="momentum-below"),
        pytest.param(dict(k=[1.0, 0.0]), "k", id="zero-curvature"),
        pytest.param(dict(k=[[1.0]]), "k must be a non-empty 1-D", id="2d-k"),
        pytest.param(dict(k=[]), "k must be a non-empty 1-D", id="empty-k"),
        pytest.param(dict(steps=0), "steps", id="zero-steps"),
        pytest.param(dict(w0=[1.0, 2.0]), "w0 must have shape", id="w0-shape"),
        pytest.param(dict(w0=[0.0]), "w0 must not be all zero", id="w0-zero"),
        pytest.param(dict(w0=[np.inf]), "w0", id="w0-inf"),
        pytest.param(dict(dtype=np.int32), "dtype", id="int-dtype"),
        pytest.param(dict(rule="adam"), "rule", id="unknown-rule"),
        pytest.param(dict(k=None), "exactly one of k", id="neither"),
        pytest.param(dict(hessian=[[1.0]]), "exactly one of k", id="both"),
    ],
)
def test_bad_input_is_a_value_error_naming_it(kwargs, match):
    arguments = dict(lr=0.1, momentum=0.5, k=[1.0], steps=10) | kwargs
    with pytest.raises(ValueError, match=match):
        theory.simulate(**arguments)


@pytest.mark.parametrize(
    ("hessian", "match"),
    [
        pytest.param([[1.0, 0.5], [0.0, 1.0]], "symmetric", id="asymmetric"),
        pytest.param([[1.0, 2.0], [2.0, 1.0]], "positive definite", id="indefinite"),
        pytest.param([[1.0, 0.0, 0.0]], "square", id="not-square"),
        pytest.param([[1.0, np.nan], [np.nan, 1.0]], "hessian", id="nan"),
    ],
)
def test_bad_hessian(hessian, match):
    with pytest.raises(ValueError, match=match):
        theory.simulate(0.1, 0.5, None, 10, hessian=hessian)


def test_steps_must_be_an_int():
    with pytest.raises(TypeError, match="steps"):
        theory.simulate(0.1, 0.5, [1.0], 10.0)


def test_steps_to():
    run = theory.simulate(0.5, 0.0, [1.0], 30)  # w halves, E falls by 4 per step
    assert run.steps_to(0.25) == 2.0  # E_1 = E_0 / 4 is not below 0.25 E_0; E_2 is
    assert run.steps_to(1e-6) == 10.0
    assert theory.simulate(0.001, 0.0, [1.0], 10).steps_to(1e-6) == np.inf
    with pytest.raises(ValueError, match="tol"):
        run.steps_to(1.5)


def test_oscillating_component_is_measured_whatever_the_phase_at_the_end():
    # Complex roots rotate by about 26 degrees a step: w_t itself passes near zero every
    # 7 steps, and a measurement from |w_t| alone would depend on where the run ends.
    lr, momentum = 0.2, 0.9
    radius = theory.spectral_radius(lr, momentum, 1.0)
    measured = [theory.simulate(lr, momentum, [1.0], steps).contraction
                for steps in range(150, 190)]
    np.testing.assert_allclose(measured, radius, rtol=0.02)

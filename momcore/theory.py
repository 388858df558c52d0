"""Linear theory of gradient descent with momentum near a minimum (Qian, 1999).

Reference: N. Qian, "On the momentum term in gradient descent learning algorithms",
Neural Networks 12 (1999) 145-151.

Near a minimum the error is quadratic, ``E ~ 1/2 sum_i k_i x_i^2`` in the eigenbasis of
the Hessian (``k_i`` its eigenvalues, the curvatures; ``x_i`` the distance to the minimum
along eigenvector i). The classical momentum rule ``Delta_t = p Delta_{t-1} - lr grad E``,
``w_{t+1} = w_t + Delta_t`` (Qian's Eq. 2) then decouples into one scalar recurrence per
eigen-component::

    x_{t+1} = (1 + p - lr k) x_t - p x_{t-1}

whose characteristic polynomial is ``z^2 - (1 + p - lr k) z + p``. Everything in this
module follows from the two roots of that polynomial, or, in continuous time, from the
damped oscillator ``m x'' + mu x' + k x = 0`` that the recurrence discretises.

Notation:

=================  ========  ==================  ====================
quantity           momcore   Qian (1999)         lecture notes
=================  ========  ==================  ====================
learning rate      ``lr``    eta                 alpha
momentum           ``p``     p                   eta
curvature          ``k``     k (eigenvalue)      --
mass, friction     m, mu     m, mu               --
time step          dt        Delta t             --
=================  ========  ==================  ====================

The API spells the first two ``lr`` and ``momentum``; the formulas below write ``p`` for
the momentum.

:func:`simulate` runs the compiled kernel (``momcore.momentum_step``) on such a quadratic and
measures the contraction, so the closed forms can be checked against the real iteration.

Conventions: every closed form is vectorised. Arguments are real scalars or arrays (any real
dtype, computed in float64) and broadcast against each other like the arguments of a numpy
ufunc. As with a ufunc, all-scalar input gives a numpy scalar (``np.float64``,
``np.complex128`` or ``np.bool_``) and any array input gives an array of the broadcast
shape. Arguments outside their domain raise a ValueError that names the argument and shows
an offending value; non-real input raises a TypeError.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "HeavyBall",
    "Trajectory",
    "converges",
    "eigenvalues",
    "from_physics",
    "improvement_factor",
    "iterations_to",
    "optimal_momentum",
    "optimal_rate",
    "simulate",
    "spectral_radius",
    "to_physics",
    "tune",
]

# A numpy scalar for all-scalar input, an ndarray otherwise (see the module docstring).
Result = Any


class HeavyBall(NamedTuple):
    """Polyak's heavy-ball parameters for a curvature range, and the rate they achieve.

    Returned by :func:`tune`.

    Parameters
    ----------
    lr : numpy.float64 or numpy.ndarray
        The learning rate ``4 / (sqrt(k_max) + sqrt(k_min))^2``.
    momentum : numpy.float64 or numpy.ndarray
        The momentum ``rate**2``.
    rate : numpy.float64 or numpy.ndarray
        The contraction per step of every curvature in the range.
    """

    lr: Result
    momentum: Result
    rate: Result


# --------------------------------------------------------------------------- input checks


def _real(name: str, value: ArrayLike) -> np.ndarray:
    """``value`` as a finite float64 array; TypeError if not real, ValueError if not finite."""
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be real (int or float), got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        raise ValueError(f"{name} must be finite, got {_first(array, ~finite)}")
    return array


def _first(array: np.ndarray, bad: np.ndarray) -> str:
    """The first element of ``array`` where ``bad`` holds, formatted for an error message."""
    bad = np.broadcast_to(bad, array.shape)
    return repr(float(array[bad].flat[0]))


def _require(name: str, array: np.ndarray, ok: np.ndarray, condition: str) -> None:
    """Raise ``ValueError('<name> must be <condition>, got <value>')`` unless ``ok`` holds."""
    ok = np.asarray(ok)
    if not ok.all():
        raise ValueError(f"{name} must be {condition}, got {_first(array, ~ok)}")


def _curvature(lr: ArrayLike, k: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked ``lr >= 0`` and ``k > 0``, and their product ``lr k``."""
    lr = _real("lr", lr)
    k = _real("k", k)
    _require("lr", lr, lr >= 0, ">= 0")
    _require("k", k, k > 0, "> 0")
    return lr, k, lr * k


def _scalar_if_0d(array: np.ndarray) -> Result:
    """A 0-d array as a numpy scalar; any other array unchanged (the ufunc convention)."""
    return array[()]


# -------------------------------------------------------------------- the discrete iteration


def eigenvalues(lr: ArrayLike, momentum: ArrayLike, k: ArrayLike) -> tuple[Result, Result]:
    r"""The two roots of the momentum recurrence along curvature ``k``.

    With ``b = 1 + p - lr k``, the recurrence ``x_{t+1} = b x_t - p x_{t-1}`` has the
    characteristic polynomial ``z^2 - b z + p`` (Qian's discrete-time analysis), whose
    roots are

    .. math::

        \lambda_{1,2} = \frac{b \pm \sqrt{b^2 - 4p}}{2}, \qquad b = 1 + p - \eta k

    with the principal complex square root, so that ``b^2 < 4 p`` gives a complex-conjugate
    pair (an oscillating, under-damped component) and ``b^2 = 4 p`` a double root (critical
    damping). The root that the textbook formula would compute by cancellation is taken from
    ``lambda_1 lambda_2 = p`` instead, so both are accurate to rounding.

    Parameters
    ----------
    lr : float or array_like
        Learning rate (Qian's eta), ``>= 0``.
    momentum : float or array_like
        Momentum coefficient p, any finite real (values outside (-1, 1) give the roots of
        the divergent iteration).
    k : float or array_like
        Curvature, an eigenvalue of the Hessian, ``> 0``.

    Returns
    -------
    lambda_1, lambda_2 : numpy.complex128 or numpy.ndarray
        The roots, complex128, of the arguments' broadcast shape (numpy scalars for scalar
        arguments); ``|lambda_1| >= |lambda_2|``.

    Raises
    ------
    ValueError
        If an argument is outside its domain or not finite.
    TypeError
        If an argument is not real.

    Examples
    --------
    >>> from momcore import theory
    >>> l1, l2 = theory.eigenvalues(0.01, 0.81, 1.0)   # the optimal momentum: a double root
    >>> round(float(l1.real), 6), round(float(l2.real), 6)
    (0.9, 0.9)
    """
    lr, k, lrk = _curvature(lr, k)
    p = _real("momentum", momentum)
    b = 1.0 + p - lrk
    root = np.sqrt((b * b - 4.0 * p).astype(np.complex128))
    # b and the root added with the same sign never cancel: that gives the larger root.
    sign = np.where(b >= 0, 1.0, -1.0)
    large = 0.5 * (b + sign * root)
    with np.errstate(divide="ignore", invalid="ignore"):
        small = np.where(large != 0, p / large, 0.5 * (b - sign * root))
    lambda_1 = np.where(b >= 0, large, small)
    lambda_2 = np.where(b >= 0, small, large)
    return _scalar_if_0d(lambda_1), _scalar_if_0d(lambda_2)


def spectral_radius(lr: ArrayLike, momentum: ArrayLike, k: ArrayLike) -> Result:
    r"""The per-step contraction factor ``max(|lambda_1|, |lambda_2|)`` along curvature ``k``.

    After many steps ``|x_t|`` shrinks (or grows) like ``rho^t``. Computed in closed form
    from ``b = 1 + p - lr k``:

    .. math::

        \rho = \begin{cases} \sqrt{p} & b^2 \le 4p \quad \text{(complex or double root)} \\
        \tfrac12 \left(|b| + \sqrt{b^2 - 4p}\right) & \text{otherwise (two real roots)}
        \end{cases}

    ``momentum = 0`` gives plain gradient descent, ``rho = |1 - lr k|``. ``rho < 1`` exactly
    where :func:`converges` holds (Qian's Result 3); Figure 1 of the paper plots ``rho`` over
    ``p`` and ``lr k``.

    Parameters
    ----------
    lr : float or array_like
        Learning rate (eta), ``>= 0``.
    momentum : float or array_like
        Momentum coefficient p, any finite real.
    k : float or array_like
        Curvature, ``> 0``.

    Returns
    -------
    numpy.float64 or numpy.ndarray
        ``rho``, float64, of the arguments' broadcast shape.

    Raises
    ------
    ValueError
        If an argument is outside its domain or not finite.
    TypeError
        If an argument is not real.

    Examples
    --------
    >>> from momcore import theory
    >>> float(theory.spectral_radius(0.01, 0.0, 1.0))     # plain descent: 1 - lr k
    0.99
    >>> float(theory.spectral_radius(0.01, 0.81, 1.0))    # the optimal momentum
    0.9
    """
    lr, k, lrk = _curvature(lr, k)
    p = _real("momentum", momentum)
    b = 1.0 + p - lrk
    discriminant = b * b - 4.0 * p
    real_roots = discriminant > 0
    # p >= b^2 / 4 >= 0 wherever the roots are complex, so sqrt(p) is real there.
    radius = np.where(
        real_roots,
        0.5 * (np.abs(b) + np.sqrt(np.where(real_roots, discriminant, 0.0))),
        np.sqrt(np.where(real_roots, 0.0, p)),
    )
    return _scalar_if_0d(radius)


def converges(lr: ArrayLike, momentum: ArrayLike, k: ArrayLike) -> Result:
    r"""Whether the momentum iteration converges along curvature ``k`` (Qian's Result 3).

    The iteration converges if and only if

    .. math::

        -1 < p < 1 \quad\text{and}\quad 0 < \eta k < 2 + 2p,

    the triangle of Figure 1 in the paper. Without momentum the bound is ``lr k < 2``;
    positive momentum widens the range of learning rates that converge, up to ``lr k < 4``
    as ``p -> 1``. Equivalent to ``spectral_radius(lr, momentum, k) < 1``.

    Parameters
    ----------
    lr : float or array_like
        Learning rate (eta), ``>= 0``.
    momentum : float or array_like
        Momentum coefficient p, any finite real.
    k : float or array_like
        Curvature, ``> 0``.

    Returns
    -------
    numpy.bool or numpy.ndarray
        True where the iteration converges, of the arguments' broadcast shape.

    Raises
    ------
    ValueError
        If an argument is outside its domain or not finite.
    TypeError
        If an argument is not real.

    Examples
    --------
    >>> from momcore import theory
    >>> bool(theory.converges(2.5, 0.0, 1.0)), bool(theory.converges(2.5, 0.5, 1.0))
    (False, True)
    """
    lr, k, lrk = _curvature(lr, k)
    p = _real("momentum", momentum)
    result = (p > -1.0) & (p < 1.0) & (lrk > 0.0) & (lrk < 2.0 + 2.0 * p)
    return _scalar_if_0d(np.asarray(result))


def _lrk_in_range(lr: ArrayLike, k: ArrayLike) -> np.ndarray:
    """Checked ``lr k`` in (0, 4), the range where an optimal momentum exists."""
    lr, k, lrk = _curvature(lr, k)
    _require("lr*k", lrk, (lrk > 0.0) & (lrk < 4.0), "in (0, 4)")
    return lrk


def optimal_momentum(lr: ArrayLike, k: ArrayLike) -> Result:
    r"""The momentum that minimises the spectral radius for a given ``lr k``.

    Qian's optimal condition for the discrete iteration:

    .. math::

        p^* = \left(1 - \sqrt{\eta k}\right)^2, \qquad 0 < \eta k < 4.

    At ``p*`` the discriminant ``(1 + p - lr k)^2 - 4 p`` vanishes: the two roots coincide at
    ``1 - sqrt(lr k)`` (critical damping), and ``p*`` lies in [0, 1). A larger ``p`` makes
    the component oscillate with radius ``sqrt(p)``; a smaller one leaves a real root
    farther from zero.

    Parameters
    ----------
    lr : float or array_like
        Learning rate (eta), ``>= 0``.
    k : float or array_like
        Curvature, ``> 0``; ``lr k`` must lie in (0, 4).

    Returns
    -------
    numpy.float64 or numpy.ndarray
        ``p*``, float64, of the arguments' broadcast shape.

    Raises
    ------
    ValueError
        If ``lr k`` is outside (0, 4), or an argument is outside its domain or not finite.
    TypeError
        If an argument is not real.

    Examples
    --------
    >>> from momcore import theory
    >>> float(theory.optimal_momentum(0.01, 1.0))
    0.81
    """
    lrk = _lrk_in_range(lr, k)
    return _scalar_if_0d((1.0 - np.sqrt(lrk)) ** 2)


def optimal_rate(lr: ArrayLike, k: ArrayLike) -> Result:
    """The spectral radius at the optimal momentum: ``|1 - sqrt(lr k)|`` for 0 < lr k < 4.

    Equal to ``sqrt(p*)`` with ``p*`` from :func:`optimal_momentum`. Plain gradient descent
    with the same ``lr`` contracts by ``|1 - lr k|`` per step, so for small ``lr k`` the
    optimal momentum turns ``1 - lr k`` into ``1 - sqrt(lr k)`` (``lr k = 0.01``: 0.99 per
    step becomes 0.9).

    Parameters
    ----------
    lr : float or array_like
        Learning rate (eta), ``>= 0``.
    k : float or array_like
        Curvature, ``> 0``; ``lr k`` must lie in (0, 4).

    Returns
    -------
    numpy.float64 or numpy.ndarray
        The contraction per step, float64, of the arguments' broadcast shape.

    Raises
    ------
    ValueError
        If ``lr k`` is outside (0, 4), or an argument is outside its domain or not finite.
    TypeError
        If an argument is not real.
    """
    lrk = _lrk_in_range(lr, k)
    return _scalar_if_0d(np.abs(1.0 - np.sqrt(lrk)))


def tune(k_min: ArrayLike, k_max: ArrayLike) -> HeavyBall:
    r"""Polyak's heavy-ball ``lr`` and ``momentum`` for curvatures in ``[k_min, k_max]``.

    With the condition number :math:`K = k_{\max} / k_{\min}`:

    .. math::

        \eta = \frac{4}{(\sqrt{k_{\max}} + \sqrt{k_{\min}})^2}, \qquad
        p = \left(\frac{\sqrt{K} - 1}{\sqrt{K} + 1}\right)^2, \qquad
        \text{rate} = \frac{\sqrt{K} - 1}{\sqrt{K} + 1}

    (B. T. Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.)
    The choice puts both ends of the spectrum exactly at critical damping, so every
    curvature in the range contracts by ``rate = sqrt(p)`` per step, the smallest worst-case
    spectral radius over the range. The best plain gradient descent
    (``lr = 2 / (k_min + k_max)``) only reaches ``(K - 1) / (K + 1)``.

    Parameters
    ----------
    k_min : float or array_like
        The smallest curvature, ``> 0``.
    k_max : float or array_like
        The largest curvature, ``>= k_min``.

    Returns
    -------
    HeavyBall
        ``(lr, momentum, rate)``, each float64 of the arguments' broadcast shape.

    Raises
    ------
    ValueError
        If ``k_min <= 0``, ``k_max < k_min`` or an argument is not finite.
    TypeError
        If an argument is not real.

    Examples
    --------
    >>> from momcore import theory
    >>> pair = theory.tune(1.0, 50.0)
    >>> round(float(pair.lr), 4), round(float(pair.momentum), 4), round(float(pair.rate), 4)
    (0.0614, 0.5658, 0.7522)
    """
    k_min = _real("k_min", k_min)
    k_max = _real("k_max", k_max)
    _require("k_min", k_min, k_min > 0, "> 0")
    k_min, k_max = np.broadcast_arrays(k_min, k_max)
    _require("k_max", k_max, k_max >= k_min, ">= k_min")
    sqrt_min, sqrt_max = np.sqrt(k_min), np.sqrt(k_max)
    # (sqrt(K) - 1) / (sqrt(K) + 1), written without forming K.
    rate = (sqrt_max - sqrt_min) / (sqrt_max + sqrt_min)
    lr = 4.0 / (sqrt_max + sqrt_min) ** 2
    return HeavyBall(_scalar_if_0d(lr), _scalar_if_0d(rate * rate), _scalar_if_0d(rate))


def iterations_to(tol: ArrayLike, lr: ArrayLike, momentum: ArrayLike, k: ArrayLike) -> Result:
    """The number of steps for the asymptotic contraction to reach ``tol``.

    The smallest integer ``t`` with ``rho^t <= tol``, where ``rho`` is
    :func:`spectral_radius`; that is ``ceil(log(tol) / log(rho))`` (at least 1, and 1 when
    ``rho = 0``), and ``inf`` where the iteration does not converge (``rho >= 1``).

    ``rho^t`` is how much the slowest mode has shrunk after ``t`` steps, up to a constant
    that depends on the start, so this is the asymptotic count, not a bound for a given
    start. The count is checked against ``rho**t`` itself, so a ``tol`` that is exactly a
    power of ``rho`` (``tol = 0.25``, ``rho = 0.5``: 2 steps) is not pushed one step further
    by the rounding of the logarithms.

    Parameters
    ----------
    tol : float or array_like
        The factor to reach, in (0, 1).
    lr : float or array_like
        Learning rate (eta), ``>= 0``.
    momentum : float or array_like
        Momentum coefficient p, any finite real.
    k : float or array_like
        Curvature, ``> 0``.

    Returns
    -------
    numpy.float64 or numpy.ndarray
        Whole numbers, or ``inf`` where the iteration does not converge, float64 of the
        arguments' broadcast shape.

    Raises
    ------
    ValueError
        If an argument is outside its domain or not finite.
    TypeError
        If an argument is not real.

    Examples
    --------
    >>> from momcore import theory
    >>> float(theory.iterations_to(1e-6, 0.01, 0.0, 1.0)), float(theory.iterations_to(1e-6, 0.01, 0.81, 1.0))
    (1375.0, 132.0)
    """
    tol = _real("tol", tol)
    _require("tol", tol, (tol > 0.0) & (tol < 1.0), "in (0, 1)")
    rho = np.asarray(spectral_radius(lr, momentum, k))
    tol, rho = np.broadcast_arrays(tol, rho)
    contracting = rho < 1.0
    safe_rho = np.where(contracting, rho, 0.5)
    with np.errstate(divide="ignore"):
        steps = np.maximum(np.ceil(np.log(tol) / np.log(safe_rho)), 1.0)
    # Correct the rounding of the logarithms so that the float rho**t obeys the definition.
    steps = np.where(safe_rho**steps > tol, steps + 1.0, steps)
    steps = np.where((steps > 1.0) & (safe_rho ** (steps - 1.0) <= tol), steps - 1.0, steps)
    return _scalar_if_0d(np.where(contracting, steps, np.inf))


# ------------------------------------------------------------------- the continuous picture


def from_physics(mass: ArrayLike, friction: ArrayLike, dt: ArrayLike) -> tuple[Result, Result]:
    r"""``(lr, momentum)`` of the momentum rule that discretises a particle in a viscous medium.

    Qian's Eq. 7-8: discretising ``m w'' + mu w' = -grad E`` with time step ``dt`` as

    .. math::

        m \frac{w_{t+1} - 2 w_t + w_{t-1}}{\Delta t^2} + \mu \frac{w_{t+1} - w_t}{\Delta t}
        = -\nabla E(w_t)

    and solving for ``w_{t+1} - w_t`` gives the classical momentum rule with

    .. math::

        \eta = \frac{\Delta t^2}{m + \mu \Delta t}, \qquad p = \frac{m}{m + \mu \Delta t},

    so the momentum is the mass relative to mass plus friction per step. ``friction = 0``
    gives ``p = 1`` (no damping). Inverse of :func:`to_physics`.

    Parameters
    ----------
    mass : float or array_like
        The particle's mass m, ``> 0``.
    friction : float or array_like
        The friction coefficient mu, ``>= 0``.
    dt : float or array_like
        The time step, ``> 0``.

    Returns
    -------
    lr, momentum : numpy.float64 or numpy.ndarray
        float64 each, of the arguments' broadcast shape.

    Raises
    ------
    ValueError
        If an argument is outside its domain or not finite.
    TypeError
        If an argument is not real.
    """
    mass = _real("mass", mass)
    friction = _real("friction", friction)
    dt = _real("dt", dt)
    _require("mass", mass, mass > 0, "> 0")
    _require("friction", friction, friction >= 0, ">= 0")
    _require("dt", dt, dt > 0, "> 0")
    denominator = mass + friction * dt
    return _scalar_if_0d(dt * dt / denominator), _scalar_if_0d(mass / denominator)


def to_physics(lr: ArrayLike, momentum: ArrayLike, dt: ArrayLike) -> tuple[Result, Result]:
    r"""``(mass, friction)`` of the particle whose discretisation is the momentum rule.

    The inverse of Qian's Eq. 7-8 (:func:`from_physics`):

    .. math::

        m = \frac{p \, \Delta t^2}{\eta}, \qquad \mu = \frac{\Delta t \, (1 - p)}{\eta}.

    A positive mass and a non-negative friction need ``0 < p <= 1`` and ``lr > 0``.

    Parameters
    ----------
    lr : float or array_like
        Learning rate (eta), ``> 0``.
    momentum : float or array_like
        Momentum coefficient p, in (0, 1].
    dt : float or array_like
        The time step, ``> 0``.

    Returns
    -------
    mass, friction : numpy.float64 or numpy.ndarray
        float64 each, of the arguments' broadcast shape.

    Raises
    ------
    ValueError
        If an argument is outside its domain or not finite.
    TypeError
        If an argument is not real.

    Examples
    --------
    >>> from momcore import theory
    >>> m, mu = theory.to_physics(0.01, 0.9, 1.0)
    >>> lr, p = theory.from_physics(m, mu, 1.0)
    >>> round(float(lr), 12), round(float(p), 12)
    (0.01, 0.9)
    """
    lr = _real("lr", lr)
    p = _real("momentum", momentum)
    dt = _real("dt", dt)
    _require("lr", lr, lr > 0, "> 0")
    _require("momentum", p, (p > 0) & (p <= 1), "in (0, 1] (mass > 0, friction >= 0)")
    _require("dt", dt, dt > 0, "> 0")
    return _scalar_if_0d(p * dt * dt / lr), _scalar_if_0d(dt * (1.0 - p) / lr)


def improvement_factor(k: ArrayLike, mass: ArrayLike, friction: ArrayLike) -> Result:
    r"""How much faster the damped particle approaches the minimum than pure friction does.

    Continuous time (Qian's Results 1 and 2). Along curvature ``k`` the particle obeys
    ``m x'' + mu x' + k x = 0``, whose slowest mode decays like ``exp(Re(lambda_1) t)``
    with

    .. math::

        \lambda_1 = -\frac{\mu}{2m} + \sqrt{\frac{\mu^2}{4m^2} - \frac{k}{m}}.

    Without mass (gradient descent in continuous time, ``mu x' = -k x``) the decay rate is
    ``k / mu``. The factor is ``|Re lambda_1| / (k / mu)``; with ``a = mu / (2 m)``::

        2 a / (a + sqrt(a^2 - k / m))   if k <= mu^2 / (4 m)   (over-damped: in (1, 2])
        a mu / k = mu^2 / (2 m k)       if k >  mu^2 / (4 m)   (under-damped)

    It is > 1 (momentum helps) iff ``k < mu^2 / (2 m)``, equals 1 at ``k = mu^2 / (2 m)``
    and reaches its maximum 2 at critical damping ``k = mu^2 / (4 m)``.

    Parameters
    ----------
    k : float or array_like
        Curvature, ``> 0``.
    mass : float or array_like
        The particle's mass m, ``> 0``.
    friction : float or array_like
        The friction coefficient mu, ``> 0``.

    Returns
    -------
    numpy.float64 or numpy.ndarray
        The factor, float64, of the arguments' broadcast shape.

    Raises
    ------
    ValueError
        If an argument is outside its domain or not finite.
    TypeError
        If an argument is not real.

    Examples
    --------
    >>> from momcore import theory
    >>> float(theory.improvement_factor(0.25, 1.0, 1.0))     # critical damping
    2.0
    """
    k = _real("k", k)
    mass = _real("mass", mass)
    friction = _real("friction", friction)
    _require("k", k, k > 0, "> 0")
    _require("mass", mass, mass > 0, "> 0")
    _require("friction", friction, friction > 0, "> 0")
    half_rate = friction / (2.0 * mass)
    discriminant = half_rate * half_rate - k / mass
    over_damped = discriminant >= 0
    # The over-damped form avoids the cancellation in -a + sqrt(a^2 - k/m) for small k.
    factor = np.where(
        over_damped,
        2.0 * half_rate / (half_rate + np.sqrt(np.where(over_damped, discriminant, 0.0))),
        half_rate * friction / k,
    )
    return _scalar_if_0d(factor)


# ------------------------------------------------------------- the compiled iteration itself

# One place decides the range in which simulate measures: a run whose weight norm grows past
# the bound has diverged and stops; norms below its inverse are left out of the measurement.
# The squares of both stay inside the normal range of the dtype (the norm is taken via a dot).
_NORM_BOUND = {np.dtype(np.float32): 1e15, np.dtype(np.float64): 1e150}


class Trajectory(NamedTuple):
    """A run of the compiled momentum kernel on a quadratic; see :func:`simulate`.

    ``T`` below is ``steps``, or fewer when the run diverged.

    Parameters
    ----------
    weights : numpy.ndarray
        ``(T + 1, n)``: ``w_0 .. w_T`` in the dtype of the run.
    loss : numpy.ndarray
        ``(T + 1,)`` float64: ``E(w_t)``.
    contraction : float
        The measured per-step contraction factor (``inf`` when the run diverged).
    """

    weights: np.ndarray
    loss: np.ndarray
    contraction: float

    def steps_to(self, tol: float) -> float:
        """The first step ``t`` from which on ``loss`` stays below ``tol * loss[0]``.

        Parameters
        ----------
        tol : float
            The factor, in (0, 1).

        Returns
        -------
        float
            A whole number, as :func:`iterations_to` returns, or ``inf`` when the run ends above
            that level (or diverged).

        Raises
        ------
        ValueError
            If ``tol`` is outside (0, 1).
        """
        tol = float(tol)
        if not 0.0 < tol < 1.0:
            raise ValueError(f"tol must be in (0, 1), got {tol!r}")
        above = np.flatnonzero(~(self.loss < tol * self.loss[0]))
        if not np.isfinite(self.contraction) or above[-1] == self.loss.size - 1:
            return math.inf
        return float(above[-1] + 1)


def _scalar(name: str, value: Any) -> float:
    """``value`` as a finite Python float; a ValueError naming ``name`` otherwise."""
    array = _real(name, value)
    if array.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got an array of shape {array.shape}")
    return float(array)


def _hessian_matrix(hessian: ArrayLike, dtype: np.dtype) -> np.ndarray:
    """Checked symmetric positive-definite matrix, C-contiguous in ``dtype``."""
    matrix = _real("hessian", hessian)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"hessian must be a non-empty square matrix, got shape {matrix.shape}")
    asymmetry = float(np.max(np.abs(matrix - matrix.T)))
    if asymmetry > 1e-10 * float(np.max(np.abs(matrix))):
        raise ValueError(f"hessian must be symmetric, max |H - H^T| = {asymmetry:.3g}")
    smallest = float(np.linalg.eigvalsh(matrix)[0])
    if not smallest > 0.0:
        raise ValueError(f"hessian must be positive definite, smallest eigenvalue {smallest:.6g}")
    return np.ascontiguousarray(matrix, dtype=dtype)


def _measured_contraction(sq_norms: np.ndarray, bound: float) -> float:
    """Per-step contraction of a run from its squared weight norms ``||w_t||^2``, t = 0..T.

    The measure is the norm of the state of the recurrence, ``n_t = ||(w_t, w_{t-1})||``
    (``w_{-1} = w_0``: the momentum buffer starts at zero). Along one eigen-component it
    behaves like ``rho^t`` times a bounded factor, even where the roots are complex and
    ``|w_t|`` itself passes near zero every half period. The factor is the geometric mean
    ratio over the second half of the measurable run::

        (n_T1 / n_T0) ** (1 / (T1 - T0)),    T0 = T1 // 2

    where ``T1`` is the last step before ``n_t`` drops below ``1 / bound`` (underflow; the
    whole run if it never does). A run that leaves the measurable range within two steps
    (``lr k = 1`` without momentum reaches exactly zero) contracts faster than anything this
    can resolve: 0.
    """
    pair = sq_norms.astype(np.float64)
    pair[1:] += sq_norms[:-1]
    pair[0] *= 2.0
    small = np.flatnonzero(~(pair > bound**-2))
    last = int(small[0]) - 1 if small.size else pair.size - 1
    if last < 2:
        return 0.0
    first = last // 2
    return float(np.exp(0.5 * (np.log(pair[last]) - np.log(pair[first])) / (last - first)))


def simulate(
    lr: float,
    momentum: float,
    k: ArrayLike | None,
    steps: int,
    *,
    rule: str = "classical",
    w0: ArrayLike | None = None,
    hessian: ArrayLike | None = None,
    dtype: Any = np.float64,
) -> Trajectory:
    """Run the compiled kernel ``momcore.momentum_step`` on a quadratic and measure it.

    The error is either diagonal, with curvatures ``k_i > 0``::

        E(w) = 1/2 sum_i k_i w_i^2,      g = k * w

    or, with ``hessian = H`` (symmetric positive definite; pass ``k=None``)::

        E(w) = 1/2 w^T H w,              g = H w

    Each step computes ``g`` in numpy into one preallocated buffer and calls
    ``momentum_step(w, g, state, lr=lr, momentum=momentum, rule=rule)``; the state starts at
    zero. For ``rule="classical"`` (and ``velocity`` without dampening, which gives the same
    weights) every eigen-component of ``H`` follows ``x_{t+1} = (1 + p - lr k) x_t -
    p x_{t-1}``, so ``contraction`` should match ``max_i spectral_radius(lr, momentum, k_i)``
    over the eigen-components present in ``w0``.

    ``contraction`` is the geometric mean, over the second half of the run, of the per-step
    ratio of ``||(w_t, w_{t-1})||`` (the state of the recurrence; unlike ``||w_t||`` it does
    not pass through zero when the roots are complex). Norms below ``1e-150`` (float32:
    ``1e-15``) are left out as underflow, and 0 is reported for a run that gets there within
    two steps. A run whose norm exceeds ``1e150`` (float32: ``1e15``) or turns non-finite has
    diverged: it stops there, with ``contraction = inf`` and the arrays cut at that step; no
    floating-point warning is issued. For a rate ``rho`` the measurement needs a few
    ``1 / (1 - rho)`` steps; near a double root it is biased up by about
    ``2 ** (1 / (steps / 2))``.

    Parameters
    ----------
    lr : float
        Learning rate, ``>= 0``.
    momentum : float
        Momentum coefficient, in (-1, 1).
    k : array_like or None
        1-D array of curvatures ``> 0`` (a scalar is one curvature), or None with
        ``hessian``.
    steps : int
        Number of kernel steps, ``>= 1``.
    rule : str
        Any rule of ``momentum_step``; the closed forms of this module are for
        ``classical``.
    w0 : array_like or None
        The start, shape ``(n,)``, finite and not all zero; default all ones.
    hessian : array_like or None
        ``(n, n)`` symmetric positive-definite matrix, instead of ``k``.
    dtype : numpy dtype
        float32 or float64, the dtype of the weights, gradient and state.

    Returns
    -------
    Trajectory
        ``(weights, loss, contraction)``.

    Raises
    ------
    ValueError
        If both or neither of ``k`` and ``hessian`` are given, an argument is outside its
        domain, ``hessian`` is not symmetric positive definite, or ``w0`` has the wrong
        shape or is all zero.
    TypeError
        If ``steps`` is not an int or an argument is not real.

    Notes
    -----
    Cost: ``steps`` kernel calls plus O(n) (diagonal) or O(n^2) (``hessian``) numpy work per
    step; memory O(steps n) for the stored weights.
    """
    from momcore import momentum_step

    dtype = np.dtype(dtype)
    if dtype not in _NORM_BOUND:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    lr = _scalar("lr", lr)
    momentum = _scalar("momentum", momentum)
    _require("lr", np.asarray(lr), lr >= 0, ">= 0")
    _require("momentum", np.asarray(momentum), -1.0 < momentum < 1.0, "in (-1, 1)")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"steps must be an int, got {type(steps).__name__}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")

    if (k is None) == (hessian is None):
        raise ValueError("give exactly one of k (diagonal curvatures) and hessian")
    if hessian is None:
        curvature = _real("k", k)
        if curvature.ndim > 1 or curvature.size == 0:
            raise ValueError(f"k must be a non-empty 1-D array, got shape {curvature.shape}")
        _require("k", curvature, curvature > 0, "> 0")
        curvature = np.ascontiguousarray(np.atleast_1d(curvature), dtype=dtype)
        n = curvature.size

        def gradient(w: np.ndarray, out: np.ndarray) -> None:
            np.multiply(curvature, w, out=out)

    else:
        matrix = _hessian_matrix(hessian, dtype)
        n = matrix.shape[0]

        def gradient(w: np.ndarray, out: np.ndarray) -> None:
            np.dot(matrix, w, out=out)

    if w0 is None:
        start = np.ones(n, dtype=dtype)
    else:
        start = _real("w0", w0)
        if start.shape != (n,):
            raise ValueError(f"w0 must have shape ({n},), got {start.shape}")
        if not np.any(start != 0):
            raise ValueError("w0 must not be all zero (the minimum itself: nothing to measure)")
        start = np.array(start, dtype=dtype)

    bound = _NORM_BOUND[dtype]
    weights = np.empty((steps + 1, n), dtype=dtype)
    sq_norms = np.empty(steps + 1)
    loss = np.empty(steps + 1)
    w, g, state = start, np.empty(n, dtype=dtype), np.zeros(n, dtype=dtype)
    weights[0] = w
    sq_norms[0] = np.dot(w, w)
    if not sq_norms[0] <= bound * bound:
        raise ValueError(f"w0 must have a norm <= {bound:g}")
    last, diverged = steps, False
    with np.errstate(all="ignore"):
        for t in range(steps):
            gradient(w, g)
            loss[t] = 0.5 * np.dot(g, w)
            momentum_step(w, g, state, lr=lr, momentum=momentum, rule=rule)
            weights[t + 1] = w
            sq_norms[t + 1] = np.dot(w, w)
            if not sq_norms[t + 1] <= bound * bound:  # also true for inf and nan
                last, diverged = t + 1, True
                break
        gradient(w, g)
        loss[last] = 0.5 * np.dot(g, w)
    if diverged:
        return Trajectory(weights[: last + 1], loss[: last + 1], math.inf)
    return Trajectory(weights, loss, _measured_contraction(sq_norms, bound))

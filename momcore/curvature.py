"""Momentum chosen from the curvature: Qian's Eq. 25 applied per weight.

Qian (1999) shows that a component of curvature k contracts fastest, at a learning
rate lr, with the momentum ``p* = (1 - sqrt(lr k))^2`` (critical damping; rate
``1 - sqrt(lr k)`` instead of plain descent's ``1 - lr k``), and leaves open whether
the diagonal of the Hessian gives k_i good enough to choose p per weight.
:class:`PerWeightMomentum` is that choice, made cheap: a running estimate of each
weight's k_i (the diagonal Gauss-Newton curvature of :meth:`momcore.MLP.curvature`,
or any diagonal the caller supplies) turned into one momentum per weight, which the
fused kernel's ``qian`` rule reads in the same pass as the step.

:class:`momcore.SGD` with ``rule="qian"`` owns one of these and the buffers it
fills; ``SGD.observe_curvature(diagonals)`` is the one call a training loop makes.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import isfinite

import numpy as np


@dataclass(frozen=True)
class PerWeightMomentum:
    """How per-weight curvatures become per-weight momenta.

    Each observation ``c`` (one array per parameter, >= 0) updates the running
    estimate ``k <- decay*k + (1-decay)*c``, read bias-corrected
    (``k / (1 - decay^t)``, as Adam does, so that a constant curvature is exact from
    the first step). Then, per weight, with the lr of its parameter group::

        k_i  = max(k_i, floor * max_j k_j)      (the floor: k_i -> 0 must not give p_i -> 1)
        x_i  = min(lr k_i, 4 (1 - eps))         (Eq. 25 holds for 0 < lr k < 4)
        p_i  = min((1 - sqrt(x_i))^2, max_momentum)

    Every (lr, p_i) then lies inside Result 3's convergence region,
    ``lr k_i < 2 + 2 p_i`` (at ``p*`` the margin is ``(2 - sqrt(lr k))^2 > 0``), unless
    the cap ``max_momentum`` bites at ``x_i`` near 4; in the intended use,
    ``lr <= 1 / max k``, every ``x_i <= 1`` and ``p_i`` runs from 0 (the stiffest
    weight, one step) to ``(1 - sqrt(lr floor max k))^2`` (the flattest). ``max`` is
    over all parameters of the optimizer together, so one floor serves the network.

    ``every``: a training loop that computes the curvature only every ``every`` steps
    (momcore.MLP.fit does) keeps the momenta in between.

    Parameters
    ----------
    decay : float
        Weight of the old estimate in the moving average, in [0, 1) (default 0.9).
    floor : float
        The smallest curvature, as a fraction of the largest, in (0, 1] (default 1e-3).
    max_momentum : float
        The cap on every momentum, in [0, 1) (default 0.99).
    every : int
        Steps between curvature computations, ``>= 1`` (default 1).

    Raises
    ------
    ValueError
        If an argument is out of range.
    """

    decay: float = 0.9
    floor: float = 1e-3
    max_momentum: float = 0.99
    every: int = 1

    def __post_init__(self) -> None:
        if not (isfinite(self.decay) and 0.0 <= self.decay < 1.0):
            raise ValueError(f"decay must lie in [0, 1), got {self.decay!r}")
        if not (isfinite(self.floor) and 0.0 < self.floor <= 1.0):
            raise ValueError(f"floor must lie in (0, 1], got {self.floor!r}")
        if not (isfinite(self.max_momentum) and 0.0 <= self.max_momentum < 1.0):
            raise ValueError(f"max_momentum must lie in [0, 1), got {self.max_momentum!r}")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"every must be an integer >= 1, got {self.every!r}")

    def update_estimates(self, estimates: list[np.ndarray], observed: list[np.ndarray],
                         t: int) -> None:
        """estimates <- decay*estimates + (1-decay)*observed, in place.

        Parameters
        ----------
        estimates : list of numpy.ndarray
            The running estimates, one per parameter, updated in place.
        observed : list of numpy.ndarray
            This observation's curvature diagonals, shaped like ``estimates``.
        t : int
            The count of observations, this one included (for the bias correction).
        """
        for k, c in zip(estimates, observed):
            k *= self.decay
            k += (1.0 - self.decay) * c

    def momenta(self, out: list[np.ndarray], estimates: list[np.ndarray],
                lrs: list[float], t: int) -> None:
        """out[i] := the per-weight momenta from the estimates (see the class).

        Parameters
        ----------
        out : list of numpy.ndarray
            One momentum buffer per parameter, written in place.
        estimates : list of numpy.ndarray
            The running estimates, one per parameter.
        lrs : list of float
            The learning rate of each parameter (its group's).
        t : int
            The count of observations so far (for the bias correction; 0: none).
        """
        correction = 1.0 - self.decay ** t if t > 0 else 1.0
        top = max((float(k.max()) for k in estimates if k.size), default=0.0) / correction
        least = self.floor * top if top > 0 else np.finfo(np.float64).tiny
        for p, k, lr in zip(out, estimates, lrs):
            x = np.maximum(k / correction, least) * lr
            np.minimum(x, 4.0 * (1.0 - 1e-12), out=x)
            x = (1.0 - np.sqrt(x)) ** 2
            np.minimum(x, self.max_momentum, out=x)
            p[...] = x


class Tuner:
    """Sets an optimizer's lr and momentum every step from measured curvature, in the
    spirit of YellowFin (Zhang, Mitliagkas and Re, 2017), with :func:`momcore.theory.tune`.

    Each :meth:`observe` estimates the curvature range [k_min, k_max], the distance
    D to the optimum and the gradient variance C, all as bias-corrected moving
    averages (``beta``):

    - with ``curvature`` (one diagonal per parameter, e.g. :meth:`momcore.MLP.curvature`):
      ``k_max`` = the largest entry, ``k_min`` = the smallest, floored at
      ``floor * k_max``;
    - without: the secant curvature ``||g_t - g_{t-1}|| / ||w_t - w_{t-1}||`` (a
      Rayleigh quotient of the Hessian along the last step, so it lies in the
      spectrum's range) over a sliding ``window`` of steps, ``k_max`` its largest and
      ``k_min`` its smallest value. (YellowFin's own proxy, ``||g||^2``, is not a
      curvature in the units of ``1/lr``; on a deterministic quadratic it left the
      stiffest direction oscillating, so it is not used.)

    ``D = avg ||g|| / avg h`` (h the largest curvature), ``C = sum(avg g^2 - (avg g)^2)``.
    Then, as YellowFin's single-step problem: the momentum is the larger of Polyak's
    (``theory.tune(k_min, k_max).momentum``, every curvature of the range critically
    damped or better) and the root of YellowFin's cubic that balances the
    variance against the distance (``x^2`` with ``x`` the real root of
    ``x^3 + q x + q = 0`` shifted by one, ``q = D^2 k_min^2 / (2 C)``; absent when
    C = 0), and ``lr = (1 - sqrt(momentum))^2 / k_min``. With ``stochastic=False``
    (full-batch gradients: the changes of g along the path are not noise) the cubic
    is skipped and the pair is exactly ``theory.tune(k_min, k_max)``.

    Use: ``tuner = Tuner(opt)``, then per step ``tuner.observe(grads)`` (it sets
    ``opt.lr`` and ``opt.momentum``) and ``opt.step(grads)``. ``lr``: the rate used
    until the first estimate (None: the optimizer's own).

    Parameters
    ----------
    optimizer : momcore.SGD
        The optimizer whose ``lr`` and ``momentum`` are set.
    beta : float, keyword-only
        Weight of the old value in the moving averages, in [0, 1) (default 0.99).
    window : int, keyword-only
        Steps of secant curvatures kept, ``>= 1`` (default 20).
    floor : float, keyword-only
        The smallest ``k_min`` as a fraction of ``k_max`` (default 1e-6).
    lr : float or None, keyword-only
        The learning rate until the first estimate (None: the optimizer's own).
    stochastic : bool, keyword-only
        False for full-batch gradients: the pair is exactly ``theory.tune(k_min, k_max)``.

    Raises
    ------
    ValueError
        If ``beta`` or ``window`` is out of range.
    """

    def __init__(self, optimizer, *, beta: float = 0.99, window: int = 20,
                 floor: float = 1e-6, lr: float | None = None,
                 stochastic: bool = True) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must lie in [0, 1), got {beta!r}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window!r}")
        self.optimizer, self.beta, self.window, self.floor = optimizer, beta, window, floor
        self.stochastic = stochastic
        self._previous: tuple[list[np.ndarray], list[np.ndarray]] | None = None
        if lr is not None:
            optimizer.lr = lr
        self.t = 0
        self._avg: dict[str, float] = {}
        self._count: dict[str, int] = {}
        self._grad_avg: list[np.ndarray] | None = None
        self._grad_sq_avg: list[np.ndarray] | None = None
        self._recent: list[float] = []
        self.k_min = self.k_max = self.distance = self.variance = float("nan")

    def _smooth(self, key: str, value: float) -> float:
        n = self._count[key] = self._count.get(key, 0) + 1
        self._avg[key] = self.beta * self._avg.get(key, 0.0) + (1 - self.beta) * value
        return self._avg[key] / (1 - self.beta ** n)

    def observe(self, grads, curvature=None) -> tuple[float, float]:
        """Updates the estimates from this step and sets the optimizer's lr and momentum.

        Parameters
        ----------
        grads : sequence of array_like
            This step's gradients, one per parameter.
        curvature : sequence of array_like or None
            This step's curvature diagonals, one per parameter (e.g. :meth:`momcore.MLP.curvature`);
            None: the secant curvature along the last step.

        Returns
        -------
        lr, momentum : float
            The values set (the optimizer's own until there is an estimate).
        """
        grads = [np.asarray(g, np.float64) for g in grads]
        self.t += 1
        norm_sq = float(sum(np.vdot(g, g) for g in grads))
        if curvature is not None:
            diag = np.concatenate([np.ravel(c) for c in curvature]).astype(np.float64)
            top = float(diag.max())
            k_max_now, k_min_now = top, max(float(diag.min()), self.floor * top)
        else:
            weights = [np.array(p, np.float64) for p in self.optimizer.params]
            if self._previous is not None:
                dg = sum(float(np.sum((g - h) ** 2)) for g, h in zip(grads, self._previous[0]))
                dw = sum(float(np.sum((w - v) ** 2)) for w, v in zip(weights,
                                                                      self._previous[1]))
                if dw > 0 and dg > 0:
                    self._recent = (self._recent + [np.sqrt(dg / dw)])[-self.window:]
            self._previous = (grads, weights)
            if not self._recent:
                return self.optimizer.lr, self.optimizer.momentum
            k_max_now = max(self._recent)
            k_min_now = max(min(self._recent), self.floor * k_max_now)
        self.k_max = self._smooth("k_max", k_max_now)
        self.k_min = min(self._smooth("k_min", k_min_now), self.k_max)
        h = self._smooth("h", k_max_now if curvature is not None else norm_sq)
        self.distance = self._smooth("norm", np.sqrt(norm_sq)) / h if h > 0 else 0.0
        if self._grad_avg is None:
            self._grad_avg = [np.zeros_like(g) for g in grads]
            self._grad_sq_avg = [np.zeros_like(g) for g in grads]
        c = 1 - self.beta ** self.t
        variance = 0.0
        for m, v, g in zip(self._grad_avg, self._grad_sq_avg, grads):
            m *= self.beta
            m += (1 - self.beta) * g
            v *= self.beta
            v += (1 - self.beta) * g * g
            variance += float(np.sum(np.maximum(v / c - (m / c) ** 2, 0.0)))
        self.variance = variance
        if not (self.k_min > 0 and np.isfinite(self.k_max)):
            return self.optimizer.lr, self.optimizer.momentum
        from momcore import theory

        momentum = float(theory.tune(self.k_min, self.k_max).momentum)
        if self.stochastic and self.t > 1 and variance > 0 and self.distance > 0:
            momentum = max(momentum, _cubic_momentum(self.distance, self.k_min, variance))
        momentum = min(momentum, 0.999)
        lr = (1 - np.sqrt(momentum)) ** 2 / self.k_min
        self.optimizer.lr, self.optimizer.momentum = lr, momentum
        return lr, momentum


def _cubic_momentum(distance: float, k_min: float, variance: float) -> float:
    """YellowFin's single-step momentum: x^2 for the real root x = y + 1 of
    y^3 + q y + q = 0 (q = D^2 k_min^2 / (2 C)), by Vieta's substitution."""
    q = distance ** 2 * k_min ** 2 / (2 * variance)
    w3 = (-np.sqrt(q * q + 4.0 / 27.0 * q ** 3) - q) / 2.0
    w = np.sign(w3) * np.abs(w3) ** (1.0 / 3.0)
    y = w - q / (3.0 * w) if w != 0 else 0.0
    x = y + 1.0
    return float(x * x)

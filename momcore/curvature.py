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
        """estimates <- decay*estimates + (1-decay)*observed, in place (t: the count
        of observations, this one included, for the bias correction)."""
        for k, c in zip(estimates, observed):
            k *= self.decay
            k += (1.0 - self.decay) * c

    def momenta(self, out: list[np.ndarray], estimates: list[np.ndarray],
                lrs: list[float], t: int) -> None:
        """out[i] := the per-weight momenta from the estimates (see the class), with
        lrs[i] the learning rate of parameter i."""
        correction = 1.0 - self.decay ** t if t > 0 else 1.0
        top = max((float(k.max()) for k in estimates if k.size), default=0.0) / correction
        least = self.floor * top if top > 0 else np.finfo(np.float64).tiny
        for p, k, lr in zip(out, estimates, lrs):
            x = np.maximum(k / correction, least) * lr
            np.minimum(x, 4.0 * (1.0 - 1e-12), out=x)
            x = (1.0 - np.sqrt(x)) ** 2
            np.minimum(x, self.max_momentum, out=x)
            p[...] = x

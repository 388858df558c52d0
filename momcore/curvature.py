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
from typing import Any

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


AUTO_RULES: tuple[str, ...] = ("classical",)
"""The rules ``momentum="auto"`` tunes: those whose (lr, momentum) are the heavy ball's,
the iteration Polyak's pair (:func:`momcore.theory.tune`) is optimal for."""

AUTO_LR = 1e-3
"""The first step's rate under ``momentum="auto"`` when none is given (the tuner has no
estimate before it has seen two gradients); small, as the first step is blind."""


def check_auto_rule(rule: Any, where: str = "") -> None:
    """Refuses a rule that ``momentum="auto"`` cannot tune.

    Parameters
    ----------
    rule : str
        The update rule asked for.
    where : str, optional
        The start of the error message (e.g. ``"param_groups[1]: "``).

    Raises
    ------
    ValueError
        If ``rule`` is not one of :data:`AUTO_RULES`.
    """
    if rule not in AUTO_RULES:
        raise ValueError(f"{where}momentum='auto' tunes the heavy ball (rules {AUTO_RULES}); "
                         f"rule {rule!r} is not one")


def is_auto(momentum: Any) -> bool:
    """Whether a ``momentum`` argument asks for the tuner.

    Every surface (SGD, MLP.fit, the estimators, the torch optimizer) asks this one
    question.

    Parameters
    ----------
    momentum : object
        A ``momentum`` argument as given.

    Returns
    -------
    bool
        True for the string ``"auto"``, False for anything else.
    """
    return isinstance(momentum, str) and momentum == "auto"


class Tuner:
    """Sets an optimizer's lr and momentum every step from measured curvature, in the
    spirit of YellowFin (Zhang, Mitliagkas and Re, 2017), with :func:`momcore.theory.tune`.

    Each :meth:`observe` estimates the curvature range [k_min, k_max], the distance
    D to the optimum and the gradient variance C:

    - with ``curvature`` (one diagonal per parameter, e.g. :meth:`momcore.MLP.curvature`):
      ``k_max`` = the largest entry, ``k_min`` = the smallest, floored at
      ``floor * k_max``;
    - without: Rayleigh-Ritz over the last ``window`` steps. With the steps
      ``s_i = w_i - w_{i-1}`` and the gradient changes ``y_i = g_i - g_{i-1}``
      (``y_i = H s_i`` on a quadratic), the Ritz values of the Hessian on the span of
      the steps are the eigenvalues of ``S^T Y`` (symmetrised) in the metric
      ``S^T S``; by Courant-Fischer they lie inside the spectrum, and since heavy-ball
      steps span a Krylov space of H, the extreme ones approach ``k_min`` and ``k_max``
      within a few steps. (The secant along each step alone, ``||y_i|| / ||s_i||``, is
      a weighted mean over the spectrum: every step mixes all eigendirections, so the
      window of secants covered only [0.65, 0.77] of a spectrum [0.001, 1] and the
      tuner ran ten times slower than Polyak's rate.) The estimates then follow the
      extremes, forgetting slowly (``beta``) in the other direction:
      ``k_max <- max(now, beta k_max + (1-beta) now)`` and the same for ``k_min`` with
      ``min``, so that a stiff direction, once damped out of the window, keeps its
      curvature in the estimate while the steps no longer show it.

    ``D = avg ||g|| / avg h`` (h the curvature along the last step, ``||y|| / ||s||``,
    or the largest diagonal entry), ``C = sum(avg g^2 - (avg g)^2)``, averages
    bias-corrected with ``beta``.
    Then, as YellowFin's single-step problem: the momentum is the larger of Polyak's
    (``theory.tune(k_min, k_max).momentum``, every curvature of the range critically
    damped or better) and the root of YellowFin's cubic that balances the
    variance against the distance (``x^2`` with ``x`` the real root of
    ``x^3 + q x + q = 0`` shifted by one, ``q = D^2 k_min^2 / (2 C)``; absent when
    C = 0), capped at 0.999, and ``lr = (1 - sqrt(momentum))^2 / k_min``; ``k_min`` is
    floored at ``floor * k_max`` on either path. With ``stochastic=False``
    (full-batch gradients: the changes of g along the path are not noise) the cubic
    is skipped and the pair is exactly ``theory.tune(k_min, k_max)``.

    With ``stochastic=True`` (mini-batch gradients, the default) each ``y`` holds the
    difference of two noises as well as ``H s``. The last step moved by ``-lr`` times
    the previous gradient's noise, which ``y`` holds with the opposite sign, so
    ``s^T y`` carries ``+lr C`` on average: that bias is subtracted from each pair's
    diagonal entry (left in, it grows as lr shrinks, the estimate of k grows with it
    and lr collapses). Directions of the steps' span below ``1e-3`` of the largest
    (in ``S^T S``) are dropped, as they amplify the noise. The remaining noise still
    limits the estimate: C counts the drift of g along the path as noise too, so on
    a deterministic problem ``stochastic=True`` under-estimates the curvature and
    tunes slowly (``MLP.fit`` sets ``stochastic`` from whether the batch is the whole
    data set); on noisy problems ``k_max`` tends to be over-estimated and the cubic
    raises the momentum, so that lr falls as the noise dominates (YellowFin's
    annealing). README "Beyond the paper" has the measurements.

    Use: ``tuner = Tuner(opt)``, then per step ``tuner.observe(grads)`` (it sets
    ``opt.lr`` and ``opt.momentum``) and ``opt.step(grads)``; or
    ``SGD(params, momentum="auto")``, which does both in its ``step``. ``lr``: the rate
    used until the first estimate (None: the optimizer's own). Memory: ``2 window``
    copies of the parameters (float64).

    Parameters
    ----------
    optimizer : momcore.SGD
        The optimizer whose ``lr`` and ``momentum`` are set.
    beta : float, keyword-only
        Weight of the old value in the moving averages, in [0, 1) (default 0.99).
    window : int, keyword-only
        Steps whose span the curvature range is measured on, ``>= 1`` (default 10).
    floor : float, keyword-only
        The smallest ``k_min`` as a fraction of ``k_max`` (default 1e-6).
    lr : float or None, keyword-only
        The learning rate until the first estimate (None: the optimizer's own).
    stochastic : bool, keyword-only
        False for full-batch gradients: the pair is exactly ``theory.tune(k_min, k_max)``.

    Raises
    ------
    ValueError
        If ``beta``, ``window`` or ``floor`` is out of range.
    """

    def __init__(self, optimizer, *, beta: float = 0.99, window: int = 10,
                 floor: float = 1e-6, lr: float | None = None,
                 stochastic: bool = True) -> None:
        if not (isfinite(beta) and 0.0 <= beta < 1.0):
            raise ValueError(f"beta must lie in [0, 1), got {beta!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        if not (isfinite(floor) and 0.0 < floor <= 1.0):
            raise ValueError(f"floor must lie in (0, 1], got {floor!r}")
        self.optimizer, self.beta, self.window, self.floor = optimizer, beta, window, floor
        self.stochastic = bool(stochastic)
        if lr is not None:
            optimizer.lr = lr
        self._reset()

    def _reset(self) -> None:
        n = sum(int(np.size(p)) for p in self.optimizer.params)
        self.t = 0
        self.pairs = 0  # (s, y) pairs seen; slot pairs % window holds the next
        self._steps = np.zeros((self.window, n))
        self._changes = np.zeros((self.window, n))
        self._gram = np.zeros((self.window, self.window))  # S^T S
        self._cross = np.zeros((self.window, self.window))  # S^T Y
        self._noise = np.zeros(self.window)  # the noise part of each s^T y
        self._previous_w: np.ndarray | None = None
        self._previous_g: np.ndarray | None = None
        self._avg: dict[str, float] = {}
        self._count: dict[str, int] = {}
        self._grad_avg = np.zeros(n)
        self._grad_sq_avg = np.zeros(n)
        self.k_min = self.k_max = self.distance = self.variance = float("nan")

    def _smooth(self, key: str, value: float) -> float:
        n = self._count[key] = self._count.get(key, 0) + 1
        self._avg[key] = self.beta * self._avg.get(key, 0.0) + (1 - self.beta) * value
        return self._avg[key] / (1 - self.beta ** n)

    def _ritz(self, s: np.ndarray, y: np.ndarray, noise: float) -> tuple[float, float] | None:
        """Adds the pair (s, y) to the window, with ``noise`` the expected part of
        s^T y that gradient noise contributes; the extreme Ritz values of the window."""
        j = self.pairs % self.window
        self.pairs += 1
        self._steps[j], self._changes[j] = s, y
        self._noise[j] = noise
        m = min(self.pairs, self.window)
        S, Y = self._steps[:m], self._changes[:m]
        self._gram[j, :m] = self._gram[:m, j] = S @ s
        self._cross[:m, j] = S @ y
        self._cross[j, :m] = Y @ s
        gram = self._gram[:m, :m]
        cross = 0.5 * (self._cross[:m, :m] + self._cross[:m, :m].T) - np.diag(self._noise[:m])
        lam, vec = np.linalg.eigh(gram)
        # Steps nearly parallel make S^T S ill-conditioned; directions of the span
        # below the cutoff amplify whatever is not H s in y: rounding only, for exact
        # gradients, but gradient noise for stochastic ones.
        keep = lam > lam.max() * (1e-3 if self.stochastic else 1e-12)
        if not keep.any():
            return None
        basis = vec[:, keep] / np.sqrt(lam[keep])
        ritz = np.linalg.eigvalsh(basis.T @ cross @ basis)
        return float(ritz.min()), float(ritz.max())

    def observe(self, grads, curvature=None) -> tuple[float, float]:
        """Updates the estimates from this step and sets the optimizer's lr and momentum.

        Parameters
        ----------
        grads : sequence of array_like
            This step's gradients, one per parameter.
        curvature : sequence of array_like or None
            This step's curvature diagonals, one per parameter (e.g. :meth:`momcore.MLP.curvature`);
            None: the range from the last ``window`` steps.

        Returns
        -------
        lr, momentum : float
            The values set (the optimizer's own until there is an estimate).

        Raises
        ------
        ValueError
            If ``grads`` do not hold as many numbers as the optimizer has weights.
        """
        g = np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in grads])
        if g.shape != self._grad_avg.shape:
            raise ValueError(f"grads hold {g.size} numbers; the optimizer has "
                             f"{self._grad_avg.size} weights")
        if not np.isfinite(g).all():  # nothing to learn from; the optimizer's policy acts
            return self.optimizer.lr, self.optimizer.momentum
        self.t += 1
        norm = float(np.linalg.norm(g))
        c = 1 - self.beta ** self.t
        scratch = np.multiply(g, 1 - self.beta)
        self._grad_avg *= self.beta
        self._grad_avg += scratch
        scratch *= g
        self._grad_sq_avg *= self.beta
        self._grad_sq_avg += scratch
        # sum(avg g^2 - (avg g)^2): each term >= 0 up to rounding (a weighted variance)
        m = self._grad_avg
        self.variance = max(float(self._grad_sq_avg.sum()) / c - float(m @ m) / c ** 2, 0.0)
        if curvature is not None:
            diag = np.concatenate([np.ravel(c) for c in curvature]).astype(np.float64)
            top = float(diag.max())
            k_max_now, k_min_now, h = top, max(float(diag.min()), self.floor * top), top
        else:
            w = np.concatenate([np.ravel(np.asarray(p, np.float64))
                                for p in self.optimizer.params])
            found = None
            if self._previous_w is not None:
                s, y = w - self._previous_w, g - self._previous_g
                ss = float(s @ s)
                if ss > 0 and np.isfinite(ss) and np.isfinite(y).all():
                    # the last step moved by -lr (g + noise) and y holds -noise of that
                    # same gradient: s^T y carries +lr C on average (C = E||noise||^2)
                    noise = self.optimizer.lr * self.variance if self.stochastic else 0.0
                    found = self._ritz(s, y, noise)
                    h = float(np.linalg.norm(y)) / np.sqrt(ss)
            self._previous_w, self._previous_g = w, g
            if found is None or not found[1] > 0:
                return self.optimizer.lr, self.optimizer.momentum
            k_max_now = found[1]
            k_min_now = min(max(found[0], self.floor * k_max_now), k_max_now)
        if np.isnan(self.k_max):
            self.k_max, self.k_min = k_max_now, k_min_now
        else:
            b = self.beta
            self.k_max = max(k_max_now, b * self.k_max + (1 - b) * k_max_now)
            self.k_min = min(k_min_now, b * self.k_min + (1 - b) * k_min_now)
        self.k_min = max(min(self.k_min, self.k_max), self.floor * self.k_max)
        h = self._smooth("h", h)
        self.distance = self._smooth("norm", norm) / h if h > 0 else 0.0
        from momcore import theory

        momentum = float(theory.tune(self.k_min, self.k_max).momentum)
        if self.stochastic and self.variance > 0 and self.distance > 0:
            momentum = max(momentum, _cubic_momentum(self.distance, self.k_min,
                                                     self.variance))
        momentum = min(momentum, 0.999)
        lr = float((1 - np.sqrt(momentum)) ** 2 / self.k_min)
        self.optimizer.lr, self.optimizer.momentum = lr, momentum
        return lr, momentum

    # ---- undoing one observation ---------------------------------------------------

    def _undo_point(self) -> tuple:
        """What the next :meth:`observe` changes in this tuner, copied: the numbers, the
        averages, the previous weights and gradient, and the window slot it writes
        (4 arrays of the weights' size, the rest of the window's). Not the optimizer's
        lr and momentum, which its caller keeps. Valid until the next call."""
        j = self.pairs % self.window
        # the weights-sized copies go to buffers kept from step to step: a large array
        # freshly allocated every step costs more in page faults than the copy
        kept = getattr(self, "_undo_buffers", None)
        if kept is None or kept[0].shape != self._grad_avg.shape:
            kept = self._undo_buffers = [np.empty_like(self._grad_avg) for _ in range(4)]
        for buffer, source in zip(kept, (self._grad_avg, self._grad_sq_avg, self._steps[j],
                                         self._changes[j])):
            np.copyto(buffer, source)
        return (j, {key: getattr(self, key) for key in self._NUMBERS}, dict(self._avg),
                dict(self._count), *kept[:2], self._previous_w, self._previous_g, *kept[2:],
                float(self._noise[j]), self._gram[j].copy(), self._gram[:, j].copy(),
                self._cross[j].copy(), self._cross[:, j].copy())

    def _undo(self, point: tuple) -> None:
        """Puts back what :meth:`_undo_point` copied: the tuner as it was before the
        observation that followed it."""
        (j, numbers, self._avg, self._count, grad_avg, grad_sq_avg, self._previous_w,
         self._previous_g, steps, changes, noise, gram_row, gram_column, cross_row,
         cross_column) = point
        for key, value in numbers.items():
            setattr(self, key, value)
        np.copyto(self._grad_avg, grad_avg)
        np.copyto(self._grad_sq_avg, grad_sq_avg)
        self._steps[j], self._changes[j], self._noise[j] = steps, changes, noise
        self._gram[:, j], self._gram[j] = gram_column, gram_row
        self._cross[:, j], self._cross[j] = cross_column, cross_row

    # ---- state_dict ----------------------------------------------------------------

    _ARRAYS = ("_steps", "_changes", "_gram", "_cross", "_noise", "_grad_avg", "_grad_sq_avg",
               "_previous_w", "_previous_g")
    _NUMBERS = ("t", "pairs", "k_min", "k_max", "distance", "variance")

    def state_dict(self) -> dict:
        """A copy of the estimates and the window, to resume tuning where it stopped.

        Returns
        -------
        dict
            The step count, the smoothed estimates, the window of steps and gradients
            (copies) and the window size.
        """
        out = {key: getattr(self, key) for key in self._NUMBERS}
        out.update({key: None if getattr(self, key) is None else getattr(self, key).copy()
                    for key in self._ARRAYS})
        out.update(avg=dict(self._avg), count=dict(self._count), window=self.window)
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restores a :meth:`state_dict` of a tuner over as many weights with the same
        window; checked (:meth:`check_state_dict`) before anything changes.

        Parameters
        ----------
        state : dict
            A :meth:`state_dict`.

        Raises
        ------
        TypeError, ValueError
            If ``state`` is not a state_dict this tuner can load.
        """
        arrays = self.check_state_dict(state)
        for key, value in arrays.items():
            setattr(self, key, value)
        self.t, self.pairs = int(state["t"]), int(state["pairs"])
        for key in ("k_min", "k_max", "distance", "variance"):
            setattr(self, key, float(state[key]))
        self._avg, self._count = dict(state["avg"]), dict(state["count"])

    def check_state_dict(self, state: dict) -> dict[str, np.ndarray | None]:
        """Checks that ``state`` is a :meth:`state_dict` this tuner can load.

        Parameters
        ----------
        state : dict
            A :meth:`state_dict`.

        Returns
        -------
        dict of str to numpy.ndarray or None
            Copies of its arrays, by name.

        Raises
        ------
        TypeError, ValueError
            If ``state`` is not a dict, lacks an entry, has another window, or holds
            arrays of another shape.
        """
        if not isinstance(state, dict):
            raise TypeError(f"a tuner's state_dict is a dict, got {type(state).__name__}")
        missing = set(self._ARRAYS + self._NUMBERS + ("avg", "count", "window")) - set(state)
        if missing:
            raise ValueError(f"the tuner's state_dict lacks {sorted(missing)}")
        if state["window"] != self.window:
            raise ValueError(f"the tuner's state_dict has window {state['window']!r}; this "
                             f"tuner has {self.window}")
        arrays = {}
        for key in self._ARRAYS:
            if state[key] is None and key.startswith("_previous"):
                arrays[key] = None
                continue
            mine = getattr(self, "_grad_avg" if key.startswith("_previous") else key)
            theirs = np.asarray(state[key], np.float64)
            if theirs.shape != mine.shape:
                raise ValueError(f"the tuner's state_dict holds {key.lstrip('_')} of shape "
                                 f"{theirs.shape}; expected {mine.shape}")
            arrays[key] = theirs.copy()
        return arrays


def _cubic_momentum(distance: float, k_min: float, variance: float) -> float:
    """YellowFin's single-step momentum: x^2 for the real root x = y + 1 of
    y^3 + q y + q = 0 (q = D^2 k_min^2 / (2 C)), by Vieta's substitution."""
    q = distance ** 2 * k_min ** 2 / (2 * variance)
    w3 = (-np.sqrt(q * q + 4.0 / 27.0 * q ** 3) - q) / 2.0
    w = np.sign(w3) * np.abs(w3) ** (1.0 / 3.0)
    y = w - q / (3.0 * w) if w != 0 else 0.0
    x = y + 1.0
    return float(x * x)

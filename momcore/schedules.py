"""Schedules for the learning rate and the momentum coefficient.

A schedule is any callable ``schedule(t) -> value`` that maps a counter ``t`` (an int >= 0)
to a value whose ``float()`` is finite. Its attribute ``per`` says what ``t`` counts:

- ``"epoch"`` (the default): epochs, counted across ``fit`` calls;
- ``"step"``: optimizer steps (one per batch), counted across ``fit`` calls.

A plain callable without ``per`` counts epochs; :func:`per_step` and :func:`per_epoch` mark
the unit of any callable, and :func:`unit_of` reads it. The training loop reads values
through :func:`value_at`, which accepts anything ``float()`` converts (python and numpy
scalars, 0-d arrays, torch and JAX scalars) and rejects non-finite values.

The classes here are frozen dataclasses: immutable, comparable, with a readable repr, and
they check their arguments on construction (``ValueError`` naming the argument). Each takes
the keyword ``per``. Below, ``t`` is the counter in the schedule's unit.

=====================================  ===============================================
``Constant(value)``                    ``value``
``Linear(start, end, epochs)``         ``start + (end - start) * min(t, epochs) / epochs``
``Step(initial, factor, every)``       ``initial * factor ** (t // every)``
``Cosine(start, end, length)``         ``end + (start - end) * (1 + cos(pi t / length)) / 2``
                                       for ``t < length``, then ``end`` (SGDR without
                                       restarts)
``Warmup(after, length, start=0)``     ``start + (after(0) - start) * t / length`` for
                                       ``t < length``, then ``after(t - length)``
``OneCycle(max_lr, total)``            Smith's 1cycle policy as in PyTorch's ``OneCycleLR``:
                                       ``.lr`` rises then falls while ``.momentum`` falls
                                       then rises (per step by default)
``momentum_annealing(epochs=n)``       ``Linear(0.5, 0.9, n)``: the classic momentum ramp
``Stages(pairs, epochs_per_stage)``    ``.lr`` and ``.momentum`` step through (lr, momentum)
                                       pairs, as N. Qian (1999) suggests
=====================================  ===============================================

Helpers: :func:`as_schedule` (a real number becomes a :class:`Constant`, callables pass
through), :func:`value_at`, :func:`unit_of`, :func:`per_step`, :func:`per_epoch`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

__all__ = [
    "Schedule",
    "UNITS",
    "Constant",
    "Linear",
    "Step",
    "Cosine",
    "Warmup",
    "OneCycle",
    "Stages",
    "momentum_annealing",
    "as_schedule",
    "value_at",
    "unit_of",
    "per_step",
    "per_epoch",
]

Schedule = Callable[[int], Any]
"""The type of a schedule: counter t (int >= 0, epochs or steps) -> a value float() accepts."""

UNITS = ("epoch", "step")
"""What a schedule's counter t can count: epochs (the default) or optimizer steps."""


def _check_t(t: int) -> int:
    """Return ``t`` as a python int; reject negative and non-integer counters."""
    if isinstance(t, bool):
        raise TypeError(f"t (the epoch or step number) must be an integer, got {t!r}")
    try:
        t = operator.index(t)
    except TypeError:
        raise TypeError(f"t (the epoch or step number) must be an integer, got {t!r}") from None
    if t < 0:
        raise ValueError(f"t (the epoch or step number) must be >= 0, got {t}")
    return t


def _finite(name: str, value: float) -> float:
    """Return ``value`` as a finite python float, or raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _learning_rate(name: str, value: float) -> float:
    """Return a finite learning rate >= 0, or raise ValueError naming ``name``."""
    value = _finite(name, value)
    if value < 0.0:
        raise ValueError(f"{name} must be >= 0 (it is a learning rate), got {value}")
    return value


def _positive(name: str, value: float) -> float:
    """Return a finite float > 0, or raise ValueError naming ``name``."""
    value = _finite(name, value)
    if value <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _positive_int(name: str, value: int) -> int:
    """Return ``value`` as a python int >= 1, or raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def _momentum(name: str, value: float) -> float:
    """Return a momentum coefficient in (-1, 1) (Qian, Result 3), or raise ValueError."""
    value = _finite(name, value)
    if not -1.0 < value < 1.0:
        raise ValueError(f"{name} must be in (-1, 1) for convergence, got {value}")
    return value


def _unit(name: str, value: str) -> str:
    """Return ``value`` if it is one of :data:`UNITS`, or raise ValueError naming ``name``."""
    if not isinstance(value, str) or value not in UNITS:
        raise ValueError(f"{name} must be 'epoch' or 'step', got {value!r}")
    return value


class _Dataclass:
    """Shared repr of the schedule dataclasses: ``per`` is shown only when it differs from
    the class's default, so that ``Constant(0.25)`` reads ``Constant(value=0.25)``."""

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name == "per" and value == f.default:
                continue
            parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


@dataclass(frozen=True, repr=False)
class Constant(_Dataclass):
    r"""The same value at every t: :math:`s(t) = \text{value}`.

    Parameters
    ----------
    value : float
        The value, finite.
    per : {"epoch", "step"}, keyword-only
        What ``t`` counts (default ``"epoch"``).

    Raises
    ------
    ValueError
        If an argument is out of range or not finite (the message names it).

    Examples
    --------
    >>> from momcore import schedules
    >>> schedules.Constant(0.25)(7)
    0.25
    """

    value: float
    per: str = field(default="epoch", kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _finite("value", self.value))
        object.__setattr__(self, "per", _unit("per", self.per))

    def __call__(self, t: int) -> float:
        """The value at ``t``: ``value``.

        Parameters
        ----------
        t : int
            The counter, ``>= 0``, in the schedule's unit (``per``).

        Returns
        -------
        float

        Raises
        ------
        ValueError
            If ``t`` is negative.
        TypeError
            If ``t`` is not an int.
        """
        _check_t(t)
        return self.value


@dataclass(frozen=True, repr=False)
class Linear(_Dataclass):
    r"""A linear ramp from ``start`` at t = 0 to ``end`` at t = ``epochs``, then ``end``.

    .. math::

        s(t) = \text{start} + (\text{end} - \text{start})
        \, \frac{\min(t, \text{epochs})}{\text{epochs}}

    ``epochs`` is a length in the schedule's unit: steps when ``per="step"``.

    Parameters
    ----------
    start : float
        The value at t = 0, finite.
    end : float
        The value from t = ``epochs`` on, finite.
    epochs : int
        The length of the ramp, ``>= 1``.
    per : {"epoch", "step"}, keyword-only
        What ``t`` counts (default ``"epoch"``).

    Raises
    ------
    ValueError
        If an argument is out of range or not finite (the message names it).

    Examples
    --------
    >>> from momcore import schedules
    >>> ramp = schedules.Linear(0.5, 0.9, 4)
    >>> [round(ramp(t), 2) for t in range(6)]
    [0.5, 0.6, 0.7, 0.8, 0.9, 0.9]
    """

    start: float
    end: float
    epochs: int
    per: str = field(default="epoch", kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _finite("start", self.start))
        object.__setattr__(self, "end", _finite("end", self.end))
        object.__setattr__(self, "epochs", _positive_int("epochs", self.epochs))
        object.__setattr__(self, "per", _unit("per", self.per))

    def __call__(self, t: int) -> float:
        """The value at ``t``.

        Parameters
        ----------
        t : int
            The counter, ``>= 0``, in the schedule's unit (``per``).

        Returns
        -------
        float

        Raises
        ------
        ValueError
            If ``t`` is negative.
        TypeError
            If ``t`` is not an int.
        """
        t = _check_t(t)
        if t >= self.epochs:
            return self.end
        return self.start + (self.end - self.start) * (t / self.epochs)


@dataclass(frozen=True, repr=False)
class Step(_Dataclass):
    r"""Step decay: multiply by ``factor`` every ``every`` units of t.

    .. math::

        s(t) = \text{initial} \cdot \text{factor}^{\lfloor t / \text{every} \rfloor}

    Parameters
    ----------
    initial : float
        The value at t = 0, finite.
    factor : float
        The factor, ``> 0``.
    every : int
        The length of each step, ``>= 1``.
    per : {"epoch", "step"}, keyword-only
        What ``t`` counts (default ``"epoch"``).

    Raises
    ------
    ValueError
        If an argument is out of range or not finite (the message names it).

    Examples
    --------
    >>> from momcore import schedules
    >>> [schedules.Step(0.1, 0.5, 2)(t) for t in range(5)]
    [0.1, 0.1, 0.05, 0.05, 0.025]
    """

    initial: float
    factor: float
    every: int
    per: str = field(default="epoch", kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "initial", _finite("initial", self.initial))
        factor = _finite("factor", self.factor)
        if factor <= 0.0:
            raise ValueError(f"factor must be > 0, got {factor}")
        object.__setattr__(self, "factor", factor)
        object.__setattr__(self, "every", _positive_int("every", self.every))
        object.__setattr__(self, "per", _unit("per", self.per))

    def __call__(self, t: int) -> float:
        """The value at ``t``.

        Parameters
        ----------
        t : int
            The counter, ``>= 0``, in the schedule's unit (``per``).

        Returns
        -------
        float

        Raises
        ------
        ValueError
            If ``t`` is negative.
        TypeError
            If ``t`` is not an int.
        """
        t = _check_t(t)
        return self.initial * self.factor ** (t // self.every)


@dataclass(frozen=True, repr=False)
class Cosine(_Dataclass):
    r"""Cosine annealing from ``start`` to ``end`` over ``length`` units, then ``end``.

    .. math::

        s(t) = \text{end} + (\text{start} - \text{end})
        \, \frac{1 + \cos(\pi t / \text{length})}{2} \quad (t < \text{length}),
        \qquad s(t) = \text{end} \quad (t \ge \text{length}).

    This is SGDR (Loshchilov & Hutter, 2017) without restarts, and PyTorch's
    ``CosineAnnealingLR`` closed form with ``T_max = length``, ``eta_min = end``, held at
    ``end`` after ``T_max``.

    Parameters
    ----------
    start : float
        The value at t = 0, finite.
    end : float
        The value from t = ``length`` on, finite.
    length : int
        The length of the annealing, ``>= 1``.
    per : {"epoch", "step"}, keyword-only
        What ``t`` counts (default ``"epoch"``).

    Raises
    ------
    ValueError
        If an argument is out of range or not finite (the message names it).

    Examples
    --------
    >>> from momcore import schedules
    >>> [round(schedules.Cosine(1.0, 0.0, 4)(t), 3) for t in range(5)]
    [1.0, 0.854, 0.5, 0.146, 0.0]
    """

    start: float
    end: float
    length: int
    per: str = field(default="epoch", kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _finite("start", self.start))
        object.__setattr__(self, "end", _finite("end", self.end))
        object.__setattr__(self, "length", _positive_int("length", self.length))
        object.__setattr__(self, "per", _unit("per", self.per))

    def __call__(self, t: int) -> float:
        """The value at ``t``.

        Parameters
        ----------
        t : int
            The counter, ``>= 0``, in the schedule's unit (``per``).

        Returns
        -------
        float

        Raises
        ------
        ValueError
            If ``t`` is negative.
        TypeError
            If ``t`` is not an int.
        """
        t = _check_t(t)
        if t >= self.length:
            return self.end
        cosine = math.cos(math.pi * t / self.length)
        return self.end + (self.start - self.end) * (1.0 + cosine) / 2.0


@dataclass(frozen=True, repr=False)
class Warmup(_Dataclass):
    r"""Linear warm-up in front of another schedule.

    .. math::

        s(t) = \text{start} + (\text{after}(0) - \text{start}) \, \frac{t}{\text{length}}
        \quad (t < \text{length}), \qquad s(t) = \text{after}(t - \text{length})
        \quad (t \ge \text{length}):

    the value rises linearly from ``start`` to ``after(0)`` over ``length`` units, and
    ``after`` begins, from its own t = 0, where the warm-up ends.

    Parameters
    ----------
    after : schedule or float
        The schedule that follows; a number is a :class:`Constant`.
    length : int
        The length of the warm-up, ``>= 1``.
    start : float, keyword-only
        The value at t = 0 (default 0), finite.
    per : {"epoch", "step"} or None, keyword-only
        What ``t`` counts; None (the default) takes the unit of ``after``. Another unit than
        ``after``'s is an error, except for a constant ``after``, whose value does not depend
        on t.

    Raises
    ------
    ValueError
        If an argument is out of range or not finite, or ``per`` differs from ``after``'s
        unit.
    TypeError
        If ``after`` is neither a number nor a callable.

    Examples
    --------
    >>> from momcore import schedules
    >>> warm = schedules.Warmup(schedules.Step(0.1, 0.5, 2), length=2)
    >>> [warm(t) for t in range(6)]
    [0.0, 0.05, 0.1, 0.1, 0.05, 0.05]
    """

    after: Schedule
    length: int
    start: float = field(default=0.0, kw_only=True)
    per: Optional[str] = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        after = self.after
        if isinstance(after, numbers.Real) and not isinstance(after, bool):
            after = Constant(_finite("after", after), per=self.per or "epoch")
        elif not callable(after):
            raise TypeError(
                f"after must be a number or a schedule (a callable t -> value), "
                f"got {type(after).__name__}"
            )
        after_unit = unit_of(after)
        per = after_unit if self.per is None else _unit("per", self.per)
        if per != after_unit:
            if not isinstance(after, Constant):
                raise ValueError(
                    f"per={per!r} differs from the unit of after ({after_unit!r}); "
                    f"mark after with per_{per}(...) if its t counts {per}s"
                )
            after = dataclasses.replace(after, per=per)
        object.__setattr__(self, "after", after)
        object.__setattr__(self, "length", _positive_int("length", self.length))
        object.__setattr__(self, "start", _finite("start", self.start))
        object.__setattr__(self, "per", per)

    def __call__(self, t: int) -> float:
        """The value at ``t``.

        Parameters
        ----------
        t : int
            The counter, ``>= 0``, in the schedule's unit (``per``).

        Returns
        -------
        float

        Raises
        ------
        ValueError
            If ``t`` is negative.
        TypeError
            If ``t`` is not an int.
        """
        t = _check_t(t)
        if t >= self.length:
            return value_at(self.after, t - self.length, "after")
        target = value_at(self.after, 0, "after")
        return self.start + (target - self.start) * (t / self.length)


@dataclass(frozen=True, repr=False)
class OneCycle(_Dataclass):
    """Smith's 1cycle policy, with the semantics of PyTorch's ``OneCycleLR``
    (two phases, ``cycle_momentum=True``, ``three_phase=False``).

    With ``initial_lr = max_lr / div_factor``, ``min_lr = initial_lr / final_div_factor``,
    phase ends ``e1 = pct_start * total - 1`` and ``e2 = total - 1`` (steps, 0-based):

    - phase 1, ``t <= e1``: ``pct = t / e1``;
      ``lr = anneal(initial_lr, max_lr, pct)``,
      ``momentum = anneal(max_momentum, base_momentum, pct)``;
    - phase 2, ``t > e1``: ``pct = (t - e1) / (e2 - e1)``;
      ``lr = anneal(max_lr, min_lr, pct)``,
      ``momentum = anneal(base_momentum, max_momentum, pct)``;

    where ``anneal(a, b, pct)`` is ``b + (a - b) / 2 * (1 + cos(pi * pct))`` for
    ``anneal="cos"`` and ``(b - a) * pct + a`` for ``anneal="linear"``. So the lr rises
    while the momentum falls, then the lr falls while the momentum rises back.

    ``oc.lr`` and ``oc.momentum`` are schedules of their own (with ``oc``'s ``per``), for
    ``fit(lr_schedule=oc.lr, momentum_schedule=oc.momentum)``; ``oc(t)`` returns the pair
    ``(lr, momentum)``. The cycle lasts ``total`` units of t (steps by default).

    Parameters
    ----------
    max_lr : float
        The peak learning rate, finite and ``>= 0``.
    total : int
        The length of the cycle, ``>= 1``.
    pct_start : float, keyword-only
        The fraction of the cycle spent rising, in [0, 1] (default 0.3);
        ``pct_start * total`` must not be 1.
    div_factor : float, keyword-only
        ``initial_lr = max_lr / div_factor`` (default 25), ``> 0``.
    final_div_factor : float, keyword-only
        ``min_lr = initial_lr / final_div_factor`` (default 1e4), ``> 0``.
    base_momentum : float, keyword-only
        The momentum at the lr's peak (default 0.85), in (-1, 1).
    max_momentum : float, keyword-only
        The momentum at both ends (default 0.95), in (-1, 1).
    anneal : {"cos", "linear"}, keyword-only
        The shape of each phase (default ``"cos"``).
    per : {"step", "epoch"}, keyword-only
        What ``t`` counts (default ``"step"``).

    Raises
    ------
    ValueError
        If an argument is out of range or not finite, or ``pct_start * total == 1``.

    Notes
    -----
    Differences from PyTorch: past the last step (``t >= total``) the values of step
    ``total - 1`` (``min_lr``, ``max_momentum``) hold, where PyTorch raises (or, at
    ``t == total``, extrapolates); and ``pct_start * total == 1``, for which PyTorch divides
    zero by zero, is rejected here with a ValueError.

    References: L. N. Smith & N. Topin, "Super-Convergence: Very Fast Training of Neural
    Networks Using Large Learning Rates" (2017); L. N. Smith, "A disciplined approach to
    neural network hyper-parameters: Part 1" (2018).

    Examples
    --------
    >>> from momcore import schedules
    >>> oc = schedules.OneCycle(0.1, total=10)
    >>> round(oc.lr(0), 4), round(oc.lr(2), 4), oc.momentum(0), oc.momentum(2)
    (0.004, 0.1, 0.95, 0.85)
    """

    max_lr: float
    total: int
    pct_start: float = field(default=0.3, kw_only=True)
    div_factor: float = field(default=25.0, kw_only=True)
    final_div_factor: float = field(default=1e4, kw_only=True)
    base_momentum: float = field(default=0.85, kw_only=True)
    max_momentum: float = field(default=0.95, kw_only=True)
    anneal: str = field(default="cos", kw_only=True)
    per: str = field(default="step", kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_lr", _learning_rate("max_lr", self.max_lr))
        total = _positive_int("total", self.total)
        object.__setattr__(self, "total", total)
        pct_start = _finite("pct_start", self.pct_start)
        if not 0.0 <= pct_start <= 1.0:
            raise ValueError(f"pct_start must be in [0, 1], got {pct_start}")
        if pct_start * total == 1.0:
            raise ValueError(
                f"pct_start * total must not be 1 (got pct_start={pct_start}, total={total}): "
                "the rising phase would be the single step 0, where the lr is undefined "
                "(0/0); choose another pct_start"
            )
        object.__setattr__(self, "pct_start", pct_start)
        object.__setattr__(self, "div_factor", _positive("div_factor", self.div_factor))
        object.__setattr__(self, "final_div_factor",
                           _positive("final_div_factor", self.final_div_factor))
        object.__setattr__(self, "base_momentum", _momentum("base_momentum", self.base_momentum))
        object.__setattr__(self, "max_momentum", _momentum("max_momentum", self.max_momentum))
        if self.anneal not in ("cos", "linear"):
            raise ValueError(f"anneal must be 'cos' or 'linear', got {self.anneal!r}")
        object.__setattr__(self, "per", _unit("per", self.per))

    @property
    def initial_lr(self) -> float:
        """The lr at t = 0: ``max_lr / div_factor``."""
        return self.max_lr / self.div_factor

    @property
    def min_lr(self) -> float:
        """The lr at the end of the cycle: ``initial_lr / final_div_factor``."""
        return self.initial_lr / self.final_div_factor

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)
        return (end - start) * pct + start

    def __call__(self, t: int) -> tuple[float, float]:
        """The pair ``(lr, momentum)`` at ``t``.

        Parameters
        ----------
        t : int
            The counter, ``>= 0``, in the schedule's unit (``per``).

        Returns
        -------
        tuple of float
            ``(lr, momentum)``.

        Raises
        ------
        ValueError
            If ``t`` is negative.
        TypeError
            If ``t`` is not an int.
        """
        t = min(_check_t(t), self.total - 1)
        end_rise = float(self.pct_start * self.total) - 1.0
        if t <= end_rise:
            pct = t / end_rise
            return (self._anneal(self.initial_lr, self.max_lr, pct),
                    self._anneal(self.max_momentum, self.base_momentum, pct))
        pct = (t - end_rise) / (self.total - 1 - end_rise)
        return (self._anneal(self.max_lr, self.min_lr, pct),
                self._anneal(self.base_momentum, self.max_momentum, pct))

    @property
    def lr(self) -> Schedule:
        """The learning-rate schedule: ``oc(t)[0]``."""
        return _Column(self, 0)

    @property
    def momentum(self) -> Schedule:
        """The momentum schedule: ``oc(t)[1]``."""
        return _Column(self, 1)


def momentum_annealing(start: float = 0.5, end: float = 0.9, *, epochs: int,
                       per: str = "epoch") -> Linear:
    """The classic momentum ramp: ``Linear(start, end, epochs)``, by default 0.5 -> 0.9.

    A small momentum while the gradients are large and erratic early in training, a large
    one once they settle.

    Parameters
    ----------
    start : float
        The momentum at t = 0 (default 0.5), in (-1, 1).
    end : float
        The momentum from t = ``epochs`` on (default 0.9), in (-1, 1).
    epochs : int, keyword-only
        The length of the ramp, ``>= 1``.
    per : {"epoch", "step"}, keyword-only
        What ``t`` counts (default ``"epoch"``).

    Returns
    -------
    Linear
        The ramp.

    Raises
    ------
    ValueError
        If an end lies outside (-1, 1) or ``epochs < 1``.

    Examples
    --------
    >>> from momcore import schedules
    >>> schedules.momentum_annealing(epochs=10)
    Linear(start=0.5, end=0.9, epochs=10)
    """
    return Linear(_momentum("start", start), _momentum("end", end), epochs, per=per)


@dataclass(frozen=True, repr=False)
class Stages(_Dataclass):
    """Step through an ordered set of (lr, momentum) pairs, as suggested by Qian (1999).

    Stage ``k = min(t // epochs_per_stage, len(pairs) - 1)`` is active at t (with a
    sequence ``epochs_per_stage``, stage k lasts ``epochs_per_stage[k]`` units of t);
    after the last stage the last pair holds. ``stages.lr`` and ``stages.momentum`` are
    schedules of their own (with the same ``per``); ``stages(t)`` returns the pair
    ``(lr, momentum)``.

    Parameters
    ----------
    pairs : sequence of (float, float)
        The ``(lr, momentum)`` pairs, at least one; each lr ``>= 0``, each momentum in
        (-1, 1).
    epochs_per_stage : int or sequence of int
        The length of every stage, or of each stage (one per pair), ``>= 1``.
    per : {"epoch", "step"}, keyword-only
        What ``t`` counts (default ``"epoch"``).

    Raises
    ------
    ValueError
        If ``pairs`` is empty or malformed, a value is out of range, or
        ``epochs_per_stage`` has the wrong length.

    Examples
    --------
    >>> from momcore import schedules
    >>> stages = schedules.Stages([(0.1, 0.5), (0.05, 0.9)], epochs_per_stage=2)
    >>> [stages.momentum(t) for t in range(4)]
    [0.5, 0.5, 0.9, 0.9]
    """

    pairs: tuple[tuple[float, float], ...]
    epochs_per_stage: Union[int, tuple[int, ...]]
    per: str = field(default="epoch", kw_only=True)

    def __post_init__(self) -> None:
        try:
            raw_pairs = tuple(self.pairs)
        except TypeError:
            raise ValueError(
                f"pairs must be a sequence of (lr, momentum) pairs, got {self.pairs!r}"
            ) from None
        if not raw_pairs:
            raise ValueError("pairs must hold at least one (lr, momentum) pair")
        pairs = []
        for k, pair in enumerate(raw_pairs):
            if not isinstance(pair, Sequence) or len(pair) != 2:
                raise ValueError(f"pairs[{k}] must be an (lr, momentum) pair, got {pair!r}")
            lr = _learning_rate(f"pairs[{k}] lr", pair[0])
            pairs.append((lr, _momentum(f"pairs[{k}] momentum", pair[1])))
        object.__setattr__(self, "pairs", tuple(pairs))

        lengths = self.epochs_per_stage
        if isinstance(lengths, numbers.Integral) and not isinstance(lengths, bool):
            lengths = _positive_int("epochs_per_stage", lengths)
        else:
            if not isinstance(lengths, Sequence) or len(lengths) != len(pairs):
                raise ValueError(
                    "epochs_per_stage must be a positive integer or a sequence of "
                    f"{len(pairs)} positive integers (one per pair), got {lengths!r}"
                )
            lengths = tuple(
                _positive_int(f"epochs_per_stage[{k}]", n) for k, n in enumerate(lengths)
            )
        object.__setattr__(self, "epochs_per_stage", lengths)
        object.__setattr__(self, "per", _unit("per", self.per))

    def stage(self, t: int) -> int:
        """Index into ``pairs`` of the stage active at ``t``.

        Parameters
        ----------
        t : int
            The counter, ``>= 0``, in the schedule's unit.

        Returns
        -------
        int
            The index, at most ``len(pairs) - 1``.

        Raises
        ------
        ValueError
            If ``t`` is negative.
        TypeError
            If ``t`` is not an int.
        """
        t = _check_t(t)
        last = len(self.pairs) - 1
        if isinstance(self.epochs_per_stage, int):
            return min(t // self.epochs_per_stage, last)
        end = 0
        for k, length in enumerate(self.epochs_per_stage):
            end += length
            if t < end:
                return k
        return last

    def __call__(self, t: int) -> tuple[float, float]:
        """The pair ``(lr, momentum)`` of the stage active at ``t``.

        Parameters
        ----------
        t : int
            The counter, ``>= 0``, in the schedule's unit (``per``).

        Returns
        -------
        tuple of float
            ``pairs[stage(t)]``.

        Raises
        ------
        ValueError
            If ``t`` is negative.
        TypeError
            If ``t`` is not an int.
        """
        return self.pairs[self.stage(t)]

    @property
    def lr(self) -> Schedule:
        """The learning-rate schedule: ``pairs[stage(t)][0]``."""
        return _Column(self, 0)

    @property
    def momentum(self) -> Schedule:
        """The momentum schedule: ``pairs[stage(t)][1]``."""
        return _Column(self, 1)


@dataclass(frozen=True, repr=False)
class _Column:
    """One column (0: lr, 1: momentum) of a schedule of (lr, momentum) pairs
    (:class:`Stages`, :class:`OneCycle`); its unit is the source's."""

    source: Union[Stages, OneCycle]
    column: int

    @property
    def per(self) -> str:
        """The unit of t: the source's ``per``."""
        return self.source.per

    def __call__(self, t: int) -> float:
        return self.source(t)[self.column]

    def __repr__(self) -> str:
        return f"{self.source!r}.{('lr', 'momentum')[self.column]}"


@dataclass(frozen=True, repr=False)
class _Marked:
    """A callable with its unit marked: ``_Marked(f, "step")(t) == f(t)``."""

    schedule: Schedule
    per: str

    def __call__(self, t: int) -> Any:
        return self.schedule(t)

    def __repr__(self) -> str:
        return f"per_{self.per}({self.schedule!r})"


def _mark(fn: Union[float, Schedule], per: str) -> Schedule:
    if isinstance(fn, numbers.Real) and not isinstance(fn, bool):
        return Constant(fn, per=per)
    if not callable(fn):
        raise TypeError(
            f"fn must be a number or a callable t -> value, got {type(fn).__name__}"
        )
    if isinstance(fn, _Marked):
        fn = fn.schedule
    if unit_of(fn) == per:
        return fn
    return _Marked(fn, per)


def per_step(fn: Union[float, Schedule]) -> Schedule:
    """``fn`` marked as a schedule whose t counts optimizer steps.

    Its values are unchanged: ``per_step(fn)(t) == fn(t)``, and ``unit_of(per_step(fn)) ==
    "step"``.

    Parameters
    ----------
    fn : callable or float
        A schedule (any callable ``t -> value``) or a number.

    Returns
    -------
    callable
        ``fn`` marked; a number becomes ``Constant(fn, per="step")``, a callable already per
        step is returned as it is.

    Raises
    ------
    TypeError
        If ``fn`` is neither a number nor a callable.

    Examples
    --------
    >>> from momcore import schedules
    >>> s = schedules.per_step(lambda t: 0.1 / (1 + t))
    >>> schedules.unit_of(s), s(1)
    ('step', 0.05)
    """
    return _mark(fn, "step")


def per_epoch(fn: Union[float, Schedule]) -> Schedule:
    """``fn`` marked as a schedule whose t counts epochs.

    Its values are unchanged: ``per_epoch(fn)(t) == fn(t)``, and
    ``unit_of(per_epoch(fn)) == "epoch"``.

    Parameters
    ----------
    fn : callable or float
        A schedule (any callable ``t -> value``) or a number.

    Returns
    -------
    callable
        ``fn`` marked; a number becomes ``Constant(fn)``, a callable already per epoch is
        returned as it is.

    Raises
    ------
    TypeError
        If ``fn`` is neither a number nor a callable.
    """
    return _mark(fn, "epoch")


def unit_of(schedule: Union[float, Schedule]) -> str:
    """What the schedule's t counts: its ``per`` attribute, ``"epoch"`` or ``"step"``.

    A callable without ``per`` (a plain function, a lambda) and a number count epochs.

    Parameters
    ----------
    schedule : callable or float
        A schedule or a number.

    Returns
    -------
    str
        ``"epoch"`` or ``"step"``.

    Raises
    ------
    ValueError
        If ``per`` is neither unit.
    TypeError
        If ``schedule`` is neither a callable nor a number.
    """
    if isinstance(schedule, numbers.Real) and not isinstance(schedule, bool):
        return "epoch"
    if not callable(schedule):
        raise TypeError(
            f"expected a number or a schedule (a callable t -> value), "
            f"got {type(schedule).__name__}"
        )
    return _unit("the schedule's per attribute", getattr(schedule, "per", "epoch"))


def as_schedule(x: Union[float, Schedule]) -> Schedule:
    """``x`` as a schedule.

    Parameters
    ----------
    x : float or callable
        A real number, or a schedule (any callable ``t -> value``).

    Returns
    -------
    callable
        ``Constant(x)`` for a real number; a callable passes through unchanged.

    Raises
    ------
    TypeError
        For anything else (None, strings, arrays, ...).

    Examples
    --------
    >>> from momcore import schedules
    >>> schedules.as_schedule(0.9)
    Constant(value=0.9)
    """
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return Constant(x)
    if callable(x):
        return x
    raise TypeError(
        f"expected a number or a schedule (a callable t -> value), got {type(x).__name__}"
    )


def value_at(schedule: Schedule, t: int, name: str) -> float:
    """``float(schedule(t))``, checked: the value the training loop uses at counter t.

    Accepted: anything ``float()`` converts that stands for one real number: python and
    numpy scalars, 0-d numpy arrays, torch or JAX scalars, objects with ``__float__``.

    Parameters
    ----------
    schedule : callable
        The schedule.
    t : int
        The counter, ``>= 0``.
    name : str
        What the value is (``"lr"``, ``"momentum"``), for error messages.

    Returns
    -------
    float
        The finite value.

    Raises
    ------
    TypeError
        Naming ``name`` and t, for values ``float()`` refuses, and also strings, booleans,
        complex numbers and arrays with ``ndim > 0`` (which ``float()`` would parse, coerce
        or, for numpy, convert with a deprecation warning).
    ValueError
        If the value is NaN or infinite, or ``t`` is negative.

    Examples
    --------
    >>> import numpy as np
    >>> from momcore import schedules
    >>> schedules.value_at(lambda t: np.float32(0.5) * t, 3, "lr")
    1.5
    """
    t = _check_t(t)
    value = schedule(t)
    if type(value) is float:  # the common case, without the checks below
        result = value
    else:
        result = _to_float(value, name, t)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, but its schedule gives {result} at t={t}")
    return result


def _to_float(value: Any, name: str, t: int) -> float:
    """``float(value)`` for one real number, or TypeError naming ``name`` and ``t``."""
    def refuse(why: str) -> TypeError:
        return TypeError(
            f"{name}: the schedule's value at t={t} is {value!r} ({type(value).__name__}), "
            f"{why}; a schedule must return a real number"
        )

    if isinstance(value, (str, bytes, bytearray, bool, np.bool_)):
        raise refuse("not a number")
    if isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real):
        raise refuse("a complex number")
    if isinstance(value, (np.ndarray, np.generic)):
        if value.dtype.kind not in "fiu":
            raise refuse(f"of dtype {value.dtype}")
    elif any(kind in str(getattr(value, "dtype", "")) for kind in ("bool", "complex")):
        raise refuse(f"of dtype {value.dtype}")  # torch.bool, torch.complex64, ...
    ndim = getattr(value, "ndim", 0)
    if isinstance(ndim, int) and ndim != 0:
        raise refuse(f"an array with {ndim} dimension(s), not a scalar")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"{name} must be finite, but its schedule gives {value!r} at t={t}, "
            "too large for a float"
        ) from None
    except Exception as exc:  # torch and JAX raise their own types (e.g. RuntimeError)
        raise refuse(f"which float() does not accept ({exc})") from exc

"""Schedules for the learning rate and the momentum coefficient.

A schedule is any callable ``schedule(epoch) -> float`` that maps the epoch number
(0-based; or a step number, if the caller counts steps) to a value. The classes here are
frozen dataclasses: immutable, comparable, with a readable repr, and they check their
arguments on construction (``ValueError`` naming the argument).

=====================================  ===============================================
``Constant(value)``                    ``value``
``Linear(start, end, epochs)``         ``start + (end - start) * min(e, epochs) / epochs``
``Step(initial, factor, every)``       ``initial * factor ** (e // every)``
``momentum_annealing(epochs=n)``       ``Linear(0.5, 0.9, n)``: the classic momentum ramp
``Stages(pairs, epochs_per_stage)``    ``.lr`` and ``.momentum`` step through (lr, momentum)
                                       pairs, as N. Qian (1999) suggests
=====================================  ===============================================

Any plain float can stand in for a schedule: :func:`as_schedule` turns it into a
:class:`Constant` and passes callables through.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Union

__all__ = [
    "Schedule",
    "Constant",
    "Linear",
    "Step",
    "Stages",
    "momentum_annealing",
    "as_schedule",
]

Schedule = Callable[[int], float]
"""The type of a schedule: epoch number (int >= 0) -> value."""


def _check_epoch(epoch: int) -> int:
    """Return ``epoch`` as a python int; reject negative and non-integer epochs."""
    if isinstance(epoch, bool):
        raise TypeError(f"epoch must be an integer, got {epoch!r}")
    try:
        epoch = operator.index(epoch)
    except TypeError:
        raise TypeError(f"epoch must be an integer, got {epoch!r}") from None
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return epoch


def _finite(name: str, value: float) -> float:
    """Return ``value`` as a finite python float, or raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
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


@dataclass(frozen=True)
class Constant:
    """The same value at every epoch: ``s(e) = value``."""

    value: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _finite("value", self.value))

    def __call__(self, epoch: int) -> float:
        _check_epoch(epoch)
        return self.value


@dataclass(frozen=True)
class Linear:
    """A linear ramp from ``start`` at epoch 0 to ``end`` at epoch ``epochs``, then ``end``.

    ``s(e) = start + (end - start) * min(e, epochs) / epochs``.
    """

    start: float
    end: float
    epochs: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _finite("start", self.start))
        object.__setattr__(self, "end", _finite("end", self.end))
        object.__setattr__(self, "epochs", _positive_int("epochs", self.epochs))

    def __call__(self, epoch: int) -> float:
        epoch = _check_epoch(epoch)
        if epoch >= self.epochs:
            return self.end
        return self.start + (self.end - self.start) * (epoch / self.epochs)


@dataclass(frozen=True)
class Step:
    """Step decay: multiply by ``factor`` every ``every`` epochs.

    ``s(e) = initial * factor ** (e // every)``.
    """

    initial: float
    factor: float
    every: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "initial", _finite("initial", self.initial))
        factor = _finite("factor", self.factor)
        if factor <= 0.0:
            raise ValueError(f"factor must be > 0, got {factor}")
        object.__setattr__(self, "factor", factor)
        object.__setattr__(self, "every", _positive_int("every", self.every))

    def __call__(self, epoch: int) -> float:
        epoch = _check_epoch(epoch)
        return self.initial * self.factor ** (epoch // self.every)


def momentum_annealing(start: float = 0.5, end: float = 0.9, *, epochs: int) -> Linear:
    """The classic momentum ramp: ``Linear(start, end, epochs)``, by default 0.5 -> 0.9.

    A small momentum while the gradients are large and erratic early in training, a large
    one once they settle. Both ends must lie in (-1, 1).
    """
    return Linear(_momentum("start", start), _momentum("end", end), epochs)


@dataclass(frozen=True)
class Stages:
    """Step through an ordered set of (lr, momentum) pairs, as suggested by Qian (1999).

    Stage ``k = min(e // epochs_per_stage, len(pairs) - 1)`` is active at epoch ``e``
    (with a sequence ``epochs_per_stage``, stage k lasts ``epochs_per_stage[k]`` epochs);
    after the last stage the last pair holds. ``stages.lr`` and ``stages.momentum`` are
    schedules of their own; ``stages(e)`` returns the pair ``(lr, momentum)``.
    Each lr must be >= 0 and each momentum in (-1, 1).
    """

    pairs: tuple[tuple[float, float], ...]
    epochs_per_stage: Union[int, tuple[int, ...]]

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
            lr = _finite(f"pairs[{k}] lr", pair[0])
            if lr < 0.0:
                raise ValueError(f"pairs[{k}] lr must be >= 0, got {lr}")
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

    def stage(self, epoch: int) -> int:
        """Index into ``pairs`` of the stage active at ``epoch``."""
        epoch = _check_epoch(epoch)
        last = len(self.pairs) - 1
        if isinstance(self.epochs_per_stage, int):
            return min(epoch // self.epochs_per_stage, last)
        end = 0
        for k, length in enumerate(self.epochs_per_stage):
            end += length
            if epoch < end:
                return k
        return last

    def __call__(self, epoch: int) -> tuple[float, float]:
        return self.pairs[self.stage(epoch)]

    @property
    def lr(self) -> Schedule:
        """The learning-rate schedule: ``pairs[stage(e)][0]``."""
        return _StageColumn(self, 0)

    @property
    def momentum(self) -> Schedule:
        """The momentum schedule: ``pairs[stage(e)][1]``."""
        return _StageColumn(self, 1)


@dataclass(frozen=True, repr=False)
class _StageColumn:
    """One column (0: lr, 1: momentum) of a :class:`Stages` schedule."""

    stages: Stages
    column: int

    def __call__(self, epoch: int) -> float:
        return self.stages(epoch)[self.column]

    def __repr__(self) -> str:
        return f"{self.stages!r}.{('lr', 'momentum')[self.column]}"


def as_schedule(x: Union[float, Schedule]) -> Schedule:
    """Return ``x`` as a schedule: a real number becomes ``Constant(x)``; a callable passes
    through unchanged. Anything else (None, strings, arrays, ...) raises TypeError."""
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return Constant(x)
    if callable(x):
        return x
    raise TypeError(
        f"expected a number or a schedule (a callable epoch -> value), got {type(x).__name__}"
    )

"""The training loop: one place for epochs, schedules, History, verbose output,
callbacks, the target loss, the non-finite stop, validation and early stopping.

:meth:`momcore.MLP.fit` and :func:`momcore.distributed.fit` both run
:func:`fit_loop`; they differ only in the :class:`Runner` that takes the steps of a
run of batches (compiled, numpy, or data-parallel over MPI) and in the
:class:`Trainer` that says which process prints and how processes agree.
"""
from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from momcore import _core
from momcore import schedules as _schedules
from momcore.schedules import Constant as _Constant

if TYPE_CHECKING:  # pragma: no cover
    from momcore.mlp import MLP
    from momcore.optim import SGD

STOP_REASONS = ("epochs", "target_loss", "callback", "early_stopping", "nonfinite",
                "interrupted")
NONFINITE_X = "X holds NaN or inf"
"""The message of the ValueError that refuses inputs X holding NaN or inf."""


_SUM_MIN = 4096
"""all_finite tests an array the compiled test cannot read, of at least this many
elements, by its sum first."""


def all_finite(a: np.ndarray) -> bool:
    """Whether every element of the real array a is finite.

    float32/float64 in C order: one pass over the bits in C (_core.all_finite,
    vectorised, no temporary). Other arrays: integers and booleans are finite; from
    _SUM_MIN elements on, the sum first (one vectorised pass, no temporary; NaN and inf
    make it non-finite), then the element test only when the sum is not finite (NaN,
    inf, or finite values whose sum overflows); the element test otherwise.

    Parameters
    ----------
    a : numpy.ndarray
        Real numbers (floats, integers or booleans).

    Returns
    -------
    bool
        True when no element is NaN or infinite.
    """
    finite = _core.all_finite_or_none(a)
    if finite is not None:
        return finite
    if a.dtype.kind in "biu":
        return True
    if a.size >= _SUM_MIN:
        with np.errstate(over="ignore", invalid="ignore"):
            if math.isfinite(a.sum()):
                return True
    return bool(np.isfinite(a).all())


@dataclass
class History:
    """What one ``fit`` call did, epoch by epoch.

    ``loss`` is the mean training loss of each epoch (each sample's loss taken at its
    own forward pass, before its update; with ``MLP(l2=...)`` plus, for each batch,
    ``l2/2 sum_i ||W_i||^2`` at the weights of its forward pass, over the epoch's rows,
    as scikit-learn's ``loss_curve_`` counts its ``alpha``), ``accuracy`` the fraction of training rows
    classified right in those passes (classification only), ``seconds`` the wall time
    of each epoch, ``lr`` and ``momentum`` the values in force at the epoch's first
    step; ``val_loss`` and ``val_accuracy`` the loss and accuracy on the validation
    data after each epoch (when given). ``stopped`` says why training ended:
    "epochs", "target_loss", "callback", "early_stopping", "nonfinite" (fit raised
    FloatingPointError) or "interrupted" (Ctrl-C: fit raised KeyboardInterrupt; the
    interrupted epoch's steps were applied and counted in the optimizer's ``steps``,
    but the lists hold only the epochs completed); ``best_epoch`` is the epoch
    (0-based, within this call) whose weights early stopping kept, or None.

    Parameters
    ----------
    loss, accuracy, seconds, lr, momentum, val_loss, val_accuracy : list of float
        One value per completed epoch, as described above (empty when not measured).
    stopped : str
        Why training ended, one of ``STOP_REASONS``.
    best_epoch : int or None
        The epoch whose weights early stopping kept.
    """

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    momentum: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    stopped: str = ""
    best_epoch: int | None = None

    @property
    def epochs(self) -> int:
        """Number of epochs trained."""
        return len(self.loss)


class FitSettings(NamedTuple):
    """The checked arguments of a fit call that the loop itself uses (immutable; a
    named tuple, made in a fraction of a frozen dataclass's time).

    Made by :func:`check_fit_arguments`; the fields are its arguments, checked.

    Parameters
    ----------
    epochs, batch_size : int
        As in :meth:`momcore.MLP.fit`.
    lr, momentum : callable
        The schedules (a number becomes a constant schedule).
    shuffle, target_loss, verbose, callback, validation_data, patience, min_delta, restore_best
        As in :meth:`momcore.MLP.fit`.
    lr_name, momentum_name : str
        The argument each schedule came from, for error messages.
    per_step : bool
        Whether a schedule changes its value every step (else once per epoch).
    """

    epochs: int
    batch_size: int
    lr: Callable[[int], Any]
    momentum: Callable[[int], Any]
    shuffle: bool
    target_loss: float | None
    verbose: bool
    callback: Callable[[int, dict[str, float]], Any] | None
    validation_data: tuple[Any, Any] | None
    patience: int | None
    min_delta: float
    restore_best: bool
    lr_name: str = "lr"
    momentum_name: str = "momentum"
    per_step: bool = False


def _count(value: Any, name: str, minimum: int) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
            or value < minimum):
        kind = "positive" if minimum else "non-negative"
        raise ValueError(f"{name} must be a {kind} integer, got {value!r}")
    return int(value)


_CONSTANTS: dict[tuple[float, float], _schedules.Constant] = {}
"""The Constant schedules of the floats fit was called with, made once each (a Constant
is immutable): calls with the same lr and momentum share them."""
_MAX_CONSTANTS = 256


def _schedule(value: Any, name: str) -> Callable[[int], Any]:
    plain = type(value) is float
    if plain:
        key = (value, math.copysign(1.0, value))  # -0.0 apart from 0.0
        constant = _CONSTANTS.get(key)
        if constant is not None:
            return constant
    try:
        schedule = _schedules.as_schedule(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name}: {exc}") from None
    if plain:
        if len(_CONSTANTS) >= _MAX_CONSTANTS:
            _CONSTANTS.clear()
        _CONSTANTS[key] = schedule
    return schedule


_PLAIN = (int, float, bool, type(None))
"""The argument types check_fit_arguments remembers a result for: immutable, so that
the same objects again (a call repeated in a loop) have the same checked settings."""
_last_settings: tuple[Any, ...] = ()
"""The arguments of the last check_fit_arguments call whose arguments were all _PLAIN,
and its result."""


def check_fit_arguments(*, epochs: Any, batch_size: Any = 1, lr: Any = 0.1,
                        momentum: Any = 0.9, lr_schedule: Any = None,
                        momentum_schedule: Any = None, shuffle: Any = True,
                        target_loss: Any = None, verbose: Any = False, callback: Any = None,
                        validation_data: Any = None, patience: Any = None,
                        min_delta: Any = 0.0, restore_best: Any = True) -> FitSettings:
    """The checks of fit's loop arguments, before anything changes.

    The data and the hyperparameters are checked by the model and the optimizer; the
    defaults are :meth:`momcore.MLP.fit`'s, where each argument is described.

    Parameters
    ----------
    epochs : int
        ``>= 0``.
    batch_size : int
        ``>= 1``.
    lr, momentum : float or schedule
        Used when the matching schedule is None.
    lr_schedule, momentum_schedule : schedule or None
        Callables ``t -> value`` (see :mod:`momcore.schedules`).
    shuffle, verbose, restore_best : bool
        Booleans, not truthy values.
    target_loss : float or None
        Stop once an epoch's loss is below it.
    callback : callable or None
        ``callback(epoch, logs)``.
    validation_data : tuple or None
        ``(X_val, y_val)``.
    patience : int or None
        Early stopping after this many epochs without improvement.
    min_delta : float
        The smallest improvement that counts, ``>= 0``.

    Returns
    -------
    FitSettings
        The checked settings.

    Raises
    ------
    TypeError
        If an argument has the wrong type (booleans are not counts, numbers are not
        booleans).
    ValueError
        If a count or ``min_delta`` is out of range.
    """
    global _last_settings
    last = _last_settings
    if (last and last[0] is epochs and last[1] is batch_size and last[2] is lr
            and last[3] is momentum and last[4] is lr_schedule
            and last[5] is momentum_schedule and last[6] is shuffle
            and last[7] is target_loss and last[8] is verbose and last[9] is callback
            and last[10] is validation_data and last[11] is patience
            and last[12] is min_delta and last[13] is restore_best):
        return last[14]
    arguments = (epochs, batch_size, lr, momentum, lr_schedule, momentum_schedule, shuffle,
                 target_loss, verbose, callback, validation_data, patience, min_delta,
                 restore_best)
    # (each check starts with the plain types' test, which most calls pass at once)
    if type(epochs) is not int or epochs < 0:
        epochs = _count(epochs, "epochs", 0)
    if type(batch_size) is not int or batch_size < 1:
        batch_size = _count(batch_size, "batch_size", 1)
    if target_loss is not None and (isinstance(target_loss, bool)
                                    or not isinstance(target_loss, numbers.Real)):
        raise TypeError(f"target_loss must be a number or None, got "
                        f"{type(target_loss).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    if not (type(shuffle) is bool and type(verbose) is bool and type(restore_best) is bool):
        for name, flag in (("verbose", verbose), ("shuffle", shuffle),
                           ("restore_best", restore_best)):
            if not isinstance(flag, (bool, np.bool_, int, np.integer)):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if validation_data is not None and (not isinstance(validation_data, (tuple, list))
                                        or len(validation_data) != 2):
        raise TypeError("validation_data must be a pair (X_val, y_val) or None")
    if patience is not None:
        patience = _count(patience, "patience", 1)
    if type(min_delta) is not float and (isinstance(min_delta, bool)
                                         or not isinstance(min_delta, numbers.Real)) \
            or not (math.isfinite(min_delta) and min_delta >= 0):
        raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
    lr_of = _schedule(lr if lr_schedule is None else lr_schedule,
                      "lr" if lr_schedule is None else "lr_schedule")
    momentum_of = _schedule(momentum if momentum_schedule is None else momentum_schedule,
                            "momentum" if momentum_schedule is None else "momentum_schedule")
    settings = FitSettings(
        epochs, batch_size, lr_of, momentum_of, bool(shuffle),
        None if target_loss is None else float(target_loss), bool(verbose), callback,
        None if validation_data is None else tuple(validation_data), patience,
        float(min_delta), bool(restore_best), "lr" if lr_schedule is None else "lr_schedule",
        "momentum" if momentum_schedule is None else "momentum_schedule",
        "step" in (_schedules.unit_of(lr_of), _schedules.unit_of(momentum_of)))
    if all(type(a) in _PLAIN for a in arguments):
        _last_settings = (*arguments, settings)
    return settings


def schedule_values(settings: FitSettings, epoch: int, step: int) -> dict[str, float]:
    """The lr and momentum the schedules give, each at its own unit's count.

    Parameters
    ----------
    settings : FitSettings
        Holds the schedules.
    epoch : int
        The epoch number (for a schedule counting epochs).
    step : int
        The step number (for a schedule marked ``per="step"``).

    Returns
    -------
    dict
        ``{"lr": float, "momentum": float}``.

    Raises
    ------
    TypeError, ValueError
        Naming the schedule, for a value that float() refuses or that is not finite.
    """
    lr_of, momentum_of = settings.lr, settings.momentum
    if type(lr_of) is _Constant and type(momentum_of) is _Constant:  # checked finite floats
        return {"lr": lr_of.value, "momentum": momentum_of.value}
    values = {}
    for key, schedule, name in (("lr", lr_of, settings.lr_name),
                                ("momentum", momentum_of, settings.momentum_name)):
        if type(schedule) is _Constant:  # its value is a checked finite float
            values[key] = schedule.value
            continue
        t = step if _schedules.unit_of(schedule) == "step" else epoch
        values[key] = _schedules.value_at(schedule, t, name)
    return values


def set_hyperparameters(optimizer: SGD, settings: FitSettings, epoch: int,
                        step: int) -> tuple[float, float]:
    """optimizer.lr, optimizer.momentum := the schedules' values (see schedule_values).

    Parameters
    ----------
    optimizer : momcore.SGD
        The optimizer to set.
    settings : FitSettings
        Holds the schedules.
    epoch, step : int
        The counts, as in :func:`schedule_values`.

    Returns
    -------
    lr, momentum : float
        The values set.

    Raises
    ------
    ValueError
        With the schedule named, for a value the optimizer refuses.
    """
    values = schedule_values(settings, epoch, step)
    for key, name in (("lr", settings.lr_name), ("momentum", settings.momentum_name)):
        if optimizer._in_force(key, values[key]):
            continue  # a constant's value, epoch after epoch
        try:
            setattr(optimizer, key, values[key])
        except ValueError as exc:
            raise ValueError(f"{name} at epoch {epoch}, step {step}: {exc}") from None
    return values["lr"], values["momentum"]


class Runner(Protocol):
    """Takes the training steps of a run of rows."""

    n_rows: int
    """Rows of the data set: an epoch's order is a permutation of range(n_rows)."""

    def run(self, rows: np.ndarray, batch: int) -> tuple[float, int, int, bool]:
        """Consecutive batches of ``batch`` rows of ``rows``.

        Each batch is a forward pass, its loss, the backward pass and one step with the
        optimizer's current hyperparameters, counted in the optimizer's ``steps``.

        Parameters
        ----------
        rows : numpy.ndarray
            Row indices, int64, contiguous.
        batch : int
            Rows per batch (the last batch may be shorter).

        Returns
        -------
        tuple
            (sum of the per-sample losses, rows classified right, steps applied, whether it
            stopped on a non-finite loss).

        Notes
        -----
        A runner that can check the rows of X for NaN and inf as it reads them has an
        attribute ``check_rows``: while it is True, ``run`` raises
        :class:`momcore._core.NonFiniteRows` before the step of a batch holding such a
        row (the steps before it applied and counted). :func:`fit_loop` then leaves
        the check of X's rows to the first epoch's runs.
        """


class Trainer:
    """How one process trains: it prints, decides and raises alone. A data-parallel
    trainer (momcore.distributed) overrides these to make processes agree."""

    root = True
    """Whether this process prints progress and runs the callback."""

    alone = True
    """Whether this process trains alone: then there are no arguments to compare
    (:meth:`agree_on_arguments` is not called) and no one to agree with."""

    def agree_on(self, error: BaseException | None) -> None:
        """Raises ``error`` (on every process, when there are several).

        Parameters
        ----------
        error : BaseException or None
            This process's error, or None.
        """
        if error is not None:
            raise error

    def agree_on_arguments(self, arguments: dict[str, Any]) -> None:
        """Checks that every process trains with the same ``arguments``.

        Raises on every process when they differ. One process has nothing to compare.

        Parameters
        ----------
        arguments : dict
            The checked training arguments, before the first step.
        """

    def decide(self, reason: str) -> str:
        """The stop decision every process takes: the root's.

        Parameters
        ----------
        reason : str
            This process's decision (``""`` to go on, else one of ``STOP_REASONS``).

        Returns
        -------
        str
            The decision taken.
        """
        return reason

    def runner(self, net: MLP, X: np.ndarray, T: np.ndarray, batch: int,
               accuracy: str) -> Runner:
        """The runner of this kind of training.

        Parameters
        ----------
        net : momcore.MLP
            The network to train.
        X : numpy.ndarray
            Inputs, checked.
        T : numpy.ndarray
            Encoded targets, checked.
        batch : int
            Rows per batch.
        accuracy : {"none", "argmax", "threshold"}
            How rows classified right are counted.

        Returns
        -------
        Runner
            Takes the steps.
        """
        return net.make_runner(X, T, batch, accuracy)

    def epoch_order(self, net: MLP, n: int, shuffle: bool) -> np.ndarray:
        """The order in which an epoch visits the n rows.

        A trainer that must reproduce another library's shuffling (momcore.sklearn)
        overrides this.

        Parameters
        ----------
        net : momcore.MLP
            The network; its ``rng`` draws the permutation.
        n : int
            The number of rows.
        shuffle : bool
            Whether to shuffle.

        Returns
        -------
        numpy.ndarray
            int64: when ``shuffle``, ``net.rng.permutation(n)`` (drawn in C, the same
            values and the same draws from the generator), else 0..n-1.
        """
        return _core.permutation(net.rng, n) if shuffle else np.arange(n)

    def describe(self) -> str:
        """Words for the verbose line.

        Returns
        -------
        str
            ``""`` for one process.
        """
        return ""


def fit_loop(net: MLP, X: np.ndarray, T: np.ndarray, settings: FitSettings, *,
             accuracy: str, trainer: Trainer, rows_checked: bool = True) -> History:
    """Trains ``net`` through its optimizer for ``settings.epochs`` epochs; see MLP.fit.

    Parameters
    ----------
    net : momcore.MLP
        The network; its optimizer takes the steps.
    X : numpy.ndarray
        Inputs, checked.
    T : numpy.ndarray
        Encoded targets, checked.
    settings : FitSettings
        The loop's arguments (:func:`check_fit_arguments`).
    accuracy : {"none", "argmax", "threshold"}, keyword-only
        How rows classified right are counted; accuracy is reported unless "none".
    trainer : Trainer, keyword-only
        One process, or several that agree (momcore.distributed).
    rows_checked : bool, keyword-only
        False when X has not been checked for NaN and inf yet (one process only): a
        runner that checks the rows as it reads them (see :class:`Runner`) checks them
        in the first epoch, and a bad row undoes everything the call changed in the
        model (weights, optimizer state and steps, the generator's draws) before the
        ValueError; with any other runner, or no epoch to run, X is checked here.

    Returns
    -------
    History
        Also stored as ``net.history_``.

    Raises
    ------
    ValueError
        When ``rows_checked`` is False and X holds NaN or inf.
    FloatingPointError
        When a batch's loss is not finite (the weights of the last finite step stay).
    KeyboardInterrupt
        On Ctrl-C, after recording ``stopped = "interrupted"``.
    """
    classify = accuracy != "none"
    runner = trainer.runner(net, X, T, min(settings.batch_size, X.shape[0]), accuracy)
    guard = None
    if not rows_checked:
        if settings.epochs and hasattr(runner, "check_rows"):
            guard = _RowsCheck(net, X, runner)
        elif not all_finite(X):
            raise ValueError(NONFINITE_X)
    history = net.history_ = History()
    try:
        return _epochs(net, runner, settings, trainer, classify, history, guard)
    except KeyboardInterrupt:
        # The runner counted the steps it applied; the partial epoch is not an epoch.
        history.stopped = "interrupted"
        raise


def _epochs(net: MLP, runner: Runner, settings: FitSettings, trainer: Trainer,
            classify: bool, history: History, guard: _RowsCheck | None) -> History:
    optimizer = net.optimizer
    n = runner.n_rows
    batch = min(settings.batch_size, n)
    monitor = _Monitor(net, settings)
    epoch_start = _Snapshot(net, kept=True)
    for _ in range(settings.epochs):
        epoch = net.epochs
        order = trainer.epoch_order(net, n, settings.shuffle)
        start = time.perf_counter()
        lr, momentum = set_hyperparameters(optimizer, settings, epoch, optimizer.steps)
        epoch_start.take()
        if guard is None:
            sum_loss, correct, steps, stopped = _run(runner, order, batch, settings,
                                                     optimizer, epoch)
            finite = epoch_start.finite_now()
        else:  # the first epoch, checking X's rows as it reads them
            sum_loss, correct, steps, stopped, finite = guard.run(
                runner, order, batch, settings, optimizer, epoch, epoch_start)
            guard = None
        # A step whose loss was finite may still overflow the weights (a huge lr):
        # caught here, once per epoch, and undone back to the last finite step.
        if not finite:
            steps = _back_to_last_finite_step(net, runner, order, batch, settings,
                                              epoch_start)
            stopped = True
        if stopped:
            history.stopped = "nonfinite"
            raise FloatingPointError(
                f"the training loss or the weights became non-finite in epoch {epoch + 1} "
                f"after {steps} steps; training stopped and the weights of the last finite "
                f"step were kept (try a smaller lr)")
        seconds = time.perf_counter() - start
        net.epochs += 1
        logs = {"loss": sum_loss / n, "seconds": seconds, "lr": lr, "momentum": momentum}
        history.loss.append(logs["loss"])
        history.seconds.append(seconds)
        history.lr.append(lr)
        history.momentum.append(momentum)
        if classify:
            logs["accuracy"] = correct / n
            history.accuracy.append(logs["accuracy"])
        if settings.validation_data is not None:
            logs.update(monitor.validate(classify))
            history.val_loss.append(logs["val_loss"])
            if classify:
                history.val_accuracy.append(logs["val_accuracy"])
        if settings.verbose and trainer.root:
            print(_progress_line(epoch, logs, trainer), flush=True)
        reason = ""
        if settings.target_loss is not None and logs["loss"] <= settings.target_loss:
            reason = "target_loss"
        elif (settings.callback is not None and trainer.root
              and settings.callback(epoch, logs) is False):
            reason = "callback"
        elif monitor.exhausted(logs, history.epochs - 1):
            reason = "early_stopping"
        reason = trainer.decide(reason)
        if reason:
            history.stopped = reason
            break
    else:
        history.stopped = "epochs"
    history.best_epoch = monitor.restore(history.stopped)
    return history


def _run(runner: Runner, order: np.ndarray, batch: int, settings: FitSettings,
         optimizer: SGD, epoch: int) -> tuple[float, int, int, bool]:
    """The steps of one epoch over the rows ``order``: one run, or with a schedule
    that changes every step, one run per batch with the schedules' values set before
    it."""
    if not settings.per_step:
        return runner.run(order, batch)
    sum_loss, correct, steps = 0.0, 0, 0
    for b0 in range(0, order.shape[0], batch):
        if b0:
            set_hyperparameters(optimizer, settings, epoch, optimizer.steps)
        part = runner.run(order[b0:b0 + batch], batch)
        sum_loss, correct = sum_loss + part[0], correct + part[1]
        steps += part[2]
        if part[3]:
            return sum_loss, correct, steps, True
    return sum_loss, correct, steps, False


class _RowsCheck:
    """The first epoch of a fit call whose X was not checked for NaN and inf: the
    runner checks the rows as it reads them; a bad row, or any other end of the epoch
    before all of X was read while X holds one, undoes what the call changed in the
    model (weights, optimizer state and steps, the generator's draws) and raises the
    ValueError of an X refused up front (:meth:`momcore.MLP.train` restores the
    optimizer's hyperparameters and the history)."""

    def __init__(self, net: MLP, X: np.ndarray, runner: Runner) -> None:
        self.net, self.X = net, X
        self.rng_state = net.rng.bit_generator.state  # before the first epoch's shuffle
        runner.check_rows = True

    def run(self, runner: Runner, order: np.ndarray, batch: int, settings: FitSettings,
            optimizer: SGD, epoch: int,
            epoch_start: _Snapshot) -> tuple[float, int, int, bool, bool]:
        """:func:`_run` checking the rows, then whether the weights are finite."""
        try:
            try:
                result = _run(runner, order, batch, settings, optimizer, epoch)
            finally:
                runner.check_rows = False  # the later epochs read the same rows
            finite = epoch_start.finite_now()
        except _core.NonFiniteRows:
            raise self._refuse(epoch_start) from None
        except BaseException:
            if not all_finite(self.X):
                raise self._refuse(epoch_start) from None
            raise
        if result[3] and not all_finite(self.X):
            # stopped on a non-finite loss before reading every row: X is refused
            # first, as it was before training
            raise self._refuse(epoch_start)
        return (*result, finite)

    def _refuse(self, epoch_start: _Snapshot) -> ValueError:
        epoch_start.restore()
        self.net.rng.bit_generator.state = self.rng_state
        return ValueError(NONFINITE_X)


def _copy(dst: np.ndarray, src: np.ndarray) -> None:
    """dst[...] = src (same shape and dtype): on momcore's threads in C for C-contiguous
    arrays, about twice numpy's single-threaded copy for a large one."""
    if not _core.copy_into(dst, src):
        np.copyto(dst, src)


def _copy_all(dsts: list[np.ndarray] | None, srcs: list[np.ndarray]) -> bool:
    """Copies each array of srcs into its buffer in dsts (_core.copy_into); False when
    they do not fit: no buffers, another count, or a buffer of another shape or dtype
    (which copy_into refuses, copying nothing), and then dsts hold no whole copy."""
    if dsts is None or len(dsts) != len(srcs):
        return False
    for dst, src in zip(dsts, srcs):
        if not _core.copy_into(dst, src):
            return False
    return True


class _Snapshot:
    """A copy of the weights, the optimizer state and the step count (buffers made
    once, on the first take). With ``kept``, the buffers are the model's
    ``_epoch_copies``, made by the first fit call and used again by the next ones while
    the shapes and dtypes match: a large buffer freshly allocated is mapped page by page
    as it is first written, which cost an epoch of 784-256-128-10 in float64 about
    twenty times the copy itself (1.3 ms against 60 us)."""

    def __init__(self, net: MLP, *, kept: bool = False) -> None:
        self.net = net
        self.kept = kept
        self.copies: list[np.ndarray] | None = None
        self.steps = 0
        self.tuned: tuple[dict, list[tuple[float, float]]] | None = None

    def _arrays(self) -> list[np.ndarray]:
        return [self.net.params, *self.net.optimizer.state]

    def take(self) -> None:
        arrays = self._arrays()
        if self.copies is None and self.kept and _copy_all(self.net._epoch_copies, arrays):
            self.copies = self.net._epoch_copies  # the model's buffers fit, and hold the copy
        else:
            if self.copies is None:
                self.copies = [np.empty_like(a, order="C") for a in arrays]
                if self.kept:
                    self.net._epoch_copies = self.copies
            for mine, theirs in zip(self.copies, arrays):
                _copy(mine, theirs)
        optimizer = self.net.optimizer
        self.steps = optimizer.steps
        # momentum="auto": the tuner's estimates and the pair it set are part of the
        # state a replay must start from
        self.tuned = None if optimizer.tuner is None else (
            optimizer.tuner.state_dict(),
            [(g["lr"], g["momentum"]) for g in optimizer.param_groups])

    def restore(self) -> None:
        assert self.copies is not None
        for mine, theirs in zip(self.copies, self._arrays()):
            _copy(theirs, mine)
        optimizer = self.net.optimizer
        optimizer.steps = self.steps
        if self.tuned is not None and optimizer.tuner is not None:
            tuner_state, pairs = self.tuned
            optimizer.tuner.load_state_dict(tuner_state)
            for group, (lr, momentum) in zip(optimizer.param_groups, pairs):
                group["lr"], group["momentum"] = lr, momentum

    def finite_now(self) -> bool:
        """Whether the model's weights and state are all finite (one pass over each)."""
        for a in self._arrays():
            if not all_finite(a):
                return False
        return True


def _back_to_last_finite_step(net: MLP, runner: Runner, order: np.ndarray, batch: int,
                              settings: FitSettings, epoch_start: _Snapshot) -> int:
    """After a run that stopped on a non-finite loss with non-finite weights (a step
    whose loss was finite overflowed them): the weights and state of the last step
    that left them finite. Replays the epoch from its start one step at a time (the
    steps are deterministic); returns the steps of this epoch kept."""
    optimizer = net.optimizer
    epoch_start.restore()
    before = _Snapshot(net)
    for b0 in range(0, order.shape[0], batch):
        if settings.per_step:
            set_hyperparameters(optimizer, settings, net.epochs, optimizer.steps)
        before.take()
        part = runner.run(order[b0:b0 + batch], batch)
        if part[3] or not before.finite_now():
            before.restore()
            break
    return optimizer.steps - epoch_start.steps


def _progress_line(epoch: int, logs: dict[str, float], trainer: Trainer) -> str:
    parts = [f"epoch {epoch + 1:>4}", f"loss {logs['loss']:.6f}"]
    if "accuracy" in logs:
        parts.append(f"accuracy {logs['accuracy']:.4f}")
    if "val_loss" in logs:
        parts.append(f"val_loss {logs['val_loss']:.6f}")
    if "val_accuracy" in logs:
        parts.append(f"val_accuracy {logs['val_accuracy']:.4f}")
    parts += [f"lr {logs['lr']:g}", f"momentum {logs['momentum']:g}"]
    if trainer.describe():
        parts.append(trainer.describe())
    parts.append(f"{logs['seconds'] * 1e3:.1f} ms")
    return "  ".join(parts)


class _Monitor:
    """Validation after each epoch and early stopping on the monitored loss (the
    validation loss when validation data is given, else the training loss)."""

    def __init__(self, net: MLP, settings: FitSettings) -> None:
        self.net, self.settings = net, settings
        self.best = math.inf
        self.best_epoch: int | None = None
        self.waited = 0
        self.saved: tuple[np.ndarray, list[np.ndarray]] | None = None
        if settings.validation_data is not None:
            self.X_val, self.y_val = settings.validation_data

    def validate(self, classify: bool) -> dict[str, float]:
        logs = {"val_loss": self.net.loss(self.X_val, self.y_val)}
        if classify:
            logs["val_accuracy"] = self.net.score(self.X_val, self.y_val)
        return logs

    def exhausted(self, logs: dict[str, float], epoch: int) -> bool:
        """Records the epoch; True when ``patience`` epochs passed without an
        improvement of more than min_delta."""
        if self.settings.patience is None:
            return False
        value = logs["val_loss" if "val_loss" in logs else "loss"]
        if value < self.best - self.settings.min_delta:
            self.best, self.best_epoch, self.waited = value, epoch, 0
            if self.settings.restore_best:
                self._save()
            return False
        self.waited += 1
        return self.waited >= self.settings.patience

    def _save(self) -> None:
        params, state = self.net.params, self.net.optimizer.state
        if self.saved is None:
            self.saved = (params.copy(), [s.copy() for s in state])
        else:
            np.copyto(self.saved[0], params)
            for mine, theirs in zip(self.saved[1], state):
                np.copyto(mine, theirs)

    def restore(self, stopped: str) -> int | None:
        """Puts back the best epoch's weights and optimizer state when early stopping
        ended training; returns the best epoch."""
        if stopped == "early_stopping" and self.saved is not None:
            np.copyto(self.net.params, self.saved[0])
            for mine, theirs in zip(self.net.optimizer.state, self.saved[1]):
                np.copyto(mine, theirs)
        return self.best_epoch

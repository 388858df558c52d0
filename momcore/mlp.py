"""momcore.MLP: a multilayer perceptron trained by back-propagation with momentum.

Two backends compute the same network: ``backend="c"`` runs the compiled passes
(whole epochs in C without the GIL) and ``backend="numpy"`` the pure-numpy reference
(:mod:`momcore._mlp_numpy`). Both share the initial weights and the shuffling of one
seeded generator, so their weights agree to rounding after any number of epochs.
"""
from __future__ import annotations

import json
import os
import secrets
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from momcore import _core
from momcore import _mlp_numpy as ref
from momcore.schedules import as_schedule

FORMAT = "momcore.MLP"
FORMAT_VERSION = 1
BACKENDS = ("c", "numpy")
_PREDICT_ROWS = 256  # rows per forward sweep of predict in the compiled backend


@dataclass
class History:
    """What one ``fit`` call did, epoch by epoch.

    ``loss`` is the mean training loss of each epoch (each sample's loss taken at its
    own forward pass, before its update), ``accuracy`` the fraction of training rows
    classified right in those passes (classification only), ``seconds`` the wall time
    of each epoch; ``stopped`` says why training ended: "epochs", "target_loss",
    "callback" or "nonfinite" (fit raised FloatingPointError).
    """

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    momentum: list[float] = field(default_factory=list)
    stopped: str = ""

    @property
    def epochs(self) -> int:
        """Number of epochs trained."""
        return len(self.loss)


def _schedule(value: Any, name: str) -> Callable[[int], float]:
    """value as a schedule, with errors that name the argument."""
    try:
        return as_schedule(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name}: {exc}") from None


class MLP:
    """A fully connected network ``a[i+1] = f(a[i] @ W[i] + b[i])``.

    Parameters
    ----------
    sizes : sequence of int
        ``[n_in, h1, ..., n_out]``.
    hidden : {"sigmoid", "tanh", "relu", "identity"}
        Activation of the hidden layers.
    output : {"softmax", "sigmoid", "identity"}
        Output activation; the loss is cross-entropy for softmax and squared error
        ``1/2 sum (t - y)^2`` for sigmoid and identity.
    dtype : float32 or float64
    seed : int
        Seeds the generator that draws the initial weights and shuffles every epoch.
    backend : {"c", "numpy"}

    All parameters live in one flat buffer (:attr:`params`); :attr:`weights` and
    :attr:`biases` are views into it. The optimizer state is one buffer of the same
    layout. Threads: ``predict``, ``predict_proba``, ``score``, ``loss`` and
    ``gradients`` may run from many threads at once (the compiled work releases the
    GIL); ``fit`` runs in one thread at a time (a second concurrent call raises
    RuntimeError), and ``reset``, ``save`` or predictions during a ``fit`` see the
    weights mid-training.
    """

    def __init__(self, sizes: Sequence[int], *, hidden: str = "sigmoid",
                 output: str = "softmax", dtype: Any = np.float64, seed: int = 0,
                 backend: str = "c") -> None:
        try:
            sizes = list(sizes) if not isinstance(sizes, (str, bytes)) else sizes
        except TypeError:
            raise ValueError(f"sizes must be a list of at least two positive integers, "
                             f"got {sizes!r}") from None
        if (not isinstance(sizes, list) or len(sizes) < 2
                or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                           and s >= 1 for s in sizes)):
            raise ValueError(f"sizes must be a list of at least two positive integers, "
                             f"got {sizes!r}")
        if not isinstance(hidden, str) or hidden not in ref.HIDDEN:
            raise ValueError(f"hidden must be one of {ref.HIDDEN}, got {hidden!r}")
        if not isinstance(output, str) or output not in ref.OUTPUT:
            raise ValueError(f"output must be one of {ref.OUTPUT}, got {output!r}")
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
        self.sizes: list[int] = [int(s) for s in sizes]
        self.hidden, self.output, self.dtype = hidden, output, dt
        self.seed, self.backend = int(seed), backend
        n = ref.n_params(self.sizes)
        self.params: np.ndarray = np.zeros(n, dt)
        self._state = np.zeros(n, dt)
        self._grad: np.ndarray | None = None
        self._fit_core: _core.NetCore | None = None
        self._local = threading.local()  # per-thread predict workspaces
        self._training = threading.Lock()
        self.weights, self.biases = ref.views(self.params, self.sizes)
        self.reset()

    # ---- state -------------------------------------------------------------------

    def reset(self) -> None:
        """Re-initialises the weights from the seed and forgets all training."""
        self._rng = np.random.default_rng(self.seed)
        ref.init_params(self.params, self.sizes, self.hidden, self._rng)
        self._state.fill(0)
        self._state_rule: str | None = None
        self.steps = 0
        self.epochs = 0
        self.history_: History | None = None

    @property
    def n_params(self) -> int:
        """Number of parameters (weights and biases)."""
        return self.params.shape[0]

    @property
    def optimizer_state(self) -> np.ndarray:
        """The momentum state, one flat buffer in the layout of :attr:`params` (a view)."""
        return self._state

    def __getstate__(self) -> dict[str, Any]:
        # Workspaces, locks and thread-local caches are per object and made again.
        state = self.__dict__.copy()
        for key in ("_fit_core", "_local", "_training", "weights", "biases"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fit_core = None
        self._local = threading.local()
        self._training = threading.Lock()
        self.weights, self.biases = ref.views(self.params, self.sizes)

    def __repr__(self) -> str:
        return (f"MLP({self.sizes}, hidden={self.hidden!r}, output={self.output!r}, "
                f"dtype={self.dtype.name}, backend={self.backend!r})")

    # ---- data --------------------------------------------------------------------

    def _inputs(self, X: Any) -> np.ndarray:
        X = np.asarray(X)
        if X.dtype == object or not (np.issubdtype(X.dtype, np.floating)
                                     or np.issubdtype(X.dtype, np.integer)
                                     or X.dtype == bool):
            raise TypeError(f"X must hold real numbers, got dtype {X.dtype}")
        if X.ndim != 2 or X.shape[1] != self.sizes[0]:
            raise ValueError(f"X must have shape (n, {self.sizes[0]}), got {X.shape}")
        if X.shape[0] == 0:
            raise ValueError("X is empty")
        if not np.isfinite(X).all():
            raise ValueError("X holds NaN or inf")
        with np.errstate(over="ignore"):
            X = np.require(X, self.dtype, ["C", "A"])  # contiguous and aligned
        if not np.isfinite(X).all():
            raise ValueError(f"X holds values beyond the range of {self.dtype}")
        return X

    def _targets(self, y: Any, n_rows: int) -> np.ndarray:
        y = np.asarray(y)
        if y.shape[:1] != (n_rows,):
            raise ValueError(f"y must have {n_rows} rows (one per row of X), got shape "
                             f"{y.shape}")
        return ref.encode_targets(y, self.sizes[-1], self.output, self.dtype)

    def _core_for_fit(self, batch: int, grad: bool) -> _core.NetCore:
        """The compiled network with workspaces for batch rows; made again only when the
        batch size (or the need for a gradient buffer) changes."""
        core = self._fit_core
        if core is None or core.max_batch != batch or (core.grad is None) == grad:
            if grad and self._grad is None:
                self._grad = np.zeros_like(self.params)
            core = self._fit_core = _core.NetCore(
                self.params, self._state, self._grad if grad else None, self.sizes,
                self.hidden, self.output, batch)
        return core

    # ---- inference ----------------------------------------------------------------

    def predict_proba(self, X: Any) -> np.ndarray:
        """Outputs of the network, shape (n, sizes[-1])."""
        X = self._inputs(X)
        if self.backend == "numpy":
            return ref.forward(self.params, self.sizes, X, self.hidden, self.output)[-1]
        out = np.empty((X.shape[0], self.sizes[-1]), self.dtype)
        core = getattr(self._local, "core", None)
        if core is None:
            core = self._local.core = _core.NetCore(self.params, self._state, None, self.sizes,
                                                    self.hidden, self.output, _PREDICT_ROWS)
        return core.predict(X, out)

    def predict(self, X: Any) -> np.ndarray:
        """Class labels for softmax and sigmoid outputs (the argmax of the outputs; with
        a single output unit, 1 where it is >= 1/2); the outputs themselves for an
        identity output."""
        out = self.predict_proba(X)
        return out if self.output == "identity" else ref.predicted_class(out)

    def loss(self, X: Any, y: Any) -> float:
        """Mean loss over the rows of X."""
        X = self._inputs(X)
        T = self._targets(y, X.shape[0])
        return ref.loss_from_output(self.predict_proba(X), T, self.output)

    def score(self, X: Any, y: Any) -> float:
        """Accuracy for integer labels; the coefficient of determination R^2 for a 2-D
        target array."""
        X = self._inputs(X)
        y = np.asarray(y)
        T = self._targets(y, X.shape[0])
        out = self.predict_proba(X)
        if y.ndim == 1:
            return float(np.mean(ref.predicted_class(out) == y))
        residual = np.sum((T - out) ** 2, dtype=np.float64)
        total = np.sum((T - T.mean(axis=0)) ** 2, dtype=np.float64)
        return float(1.0 - residual / total) if total > 0 else float("nan")

    def gradients(self, X: Any, y: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(dW, db): dE/dW[i] and dE/db[i] at the current weights, E the mean loss over X."""
        X = self._inputs(X)
        T = self._targets(y, X.shape[0])
        grad = np.empty_like(self.params)
        if self.backend == "numpy":
            ref.gradients(self.params, self.sizes, X, T, self.hidden, self.output, grad)
        else:
            core = _core.NetCore(self.params, self._state, grad, self.sizes, self.hidden,
                                 self.output, X.shape[0])
            core.gradients(X, T)
        dW, db = ref.views(grad, self.sizes)
        return dW, db

    # ---- training -----------------------------------------------------------------

    def fit(self, X: Any, y: Any, *, epochs: int, batch_size: int = 1, lr: float = 0.1,
            momentum: float = 0.9, rule: str = "classical",
            lr_schedule: Callable[[int], float] | None = None,
            momentum_schedule: Callable[[int], float] | None = None, shuffle: bool = True,
            target_loss: float | None = None, verbose: bool = False,
            callback: Callable[[int, dict[str, float]], Any] | None = None,
            dampening: float = 0.0, weight_decay: float = 0.0) -> History:
        """Trains for ``epochs`` epochs of (mini-batch) gradient descent with momentum.

        Each epoch shuffles the rows (``shuffle``), walks them in batches of
        ``batch_size`` (1: online learning, the last batch may be smaller) and takes
        one momentum step per batch (``rule`` etc. as in :func:`momcore.momentum_step`).
        ``lr_schedule`` / ``momentum_schedule`` map the epoch number (counted across
        fit calls) to the value of that epoch and override ``lr`` / ``momentum``.
        Consecutive calls continue training: weights, optimizer state, step and epoch
        counts carry over; a changed ``rule`` starts a fresh optimizer state.

        Stops early when the epoch's mean loss is <= ``target_loss`` or when
        ``callback(epoch, logs)`` returns False. A batch whose loss is not finite
        stops training with FloatingPointError before its update, so the weights
        of the last finite step stay in place (:attr:`history_` keeps the epochs
        done). Returns the :class:`History` of this call.

        Predicting from other threads is safe (each thread gets its own workspace), but
        sees the weights as they change; two ``fit`` calls on one model at once raise
        RuntimeError.
        """
        if not self._training.acquire(blocking=False):
            raise RuntimeError("fit is already running on this model in another thread; "
                               "one model trains in one thread at a time")
        try:
            return self._fit(X, y, epochs=epochs, batch_size=batch_size, lr=lr,
                             momentum=momentum, rule=rule, lr_schedule=lr_schedule,
                             momentum_schedule=momentum_schedule, shuffle=shuffle,
                             target_loss=target_loss, verbose=verbose, callback=callback,
                             dampening=dampening, weight_decay=weight_decay)
        finally:
            self._training.release()

    def _fit_arguments(self, X: Any, y: Any, *, epochs: Any, batch_size: Any, lr: Any,
                       momentum: Any, rule: Any, lr_schedule: Any, momentum_schedule: Any,
                       target_loss: Any, verbose: Any, callback: Any, dampening: Any,
                       weight_decay: Any) -> tuple:
        """Checks fit's arguments before anything changes; returns X and the encoded
        targets T as the network's dtype, whether this is classification, and the lr
        and momentum schedules."""
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
        if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        X = self._inputs(X)
        T = self._targets(y, X.shape[0])
        if target_loss is not None and not isinstance(target_loss, (int, float, np.floating,
                                                                    np.integer)):
            raise TypeError(f"target_loss must be a number or None, got "
                            f"{type(target_loss).__name__}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
        if not isinstance(verbose, (bool, np.bool_, int, np.integer)):
            raise TypeError(f"verbose must be a bool, got {type(verbose).__name__}")
        lr_of = _schedule(lr if lr_schedule is None else lr_schedule,
                          "lr" if lr_schedule is None else "lr_schedule")
        momentum_of = _schedule(momentum if momentum_schedule is None else momentum_schedule,
                                "momentum" if momentum_schedule is None else "momentum_schedule")
        _core.check_hyperparameters(lr=lr_of(self.epochs), momentum=momentum_of(self.epochs),
                                    rule=rule, dampening=dampening, weight_decay=weight_decay)
        return X, T, np.asarray(y).ndim == 1, lr_of, momentum_of

    def _fit(self, X: Any, y: Any, *, epochs: int, batch_size: int, lr: float,
             momentum: float, rule: str, lr_schedule: Callable[[int], float] | None,
             momentum_schedule: Callable[[int], float] | None, shuffle: bool,
             target_loss: float | None, verbose: bool,
             callback: Callable[[int, dict[str, float]], Any] | None, dampening: float,
             weight_decay: float) -> History:
        X, T, classify, lr_of, momentum_of = self._fit_arguments(
            X, y, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, rule=rule,
            lr_schedule=lr_schedule, momentum_schedule=momentum_schedule,
            target_loss=target_loss, verbose=verbose, callback=callback, dampening=dampening,
            weight_decay=weight_decay)
        batch = min(int(batch_size), X.shape[0])
        fold = rule == "classical" and weight_decay == 0.0
        if rule != self._state_rule:
            self._state.fill(0)
            self._state_rule = rule
        if self.backend == "c":
            core = self._core_for_fit(batch, not fold)
        elif self._grad is None:
            self._grad = np.zeros_like(self.params)
        history = self.history_ = History()
        n = X.shape[0]
        for _ in range(int(epochs)):
            epoch = self.epochs
            lr_e, momentum_e = float(lr_of(epoch)), float(momentum_of(epoch))
            order = self._rng.permutation(n) if shuffle else np.arange(n)
            start = time.perf_counter()
            hyper = dict(lr=lr_e, momentum=momentum_e, rule=rule, dampening=dampening,
                         weight_decay=weight_decay)
            if self.backend == "c":
                sum_loss, correct, steps, stopped = core.train_epoch(X, T, order, batch,
                                                                     **hyper)
            else:
                # a diverging run is reported by its loss below, not by numpy warnings
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    sum_loss, correct, steps, stopped = ref.train_epoch(
                        self.params, self._state, self.sizes, X, T, order, batch,
                        self.hidden, self.output, grad_buf=self._grad, **hyper)
            self.steps += steps
            if stopped:
                history.stopped = "nonfinite"
                raise FloatingPointError(
                    f"the training loss became non-finite in epoch {epoch + 1} after {steps} "
                    f"steps; training stopped and the weights of the last finite step "
                    f"were kept (try a smaller lr)")
            seconds = time.perf_counter() - start
            self.epochs += 1
            history.loss.append(sum_loss / n)
            history.seconds.append(seconds)
            history.lr.append(lr_e)
            history.momentum.append(momentum_e)
            logs = {"loss": sum_loss / n, "seconds": seconds, "lr": lr_e,
                    "momentum": momentum_e}
            if classify:
                history.accuracy.append(correct / n)
                logs["accuracy"] = correct / n
            if verbose:
                acc = f"  accuracy {logs['accuracy']:.4f}" if classify else ""
                print(f"epoch {epoch + 1:>4}  loss {logs['loss']:.6f}{acc}  "
                      f"lr {lr_e:g}  momentum {momentum_e:g}  {seconds * 1e3:.1f} ms",
                      flush=True)
            if target_loss is not None and logs["loss"] <= target_loss:
                history.stopped = "target_loss"
                return history
            if callback is not None and callback(epoch, logs) is False:
                history.stopped = "callback"
                return history
        history.stopped = "epochs"
        return history

    # ---- persistence --------------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": FORMAT_VERSION, "sizes": self.sizes,
            "hidden": self.hidden, "output": self.output, "dtype": self.dtype.name,
            "seed": self.seed, "backend": self.backend, "steps": self.steps,
            "epochs": self.epochs, "state_rule": self._state_rule,
            "rng": self._rng.bit_generator.state,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes weights, optimizer state and generator state to ``path`` (.npz with
        JSON metadata, no pickle), atomically: a temporary file in the same directory,
        then a rename, so an interrupted save never leaves a half-written file."""
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        tmp = os.path.join(directory, f".momcore-{secrets.token_hex(8)}.tmp")
        # the mode a plain open() would give: 0o666 less the umask
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, params=self.params, state=self._state,
                         metadata=np.array(json.dumps(self._metadata())))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MLP:
        """A model saved by :meth:`save`; training continues exactly where it stopped.

        Never executes code from the file. A corrupt, truncated or mismatched file
        raises ValueError naming the problem."""
        try:
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
                files = set(data.files)
                if {"params", "state", "metadata"} <= files:
                    meta = json.loads(str(data["metadata"][()]))
                    params, state = data["params"], data["state"]
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except (ValueError, zipfile.BadZipFile, EOFError, KeyError, TypeError,
                OSError) as exc:
            # numpy's own ValueError for object arrays suggests allow_pickle: never that.
            if "allow_pickle" in str(exc) and zipfile.is_zipfile(path):
                raise ValueError(f"{path}: holds object arrays (pickled data), which momcore "
                                 f"never loads") from None
            raise ValueError(f"{path}: corrupt or truncated model file "
                             f"({type(exc).__name__})") from None
        missing = {"params", "state", "metadata"} - files
        if missing:
            raise ValueError(f"{path}: not a momcore model file (missing {sorted(missing)})")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a momcore model file")
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path}: model file version {meta.get('version')} is not "
                             f"supported (this momcore reads version {FORMAT_VERSION})")
        try:
            net = cls(meta["sizes"], hidden=meta["hidden"], output=meta["output"],
                      dtype=meta["dtype"], seed=meta["seed"], backend=meta["backend"])
            n, dt = net.n_params, net.dtype
            for name, arr in (("params", params), ("state", state)):
                if arr.shape != (n,) or arr.dtype != dt:
                    raise ValueError(f"{name} is {arr.dtype}{list(arr.shape)}, expected "
                                     f"{dt}[{n}] for sizes {net.sizes}")
            for key in ("steps", "epochs"):
                if type(meta[key]) is not int or meta[key] < 0:
                    raise ValueError(f"{key} must be a non-negative integer, got {meta[key]!r}")
            if meta["state_rule"] is not None and meta["state_rule"] not in _core.RULES:
                raise ValueError(f"unknown rule {meta['state_rule']!r}")
            net._rng.bit_generator.state = meta["rng"]
            net.steps, net.epochs = meta["steps"], meta["epochs"]
            net._state_rule = meta["state_rule"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: mismatched model file ({exc})") from None
        np.copyto(net.params, params)
        np.copyto(net._state, state)
        return net

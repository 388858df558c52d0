"""momcore.MLP: a multilayer perceptron trained by back-propagation with momentum.

Two backends compute the same network: ``backend="c"`` runs the compiled passes
(whole epochs in C without the GIL) and ``backend="numpy"`` the pure-numpy reference
(:mod:`momcore._mlp_numpy`). Both share the initial weights and the shuffling of one
seeded generator, so their weights agree to rounding after any number of epochs.
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from momcore import _checkpoint, _core
from momcore import _mlp_numpy as ref
from momcore import _network as layout
from momcore import training
from momcore.optim import SGD, checked_hyperparameters
from momcore.registry import check_name, loss_for
from momcore.training import History

__all__ = ["MLP", "History"]

FORMAT = _checkpoint.FORMAT
FORMAT_VERSION = _checkpoint.FORMAT_VERSION
BACKENDS = ("c", "numpy")
_PREDICT_ROWS = 256  # rows per forward sweep of predict in the compiled backend


class MLP:
    """A fully connected network ``a[i+1] = f(a[i] @ W[i] + b[i])``.

    Parameters
    ----------
    sizes : sequence of int
        ``[n_in, h1, ..., n_out]``.
    hidden : {"sigmoid", "tanh", "relu", "identity"}
        Activation of the hidden layers.
    output : {"softmax", "sigmoid", "identity"}
        Output activation.
    loss : {"cross_entropy", "binary_cross_entropy", "squared_error"} or None
        The loss the output pairs with: softmax + cross_entropy (classification),
        sigmoid + binary_cross_entropy (binary and multilabel classification: one
        sigmoid per label, ``predict`` thresholds each at 1/2), sigmoid +
        squared_error ``1/2 sum (t - y)^2`` (the lecture notes; the default for
        sigmoid), identity + squared_error (regression). None takes the default
        pair of the output (:data:`momcore.registry.DEFAULT_LOSS`).
    dtype : float32 or float64
    seed : int
        Seeds the generator that draws the initial weights and shuffles every epoch.
    backend : {"c", "numpy"}

    All parameters live in one flat buffer (:attr:`params`); :attr:`weights` and
    :attr:`biases` are views into it. Training goes through one :class:`momcore.SGD`
    over that buffer (:attr:`optimizer`), whose state is one buffer of the same
    layout. Threads: ``predict``, ``predict_proba``, ``score``, ``loss`` and
    ``gradients`` may run from many threads at once (the compiled work releases the
    GIL); ``fit`` runs in one thread at a time (a second concurrent call raises
    RuntimeError), and ``reset``, ``save`` or predictions during a ``fit`` see the
    weights mid-training.
    """

    def __init__(self, sizes: Sequence[int], *, hidden: str = "sigmoid",
                 output: str = "softmax", loss: str | None = None,
                 dtype: Any = np.float64, seed: int = 0, backend: str = "c") -> None:
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
        check_name("hidden", hidden)
        loss = loss_for(output, loss)
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
        self.sizes: list[int] = [int(s) for s in sizes]
        self.hidden, self.output, self.loss_name, self.dtype = hidden, output, loss, dt
        self.seed, self.backend = int(seed), backend
        self.params: np.ndarray = np.zeros(layout.n_params(self.sizes), dt)
        self._grad: np.ndarray | None = None
        self._fit_core: _core.NetCore | None = None
        self._fit_core_accuracy = ""
        self._local = threading.local()  # per-thread predict workspaces
        self._training = threading.Lock()
        self.weights, self.biases = layout.views(self.params, self.sizes)
        self.reset()

    # ---- state -------------------------------------------------------------------

    def reset(self) -> None:
        """Re-initialises the weights from the seed and forgets all training."""
        self.rng = np.random.default_rng(self.seed)
        """The generator that drew the initial weights and shuffles every epoch."""
        layout.init_params(self.params, self.sizes, self.hidden, self.rng)
        self.optimizer = SGD([self.params], lr=0.1, momentum=0.0, backend=self.backend)
        """The optimizer that owns the update: rule, hyperparameters, state, steps."""
        self.epochs = 0
        self.history_: History | None = None
        self._local = threading.local()

    @property
    def n_params(self) -> int:
        """Number of parameters (weights and biases)."""
        return self.params.shape[0]

    @property
    def optimizer_state(self) -> np.ndarray:
        """The momentum state, one flat buffer in the layout of :attr:`params` (a view)."""
        return self.optimizer.state[0]

    @property
    def steps(self) -> int:
        """Optimizer steps taken since the last reset."""
        return self.optimizer.steps

    def __getstate__(self) -> dict[str, Any]:
        # Workspaces, locks and thread-local caches are per object and made again.
        state = self.__dict__.copy()
        for key in ("_fit_core", "_local", "_training", "weights", "biases"):
            state.pop(key)
        state.pop("_readonly_copy", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fit_core = None
        self._local = threading.local()
        self._training = threading.Lock()
        self.weights, self.biases = layout.views(self.params, self.sizes)

    def __repr__(self) -> str:
        loss = "" if self.loss_name == loss_for(self.output) else f", loss={self.loss_name!r}"
        return (f"MLP({self.sizes}, hidden={self.hidden!r}, output={self.output!r}{loss}, "
                f"dtype={self.dtype.name}, backend={self.backend!r})")

    # ---- data --------------------------------------------------------------------

    def check_inputs(self, X: Any) -> np.ndarray:
        """X as a C-contiguous (n, sizes[0]) array of the network's dtype, or a clear
        error (never NaN or inf, never empty)."""
        X = np.asarray(X)
        if X.dtype.kind not in "fiub":  # floats, integers, booleans
            raise TypeError(f"X must hold real numbers, got dtype {X.dtype}")
        if X.ndim != 2 or X.shape[1] != self.sizes[0]:
            raise ValueError(f"X must have shape (n, {self.sizes[0]}), got {X.shape}")
        if X.shape[0] == 0:
            raise ValueError("X is empty")
        given = X
        if not (X.dtype == self.dtype and X.flags.c_contiguous and X.flags.aligned):
            with np.errstate(over="ignore"):
                X = np.require(X, self.dtype, ["C", "A"])  # contiguous and aligned
        # Integers and booleans are finite and within any float dtype's range
        # (float32's reaches 3e38). For floats, the converted X is finite exactly when
        # the given one is and, where the conversion narrows, within the new range:
        # one pass over X's bits in C; only a failure looks at the given array to say
        # which it is.
        if given.dtype.kind == "f" and not _core.all_finite(X):
            if given is X or not np.isfinite(given).all():
                raise ValueError("X holds NaN or inf")
            raise ValueError(f"X holds values beyond the range of {self.dtype}")
        return X

    def encode_targets(self, y: Any, n_rows: int) -> np.ndarray:
        """y (labels or a 2-D target array, one row per row of X) as the (n_rows,
        sizes[-1]) targets the loss compares the outputs with."""
        y = np.asarray(y)
        if y.shape[:1] != (n_rows,):
            raise ValueError(f"y must have {n_rows} rows (one per row of X), got shape "
                             f"{y.shape}")
        return layout.encode_targets(y, self.sizes[-1], self.output, self.dtype,
                                     loss=self.loss_name)

    def _accuracy(self, y: Any) -> str:
        """How training counts rows classified right for targets like y."""
        if np.ndim(y) == 1:
            return layout.default_accuracy(self.sizes[-1])
        return "threshold" if self._multilabel else "none"

    @property
    def _multilabel(self) -> bool:
        return self.loss_name == "binary_cross_entropy" and self.sizes[-1] > 1

    # ---- inference ----------------------------------------------------------------

    def predict_proba(self, X: Any) -> np.ndarray:
        """Outputs of the network, shape (n, sizes[-1])."""
        X = self.check_inputs(X)
        if self.backend == "numpy":
            return ref.forward(self.params, self.sizes, X, self.hidden, self.output)[-1]
        out = np.empty((X.shape[0], self.sizes[-1]), self.dtype)
        core = getattr(self._local, "core", None)
        if core is None:
            params, state = self.params, self.optimizer_state
            if not (params.flags.writeable and state.flags.writeable):
                params, state = self._writable_buffers()
            core = self._local.core = _core.NetCore(
                params, state, None, self.sizes, self.hidden, self.output, _PREDICT_ROWS)
        return core.predict(X, out)

    def _writable_buffers(self) -> tuple[np.ndarray, np.ndarray]:
        """A private writable copy of read-only parameters (a model loaded with
        ``joblib.load(path, mmap_mode="r")``, or frozen with ``setflags``), made once per
        model and shared by every thread's predict workspace: the compiled passes take
        writable buffers only. Costs one copy of :attr:`params` and one buffer of the
        same size (the state, which prediction never reads)."""
        copy = self.__dict__.get("_readonly_copy")
        if copy is None or copy[0] is not self.params:
            copy = (self.params, self.params.copy(), np.zeros_like(self.params))
            self._readonly_copy = copy
        return copy[1], copy[2]

    def predict(self, X: Any) -> np.ndarray:
        """Class labels for softmax and sigmoid outputs (the argmax of the outputs; with
        a single output unit, 1 where it is >= 1/2); for binary cross-entropy over
        several units (multilabel), a 0/1 matrix with every unit thresholded at 1/2;
        the outputs themselves for an identity output."""
        out = self.predict_proba(X)
        if self.output == "identity":
            return out
        if self._multilabel:
            return layout.predict_labels(out, multilabel=True)
        return layout.predicted_class(out)

    def loss(self, X: Any, y: Any) -> float:
        """Mean loss over the rows of X."""
        X = self.check_inputs(X)
        T = self.encode_targets(y, X.shape[0])
        return ref.loss_from_output(self.predict_proba(X), T, self.output, self.loss_name)

    def score(self, X: Any, y: Any) -> float:
        """Accuracy for integer labels; for a 0/1 label matrix of a multilabel network,
        the fraction of rows with every label right; the coefficient of determination
        R^2 for a 2-D target array otherwise."""
        X = self.check_inputs(X)
        y = np.asarray(y)
        T = self.encode_targets(y, X.shape[0])
        out = self.predict_proba(X)
        if y.ndim == 1:
            return float(np.mean(layout.predicted_class(out) == y))
        if self._multilabel:
            return layout.count_correct(out, T, "threshold") / X.shape[0]
        residual = np.sum((T - out) ** 2, dtype=np.float64)
        total = np.sum((T - T.mean(axis=0)) ** 2, dtype=np.float64)
        return float(1.0 - residual / total) if total > 0 else float("nan")

    def gradients(self, X: Any, y: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(dW, db): dE/dW[i] and dE/db[i] at the current weights, E the mean loss over X."""
        X = self.check_inputs(X)
        T = self.encode_targets(y, X.shape[0])
        grad = np.empty_like(self.params)
        self.gradient_kernel(grad, X.shape[0]).gradients(X, T)
        dW, db = layout.views(grad, self.sizes)
        return dW, db

    def curvature(self, X: Any, y: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(cW, cb): the diagonal of the Gauss-Newton matrix of E, the mean loss over X,
        per weight and bias, shaped like :meth:`gradients`.

        Becker and LeCun's second-order back-propagation, computed in the compiled
        backward pass (the numpy backend: :func:`momcore._mlp_numpy.curvature`): each
        unit's ``d^2E/dz^2`` is back-propagated with the off-diagonal terms and the
        ``f''`` terms dropped, and ``c(W[k,j]) = mean over rows of a_k^2 h_j``. The
        output layer's ``h`` is ``y (1 - y)`` for softmax + cross-entropy (the diagonal
        of ``diag(y) - y y^T``) and for sigmoid + binary cross-entropy, ``(y (1 - y))^2``
        for sigmoid + squared error, 1 for identity + squared error. Every entry is
        >= 0; it equals the exact Hessian diagonal for identity units with squared error
        and at most one hidden layer (tests/test_curvature.py measures how close it is
        elsewhere). These are the curvatures k_i of Qian's Eq. 25 per weight.
        """
        X = self.check_inputs(X)
        T = self.encode_targets(y, X.shape[0])
        curv = np.empty_like(self.params)
        if self.backend == "numpy":
            ref.curvature(self.params, self.sizes, X, T, self.hidden, self.output, curv,
                          loss=self.loss_name)
        else:
            rows = min(X.shape[0], _PREDICT_ROWS)
            core = _core.NetCore(self.params, self.optimizer_state, None, self.sizes,
                                 self.hidden, self.output, rows, loss=self.loss_name)
            part = np.empty_like(self.params)
            curv.fill(0)
            for start in range(0, X.shape[0], rows):  # the mean over chunks of rows
                stop = min(start + rows, X.shape[0])
                core.curvature(X[start:stop], T[start:stop], part)
                curv += part * ((stop - start) / X.shape[0])
        return layout.views(curv, self.sizes)

    def gradient_kernel(self, grad: np.ndarray, max_rows: int, *,
                        accuracy: str | None = None) -> Any:
        """The passes of this network writing into the flat buffer ``grad``, for
        training loops of one's own (:mod:`momcore.distributed`): an object with
        ``gradients(X, T) -> (E, rows right)`` (grad := dE/dparams of the mean loss
        over the rows of X, at most ``max_rows``, with encoded targets T) and
        ``step()`` (one step of :attr:`optimizer` with ``grad``, on the calling
        thread). Workspaces are made once, here."""
        accuracy = accuracy or layout.default_accuracy(self.sizes[-1])
        if self.backend == "numpy":
            return _NumpyKernel(self, grad, accuracy)
        return _CompiledKernel(_core.NetCore(
            self.params, self.optimizer_state, grad, self.sizes, self.hidden, self.output,
            max_rows, loss=self.loss_name, accuracy=accuracy), self.optimizer)

    # ---- training -----------------------------------------------------------------

    def fit(self, X: Any, y: Any, *, epochs: int, batch_size: int = 1, lr: Any = 0.1,
            momentum: Any = 0.9, rule: str = "classical",
            lr_schedule: Callable[[int], Any] | None = None,
            momentum_schedule: Callable[[int], Any] | None = None, shuffle: bool = True,
            target_loss: float | None = None, verbose: bool = False,
            callback: Callable[[int, dict[str, float]], Any] | None = None,
            dampening: float = 0.0, weight_decay: float = 0.0,
            validation_data: tuple[Any, Any] | None = None, patience: int | None = None,
            min_delta: float = 0.0, restore_best: bool = True) -> History:
        """Trains for ``epochs`` epochs of (mini-batch) gradient descent with momentum.

        Each epoch shuffles the rows (``shuffle``), walks them in batches of
        ``batch_size`` (1: online learning, the last batch may be smaller) and takes
        one step of :attr:`optimizer` per batch (``rule``, ``dampening``,
        ``weight_decay`` as in :func:`momcore.momentum_step`).
        ``lr_schedule`` / ``momentum_schedule`` override ``lr`` / ``momentum``: any
        callable whose values ``float()`` accepts, evaluated at the epoch number
        (counted across fit calls) or, for a schedule marked ``per="step"``
        (:mod:`momcore.schedules`), at the step number, before every step.
        Consecutive calls continue training: weights, optimizer state, step and epoch
        counts carry over; a changed ``rule`` starts a fresh optimizer state.

        Stops early when the epoch's mean loss is <= ``target_loss``, when
        ``callback(epoch, logs)`` returns False, or, with ``patience``, when the
        monitored loss (the loss on ``validation_data = (X_val, y_val)`` after each
        epoch, else the training loss) has not improved by more than ``min_delta``
        for ``patience`` epochs; then ``restore_best`` puts back the weights and
        optimizer state of the best epoch. A batch whose loss is not finite stops
        training with FloatingPointError before its update, so the weights of the
        last finite step stay in place (:attr:`history_` keeps the epochs done).
        Returns the :class:`History` of this call.

        Predicting from other threads is safe (each thread gets its own workspace), but
        sees the weights as they change; two ``fit`` calls on one model at once raise
        RuntimeError.
        """
        if not self._training.acquire(blocking=False):
            raise RuntimeError("fit is already running on this model in another thread; "
                               "one model trains in one thread at a time")
        try:
            return self.train(
                X, y, trainer=training.Trainer(), epochs=epochs, batch_size=batch_size,
                lr=lr, momentum=momentum, rule=rule, lr_schedule=lr_schedule,
                momentum_schedule=momentum_schedule, shuffle=shuffle,
                target_loss=target_loss, verbose=verbose, callback=callback,
                dampening=dampening, weight_decay=weight_decay,
                validation_data=validation_data, patience=patience, min_delta=min_delta,
                restore_best=restore_best)
        finally:
            self._training.release()

    def train(self, X: Any, y: Any, *, trainer: training.Trainer, rule: str = "classical",
              dampening: float = 0.0, weight_decay: float = 0.0,
              **loop_arguments: Any) -> History:
        """:meth:`fit` with the processes that train given by ``trainer`` (see
        :mod:`momcore.training`); :mod:`momcore.distributed` trains through it. Every
        argument is checked, and the processes agree on any error, before anything
        changes."""
        error: BaseException | None = None
        try:
            settings = training.check_fit_arguments(**loop_arguments)
            X = self.check_inputs(X)
            T = self.encode_targets(y, X.shape[0])
            if settings.validation_data is not None:
                X_val = self.check_inputs(settings.validation_data[0])
                self.encode_targets(settings.validation_data[1], X_val.shape[0])
            hyper = checked_hyperparameters(dict(
                **training.schedule_values(settings, self.epochs, self.steps),
                rule=rule, dampening=dampening, weight_decay=weight_decay), dtype=self.dtype)
        except (TypeError, ValueError) as exc:
            error = exc
        trainer.agree_on(error)
        # A failure before the first step (the runner's own checks) leaves the model as
        # it was: the previous optimizer (its state untouched) and history.
        previous = (self.optimizer, dict(self.optimizer.param_groups[0]), self.history_,
                    self.optimizer.steps, self.epochs)
        self._use_rule(hyper)
        try:
            return training.fit_loop(self, X, T, settings, accuracy=self._accuracy(y),
                                     trainer=trainer)
        except BaseException as exc:
            if (not isinstance(exc, FloatingPointError)
                    and (self.optimizer.steps, self.epochs) == previous[3:]):
                self.optimizer, groups, self.history_ = previous[:3]
                dict.update(self.optimizer.param_groups[0], groups)
            raise

    def _use_rule(self, hyper: dict[str, Any]) -> None:
        """The optimizer for hyper: the same one with new hyperparameters, or a fresh
        state when the rule changes (the step count carries over)."""
        if self.optimizer.rule != hyper["rule"]:
            steps = self.optimizer.steps
            self.optimizer = SGD([self.params], **hyper, backend=self.backend)
            self.optimizer.steps = steps
        else:
            self.optimizer.param_groups[0].update(
                {k: v for k, v in hyper.items() if k != "rule"})

    def make_runner(self, X: np.ndarray, T: np.ndarray, batch: int,
                    accuracy: str) -> training.Runner:
        """The runner that trains this network on (X, T) in batches of at most
        ``batch`` rows (see :class:`momcore.training.Runner`)."""
        if self.optimizer.momenta is not None:  # rule "qian": curvature every few steps
            if self._grad is None:
                self._grad = np.zeros_like(self.params)
            return _CurvatureRunner(self, X, T, batch, accuracy)
        if self.backend == "numpy":
            if self._grad is None:
                self._grad = np.zeros_like(self.params)
            return _NumpyRunner(self, X, T, accuracy)
        return _CompiledRunner(self._core_for_fit(batch, accuracy), X, T, self.optimizer)

    def _core_for_fit(self, batch: int, accuracy: str) -> _core.NetCore:
        """The compiled network with workspaces for batch rows; made again only when the
        batch size, the optimizer, the accuracy counted or the need for a gradient
        buffer (the step is folded into the backward pass when the optimizer allows)
        changes."""
        grad = not self.optimizer.folds
        core = self._fit_core
        if (core is None or core.max_batch != batch or (core.grad is None) == grad
                or core.state is not self.optimizer_state
                or self._fit_core_accuracy != accuracy):
            if grad and self._grad is None:
                self._grad = np.zeros_like(self.params)
            core = self._fit_core = _core.NetCore(
                self.params, self.optimizer_state, self._grad if grad else None, self.sizes,
                self.hidden, self.output, batch, loss=self.loss_name,
                accuracy=accuracy)
            self._fit_core_accuracy = accuracy
        return core

    # ---- persistence --------------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": FORMAT_VERSION, "sizes": self.sizes,
            "hidden": self.hidden, "output": self.output, "loss": self.loss_name,
            "dtype": self.dtype.name,
            "seed": self.seed, "backend": self.backend, "steps": self.steps,
            "epochs": self.epochs, "state_rule": self.optimizer.rule,
            "rng": self.rng.bit_generator.state,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes weights, optimizer state and generator state to ``path`` (.npz with
        JSON metadata, no pickle), atomically: a temporary file in the same directory,
        then a rename, so an interrupted save never leaves a half-written file.

        ``path`` must be a regular file or not exist: a directory, FIFO, device or
        socket is refused. Re-saving over a file keeps its permission bits; a save
        removes the temporary files that saves killed half-way left in the directory
        (see :mod:`momcore._checkpoint`)."""
        _checkpoint.write(path, {"params": self.params, "state": self.optimizer_state,
                                 "metadata": np.array(json.dumps(self._metadata()))})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MLP:
        """A model saved by :meth:`save`; training continues exactly where it stopped.

        Safe on any file: never executes code from it, reads only a regular file,
        checks the metadata and every array's header against each other before
        allocating anything, and allocates no more than the file holds. A corrupt,
        truncated, hostile or mismatched file raises ValueError
        (:class:`momcore._checkpoint.CheckpointError`) naming the problem; a missing or
        unreadable path raises the usual OSError."""
        with _checkpoint.Reader(path) as reader:
            meta = reader.metadata()
            n, dtype = layout.n_params(meta["sizes"]), meta["dtype"]
            for name in ("params", "state"):
                reader.check_array(name, dtype, n)
            # Only now, with the arrays' sizes known to be in the file, is anything made.
            try:
                net = cls(meta["sizes"], hidden=meta["hidden"], output=meta["output"],
                          loss=meta.get("loss"), dtype=dtype, seed=meta["seed"],
                          backend=meta["backend"])
                rule = "classical" if meta.get("state_rule") is None else meta["state_rule"]
                net.rng.bit_generator.state = meta["rng"]
                net.optimizer = SGD([net.params], lr=0.1, rule=rule, backend=net.backend)
                net.optimizer.steps, net.epochs = meta["steps"], meta["epochs"]
            except (TypeError, ValueError, OverflowError) as exc:
                raise reader.error(f"mismatched model file ({exc})") from None
            reader.read_into("params", net.params)
            reader.read_into("state", net.optimizer_state)
        return net


# ---- runners: the steps of a run of batches, for the training loop ----------------


class _CompiledRunner:
    """Runs of batches in C (one call, the GIL released), with the optimizer's
    hyperparameters."""

    def __init__(self, core: _core.NetCore, X: np.ndarray, T: np.ndarray,
                 optimizer: SGD) -> None:
        self.core, self.X, self.T, self.optimizer = core, X, T, optimizer
        self.n_rows = X.shape[0]

    def run(self, rows: np.ndarray, batch: int) -> tuple[float, int, int, bool]:
        result = self.core.train_epoch(self.X, self.T, rows, batch,
                                       **self.optimizer.hyperparameters())
        self.optimizer.steps += result[2]
        return result


class _NumpyRunner:
    """Runs of batches in the numpy reference."""

    def __init__(self, net: MLP, X: np.ndarray, T: np.ndarray, accuracy: str) -> None:
        self.net, self.X, self.T, self.accuracy = net, X, T, accuracy
        self.n_rows = X.shape[0]

    def run(self, rows: np.ndarray, batch: int) -> tuple[float, int, int, bool]:
        net = self.net
        # a diverging run is reported by its loss, not by numpy warnings
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            result = ref.train_epoch(
                net.params, net.optimizer_state, net.sizes, self.X, self.T, rows, batch,
                net.hidden, net.output, grad_buf=net._grad, loss=net.loss_name,
                accuracy=self.accuracy, **net.optimizer.hyperparameters())
        net.optimizer.steps += result[2]
        return result


class _CurvatureRunner:
    """Runs of batches for per-weight momentum (rule "qian"): per batch one forward
    pass and the gradient, with the diagonal Gauss-Newton curvature from the same
    pass every ``optimizer.per_weight.every`` steps, fed to
    ``optimizer.observe_curvature``; then one step of the optimizer, whose kernel
    reads the per-weight momenta. The batch loop runs in Python (one or two C calls
    per batch), so it suits mini-batches better than online learning."""

    def __init__(self, net: MLP, X: np.ndarray, T: np.ndarray, batch: int,
                 accuracy: str) -> None:
        self.net, self.X, self.T, self.accuracy = net, X, T, accuracy
        self.n_rows = X.shape[0]
        self.curv = np.zeros_like(net.params)
        self.core = None if net.backend == "numpy" else _core.NetCore(
            net.params, net.optimizer_state, net._grad, net.sizes, net.hidden, net.output,
            batch, loss=net.loss_name, accuracy=accuracy)

    def _pass(self, X: np.ndarray, T: np.ndarray, curvature: bool) -> tuple[float, int]:
        net = self.net
        if self.core is not None:
            if curvature:
                return self.core.curvature(X, T, self.curv)
            return self.core.gradients(X, T)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if curvature:
                ref.curvature(net.params, net.sizes, X, T, net.hidden, net.output,
                              self.curv, loss=net.loss_name)
            loss = ref.gradients(net.params, net.sizes, X, T, net.hidden, net.output,
                                 net._grad, loss=net.loss_name)
            out = ref.forward(net.params, net.sizes, X, net.hidden, net.output)[-1]
        return loss, layout.count_correct(out, T, self.accuracy)

    def run(self, rows: np.ndarray, batch: int) -> tuple[float, int, int, bool]:
        optimizer = self.net.optimizer
        every = optimizer.per_weight.every
        sum_loss, correct, steps = 0.0, 0, 0
        for start in range(0, rows.shape[0], batch):
            chunk = rows[start:start + batch]
            curvature = optimizer.steps % every == 0
            loss, right = self._pass(self.X[chunk], self.T[chunk], curvature)
            correct += right
            if not np.isfinite(loss):
                return sum_loss, correct, steps, True
            sum_loss += loss * chunk.shape[0]
            if curvature:
                optimizer.observe_curvature([self.curv])
            optimizer.step([self.net._grad])
            steps += 1
        return sum_loss, correct, steps, False


class _CompiledKernel:
    """MLP.gradient_kernel of the compiled backend."""

    def __init__(self, core: _core.NetCore, optimizer: SGD) -> None:
        self.core, self.optimizer = core, optimizer

    def gradients(self, X: np.ndarray, T: np.ndarray) -> tuple[float, int]:
        return self.core.gradients(X, T)

    def step(self) -> None:
        self.core.step(**self.optimizer.hyperparameters())  # on this thread, as fit does
        self.optimizer.steps += 1


class _NumpyKernel:
    """MLP.gradient_kernel of the numpy backend."""

    def __init__(self, net: MLP, grad: np.ndarray, accuracy: str) -> None:
        self.net, self.grad, self.accuracy = net, grad, accuracy

    def gradients(self, X: np.ndarray, T: np.ndarray) -> tuple[float, int]:
        net = self.net
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss = ref.gradients(net.params, net.sizes, X, T, net.hidden, net.output,
                                 self.grad, loss=net.loss_name)
            out = ref.forward(net.params, net.sizes, X, net.hidden, net.output)[-1]
        return loss, layout.count_correct(out, T, self.accuracy)

    def step(self) -> None:
        self.net.optimizer.step([self.grad])

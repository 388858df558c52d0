"""momcore.MLP: a multilayer perceptron trained by back-propagation with momentum.

Two backends compute the same network: ``backend="c"`` runs the compiled passes
(whole epochs in C without the GIL) and ``backend="numpy"`` the pure-numpy reference
(:mod:`momcore._mlp_numpy`). Both share the initial weights and the shuffling of one
seeded generator, so their weights agree to rounding after any number of epochs.
"""
from __future__ import annotations

import copy
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
from momcore.curvature import PerWeightMomentum, Tuner, check_auto_rule, is_auto
from momcore.optim import SGD, checked_hyperparameters
from momcore.registry import check_name, loss_for
from momcore.training import NONFINITE_X, History
from momcore.training import all_finite as _all_finite

__all__ = ["MLP", "History"]

FORMAT = _checkpoint.FORMAT
FORMAT_VERSION = _checkpoint.FORMAT_VERSION
BACKENDS = ("c", "numpy")
_PREDICT_ROWS = 256  # rows per forward sweep of predict in the compiled backend, at most
_PREDICT_ELEMENTS = 1 << 22  # ...and fewer for wide layers: rows x sum(sizes) about this
_MAX_WORKSPACE = 2**31 - 1  # rows x max(sizes) the compiled passes accept (int indexing)
_ROWS_CHECKED_IN_EPOCH = 1 << 14
"""fit leaves the NaN/inf check of an X of at least this many elements to the compiled
epoch, which checks each row as it gathers it; a smaller X is checked up front, where
its one pass (in cache) costs less than the bookkeeping that undoes a refused call."""


def _sweep_rows(sizes: Sequence[int], n: int = _PREDICT_ROWS) -> int:
    """Rows per forward sweep for a network of these layer widths: up to n, fewer when
    the layers are wide (the workspaces hold every layer's outputs for each row), and
    at least one."""
    rows = min(n, _PREDICT_ELEMENTS // sum(sizes), _MAX_WORKSPACE // max(sizes))
    return max(1, rows)


_ONE_PROCESS = training.Trainer()  # fit's: one process trains (a Trainer holds no state)


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
    l2 : float, default 0
        L2 penalty on the weights (not the biases), part of the objective: a batch of B
        rows has ``E = mean loss + l2/(2B) sum_i ||W_i||^2``, so ``dE/dW_i`` gains
        ``(l2/B) W_i`` (scikit-learn's ``alpha``). ``loss``, ``gradients`` and ``fit``
        all use it; :attr:`history_` reports per epoch the mean per-sample loss plus,
        per batch, ``l2/2 sum_i ||W_i||^2`` at that batch's weights over the rows, as
        scikit-learn's ``loss_curve_``. Settable between fits.
    dtype : float32 or float64
        The dtype of the parameters, the state and the computation.
    seed : int
        Seeds the generator that draws the initial weights and shuffles every epoch.
    backend : {"c", "numpy"}
        The compiled passes, or the numpy reference they are tested against.

    Raises
    ------
    ValueError, TypeError
        If ``sizes`` has fewer than two layers or a width below 1, a name is not
        registered (``momcore.registry``), the output and loss do not pair, or
        ``l2``, ``dtype``, ``seed`` or ``backend`` is refused.

    Notes
    -----
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
                 output: str = "softmax", loss: str | None = None, l2: float = 0.0,
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
        if (not isinstance(seed, (int, np.integer))
                or isinstance(seed, (bool, np.bool_, np.timedelta64))):
            raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.sizes: list[int] = [int(s) for s in sizes]
        self.hidden, self.output, self.loss_name, self.dtype = hidden, output, loss, dt
        self.seed, self.backend = int(seed), backend
        self.l2 = l2
        self._params: np.ndarray = np.zeros(layout.n_params(self.sizes), dt)
        self._grad: np.ndarray | None = None
        self._fit_core: _core.NetCore | None = None
        self._fit_core_accuracy = ""
        # fit's copy of the weights and optimizer state at an epoch's start (see
        # training._Snapshot), kept between calls
        self._epoch_copies: list[np.ndarray] | None = None
        self._local = threading.local()  # per-thread predict workspaces
        self._training = threading.Lock()
        self._training_thread: int | None = None  # the thread holding _training
        self._weights, self._biases = layout.views(self._params, self.sizes)
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

    # The buffers are the model's own: the optimizer, the compiled workspaces and save
    # all hold this one array, so it is written into (net.params[:] = ...), never rebound.

    @property
    def params(self) -> np.ndarray:
        """All weights and biases, one flat buffer (:attr:`weights` and :attr:`biases` are
        views into it). Write into it (``net.params[:] = values``); it cannot be rebound."""
        return self._params

    @params.setter
    def params(self, value: Any) -> None:
        raise AttributeError("MLP.params cannot be rebound: the optimizer and save use this "
                             "buffer; write into it instead (net.params[:] = values)")

    @property
    def weights(self) -> list[np.ndarray]:
        """The weight matrices, views into :attr:`params` (sizes[i] x sizes[i+1])."""
        return self._weights

    @weights.setter
    def weights(self, value: Any) -> None:
        raise AttributeError("MLP.weights cannot be rebound: they are views into params; "
                             "write into them instead (net.weights[0][:] = values)")

    @property
    def biases(self) -> list[np.ndarray]:
        """The bias vectors, views into :attr:`params`."""
        return self._biases

    @biases.setter
    def biases(self, value: Any) -> None:
        raise AttributeError("MLP.biases cannot be rebound: they are views into params; "
                             "write into them instead (net.biases[0][:] = values)")

    @property
    def l2(self) -> float:
        """The L2 penalty factor on the weights (see the class docstring)."""
        return self._l2

    @l2.setter
    def l2(self, value: Any) -> None:
        if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer,
                                                              np.floating))
                or not (np.isfinite(value) and value >= 0)):
            raise ValueError(f"l2 must be a finite number >= 0, got {value!r}")
        self._l2 = float(value)

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
        # The buffer is stored under "params", as before it became a property.
        state = self.__dict__.copy()
        for key in ("_fit_core", "_local", "_training", "_weights", "_biases"):
            state.pop(key)
        state.pop("_training_thread", None)
        state.pop("_epoch_copies", None)
        state.pop("_readonly_copy", None)
        state["params"] = state.pop("_params")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state["_params"] = state.pop("params")
        self.__dict__.update(state)
        self.__dict__.setdefault("_l2", 0.0)  # pickled before l2 existed
        self._fit_core = None
        self._epoch_copies = None
        self._local = threading.local()
        self._training = threading.Lock()
        self._training_thread = None
        self._weights, self._biases = layout.views(self._params, self.sizes)

    def __copy__(self) -> MLP:
        """A deep copy: two models never share weights (nor would they share the lock
        that keeps one ``fit`` at a time on them)."""
        return copy.deepcopy(self)

    def __repr__(self) -> str:
        loss = "" if self.loss_name == loss_for(self.output) else f", loss={self.loss_name!r}"
        if self.l2:
            loss += f", l2={self.l2!r}"
        return (f"MLP({self.sizes}, hidden={self.hidden!r}, output={self.output!r}{loss}, "
                f"dtype={self.dtype.name}, backend={self.backend!r})")

    # ---- data --------------------------------------------------------------------

    def check_inputs(self, X: Any) -> np.ndarray:
        """X as a C-contiguous (n, sizes[0]) array of the network's dtype, or a clear
        error (never NaN or inf, never empty).

        Parameters
        ----------
        X : array_like
            Inputs, ``(n, sizes[0])``, finite, numeric.

        Returns
        -------
        numpy.ndarray
            ``X`` itself when it already is such an array, else a converted copy.

        Raises
        ------
        TypeError, ValueError
            If ``X`` is refused; the message names the problem.
        """
        if _core.ready_rows(X, self.dtype, self.sizes[0]):
            return X  # the common case, in one call: the checks below would pass X as it is
        _refuse_masked(X, "X")
        X = np.asarray(X)
        # floats, integers, booleans (numpy counts timedelta64, kind "m", among its
        # integers, but times are not numbers)
        if X.dtype.kind not in "fiub":
            raise TypeError(f"X must hold real numbers, got dtype {X.dtype}"
                            + _OBJECT_HINT * (X.dtype == object))
        if X.ndim != 2 or X.shape[1] != self.sizes[0]:
            raise ValueError(f"X must have shape (n, {self.sizes[0]}), got {X.shape}")
        if X.shape[0] == 0:
            raise ValueError("X is empty")
        if not _all_finite(X):
            raise ValueError(NONFINITE_X)
        if X.dtype == self.dtype:
            return np.require(X, None, ["C", "A"])  # contiguous and aligned
        with np.errstate(over="ignore"):
            X = np.require(X, self.dtype, ["C", "A"])
        if not _all_finite(X):
            raise ValueError(f"X holds values beyond the range of {self.dtype}")
        return X

    def encode_targets(self, y: Any, n_rows: int) -> np.ndarray:
        """y (labels or a 2-D target array, one row per row of X) as the (n_rows,
        sizes[-1]) targets the loss compares the outputs with.

        Parameters
        ----------
        y : array_like
            Targets: integer labels ``(n,)`` for softmax and sigmoid outputs, a 0/1 matrix
            for multilabel, a ``(n, sizes[-1])`` array (or ``(n,)`` for one output) for
            regression.
        n_rows : int
            The rows of X.

        Returns
        -------
        numpy.ndarray
            ``(n_rows, sizes[-1])`` targets in the network's dtype.

        Raises
        ------
        TypeError, ValueError
            If ``y`` is refused (wrong rows or width, labels out of range, not finite).
        """
        _refuse_masked(y, "y")
        y = np.asarray(y)
        if y.shape[:1] != (n_rows,):
            raise ValueError(f"y must have {n_rows} rows (one per row of X), got shape "
                             f"{y.shape}")
        return layout.targets(y, self.sizes[-1], self.dtype, self.loss_name)

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
        """Outputs of the network, shape (n, sizes[-1]).

        Parameters
        ----------
        X : array_like
            Inputs, ``(n, sizes[0])``, finite, numeric.

        Returns
        -------
        numpy.ndarray
            ``(n, sizes[-1])`` in the network's dtype.

        Raises
        ------
        TypeError, ValueError
            If ``X`` is refused.
        """
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
                params, state, None, self.sizes, self.hidden, self.output,
                _sweep_rows(self.sizes))
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
        the outputs themselves for an identity output.

        Parameters
        ----------
        X : array_like
            Inputs, ``(n, sizes[0])``, finite, numeric.

        Returns
        -------
        numpy.ndarray
            ``(n,)`` int64 labels, a ``(n, sizes[-1])`` 0/1 matrix (multilabel), or the
            outputs (identity).

        Raises
        ------
        TypeError, ValueError
            If ``X`` is refused.
        """
        out = self.predict_proba(X)
        if self.output == "identity":
            return out
        if self._multilabel:
            return layout.predict_labels(out, multilabel=True)
        return layout.predicted_class(out)

    def loss(self, X: Any, y: Any) -> float:
        """Mean loss over the rows of X, plus ``l2/(2n) sum_i ||W_i||^2`` for its n rows.

        Parameters
        ----------
        X : array_like
            Inputs, ``(n, sizes[0])``, finite, numeric.
        y : array_like
            Targets: integer labels ``(n,)`` for softmax and sigmoid outputs, a 0/1 matrix
            for multilabel, a ``(n, sizes[-1])`` array (or ``(n,)`` for one output) for
            regression.

        Returns
        -------
        float
            The loss E.

        Raises
        ------
        TypeError, ValueError
            If ``X`` or ``y`` is refused (wrong shape, not finite, masked, not numeric, labels
            out of range); the message names the problem.
        """
        X = self.check_inputs(X)
        T = self.encode_targets(y, X.shape[0])
        mean = ref.loss_from_output(self.predict_proba(X), T, self.output, self.loss_name)
        if self.l2:
            mean += 0.5 * self.l2 * layout.weight_squares(self.params, self.sizes) / X.shape[0]
        return mean

    def score(self, X: Any, y: Any) -> float:
        """Accuracy for integer labels; for a 0/1 label matrix of a multilabel network,
        the fraction of rows with every label right; the coefficient of determination
        R^2 for a 2-D target array otherwise.

        Parameters
        ----------
        X : array_like
            Inputs, ``(n, sizes[0])``, finite, numeric.
        y : array_like
            Targets: integer labels ``(n,)`` for softmax and sigmoid outputs, a 0/1 matrix
            for multilabel, a ``(n, sizes[-1])`` array (or ``(n,)`` for one output) for
            regression.

        Returns
        -------
        float
            The accuracy, or R^2.

        Raises
        ------
        TypeError, ValueError
            If ``X`` or ``y`` is refused (wrong shape, not finite, masked, not numeric, labels
            out of range); the message names the problem.
        """
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
        """(dW, db): dE/dW[i] and dE/db[i] at the current weights, E the mean loss over X
        plus the l2 term.

        Parameters
        ----------
        X : array_like
            Inputs, ``(n, sizes[0])``, finite, numeric.
        y : array_like
            Targets: integer labels ``(n,)`` for softmax and sigmoid outputs, a 0/1 matrix
            for multilabel, a ``(n, sizes[-1])`` array (or ``(n,)`` for one output) for
            regression.

        Returns
        -------
        dW, db : list of numpy.ndarray
            One array per layer, shaped like :attr:`weights` and :attr:`biases`.

        Raises
        ------
        TypeError, ValueError
            If ``X`` or ``y`` is refused (wrong shape, not finite, masked, not numeric, labels
            out of range); the message names the problem.

        Examples
        --------
        >>> import numpy as np
        >>> from momcore import MLP
        >>> net = MLP([3, 4, 2], seed=0)
        >>> dW, db = net.gradients(np.ones((5, 3)), np.array([0, 1, 0, 1, 1]))
        >>> [w.shape for w in dW], [b.shape for b in db]
        ([(3, 4), (4, 2)], [(4,), (2,)])
        """
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
        elsewhere). These are the curvatures k_i of Qian's Eq. 25 per weight. With
        :attr:`l2`, the penalty's own curvature ``l2 / len(X)`` is added to every weight
        (not bias) entry, as :meth:`gradients` adds ``(l2 / len(X)) W``.

        Parameters
        ----------
        X : array_like
            Inputs, ``(n, sizes[0])``, finite, numeric.
        y : array_like
            Targets: integer labels ``(n,)`` for softmax and sigmoid outputs, a 0/1 matrix
            for multilabel, a ``(n, sizes[-1])`` array (or ``(n,)`` for one output) for
            regression.

        Returns
        -------
        cW, cb : list of numpy.ndarray
            One array per layer, shaped like :attr:`weights` and :attr:`biases`, ``>= 0``.

        Raises
        ------
        TypeError, ValueError
            If ``X`` or ``y`` is refused (wrong shape, not finite, masked, not numeric, labels
            out of range); the message names the problem.
        """
        X = self.check_inputs(X)
        T = self.encode_targets(y, X.shape[0])
        curv = np.empty_like(self.params)
        if self.backend == "numpy":
            ref.curvature(self.params, self.sizes, X, T, self.hidden, self.output, curv,
                          loss=self.loss_name, l2=self.l2)
        else:
            rows = _sweep_rows(self.sizes, min(X.shape[0], _PREDICT_ROWS))
            core = _core.NetCore(self.params, self.optimizer_state, None, self.sizes,
                                 self.hidden, self.output, rows, loss=self.loss_name)
            part = np.empty_like(self.params)
            curv.fill(0)
            for start in range(0, X.shape[0], rows):  # the mean over chunks of rows
                stop = min(start + rows, X.shape[0])
                core.l2 = self.l2 * (stop - start) / X.shape[0]  # l2/len(X) in the mean
                core.curvature(X[start:stop], T[start:stop], part)
                curv += part * ((stop - start) / X.shape[0])
        return layout.views(curv, self.sizes)

    def gradient_kernel(self, grad: np.ndarray, max_rows: int, *,
                        accuracy: str | None = None, l2: float | None = None) -> Any:
        """The passes of this network writing into the flat buffer ``grad``, for
        training loops of one's own (:mod:`momcore.distributed`): an object with
        ``gradients(X, T) -> (E, rows right)`` (grad := dE/dparams of the mean loss
        over the rows of X, at most ``max_rows``, with encoded targets T) and
        ``step()`` (one step of :attr:`optimizer` with ``grad``, on the calling
        thread), and for data-parallel training ``gradient_share(X, T, rows, divisor,
        l2) -> (sum of the rows' losses, rows right, sum_i ||W_i||^2 or 0)``: grad :=
        the sum over the rows ``rows`` of X (int64, at most ``max_rows``, possibly
        none) of the per-sample losses' gradients over ``divisor``, plus
        ``(l2/divisor) W`` (given to one process, whose squares count the penalty);
        the processes' buffers add up to the gradient of a global batch of ``divisor``
        rows (see :meth:`momcore._core.NetCore.gradient_share`). Workspaces are made
        once, here. ``l2`` overrides the network's for this kernel
        (``momcore.distributed`` passes 0 and gives rank 0's share the l2 term).

        Parameters
        ----------
        grad : numpy.ndarray
            A flat buffer shaped like :attr:`params`, of the network's dtype.
        max_rows : int
            The most rows one ``gradients`` or ``gradient_share`` call is given.
        accuracy : {"none", "argmax", "threshold"} or None, keyword-only
            How rows classified right are counted (None: the network's own way).
        l2 : float or None, keyword-only
            The L2 factor of this kernel (None: the network's).

        Returns
        -------
        object
            The kernel, with ``gradients(X, T)``, ``gradient_share(X, T, rows, divisor,
            l2)`` and ``step()``.
        """
        accuracy = accuracy or layout.default_accuracy(self.sizes[-1])
        l2 = self.l2 if l2 is None else l2
        if self.backend == "numpy":
            return _NumpyKernel(self, grad, accuracy, l2)
        return _CompiledKernel(_core.NetCore(
            self.params, self.optimizer_state, grad, self.sizes, self.hidden, self.output,
            max_rows, loss=self.loss_name, accuracy=accuracy, l2=l2), self.optimizer)

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

        Ctrl-C (KeyboardInterrupt, or any exception a signal handler raises) stops a
        compiled epoch within a few milliseconds, after the step in progress, and
        propagates; the model stays consistent: :attr:`steps` counts every step
        applied, the interrupted epoch included; :attr:`epochs` and
        :attr:`history_` (``stopped == "interrupted"``) count only the epochs
        completed; :attr:`rng` has drawn the interrupted epoch's shuffle. ``save``,
        ``load`` and ``fit`` then continue from exactly these weights and counts.
        A single batch is never cut in two (a full-batch epoch stops after its step).

        To go back to the last finite step, fit copies the weights and the optimizer
        state at the start of each epoch; the copy's buffers stay with the model between
        calls (as much memory again as the weights and the state; a fresh buffer
        allocated per call costs more in page faults than the copy itself) and are
        neither pickled nor copied with the model.

        Predicting from other threads is safe (each thread gets its own workspace), but
        sees the weights as they change; two ``fit`` calls on one model at once raise
        RuntimeError.

        Parameters
        ----------
        X : array_like
            Inputs, ``(n, sizes[0])``.
        y : array_like
            Targets, as for :meth:`loss`.
        epochs : int, keyword-only
            Epochs to train, ``>= 0``.
        batch_size : int, keyword-only
            Rows per step, ``>= 1`` (default 1: online learning).
        lr, momentum : float, keyword-only
            Learning rate (eta) and momentum coefficient (p), as in
            :func:`momcore.momentum_step` (defaults 0.1 and 0.9). ``momentum="auto"``:
            the optimizer's :class:`momcore.curvature.Tuner` sets both every step from
            the gradients (``lr`` is then the first step's rate; the rule must be
            "classical" and no schedule may be given); the batches then run in Python,
            one compiled gradient pass and one step each.
        rule : str, keyword-only
            The update rule (``momcore.registry.RULES``; default ``"classical"``).
        lr_schedule, momentum_schedule : callable or None, keyword-only
            Schedules overriding ``lr`` and ``momentum`` (:mod:`momcore.schedules`).
        shuffle : bool, keyword-only
            Shuffle the rows every epoch (default True).
        target_loss : float or None, keyword-only
            Stop once an epoch's mean loss is <= this.
        verbose : bool, keyword-only
            Print one line per epoch.
        callback : callable or None, keyword-only
            ``callback(epoch, logs)`` after every epoch; returning False stops.
        dampening, weight_decay : float, keyword-only
            As in :func:`momcore.momentum_step`.
        validation_data : tuple or None, keyword-only
            ``(X_val, y_val)``, measured after every epoch.
        patience : int or None, keyword-only
            Early stopping after this many epochs without improvement.
        min_delta : float, keyword-only
            The smallest improvement that counts (default 0).
        restore_best : bool, keyword-only
            With early stopping, put back the best epoch's weights and state (default True).

        Returns
        -------
        History
            The history of this call (also :attr:`history_`).

        Raises
        ------
        TypeError, ValueError
            If an argument is refused; nothing changes then.
        FloatingPointError
            When a batch's loss is not finite.
        RuntimeError
            If the model is already training in another thread.
        KeyboardInterrupt
            On Ctrl-C, with the model consistent (see above).

        Examples
        --------
        >>> from momcore import MLP, datasets
        >>> iris = datasets.load_iris()
        >>> X = (iris.X - iris.X.mean(axis=0)) / iris.X.std(axis=0)
        >>> net = MLP([4, 8, 3], seed=0)
        >>> history = net.fit(X, iris.y, epochs=12, lr=0.01, momentum=0.9)
        >>> history.epochs, round(history.loss[-1], 2)
        (12, 0.1)
        """
        busy = self.acquire_training_lock()
        if busy is not None:
            raise busy
        try:
            return self._train(X, y, _ONE_PROCESS, rule, dampening, weight_decay, {
                "epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum,
                "lr_schedule": lr_schedule, "momentum_schedule": momentum_schedule,
                "shuffle": shuffle, "target_loss": target_loss, "verbose": verbose,
                "callback": callback, "validation_data": validation_data,
                "patience": patience, "min_delta": min_delta, "restore_best": restore_best})
        finally:
            self.release_training_lock()

    def acquire_training_lock(self) -> RuntimeError | None:
        """Takes this model's training lock without waiting, for a training loop of
        one's own (:func:`momcore.distributed.fit`); returns None, or the error that
        says why it is taken. :meth:`release_training_lock` gives it back.

        Returns
        -------
        RuntimeError or None
            None when the lock was taken; else the error to raise.
        """
        if self._training.acquire(blocking=False):
            self._training_thread = threading.get_ident()
            return None
        if self._training_thread == threading.get_ident():
            return RuntimeError("fit was called again from inside this model's own fit (a "
                                "callback or a schedule); one fit runs on a model at a time")
        return RuntimeError("fit is already running on this model in another thread; "
                            "one model trains in one thread at a time")

    def release_training_lock(self) -> None:
        """Gives back the training lock taken by :meth:`acquire_training_lock`."""
        self._training_thread = None
        self._training.release()

    def train(self, X: Any, y: Any, *, trainer: training.Trainer, rule: str = "classical",
              dampening: float = 0.0, weight_decay: float = 0.0,
              **loop_arguments: Any) -> History:
        """:meth:`fit` with the processes that train given by ``trainer`` (see
        :mod:`momcore.training`); :mod:`momcore.distributed` trains through it. Every
        argument is checked, and the processes agree on any error, before anything
        changes.

        Parameters
        ----------
        X, y : array_like
            As for :meth:`fit`.
        trainer : momcore.training.Trainer, keyword-only
            The processes that train and how they agree.
        rule, dampening, weight_decay : keyword-only
            As for :meth:`fit`.
        **loop_arguments
            The other keyword arguments of :meth:`fit`.

        Returns
        -------
        History
            The history of this call.

        Raises
        ------
        TypeError, ValueError, FloatingPointError, RuntimeError
            As :meth:`fit`.
        """
        return self._train(X, y, trainer, rule, dampening, weight_decay, loop_arguments)

    def _train(self, X: Any, y: Any, trainer: training.Trainer, rule: str, dampening: float,
               weight_decay: float, loop_arguments: dict[str, Any]) -> History:
        error: BaseException | None = None
        auto = is_auto(loop_arguments.get("momentum"))
        rows_checked = True
        try:
            if auto:
                first_lr, loop_arguments = self._tuned_arguments(loop_arguments)
            settings = training.check_fit_arguments(**loop_arguments)
            # One process training a large X that needs no conversion: the compiled
            # epochs check its rows for NaN and inf as they read them (fit_loop).
            rows_checked = not (trainer.alone
                                and _core.ready_rows(X, self.dtype, self.sizes[0], False)
                                and X.size >= _ROWS_CHECKED_IN_EPOCH)
            if rows_checked:
                X = self.check_inputs(X)
            T = self.encode_targets(y, X.shape[0])
            if settings.validation_data is not None:
                X_val = self.check_inputs(settings.validation_data[0])
                self.encode_targets(settings.validation_data[1], X_val.shape[0])
            values = training.schedule_values(settings, self.epochs, self.optimizer.steps)
            hyper = _checked_hyperparameters(values["lr"], values["momentum"], rule, dampening,
                                             weight_decay, self.dtype)
            if auto:
                check_auto_rule(rule)
                hyper = {**checked_hyperparameters({**hyper, "lr": first_lr}, dtype=self.dtype),
                         "momentum": "auto"}
        except Exception as exc:  # noqa: BLE001 - every process raises it (agree_on)
            error = exc
            if not rows_checked and not _all_finite(X):
                error = ValueError(NONFINITE_X)  # X is refused first, as when checked above
        trainer.agree_on(error)
        accuracy = self._accuracy(y)
        if not trainer.alone:
            trainer.agree_on_arguments({
                "epochs": settings.epochs, "batch_size": settings.batch_size,
                "shuffle": settings.shuffle, **hyper, "per_step": settings.per_step,
                "target_loss": settings.target_loss, "patience": settings.patience,
                "min_delta": settings.min_delta, "restore_best": settings.restore_best,
                "validation_data": settings.validation_data is not None,
                "inputs": (X.shape[1], X.dtype.name), "targets": (T.shape[1], T.dtype.name),
                "accuracy": accuracy})
        # A failure before the first step (the runner's own checks), or after steps that
        # fit_loop undid (X refused by the first epoch), leaves the model as it was: the
        # previous optimizer (its state untouched), its hyperparameters and history.
        optimizer = self.optimizer
        previous = (optimizer, dict(optimizer.param_groups[0]), dict(optimizer.defaults),
                    self.history_, optimizer.steps, self.epochs)
        self._use_rule(hyper)
        try:
            return training.fit_loop(self, X, T, settings, accuracy=accuracy,
                                     trainer=trainer, rows_checked=rows_checked)
        except BaseException as exc:
            if (not isinstance(exc, FloatingPointError)
                    and (self.optimizer.steps, self.epochs) == previous[4:]):
                self.optimizer, groups, defaults, self.history_ = previous[:4]
                dict.update(self.optimizer.param_groups[0], groups)
                dict.update(self.optimizer.defaults, defaults)
            raise

    def _tuned_arguments(self, loop_arguments: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """fit(momentum="auto"): the first step's lr, and the loop arguments whose lr and
        momentum read what the optimizer's tuner set (recorded in the history)."""
        for name in ("lr_schedule", "momentum_schedule"):
            if loop_arguments.get(name) is not None:
                raise ValueError(f"momentum='auto' sets lr and momentum every step; "
                                 f"{name} cannot be given with it")
        return loop_arguments.get("lr", 0.1), {
            **loop_arguments, "lr": lambda _: self.optimizer.lr,
            "momentum": lambda _: self.optimizer.momentum}

    def _use_rule(self, hyper: dict[str, Any]) -> None:
        """The optimizer for hyper: the same one with new hyperparameters, or a fresh
        state when the rule changes or momentum="auto" starts or stops (the step count
        carries over); an optimizer already tuning keeps tuning."""
        auto = is_auto(hyper["momentum"])
        optimizer = self.optimizer
        same_rule = optimizer.rule == hyper["rule"]
        if auto and optimizer.tuner is not None and same_rule:
            optimizer.param_groups[0].update(
                {k: hyper[k] for k in ("dampening", "weight_decay")})
        elif not same_rule or auto or optimizer.tuner is not None:
            self.optimizer = SGD([self.params], **hyper, backend=self.backend)
            self.optimizer.steps = optimizer.steps
        else:  # checked together above, in the network's dtype; the rule is the same
            dict.update(optimizer.param_groups[0], hyper)

    def make_runner(self, X: np.ndarray, T: np.ndarray, batch: int,
                    accuracy: str) -> training.Runner:
        """The runner that trains this network on (X, T) in batches of at most
        ``batch`` rows (see :class:`momcore.training.Runner`).

        Parameters
        ----------
        X : numpy.ndarray
            Checked inputs.
        T : numpy.ndarray
            Encoded targets.
        batch : int
            Rows per batch at most.
        accuracy : {"none", "argmax", "threshold"}
            How rows classified right are counted.

        Returns
        -------
        momcore.training.Runner
            The runner.
        """
        if self.optimizer.momenta is not None or self.optimizer.tuner is not None:
            # rule "qian" (curvature every few steps) or momentum="auto" (the tuner
            # observes every gradient): the batches run in Python
            if self.optimizer.tuner is not None:  # full-batch gradients carry no noise
                self.optimizer.tuner.stochastic = batch < X.shape[0]
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
        core.l2 = self.l2
        return core

    # ---- persistence --------------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": FORMAT_VERSION, "sizes": self.sizes,
            "hidden": self.hidden, "output": self.output, "loss": self.loss_name,
            "l2": self.l2, "dtype": self.dtype.name,
            "seed": self.seed, "backend": self.backend, "steps": self.steps,
            "epochs": self.epochs, "state_rule": self.optimizer.rule,
            "rng": self.rng.bit_generator.state,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes weights, optimizer state and generator state to ``path`` (.npz with
        JSON metadata, no pickle), atomically: a temporary file in the same directory,
        then a rename, so an interrupted save never leaves a half-written file.

        With ``momentum="auto"`` the file also holds the tuner's estimates and window,
        with rule ``"qian"`` the per-weight momenta and curvature estimate (a version-2
        model file, see :mod:`momcore._checkpoint`): ``fit`` after :meth:`load` takes
        the same steps as without the save.

        ``path`` must be a regular file or not exist: a directory, FIFO, device or
        socket is refused. Re-saving over a file keeps its permission bits; a save
        removes the temporary files that saves killed half-way left in the directory
        (see :mod:`momcore._checkpoint`).

        Parameters
        ----------
        path : str or os.PathLike
            The file to write.

        Raises
        ------
        IsADirectoryError
            If ``path`` is a directory.
        ValueError
            If ``path`` exists and is not a regular file (a FIFO, a device, a socket).
        OSError
            If the file cannot be written.
        """
        meta, estimates = self._estimates()
        _checkpoint.write(path, {"params": self.params, "state": self.optimizer_state,
                                 **estimates,
                                 "metadata": np.array(json.dumps({**self._metadata(),
                                                                  **meta}))})

    def _estimates(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What a version-2 model file adds for an optimizer with estimates beyond its
        state buffer (momentum="auto"'s tuner, rule "qian"'s per-weight momenta):
        metadata entries and member arrays; nothing for any other optimizer."""
        optimizer = self.optimizer
        if optimizer.tuner is None and optimizer.momenta is None:
            return {}, {}
        group = optimizer.param_groups[0]
        meta: dict[str, Any] = {
            "version": _checkpoint.EXTENDED_VERSION,
            "optimizer": {key: group[key] for key in ("lr", "momentum", "dampening",
                                                      "weight_decay")}}
        if optimizer.tuner is not None:
            tuner, state = optimizer.tuner, optimizer.tuner.state_dict()
            previous = state["_previous_w"] is not None and state["_previous_g"] is not None
            meta["tuner"] = {
                "beta": tuner.beta, "window": tuner.window, "floor": tuner.floor,
                "stochastic": tuner.stochastic, "previous": previous,
                "avg": state["avg"], "count": state["count"],
                **{key: state[key] for key in ("t", "pairs", "k_min", "k_max", "distance",
                                               "variance")}}
            arrays = {name: np.ravel(state[name[len("tuner"):]])
                      for name in _checkpoint.TUNER_MEMBERS
                      if previous or "previous" not in name}
        else:
            per_weight = optimizer.per_weight
            meta["per_weight"] = {"decay": per_weight.decay, "floor": per_weight.floor,
                                  "max_momentum": per_weight.max_momentum,
                                  "every": per_weight.every,
                                  "observations": optimizer.curvature_observations}
            arrays = {"momenta": optimizer.momenta[0], "curvature": optimizer.curvature[0]}
        return meta, arrays

    def _load_estimates(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """The optimizer of a version-2 model file (see _estimates), from its checked
        metadata and member arrays, with the weights' state buffer already read."""
        hyper, rule = meta["optimizer"], self.optimizer.rule
        if "tuner" in meta:
            saved = meta["tuner"]
            optimizer = SGD([self.params], lr=hyper["lr"], momentum="auto", rule=rule,
                            backend=self.backend)
            optimizer.tuner = Tuner(optimizer, beta=saved["beta"], window=saved["window"],
                                    floor=saved["floor"], stochastic=saved["stochastic"])
            window = saved["window"]
            shapes = {"_steps": (window, -1), "_changes": (window, -1),
                      "_gram": (window, window), "_cross": (window, window)}
            tuner = {key: saved[key] for key in ("t", "pairs", "k_min", "k_max", "distance",
                                                 "variance", "avg", "count")}
            tuner["window"] = window
            for name in _checkpoint.TUNER_MEMBERS:
                key = name[len("tuner"):]
                tuner[key] = (arrays[name].reshape(shapes.get(key, (-1,))) if name in arrays
                              else None)
            estimates: dict[str, Any] = {"tuner": tuner}
        else:
            saved = meta["per_weight"]
            optimizer = SGD([self.params], lr=hyper["lr"], momentum=hyper["momentum"],
                            rule=rule, backend=self.backend, per_weight=PerWeightMomentum(
                                decay=saved["decay"], floor=saved["floor"],
                                max_momentum=saved["max_momentum"], every=saved["every"]))
            estimates = {"momenta": [arrays["momenta"]], "curvature": [arrays["curvature"]],
                         "curvature_observations": saved["observations"]}
        optimizer.load_state_dict({**hyper, "rule": rule, "nonfinite": optimizer.nonfinite,
                                   "steps": self.optimizer.steps,
                                   "state": [self.optimizer_state], **estimates})
        self.optimizer = optimizer

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MLP:
        """A model saved by :meth:`save`; training continues exactly where it stopped.

        Safe on any file: never executes code from it, reads only a regular file,
        checks the metadata and every array's header against each other before
        allocating anything, and allocates no more than the file holds. A corrupt,
        truncated, hostile or mismatched file raises ValueError
        (:class:`momcore._checkpoint.CheckpointError`) naming the problem; a missing or
        unreadable path raises the usual OSError.

        Parameters
        ----------
        path : str or os.PathLike
            A file written by :meth:`save`.

        Returns
        -------
        MLP
            The model, with its optimizer and generator state.

        Raises
        ------
        ValueError
            If the file is not a valid model file or not a regular file (naming the problem).
        OSError
            If the path is missing, a directory or unreadable.
        """
        with _checkpoint.Reader(path) as reader:
            meta = reader.metadata()
            n, dtype = layout.n_params(meta["sizes"]), meta["dtype"]
            for name in ("params", "state"):
                reader.check_array(name, dtype, n)
            estimates = _checkpoint.declared_members(meta)
            for name, (kind, size) in estimates.items():
                reader.check_array(name, kind, size)
            # Only now, with the arrays' sizes known to be in the file, is anything made.
            try:
                net = cls(meta["sizes"], hidden=meta["hidden"], output=meta["output"],
                          loss=meta.get("loss"), l2=meta.get("l2", 0.0), dtype=dtype,
                          seed=meta["seed"], backend=meta["backend"])
                rule = "classical" if meta.get("state_rule") is None else meta["state_rule"]
                net.rng.bit_generator.state = meta["rng"]
                net.optimizer = SGD([net.params], lr=0.1, rule=rule, backend=net.backend)
                net.optimizer.steps, net.epochs = meta["steps"], meta["epochs"]
            except (TypeError, ValueError, OverflowError) as exc:
                raise reader.error(f"mismatched model file ({exc})") from None
            reader.read_into("params", net.params)
            reader.read_into("state", net.optimizer_state)
            if estimates:
                arrays = {name: np.empty(size, kind) for name, (kind, size) in estimates.items()}
                for name, out in arrays.items():
                    reader.read_into(name, out)
                try:
                    net._load_estimates(meta, arrays)
                except (TypeError, ValueError, OverflowError) as exc:
                    raise reader.error(f"mismatched model file ({exc})") from None
        return net


_last_checked: tuple[Any, ...] = ()
"""The hyperparameters fit checked last, and the result (a repeated fit call with the
same values, the same objects, checks them once)."""


def _checked_hyperparameters(lr: Any, momentum: Any, rule: Any, dampening: Any,
                             weight_decay: Any, dtype: np.dtype) -> dict[str, Any]:
    """checked_hyperparameters of these values in dtype (a dict the caller does not
    change). Floats and strings are immutable, so the same objects as the last call's
    need no second check."""
    global _last_checked
    last = _last_checked
    if (last and last[0] is lr and last[1] is momentum and last[2] is rule
            and last[3] is dampening and last[4] is weight_decay and last[5] is dtype):
        return last[6]
    hyper = checked_hyperparameters({"lr": lr, "momentum": momentum, "rule": rule,
                                     "dampening": dampening, "weight_decay": weight_decay},
                                    dtype=dtype)
    if (type(lr) is float and type(momentum) is float and type(rule) is str
            and type(dampening) is float and type(weight_decay) is float):
        _last_checked = (lr, momentum, rule, dampening, weight_decay, dtype, hyper)
    return hyper


_OBJECT_HINT = (" (pandas columns of the nullable dtypes Int64, Float64 or boolean become "
                "object arrays: convert with .to_numpy(dtype=float) after handling pd.NA)")


def _refuse_masked(a: Any, name: str) -> None:
    """One rule for masked input: refused when anything is masked (training would
    silently use the values under the mask), used as it is otherwise."""
    if isinstance(a, np.ma.MaskedArray) and np.ma.is_masked(a):
        raise ValueError(f"{name} is a masked array with masked values; fill or drop them "
                         f"first ({name}.filled(value), or the rows without a masked value)")


# ---- runners: the steps of a run of batches, for the training loop ----------------


class _CompiledRunner:
    """Runs of batches in C (one call, the GIL released), with the optimizer's
    hyperparameters; with ``check_rows``, checking the rows of X as they are gathered
    (see :class:`momcore.training.Runner`)."""

    def __init__(self, core: _core.NetCore, X: np.ndarray, T: np.ndarray,
                 optimizer: SGD) -> None:
        self.core, self.X, self.T, self.optimizer = core, X, T, optimizer
        self.n_rows = X.shape[0]
        self.check_rows = False

    def run(self, rows: np.ndarray, batch: int) -> tuple[float, int, int, bool]:
        # The steps are counted from the core's own count in a finally: a Ctrl-C that
        # ends the epoch early (or arrives just as it returns) still counts every step
        # applied.
        core, before = self.core, self.core.steps_applied
        try:
            return core.train_epoch(self.X, self.T, rows, batch,
                                    check_rows=self.check_rows,
                                    **self.optimizer.hyperparameters())
        finally:
            self.optimizer.steps += core.steps_applied - before


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
                accuracy=self.accuracy, l2=net.l2, **net.optimizer.hyperparameters())
        net.optimizer.steps += result[2]
        return result


class _CurvatureRunner:
    """Runs of batches for per-weight momentum (rule "qian") and momentum="auto": per
    batch one forward pass and the gradient, with (rule "qian") the diagonal
    Gauss-Newton curvature from the same pass every ``optimizer.per_weight.every``
    steps, fed to ``optimizer.observe_curvature``; then one step of the optimizer,
    whose kernel reads the per-weight momenta (and whose tuner, with "auto", sees the
    gradient first). The batch loop runs in Python (one or two C calls
    per batch), so it suits mini-batches better than online learning."""

    def __init__(self, net: MLP, X: np.ndarray, T: np.ndarray, batch: int,
                 accuracy: str) -> None:
        self.net, self.X, self.T, self.accuracy = net, X, T, accuracy
        self.n_rows = X.shape[0]
        self.epoch_penalty = 0.0
        self.curv = np.zeros_like(net.params)
        self.core = None if net.backend == "numpy" else _core.NetCore(
            net.params, net.optimizer_state, net._grad, net.sizes, net.hidden, net.output,
            batch, loss=net.loss_name, accuracy=accuracy, l2=net.l2)

    def _pass(self, X: np.ndarray, T: np.ndarray, curvature: bool) -> tuple[float, int]:
        net = self.net
        if self.core is not None:
            if curvature:
                return self.core.curvature(X, T, self.curv)
            return self.core.gradients(X, T)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if curvature:
                ref.curvature(net.params, net.sizes, X, T, net.hidden, net.output,
                              self.curv, loss=net.loss_name, l2=net.l2)
            loss = ref.gradients(net.params, net.sizes, X, T, net.hidden, net.output,
                                 net._grad, loss=net.loss_name, l2=net.l2)
            out = ref.forward(net.params, net.sizes, X, net.hidden, net.output)[-1]
        return loss, layout.count_correct(out, T, self.accuracy)

    def run(self, rows: np.ndarray, batch: int) -> tuple[float, int, int, bool]:
        optimizer = self.net.optimizer
        every = optimizer.per_weight.every if optimizer.momenta is not None else 0
        sum_loss, correct, steps = 0.0, 0, 0
        self.epoch_penalty = 0.0  # the l2 part of sum_loss, as NetCore.epoch_penalty
        for start in range(0, rows.shape[0], batch):
            chunk = rows[start:start + batch]
            curvature = every > 0 and optimizer.steps % every == 0
            loss, right = self._pass(self.X[chunk], self.T[chunk], curvature)
            correct += right
            if not np.isfinite(loss):
                return sum_loss, correct, steps, True
            sum_loss += loss * chunk.shape[0]
            if self.net.l2:  # the batch's l2 term times its rows, at the weights it saw
                self.epoch_penalty += 0.5 * self.net.l2 * layout.weight_squares(
                    self.net.params, self.net.sizes)
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

    def gradient_share(self, X: np.ndarray, T: np.ndarray, rows: np.ndarray, divisor: int,
                       l2: float) -> tuple[float, int, float]:
        return self.core.gradient_share(X, T, rows, divisor, l2)

    def step(self) -> None:
        if self.optimizer.tuner is not None:  # momentum="auto": the tuner sees the gradient
            self.optimizer.step([self.core.grad])
            return
        self.core.step(**self.optimizer.hyperparameters())  # on this thread, as fit does
        self.optimizer.steps += 1


class _NumpyKernel:
    """MLP.gradient_kernel of the numpy backend."""

    def __init__(self, net: MLP, grad: np.ndarray, accuracy: str, l2: float) -> None:
        self.net, self.grad, self.accuracy, self.l2 = net, grad, accuracy, l2

    def gradients(self, X: np.ndarray, T: np.ndarray) -> tuple[float, int]:
        net = self.net
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss = ref.gradients(net.params, net.sizes, X, T, net.hidden, net.output,
                                 self.grad, loss=net.loss_name, l2=self.l2)
            out = ref.forward(net.params, net.sizes, X, net.hidden, net.output)[-1]
        return loss, layout.count_correct(out, T, self.accuracy)

    def gradient_share(self, X: np.ndarray, T: np.ndarray, rows: np.ndarray, divisor: int,
                       l2: float) -> tuple[float, int, float]:
        net, n = self.net, rows.shape[0]
        loss, right, squares = 0.0, 0, 0.0
        if n:
            X, T = X[rows], T[rows]
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                loss = n * ref.gradients(net.params, net.sizes, X, T, net.hidden, net.output,
                                         self.grad, loss=net.loss_name)
                out = ref.forward(net.params, net.sizes, X, net.hidden, net.output)[-1]
            right = layout.count_correct(out, T, self.accuracy)
            self.grad *= n / divisor
        else:
            self.grad.fill(0)
        if l2:
            for W, dW in zip(net.weights, layout.views(self.grad, net.sizes)[0]):
                dW += (l2 / divisor) * W
            squares = layout.weight_squares(net.params, net.sizes)
        return loss, right, squares

    def step(self) -> None:
        self.net.optimizer.step([self.grad])

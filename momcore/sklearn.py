"""scikit-learn estimators: :class:`MLPClassifier` and :class:`MLPRegressor`.

Drop-in replacements for ``sklearn.neural_network.MLPClassifier`` /
``MLPRegressor`` with ``solver="sgd"``: the same constructor parameters, the same
fitted attributes, the same initial weights for one ``random_state``, the same
shuffling, validation split, stopping rule and learning-rate schedules, so that
with ``shuffle=False`` the weights agree with scikit-learn's to rounding after any
number of epochs. momcore's own parameters come last: ``rule`` (any momcore update
rule instead of ``nesterovs_momentum``), ``momentum_schedule``, ``dtype`` and
``backend``.

How an epoch runs: ``alpha`` is the network's L2 penalty (``MLP(l2=alpha)``: the term
``alpha/n_batch * W`` on the weights, not the biases, as scikit-learn has it) and is
applied in the compiled backward pass. Without ``sample_weight`` the whole epoch is one
compiled call (the GIL released); with it every batch takes one compiled
forward/backward pass and one compiled step, the sample weights applied in between
from Python. Sparse X is refused (convert it with ``X.toarray()``).

Needs scikit-learn: ``pip install 'momcore[sklearn]'``.
"""
from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import (
        _check_partial_fit_first_call,
        type_of_target,
        unique_labels,
    )
    from sklearn.utils.validation import (
        _check_sample_weight,
        check_is_fitted,
        column_or_1d,
        validate_data,
    )
except ImportError as exc:  # pragma: no cover - exercised without scikit-learn only
    raise ImportError(
        "momcore.MLPClassifier and momcore.MLPRegressor need scikit-learn; install it "
        "with: pip install 'momcore[sklearn]'") from exc

from momcore import _mlp_numpy as _losses
from momcore import _network
from momcore import training
from momcore.curvature import is_auto
from momcore.mlp import MLP
from momcore.registry import check_name

__all__ = ["MLPClassifier", "MLPRegressor"]

ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
"""scikit-learn's hidden activation names -> momcore's."""

OUT_ACTIVATIONS = {"softmax": ("softmax", "cross_entropy"),
                   "logistic": ("sigmoid", "binary_cross_entropy"),
                   "identity": ("identity", "squared_error")}
"""scikit-learn's ``out_activation_`` -> momcore's (output, loss)."""

LEARNING_RATES = ("constant", "invscaling", "adaptive")


def init_layer(rng: np.random.RandomState, fan_in: int, fan_out: int,
               activation: str) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) drawn as scikit-learn's ``_init_coef`` draws them: W (fan_in, fan_out)
    then b (fan_out,), both ``U(-r, r)`` with ``r = sqrt(factor / (fan_in + fan_out))``,
    factor 2 for logistic units, 6 otherwise (Glorot)."""
    factor = 2.0 if activation == "logistic" else 6.0
    bound = np.sqrt(factor / (fan_in + fan_out))
    W = rng.uniform(-bound, bound, (fan_in, fan_out))
    b = rng.uniform(-bound, bound, fan_out)
    return W, b


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share; see MLPClassifier for the parameters."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="sgd",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, max_fun=15000, rule=None, momentum_schedule=None,
                 dtype=None, backend="c"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.rule = rule
        self.momentum_schedule = momentum_schedule
        self.dtype = dtype
        self.backend = backend

    # ---- checks -------------------------------------------------------------------

    def _check_params(self) -> list[int]:
        """The hidden layer sizes as a list; every parameter checked, in the words of
        scikit-learn's own errors."""
        if self.solver != "sgd":
            raise ValueError(f"momcore trains with solver='sgd' (gradient descent with "
                             f"momentum) only; got solver={self.solver!r}. Use "
                             f"sklearn.neural_network for 'adam' or 'lbfgs'.")
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                   for s in sizes) or any(s <= 0 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"The 'activation' parameter must be one of "
                             f"{sorted(ACTIVATIONS)}; got {self.activation!r}")
        if self.learning_rate not in LEARNING_RATES:
            raise ValueError(f"The 'learning_rate' parameter must be one of "
                             f"{list(LEARNING_RATES)}; got {self.learning_rate!r}")
        auto = is_auto(self.momentum)
        if auto and self.learning_rate != "constant":
            raise ValueError(f"momentum='auto' sets the learning rate every step; "
                             f"learning_rate must be 'constant', got {self.learning_rate!r}")
        for name, low, closed in (("alpha", 0.0, True), ("learning_rate_init", 0.0, False),
                                  ("momentum", 0.0, True), ("tol", 0.0, True),
                                  ("power_t", 0.0, True)):
            if name == "momentum" and auto:
                continue
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not np.isfinite(value) or value < low or (value == low and not closed)):
                raise ValueError(f"The '{name}' parameter must be a finite number "
                                 f"{'>=' if closed else '>'} {low}; got {value!r}")
        if not auto and self.momentum > 1:
            raise ValueError(f"The 'momentum' parameter must be in [0, 1]; got "
                             f"{self.momentum!r}")
        for name in ("max_iter", "n_iter_no_change"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"The '{name}' parameter must be an int >= 1; got "
                                 f"{value!r}")
        if not (isinstance(self.validation_fraction, numbers.Real)
                and 0 <= self.validation_fraction < 1):
            raise ValueError(f"The 'validation_fraction' parameter must be in [0, 1); got "
                             f"{self.validation_fraction!r}")
        if not (self.batch_size == "auto" or (isinstance(self.batch_size, numbers.Integral)
                                              and not isinstance(self.batch_size, bool)
                                              and self.batch_size >= 1)):
            raise ValueError(f"The 'batch_size' parameter must be 'auto' or an int >= 1; "
                             f"got {self.batch_size!r}")
        if self.rule is not None:
            check_name("rule", self.rule)
        if self.dtype is not None and np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be None, float32 or float64; got {self.dtype!r}")
        if self.backend not in ("c", "numpy"):
            raise ValueError(f"backend must be 'c' or 'numpy'; got {self.backend!r}")
        return [int(s) for s in sizes]

    def _rule(self) -> str:
        if self.rule is not None:
            return self.rule
        if is_auto(self.momentum):  # the tuner's heavy ball; nesterovs_momentum ignored
            return "classical"
        return "nesterov" if self.nesterovs_momentum else "classical"

    def _validate_X(self, X: Any, reset: bool) -> np.ndarray:
        return validate_data(self, X, reset=reset, dtype=(np.float64, np.float32),
                             accept_sparse=False)

    # ---- fitting ------------------------------------------------------------------

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> _BaseMLP:
        """Fits the model to X (n_samples, n_features) and y; ``sample_weight``
        weights each sample's loss (a weighted mean per batch, as scikit-learn does).
        Returns self.

        Parameters
        ----------
        X : array_like
            ``(n_samples, n_features)``, dense.
        y : array_like
            Labels (classifier) or targets (regressor).
        sample_weight : array_like or None
            One non-negative weight per sample.

        Returns
        -------
        self
            The fitted estimator.

        Raises
        ------
        TypeError, ValueError
            If a parameter or the data are refused (sparse X, NaN, wrong shapes).
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X: Any, y: Any, sample_weight: Any, incremental: bool) -> _BaseMLP:
        hidden = self._check_params()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, Y = self._validate_input(X, y, incremental, reset=first_pass)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
            if np.all(sample_weight == sample_weight[0]):
                sample_weight = None  # equal weights: the unweighted mean, exactly
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1)
        dtype = np.dtype(self.dtype if self.dtype is not None else X.dtype)
        sizes = [X.shape[1], *hidden, Y.shape[1]]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(Y, sizes, dtype)
        elif self._net.sizes != sizes:
            raise ValueError(f"the network has layers {self._net.sizes}; X and y and "
                             f"hidden_layer_sizes now ask for {sizes}. Refit without "
                             f"warm_start to start again.")
        self.n_outputs_ = Y.shape[1]
        self._fit_stochastic(X, Y, sample_weight, incremental)
        if not np.isfinite(self._net.params).all():
            raise ValueError("Solver produced non-finite parameter weights. The input data "
                             "may contain large values and need to be preprocessed.")
        return self

    def _initialize(self, Y: np.ndarray, sizes: list[int], dtype: np.dtype) -> None:
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = Y.shape[1]
        self.n_layers_ = len(sizes)
        self.out_activation_ = self._out_activation()
        output, loss = OUT_ACTIVATIONS[self.out_activation_]
        net = MLP(sizes, hidden=ACTIVATIONS[self.activation], output=output, loss=loss,
                  dtype=dtype, backend=self.backend)
        for W, b in zip(net.weights, net.biases):
            W_init, b_init = init_layer(self._random_state, W.shape[0], W.shape[1],
                                        self.activation)
            W[...] = W_init
            b[...] = b_init
        self._net = net
        self.coefs_, self.intercepts_ = net.weights, net.biases
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _fit_stochastic(self, X: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None,
                        incremental: bool) -> None:
        net = self._net
        if not incremental or not hasattr(self, "_learning_rate"):
            # a new optimizer, as scikit-learn makes one per fit: zero velocities
            self._learning_rate = float(self.learning_rate_init)
            net.optimizer.zero_state()
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        X_val = Y_val = sw_val = None
        if self.early_stopping:
            stratify = Y if is_classifier(self) and self.n_outputs_ == 1 else None
            arrays = (X, Y) if sample_weight is None else (X, Y, sample_weight)
            parts = train_test_split(*arrays, random_state=self._random_state,
                                     test_size=self.validation_fraction, stratify=stratify)
            X, X_val, Y, Y_val = parts[:4]
            sample_weight, sw_val = (parts[4], parts[5]) if sample_weight is not None \
                else (None, None)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
        n_samples = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. "
                              "It is going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        epoch_end = _EpochEnd(self, n_samples, X_val, Y_val, sw_val, incremental)
        trainer = _Trainer(self, sample_weight)
        T = Y  # MLP.train casts it to the network's dtype, one copy
        net.l2 = float(self.alpha)  # may have changed since the last fit (set_params)
        self.n_iter_ = 0
        try:
            net.train(X, T, trainer=trainer, rule=self._rule(),
                      epochs=1 if incremental else self.max_iter, batch_size=batch_size,
                      lr=self.learning_rate_init,
                      lr_schedule=None if is_auto(self.momentum) else self._current_learning_rate,
                      momentum=self.momentum, momentum_schedule=self.momentum_schedule,
                      shuffle=self.shuffle, callback=epoch_end)
        except FloatingPointError as exc:
            raise ValueError(f"Solver produced a non-finite loss ({exc}). The input data "
                             f"may contain large values and need to be preprocessed, or "
                             f"learning_rate_init is too large.") from None
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        if self.early_stopping and epoch_end.best_params is not None:
            np.copyto(net.params, epoch_end.best_params)

    def _current_learning_rate(self, t: int) -> float:
        """The learning rate of the next epoch (a schedule for momcore's training loop):
        scikit-learn's, updated at the end of every epoch."""
        return self._learning_rate

    def _loss_divisor(self) -> int:
        """scikit-learn reports the squared error averaged over the outputs too; momcore
        sums it over the outputs (the gradients are the same)."""
        return self.n_outputs_ if self.out_activation_ == "identity" else 1

    # ---- prediction ---------------------------------------------------------------

    def _forward(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        # outputs in X's dtype, as scikit-learn's (a float32 network widens exactly)
        return self._net.predict_proba(X).astype(X.dtype, copy=False)

    # ---- copies -------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        # views of the network's flat buffer: made again from it when loaded
        state.pop("coefs_", None)
        state.pop("intercepts_", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_net" in state:
            self.coefs_, self.intercepts_ = self._net.weights, self._net.biases

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


class _EpochEnd:
    """scikit-learn's end of an epoch (the callback of momcore's training loop): the
    loss curve, the stopping rule on the training loss or the validation score, the
    learning-rate schedule, the best weights of early stopping."""

    def __init__(self, estimator: _BaseMLP, n_samples: int, X_val: Any, Y_val: Any,
                 sw_val: Any, incremental: bool) -> None:
        self.est, self.n_samples = estimator, n_samples
        self.X_val, self.Y_val, self.sw_val = X_val, Y_val, sw_val
        self.incremental = incremental
        self.best_params: np.ndarray | None = None

    def __call__(self, epoch: int, logs: dict[str, float]) -> bool:
        est = self.est
        est.n_iter_ += 1
        est.loss_ = float(logs["loss"])
        est.t_ += self.n_samples
        est.loss_curve_.append(est.loss_)
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {est.loss_:.8f}")
        self._update_no_improvement_count()
        if est.learning_rate == "invscaling":
            est._learning_rate = float(est.learning_rate_init) / (est.t_ + 1) ** est.power_t
        if est._no_improvement_count > est.n_iter_no_change:
            what = ("Validation score" if est.early_stopping else "Training loss")
            msg = (f"{what} did not improve more than tol={est.tol:f} for "
                   f"{est.n_iter_no_change} consecutive epochs.")
            if est.learning_rate != "adaptive" or est._learning_rate <= 1e-6:
                if est.verbose:
                    print(msg + (" Stopping." if est.learning_rate != "adaptive"
                                 else " Learning rate too small. Stopping."))
                return False
            est._learning_rate /= 5.0
            if est.verbose:
                print(msg + f" Setting learning rate to {est._learning_rate:f}")
            est._no_improvement_count = 0
        if not self.incremental and est.n_iter_ == est.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) "
                          f"reached and the optimization hasn't converged yet.",
                          ConvergenceWarning)
        return True

    def _update_no_improvement_count(self) -> None:
        est = self.est
        if est.early_stopping:
            score = est._validation_score(self.X_val, self.Y_val, self.sw_val)
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            if score < est.best_validation_score_ + est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                if self.best_params is None:
                    self.best_params = est._net.params.copy()
                else:
                    np.copyto(self.best_params, est._net.params)
        else:
            if est.loss_curve_[-1] > est.best_loss_ - est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if est.loss_curve_[-1] < est.best_loss_:
                est.best_loss_ = est.loss_curve_[-1]


class _Trainer(training.Trainer):
    """momcore's training loop as scikit-learn trains: its shuffling (the estimator's
    RandomState), its loss convention, its L2 term and sample weights."""

    def __init__(self, estimator: _BaseMLP, sample_weight: np.ndarray | None) -> None:
        self.est, self.sample_weight = estimator, sample_weight
        self._order: np.ndarray | None = None

    def epoch_order(self, net: MLP, n: int, shuffle: bool) -> np.ndarray:
        # scikit-learn shuffles the previous epoch's order with the estimator's
        # RandomState (sklearn.utils.shuffle); the same draws give the same order.
        # sklearn.utils.shuffle(order, random_state=rs) is order[p] with p = arange(n)
        # shuffled in place by rs.shuffle (sklearn.utils.resample, replace=False): the
        # same draws, without resample's argument checks on every epoch.
        if self._order is None:
            self._order = np.arange(n, dtype=np.int64)
        if shuffle:
            permutation = np.arange(n)
            self.est._random_state.shuffle(permutation)
            self._order = self._order[permutation]
        return self._order

    def runner(self, net: MLP, X: np.ndarray, T: np.ndarray, batch: int,
               accuracy: str) -> training.Runner:
        divisor = self.est._loss_divisor()
        # The whole epoch in one call, unless sample weights need the per-batch path,
        # or the loss must be split into its data and l2 parts (a regressor's loss is
        # averaged over the outputs, the l2 term not) and the numpy reference, which
        # does not report the split, trains.
        if self.sample_weight is None and (divisor == 1 or not net.l2
                                           or net.backend == "c"):
            return _WholeEpochRunner(net.make_runner(X, T, batch, "none"), divisor,
                                     bool(net.l2))
        return _BatchRunner(net, X, T, batch, self.sample_weight, divisor)


class _WholeEpochRunner:
    """The epoch in one call (compiled: the GIL released), its loss in scikit-learn's
    convention: the data part divided by the divisor, the l2 part not."""

    def __init__(self, inner: training.Runner, divisor: int, penalised: bool) -> None:
        self.inner, self.divisor, self.penalised = inner, divisor, penalised
        self.n_rows = inner.n_rows

    def run(self, rows: np.ndarray, batch: int) -> tuple[float, int, int, bool]:
        sum_loss, correct, steps, stopped = self.inner.run(rows, batch)
        if self.divisor != 1:
            source = getattr(self.inner, "epoch_penalty", None)  # a Python batch loop's
            penalty = 0.0 if not self.penalised else (
                self.inner.core.epoch_penalty if source is None else source)
            sum_loss = (sum_loss - penalty) / self.divisor + penalty
        return sum_loss, correct, steps, stopped


class _BatchRunner:
    """One compiled forward/backward pass and one compiled step per batch, with
    scikit-learn's gradient in between:
    ``dE/dW = (sum_r s_r dL_r/dW + alpha W) / sum_r s_r``, ``dE/db`` without the alpha
    term, s the sample weights (1 without them). The pass gives the gradient with the
    l2 term ``(alpha/B) W`` (the network's l2 is alpha); scaled by ``B / sum_r s_r``
    it is scikit-learn's.

    Sample weights: the three output/loss pairs are canonical (``dL/dz = y - t`` at the
    output's pre-activation z), so the weighted gradient of a row is the plain
    gradient with the target ``t' = y + s (t - y)``: ``y - t' = s (y - t)``, and the
    back-propagation is linear in it. That costs one extra forward pass per batch.
    """

    def __init__(self, net: MLP, X: np.ndarray, T: np.ndarray, batch: int,
                 sample_weight: np.ndarray | None, divisor: int) -> None:
        self.net, self.X, self.T, self.divisor = net, X, T, divisor
        self.sample_weight = sample_weight
        self.n_rows = X.shape[0]
        self.grad = np.zeros_like(net.params)
        self.kernel = net.gradient_kernel(self.grad, batch, accuracy="none")

    def run(self, rows: np.ndarray, batch: int) -> tuple[float, int, int, bool]:
        net, alpha = self.net, self.net.l2
        sum_loss, steps = 0.0, 0
        for start in range(0, rows.shape[0], batch):
            index = rows[start:start + batch]
            X, T = self.X[index], self.T[index]
            squares = _network.weight_squares(net.params, net.sizes) if alpha else 0.0
            if self.sample_weight is None:
                weight_sum = float(index.shape[0])
                loss, _ = self.kernel.gradients(X, T)
                loss -= 0.5 * alpha * squares / weight_sum  # the data part
            else:
                s = self.sample_weight[index]
                weight_sum = float(s.sum())
                out = net.predict_proba(X)
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    per_row = _losses.per_sample_loss(out, T, net.output, net.loss_name)
                    loss = float(np.dot(s, per_row) / weight_sum)
                    shifted = out + s[:, None].astype(out.dtype) * (T - out)
                self.kernel.gradients(X, shifted)
                self.grad *= index.shape[0] / weight_sum
            if not np.isfinite(loss):
                return sum_loss, 0, steps, True
            loss = loss / self.divisor + 0.5 * alpha * squares / weight_sum
            self.kernel.step()
            steps += 1
            sum_loss += loss * index.shape[0]
        return sum_loss, 0, steps, False


def _binarized_labels(y: np.ndarray) -> tuple[LabelBinarizer, np.ndarray] | None:
    """(LabelBinarizer().fit(y), its transform(y) as bool) for 1-D real labels of at
    least two classes, from one np.unique instead of the checks of fit and transform
    (type_of_target, unique_labels, label_binarize), which cost more than an online
    epoch on small data; None for anything else (strings, objects, one class,
    non-integral floats, 2-D y), which takes LabelBinarizer's own path.

    For finite 1-D numbers (validate_data has checked them) type_of_target is "binary"
    for two distinct values and "multiclass" for more when every value is integral
    (otherwise "continuous", which LabelBinarizer refuses), and unique_labels is the
    sorted distinct values: np.unique's."""
    if y.ndim != 1 or y.dtype.kind not in "biuf":
        return None
    classes, inverse = np.unique(y, return_inverse=True)
    if classes.shape[0] < 2 or (y.dtype.kind == "f" and not np.all(classes == np.round(classes))):
        return None
    binarizer = LabelBinarizer()
    binarizer.classes_ = classes
    binarizer.y_type_ = "binary" if classes.shape[0] == 2 else "multiclass"
    binarizer.sparse_input_ = False
    if classes.shape[0] == 2:
        return binarizer, (inverse == 1).reshape(-1, 1)
    Y = np.zeros((y.shape[0], classes.shape[0]), dtype=bool)
    Y[np.arange(y.shape[0]), inverse] = True
    return binarizer, Y


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by gradient descent with momentum:
    ``sklearn.neural_network.MLPClassifier(solver="sgd")`` on momcore's compiled passes.

    Parameters are scikit-learn's, with the same meanings and defaults except
    ``solver``, which is "sgd"; ``rule``, ``momentum_schedule``, ``dtype`` and
    ``backend`` are momcore's own.

    Labels may be anything :class:`sklearn.preprocessing.LabelBinarizer` takes: two
    classes train one logistic unit with binary cross-entropy, more a softmax with
    cross-entropy, a 0/1 indicator matrix one logistic unit per label. Sparse X is
    refused with a TypeError (densify it first).

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(100,)
        The width of each hidden layer.
    activation : {"identity", "logistic", "tanh", "relu"}, default="relu"
        The hidden units (``logistic`` is momcore's ``sigmoid``).
    solver : {"sgd"}, default="sgd"
        The only solver momcore has; anything else is a ValueError.
    alpha : float, default=0.0001
        L2 penalty on the weights, the network's ``l2`` (scaled per batch as
        scikit-learn scales it).
    batch_size : int or "auto", default="auto"
        Rows per step; "auto" is ``min(200, n_samples)``.
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        The learning-rate schedule, as scikit-learn's.
    learning_rate_init : float, default=0.001
        The initial learning rate (eta).
    power_t : float, default=0.5
        The exponent of "invscaling".
    max_iter : int, default=200
        The most epochs.
    shuffle : bool, default=True
        Shuffle the rows every epoch, as scikit-learn draws them.
    random_state : int, RandomState or None
        Initial weights, shuffling and the validation split, drawn as scikit-learn draws
        them.
    tol : float, default=1e-4
        The improvement that counts for the stopping rule.
    verbose : bool, default=False
        Print the loss of every epoch.
    warm_start : bool, default=False
        Continue from the previous fit's weights.
    momentum : float or "auto", default=0.9
        The momentum coefficient (p), in [0, 1]; or "auto": lr and momentum set every
        step by :class:`momcore.curvature.Tuner` (see :meth:`momcore.MLP.fit`), with
        ``learning_rate_init`` the first step's rate; ``learning_rate`` must then be
        "constant", and the rule is "classical" (``nesterovs_momentum`` is ignored).
    nesterovs_momentum : bool, default=True
        Nesterov's momentum (rule "nesterov") or plain (rule "classical").
    early_stopping : bool, default=False
        Stop on the validation score of a held-out ``validation_fraction``.
    validation_fraction : float, default=0.1
        The held-out fraction with ``early_stopping``.
    beta_1, beta_2, epsilon, max_fun
        Accepted and ignored, as scikit-learn ignores them with "sgd".
    n_iter_no_change : int, default=10
        Epochs without an improvement of ``tol`` before stopping.
    rule : str or None, default=None
        A momcore update rule (:data:`momcore.registry.RULES`); None takes
        ``"nesterov"`` when ``nesterovs_momentum`` else ``"classical"``, which are
        scikit-learn's two updates.
    momentum_schedule : callable or None
        Overrides ``momentum``: a :mod:`momcore.schedules` schedule, per epoch or
        ``per="step"``.
    dtype : None, float32 or float64
        The network's dtype; None follows X (float32 stays float32).
    backend : {"c", "numpy"}
        "numpy" trains with the pure-numpy reference.

    Attributes
    ----------
    coefs_, intercepts_ : list of numpy.ndarray
        Weights and biases per layer, views of the network's flat parameter buffer.
    loss_, best_loss_ : float
        The last epoch's loss and the best.
    loss_curve_, validation_scores_ : list of float
        Per epoch (``validation_scores_`` with ``early_stopping``).
    n_iter_, t_ : int
        Epochs and samples seen.
    n_features_in_, feature_names_in_, n_layers_, n_outputs_, out_activation_
        As in scikit-learn.
    classes_ : numpy.ndarray
        The labels seen.
    best_validation_score_ : float
        With ``early_stopping``.

    Examples
    --------
    >>> from momcore import MLPClassifier, datasets
    >>> digits = datasets.load_digits()
    >>> clf = MLPClassifier(hidden_layer_sizes=(32,), learning_rate_init=0.1,
    ...                     n_iter_no_change=2, random_state=0)
    >>> clf.fit(digits.X / 16, digits.y).score(digits.X / 16, digits.y) > 0.95
    True
    """

    def _out_activation(self) -> str:
        if self._label_binarizer.y_type_ == "multiclass":
            return "softmax"
        return "logistic"

    def _validate_input(self, X: Any, y: Any, incremental: bool,
                        reset: bool) -> tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(self, X, y, accept_sparse=False, multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            encoded = _binarized_labels(y)
            if encoded is not None:
                self._label_binarizer, Y = encoded
                self.classes_ = self._label_binarizer.classes_
                return X, Y
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        f"warm_start can only be used where `y` has the same classes as "
                        f"in the previous call to fit. Previously got {self.classes_}, "
                        f"`y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. "
                                 f"`self.classes_` has {self.classes_}. 'y' has {classes}.")
        return X, self._label_binarizer.transform(y).astype(bool)

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None,
                    classes: Any = None) -> MLPClassifier:
        """One epoch over (X, y), continuing from the current weights, optimizer state
        and learning rate; ``classes`` (every label y may ever hold) is required on the
        first call. Returns self.

        Parameters
        ----------
        X : array_like
            ``(n_samples, n_features)``, dense.
        y : array_like
            Labels, among ``classes``.
        sample_weight : array_like or None
            One non-negative weight per sample.
        classes : array_like or None
            Every label y may ever hold; required on the first call.

        Returns
        -------
        self
            The estimator.

        Raises
        ------
        TypeError, ValueError
            If the data are refused, or ``classes`` is missing on the first call.
        """
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(self.classes_)
        return self._fit(X, y, sample_weight, incremental=True)

    def _validation_score(self, X: np.ndarray, Y: np.ndarray, sample_weight: Any) -> float:
        y_true = self._label_binarizer.inverse_transform(Y)
        return float(accuracy_score(y_true, self.predict(X), sample_weight=sample_weight))

    def predict(self, X: Any) -> np.ndarray:
        """The predicted labels, shape (n_samples,) (or (n_samples, n_labels) for
        multilabel y).

        Parameters
        ----------
        X : array_like
            ``(n_samples, n_features)``.

        Returns
        -------
        numpy.ndarray
            The labels.
        """
        out = self._forward(X)
        if self.n_outputs_ == 1:
            out = out.ravel()
        return self._label_binarizer.inverse_transform(out)

    def predict_proba(self, X: Any) -> np.ndarray:
        """The probability of each class, shape (n_samples, n_classes); for multilabel
        y the probability of each label.

        Parameters
        ----------
        X : array_like
            ``(n_samples, n_features)``.

        Returns
        -------
        numpy.ndarray
            Probabilities in X's dtype.
        """
        out = self._forward(X)
        if self.n_outputs_ == 1:
            out = out.ravel()
        if out.ndim == 1:
            return np.vstack([1 - out, out]).T
        return out

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """log of :meth:`predict_proba`.

        Parameters
        ----------
        X : array_like
            ``(n_samples, n_features)``.

        Returns
        -------
        numpy.ndarray
            ``log(predict_proba(X))``.
        """
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by gradient descent with momentum:
    ``sklearn.neural_network.MLPRegressor(solver="sgd")`` on momcore's compiled passes.

    The parameters and attributes are :class:`MLPClassifier`'s, plus ``loss``. y may be
    1-D or 2-D (several outputs).

    Parameters
    ----------
    loss : {"squared_error"}, default="squared_error"
        Half the mean squared error over samples and outputs, as scikit-learn reports it.
    hidden_layer_sizes : tuple of int, default=(100,)
        The width of each hidden layer.
    activation : {"identity", "logistic", "tanh", "relu"}, default="relu"
        The hidden units (``logistic`` is momcore's ``sigmoid``).
    solver : {"sgd"}, default="sgd"
        The only solver momcore has; anything else is a ValueError.
    alpha : float, default=0.0001
        L2 penalty on the weights, the network's ``l2`` (scaled per batch as
        scikit-learn scales it).
    batch_size : int or "auto", default="auto"
        Rows per step; "auto" is ``min(200, n_samples)``.
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        The learning-rate schedule, as scikit-learn's.
    learning_rate_init : float, default=0.001
        The initial learning rate (eta).
    power_t : float, default=0.5
        The exponent of "invscaling".
    max_iter : int, default=200
        The most epochs.
    shuffle : bool, default=True
        Shuffle the rows every epoch, as scikit-learn draws them.
    random_state : int, RandomState or None
        Initial weights, shuffling and the validation split, drawn as scikit-learn draws
        them.
    tol : float, default=1e-4
        The improvement that counts for the stopping rule.
    verbose : bool, default=False
        Print the loss of every epoch.
    warm_start : bool, default=False
        Continue from the previous fit's weights.
    momentum : float or "auto", default=0.9
        The momentum coefficient (p), in [0, 1]; or "auto": lr and momentum set every
        step by :class:`momcore.curvature.Tuner` (see :meth:`momcore.MLP.fit`), with
        ``learning_rate_init`` the first step's rate; ``learning_rate`` must then be
        "constant", and the rule is "classical" (``nesterovs_momentum`` is ignored).
    nesterovs_momentum : bool, default=True
        Nesterov's momentum (rule "nesterov") or plain (rule "classical").
    early_stopping : bool, default=False
        Stop on the validation score of a held-out ``validation_fraction``.
    validation_fraction : float, default=0.1
        The held-out fraction with ``early_stopping``.
    beta_1, beta_2, epsilon, max_fun
        Accepted and ignored, as scikit-learn ignores them with "sgd".
    n_iter_no_change : int, default=10
        Epochs without an improvement of ``tol`` before stopping.
    rule : str or None, default=None
        A momcore update rule (:data:`momcore.registry.RULES`); None takes
        ``"nesterov"`` when ``nesterovs_momentum`` else ``"classical"``, which are
        scikit-learn's two updates.
    momentum_schedule : callable or None
        Overrides ``momentum``: a :mod:`momcore.schedules` schedule, per epoch or
        ``per="step"``.
    dtype : None, float32 or float64
        The network's dtype; None follows X (float32 stays float32).
    backend : {"c", "numpy"}
        "numpy" trains with the pure-numpy reference.

    Attributes
    ----------
    coefs_, intercepts_ : list of numpy.ndarray
        Weights and biases per layer, views of the network's flat parameter buffer.
    loss_, best_loss_ : float
        The last epoch's loss and the best.
    loss_curve_, validation_scores_ : list of float
        Per epoch (``validation_scores_`` with ``early_stopping``).
    n_iter_, t_ : int
        Epochs and samples seen.
    n_features_in_, feature_names_in_, n_layers_, n_outputs_, out_activation_
        As in scikit-learn.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, loss="squared_error",
                 solver="sgd", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, max_fun=15000, rule=None, momentum_schedule=None,
                 dtype=None, backend="c"):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha,
            batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            rule=rule, momentum_schedule=momentum_schedule, dtype=dtype, backend=backend)
        self.loss = loss

    def _check_params(self) -> list[int]:
        if self.loss != "squared_error":
            raise ValueError(f"momcore's MLPRegressor trains the squared error only; got "
                             f"loss={self.loss!r}")
        return super()._check_params()

    def _out_activation(self) -> str:
        return "identity"

    def _validate_input(self, X: Any, y: Any, incremental: bool,
                        reset: bool) -> tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(self, X, y, accept_sparse=False, multi_output=True,
                             y_numeric=True, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """One epoch over (X, y), continuing from the current weights, optimizer state
        and learning rate. Returns self.

        Parameters
        ----------
        X : array_like
            ``(n_samples, n_features)``, dense.
        y : array_like
            Targets, ``(n_samples,)`` or ``(n_samples, n_outputs)``.
        sample_weight : array_like or None
            One non-negative weight per sample.

        Returns
        -------
        self
            The estimator.
        """
        return self._fit(X, y, sample_weight, incremental=True)

    def _validation_score(self, X: np.ndarray, Y: np.ndarray, sample_weight: Any) -> float:
        return float(r2_score(Y, self._forward(X), sample_weight=sample_weight))

    def predict(self, X: Any) -> np.ndarray:
        """The predicted values, shape (n_samples,) or (n_samples, n_outputs).

        Parameters
        ----------
        X : array_like
            ``(n_samples, n_features)``.

        Returns
        -------
        numpy.ndarray
            The predicted values.
        """
        out = self._forward(X)
        if out.shape[1] == 1:
            return out.ravel()
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

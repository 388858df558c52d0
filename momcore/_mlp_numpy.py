"""Pure-numpy multilayer perceptron: the reference backend of :class:`momcore.MLP`.

Everything the compiled backend computes is defined here first, in plain numpy, and the
tests hold the compiled backend to these results.

Dimension letters: B = batch rows, I = inputs of a layer (``sizes[i]``), O = outputs of a
layer (``sizes[i + 1]``), L = number of layers (``len(sizes) - 1``), P = ``n_params(sizes)``.

Flat layout
    All parameters live in one 1-D buffer, in the order W0, b0, W1, b1, ..., W[L-1], b[L-1].
    ``W[i]`` is (sizes[i], sizes[i+1]) row-major and ``b[i]`` is (sizes[i+1],). Gradients
    and optimizer state use the same layout, so one momentum step updates the whole network.

Forward pass
    Layer i computes ``a[i+1] = f(a[i] @ W[i] + b[i])`` with ``a[0] = X``; f is the hidden
    activation for layers 0..L-2 and the output activation for layer L-1.

Losses (per sample; the loss of a batch is the mean over its rows)
    softmax output:            cross-entropy  ``E = -sum_j t_j log(max(y_j, tiny))``
    sigmoid, identity output:  squared error  ``E = 1/2 sum_j (t_j - y_j)^2``
    ``tiny = np.finfo(dtype).tiny`` (the smallest normal number) keeps ``log`` finite when a
    probability underflows to 0; the gradient ignores this clamp.

Numerics
    sigmoid: ``e = exp(-|z|)``; ``y = 1 / (1 + e)`` for ``z >= 0`` and ``y = e / (1 + e)``
    for ``z < 0``. ``exp`` only sees arguments <= 0, so it never overflows (it underflows
    harmlessly to 0 for large |z|), and both tails keep full relative precision.
    softmax: the row maximum is subtracted before ``exp``.
    dtype: every array is computed in the dtype of the parameter buffer (float32 or float64);
    inputs are cast to it, and scalars are python numbers, so nothing is silently upcast.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "HIDDEN",
    "OUTPUT",
    "n_params",
    "layer_offsets",
    "views",
    "init_params",
    "sigmoid",
    "softmax",
    "encode_targets",
    "forward",
    "per_sample_loss",
    "loss_from_output",
    "gradients",
    "train_epoch",
]

HIDDEN = ("sigmoid", "tanh", "relu", "identity")
"""Hidden activations."""

OUTPUT = ("softmax", "sigmoid", "identity")
"""Output activations; softmax pairs with cross-entropy, the others with squared error."""

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# --------------------------------------------------------------------------- checks


def _check_sizes(sizes: Sequence[int]) -> list[int]:
    """Return ``sizes`` as a list of python ints (at least two, each >= 1)."""
    try:
        sizes = list(sizes)
    except TypeError:
        raise ValueError(f"sizes must be a sequence of layer widths, got {sizes!r}") from None
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output width, got {sizes}")
    checked = []
    for width in sizes:
        if isinstance(width, (bool, np.bool_)) or not isinstance(width, (int, np.integer)):
            raise ValueError(f"sizes must hold integers, got {sizes}")
        if width < 1:
            raise ValueError(f"every layer width must be >= 1, got {sizes}")
        checked.append(int(width))
    return checked


def _check_hidden(hidden: str) -> None:
    if hidden not in HIDDEN:
        raise ValueError(f"hidden must be one of {HIDDEN}, got {hidden!r}")


def _check_output(output: str) -> None:
    if output not in OUTPUT:
        raise ValueError(f"output must be one of {OUTPUT}, got {output!r}")


def _check_buffer(
    name: str, buf: np.ndarray, sizes: list[int], dtype: np.dtype | None = None
) -> None:
    """Check that ``buf`` is a 1-D C-contiguous float32/float64 buffer of P elements."""
    if not isinstance(buf, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(buf).__name__}")
    if buf.dtype not in _DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {buf.dtype}")
    if dtype is not None and buf.dtype != dtype:
        raise TypeError(f"{name} has dtype {buf.dtype}, the parameters have {dtype}")
    expected = n_params(sizes)
    if buf.ndim != 1 or buf.shape[0] != expected:
        raise ValueError(
            f"{name} must be 1-D with n_params(sizes) = {expected} elements, got shape {buf.shape}"
        )
    if not buf.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")


def _as_inputs(X: np.ndarray, sizes: list[int], dtype: np.dtype) -> np.ndarray:
    """Return X as a (B, sizes[0]) array of ``dtype`` (no copy when it already is one)."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != sizes[0]:
        raise ValueError(f"X must have shape (n, {sizes[0]}), got {X.shape}")
    return np.asarray(X, dtype=dtype)


def _as_targets(T: np.ndarray, n_rows: int, n_out: int, dtype: np.dtype) -> np.ndarray:
    """Return an encoded target T as a (n_rows, n_out) array of ``dtype``."""
    T = np.asarray(T)
    if T.shape != (n_rows, n_out):
        raise ValueError(f"T must have shape ({n_rows}, {n_out}), got {T.shape}")
    return np.asarray(T, dtype=dtype)


# --------------------------------------------------------------------------- layout


def n_params(sizes: Sequence[int]) -> int:
    """Number of parameters: ``sum_i sizes[i] * sizes[i+1] + sizes[i+1]``."""
    sizes = _check_sizes(sizes)
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def layer_offsets(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """Offsets into the flat buffer of ``W[i]`` and ``b[i]``, one pair per layer."""
    sizes = _check_sizes(sizes)
    offsets = []
    offset = 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        offsets.append((offset, offset + n_in * n_out))
        offset += n_in * n_out + n_out
    return offsets


def views(flat: np.ndarray, sizes: Sequence[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-layer views ``(W, b)`` into ``flat``: ``W[i]`` (I, O), ``b[i]`` (O,). No copies."""
    sizes = _check_sizes(sizes)
    _check_buffer("flat", flat, sizes)
    weights, biases = [], []
    for (w_offset, b_offset), n_in, n_out in zip(layer_offsets(sizes), sizes[:-1], sizes[1:]):
        W = flat[w_offset:b_offset].reshape(n_in, n_out)
        b = flat[b_offset:b_offset + n_out]
        assert np.may_share_memory(W, flat) and np.may_share_memory(b, flat)
        weights.append(W)
        biases.append(b)
    return weights, biases


def init_params(
    flat: np.ndarray, sizes: Sequence[int], hidden: str, rng: np.random.Generator
) -> None:
    """Fill ``flat`` in place: ``W[i] ~ U(-r, r)``, ``b[i] = 0``.

    ``r = sqrt(6 / (I + O))`` (Glorot), except ``r = sqrt(6 / I)`` (He) for the hidden
    layers (0..L-2) of a relu network. Layers are drawn in order, each as one
    ``rng.uniform(-r, r, size=(I, O))`` call in float64, then cast to ``flat.dtype``; the
    compiled backend draws in exactly this order, so one seed gives one network.
    """
    sizes = _check_sizes(sizes)
    _check_hidden(hidden)
    _check_buffer("flat", flat, sizes)
    weights, biases = views(flat, sizes)
    n_layers = len(weights)
    for i, (W, b) in enumerate(zip(weights, biases)):
        fan_in, fan_out = W.shape
        if hidden == "relu" and i < n_layers - 1:
            r = np.sqrt(6.0 / fan_in)
        else:
            r = np.sqrt(6.0 / (fan_in + fan_out))
        W[...] = rng.uniform(-r, r, size=(fan_in, fan_out))
        b[...] = 0


# --------------------------------------------------------------------------- activations


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function ``1 / (1 + exp(-z))``, overflow-free: see the module docstring."""
    z = np.asarray(z)
    e = np.exp(-np.abs(z))
    numerator = np.where(z >= 0, 1, e).astype(z.dtype, copy=False)
    return numerator / (1 + e)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise ``exp(z_j) / sum_k exp(z_k)`` of a (B, O) array, computed as ``exp(z - max z)``."""
    z = np.asarray(z)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _activate(z: np.ndarray, name: str) -> np.ndarray:
    """``f(z)`` for the activation ``name``; may overwrite and return ``z`` itself."""
    if name == "sigmoid":
        return sigmoid(z)
    if name == "tanh":
        return np.tanh(z, out=z)
    if name == "relu":
        return np.maximum(z, 0, out=z)
    if name == "softmax":
        return softmax(z)
    return z  # identity


def _times_derivative(delta: np.ndarray, a: np.ndarray, name: str) -> np.ndarray:
    """``delta * f'(z)`` in place on ``delta``, with f' written in terms of ``a = f(z)``.

    sigmoid ``a (1 - a)``, tanh ``1 - a^2``, relu ``[a > 0]``, identity 1.
    """
    if name == "sigmoid":
        delta *= a * (1 - a)
    elif name == "tanh":
        delta *= 1 - a * a
    elif name == "relu":
        delta *= a > 0
    return delta


# --------------------------------------------------------------------------- targets and loss


def encode_targets(y: np.ndarray, n_out: int, output: str, dtype: np.dtype) -> np.ndarray:
    """Targets T (n, n_out) in ``dtype`` from labels or a target array.

    - 1-D integer labels in [0, n_out): one-hot rows, ``T[r, y[r]] = 1``.
    - 2-D (n, n_out) real array: a cast copy. Must be finite; with ``output="softmax"`` each
      row must be a probability distribution (non-negative, summing to 1), which the
      cross-entropy gradient ``y - t`` assumes.
    Anything else raises ValueError naming the problem.
    """
    _check_output(output)
    dtype = np.dtype(dtype)
    if dtype not in _DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    if isinstance(n_out, (bool, np.bool_)) or not isinstance(n_out, (int, np.integer)) or n_out < 1:
        raise ValueError(f"n_out must be a positive integer, got {n_out!r}")
    n_out = int(n_out)
    y = np.asarray(y)

    if y.ndim == 1:
        if y.dtype.kind not in "iu":  # (timedelta64 counts as a numpy integer type)
            raise ValueError(
                f"1-D targets must be integer class labels, got dtype {y.dtype}; pass "
                f"real-valued targets as a 2-D (n, {n_out}) array"
            )
        classes = max(n_out, 2)  # one output unit: two classes, the unit says "class 1"
        if y.size and (y.min() < 0 or y.max() >= classes):
            raise ValueError(
                f"class labels must lie in [0, {classes}), got values in [{y.min()}, {y.max()}]"
            )
        if n_out == 1:
            return y.astype(dtype).reshape(-1, 1)
        T = np.zeros((y.shape[0], n_out), dtype=dtype)
        T[np.arange(y.shape[0]), y] = 1
        return T

    if y.ndim == 2:
        if y.shape[1] != n_out:
            raise ValueError(f"2-D targets must have {n_out} columns, got shape {y.shape}")
        if y.dtype.kind not in "biuf":
            raise ValueError(f"2-D targets must be real numbers, got dtype {y.dtype}")
        if not np.all(np.isfinite(y)):
            raise ValueError("targets must be finite (found NaN or inf)")
        with np.errstate(over="ignore"):
            T = np.array(y, dtype=dtype, copy=True, order="C")
        if not np.all(np.isfinite(T)):
            raise ValueError(f"targets hold values beyond the range of {dtype}")
        if output == "softmax" and T.size:
            row_sums = T.sum(axis=1, dtype=np.float64)
            tolerance = 16 * n_out * float(np.finfo(dtype).eps)
            if T.min() < 0 or np.max(np.abs(row_sums - 1)) > tolerance:
                raise ValueError(
                    "softmax targets must be probability rows (non-negative, each summing to 1)"
                )
        return T

    raise ValueError(
        f"targets must be 1-D integer labels or a 2-D (n, {n_out}) array, got shape {y.shape}"
    )


def predicted_class(out: np.ndarray) -> np.ndarray:
    """The class of each row: the argmax (first maximum on ties); with one output
    column, 1 where it is >= 1/2."""
    if out.shape[1] == 1:
        return (out[:, 0] >= 0.5).astype(np.intp)
    return out.argmax(axis=1)


def per_sample_loss(out: np.ndarray, T: np.ndarray, output: str) -> np.ndarray:
    """Loss of each row, shape (B,): ``-sum t log max(y, tiny)`` or ``1/2 sum (t - y)^2``."""
    _check_output(output)
    out = np.asarray(out)
    T = np.asarray(T, dtype=out.dtype)
    if out.ndim != 2 or T.shape != out.shape:
        raise ValueError(f"out and T must be 2-D of one shape, got {out.shape} and {T.shape}")
    if output == "softmax":
        tiny = np.finfo(out.dtype).tiny
        return -(T * np.log(np.maximum(out, tiny))).sum(axis=1)
    residual = T - out
    return 0.5 * (residual * residual).sum(axis=1)


def loss_from_output(out: np.ndarray, T: np.ndarray, output: str) -> float:
    """Mean over the rows of :func:`per_sample_loss`, as a python float."""
    losses = per_sample_loss(out, T, output)
    if losses.shape[0] == 0:
        raise ValueError("the loss of an empty batch is undefined")
    return float(losses.mean())


# --------------------------------------------------------------------------- passes


def forward(
    flat: np.ndarray, sizes: Sequence[int], X: np.ndarray, hidden: str, output: str
) -> list[np.ndarray]:
    """Activations ``[a0 = X, a1, ..., aL]`` with ``a[i+1] = f(a[i] @ W[i] + b[i])``.

    X (B, sizes[0]) is cast to ``flat.dtype``. Cost O(B P).
    """
    sizes = _check_sizes(sizes)
    _check_hidden(hidden)
    _check_output(output)
    _check_buffer("flat", flat, sizes)
    return _forward(flat, sizes, _as_inputs(X, sizes, flat.dtype), hidden, output)


def _forward(
    flat: np.ndarray, sizes: list[int], X: np.ndarray, hidden: str, output: str
) -> list[np.ndarray]:
    """:func:`forward` without the argument checks."""
    weights, biases = views(flat, sizes)
    activations = [X]
    n_layers = len(weights)
    for i, (W, b) in enumerate(zip(weights, biases)):
        z = activations[-1] @ W
        z += b
        activations.append(_activate(z, hidden if i < n_layers - 1 else output))
    return activations


def _output_delta(out: np.ndarray, T: np.ndarray, output: str) -> np.ndarray:
    """``dE/dz`` at the output layer, (B, O), for E the mean loss over the B rows.

    softmax + cross-entropy and identity + squared error: ``(y - t) / B``;
    sigmoid + squared error: ``(y - t) y (1 - y) / B``.
    """
    batch = out.shape[0]
    delta = out - T
    if output == "sigmoid":
        delta *= out * (1 - out)
    delta /= batch
    return delta


def _backward(
    grad_out: np.ndarray,
    flat: np.ndarray,
    sizes: list[int],
    activations: list[np.ndarray],
    T: np.ndarray,
    hidden: str,
    output: str,
) -> None:
    """Back-propagate from the output delta and write dE/dparams into ``grad_out``."""
    weights, _ = views(flat, sizes)
    grad_W, grad_b = views(grad_out, sizes)
    delta = _output_delta(activations[-1], T, output)
    for i in range(len(weights) - 1, -1, -1):
        np.matmul(activations[i].T, delta, out=grad_W[i])
        np.sum(delta, axis=0, out=grad_b[i])
        if i > 0:
            delta = _times_derivative(delta @ weights[i].T, activations[i], hidden)


def gradients(
    flat: np.ndarray,
    sizes: Sequence[int],
    X: np.ndarray,
    T: np.ndarray,
    hidden: str,
    output: str,
    grad_out: np.ndarray,
) -> float:
    """Write ``dE/dparams`` into ``grad_out`` (flat layout) and return E, the mean loss over X.

    Back-propagation, with ``delta[i] = dE/dz[i]`` for the pre-activations ``z[i]`` of
    ``a[i]``: the output delta is ``(y - t)/B`` (softmax + cross-entropy, identity +
    squared error) or ``(y - t) y (1 - y)/B`` (sigmoid + squared error); then, per layer
    from the last, ``dW[i] = a[i]^T delta[i+1]``, ``db[i] = sum_rows delta[i+1]`` and
    ``delta[i] = (delta[i+1] W[i]^T) * f'(a[i])``. For sigmoid units and squared error this
    is the lecture-note rule ``dE/dw_kj = -delta_j y_k`` (their delta has the opposite sign,
    no 1/B). X (B, sizes[0]), T (B, sizes[-1]) encoded targets. Cost O(B P).
    """
    sizes = _check_sizes(sizes)
    _check_hidden(hidden)
    _check_output(output)
    _check_buffer("flat", flat, sizes)
    _check_buffer("grad_out", grad_out, sizes, flat.dtype)
    X = _as_inputs(X, sizes, flat.dtype)
    if X.shape[0] == 0:
        raise ValueError("gradients of an empty batch are undefined")
    T = _as_targets(T, X.shape[0], sizes[-1], flat.dtype)
    activations = _forward(flat, sizes, X, hidden, output)
    loss = loss_from_output(activations[-1], T, output)
    _backward(grad_out, flat, sizes, activations, T, hidden, output)
    return loss


def train_epoch(
    flat: np.ndarray,
    state: np.ndarray,
    sizes: Sequence[int],
    X: np.ndarray,
    T: np.ndarray,
    order: np.ndarray,
    batch_size: int,
    hidden: str,
    output: str,
    *,
    lr: float,
    momentum: float,
    rule: str,
    dampening: float,
    weight_decay: float,
    grad_buf: np.ndarray,
) -> tuple[float, int, int, bool]:
    """One epoch of (mini-batch) gradient descent with momentum, in place on flat and state.

    ``order`` (int64 row indices, normally a permutation of the rows of X) is walked in
    consecutive chunks of ``batch_size`` rows (the last chunk may be smaller). For each
    chunk, at the current weights: one forward pass; the per-sample losses are added to
    ``sum_loss`` and the rows with ``argmax(y) == argmax(t)`` (first maximum on ties) to
    ``n_correct``; the gradient of the chunk's mean loss goes into ``grad_buf``; then
    ``momcore.reference.momentum_step(flat, grad_buf, state, lr=lr, momentum=momentum,
    rule=rule, dampening=dampening, weight_decay=weight_decay)``. ``batch_size=1`` is online
    learning. ``n_correct`` is meaningful for classification only (with a single output
    column every row counts as correct). A chunk whose loss is not finite stops the epoch
    before its update. Returns ``(sum_loss, n_correct, n_steps, stopped)``: the losses of
    the applied steps, the correct rows (including the stopping chunk's), the number of
    steps applied, and whether a non-finite loss stopped the epoch. Cost O(n P).
    """
    # Imported here so that the forward/backward half of this module does not depend on
    # the optimizer module.
    from momcore.reference import momentum_step

    sizes = _check_sizes(sizes)
    _check_hidden(hidden)
    _check_output(output)
    _check_buffer("flat", flat, sizes)
    _check_buffer("state", state, sizes, flat.dtype)
    _check_buffer("grad_buf", grad_buf, sizes, flat.dtype)
    X = _as_inputs(X, sizes, flat.dtype)
    T = _as_targets(T, X.shape[0], sizes[-1], flat.dtype)
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    batch_size = int(batch_size)
    order = np.asarray(order)
    if order.ndim != 1 or not np.issubdtype(order.dtype, np.integer):
        raise ValueError(
            f"order must be a 1-D integer array, got {order.dtype} of shape {order.shape}"
        )
    if order.size and (order.min() < 0 or order.max() >= X.shape[0]):
        raise ValueError(
            f"order must index the rows of X, got values outside [0, {X.shape[0]})"
        )

    sum_loss = 0.0
    n_correct = n_steps = 0
    for start in range(0, order.shape[0], batch_size):
        rows = order[start:start + batch_size]
        X_batch, T_batch = X[rows], T[rows]
        activations = _forward(flat, sizes, X_batch, hidden, output)
        out = activations[-1]
        batch_loss = float(per_sample_loss(out, T_batch, output).sum())
        n_correct += int(np.count_nonzero(predicted_class(out) == predicted_class(T_batch)))
        if not np.isfinite(batch_loss):
            return sum_loss, n_correct, n_steps, True
        sum_loss += batch_loss
        _backward(grad_buf, flat, sizes, activations, T_batch, hidden, output)
        momentum_step(
            flat,
            grad_buf,
            state,
            lr=lr,
            momentum=momentum,
            rule=rule,
            dampening=dampening,
            weight_decay=weight_decay,
        )
        n_steps += 1
    return sum_loss, n_correct, n_steps, False

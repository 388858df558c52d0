"""Pure-numpy multilayer perceptron: the reference backend of :class:`momcore.MLP`.

Everything the compiled backend computes is defined here first, in plain numpy, and the
tests hold the compiled backend to these results. The parameter layout, initialisation,
target encoding, predictions and accuracy counting, which both backends share, live in
:mod:`momcore._network`; names of activations and losses in :mod:`momcore.registry`.

Dimension letters: B = batch rows, I = inputs of a layer (``sizes[i]``), O = outputs of a
layer (``sizes[i + 1]``), L = number of layers (``len(sizes) - 1``), P = ``n_params(sizes)``.

Forward pass
    Layer i computes ``a[i+1] = f(a[i] @ W[i] + b[i])`` with ``a[0] = X``; f is the hidden
    activation for layers 0..L-2 and the output activation for layer L-1.

Losses (per sample, y the outputs and t the targets of one row; the loss E of a batch is
the mean over its B rows; ``tiny = np.finfo(dtype).tiny``, the smallest normal number)
    cross_entropy (softmax output):
        ``-sum_j t_j log max(y_j, tiny)``;                       ``dE/dz = (y - t) / B``
    binary_cross_entropy (sigmoid output):
        ``-sum_j [t_j log max(y_j, tiny) + (1 - t_j) log max(1 - y_j, tiny)]``;
                                                                  ``dE/dz = (y - t) / B``
    squared_error (sigmoid or identity output):
        ``1/2 sum_j (t_j - y_j)^2``;                  ``dE/dz = (y - t) f'(z) / B``
        with ``f'(z) = y (1 - y)`` for sigmoid and 1 for identity.
    z is the output layer's pre-activation. The clamp to ``tiny`` keeps ``log`` finite when
    an output underflows to 0 (or reaches 1, for ``1 - y``); the gradient ignores it. A
    term whose coefficient (``t_j`` or ``1 - t_j``) is 0 adds nothing, so outputs of
    exactly 0 or 1 never produce ``0 * inf``. ``max`` propagates NaN (``np.maximum``, not
    C's ``fmax``), so a NaN output gives a NaN loss, which stops training. The cross-entropy gradient ``y - t`` assumes
    target rows that sum to 1; the binary cross-entropy one holds for any t in [0, 1].
    Each function takes the ``output`` activation and a ``loss`` name; ``loss=None`` means
    the output's default (``registry.DEFAULT_LOSS``: softmax -> cross_entropy, sigmoid and
    identity -> squared_error), and a loss that does not pair with the output is a
    ValueError.

L2 penalty
    ``l2 >= 0`` adds ``l2/(2B) sum_i ||W_i||^2`` (the weight blocks, not the biases) to the
    loss E of a batch of B rows, as scikit-learn's ``alpha`` does: ``dE/dW_i`` gains
    ``(l2/B) W_i``; the biases' gradients are unchanged.

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

from momcore._network import (
    check_accuracy,
    check_buffer,
    check_sizes,
    count_correct,
    default_accuracy,
    n_params,
    views,
    weight_squares,
)
from momcore.registry import check_name, loss_for

__all__ = [
    "sigmoid",
    "softmax",
    "forward",
    "per_sample_loss",
    "loss_from_output",
    "gradients",
    "curvature",
    "train_epoch",
    "weight_squares",
]


# --------------------------------------------------------------------------- checks


def _check_activations(hidden: str, output: str) -> None:
    check_name("hidden", hidden)
    check_name("output", output)


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


# --------------------------------------------------------------------------- losses


def per_sample_loss(
    out: np.ndarray, T: np.ndarray, output: str, loss: str | None = None
) -> np.ndarray:
    """Loss of each row, shape (B,), for outputs ``out`` and targets ``T`` (B, O): see the
    module docstring (``loss=None``: the default loss of ``output``)."""
    loss = loss_for(output, loss)
    out = np.asarray(out)
    T = np.asarray(T, dtype=out.dtype)
    if out.ndim != 2 or T.shape != out.shape:
        raise ValueError(f"out and T must be 2-D of one shape, got {out.shape} and {T.shape}")
    if loss == "squared_error":
        residual = T - out
        return 0.5 * (residual * residual).sum(axis=1)
    tiny = np.finfo(out.dtype).tiny
    # With the clamp both logs are finite, so a zero coefficient gives a zero term.
    log_likelihood = T * np.log(np.maximum(out, tiny))
    if loss == "binary_cross_entropy":
        log_likelihood += (1 - T) * np.log(np.maximum(1 - out, tiny))
    return -log_likelihood.sum(axis=1)


def loss_from_output(
    out: np.ndarray, T: np.ndarray, output: str, loss: str | None = None
) -> float:
    """Mean over the rows of :func:`per_sample_loss`, as a python float."""
    losses = per_sample_loss(out, T, output, loss)
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
    sizes = check_sizes(sizes)
    _check_activations(hidden, output)
    check_buffer("flat", flat, sizes)
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


def _output_delta(out: np.ndarray, T: np.ndarray, output: str, loss: str) -> np.ndarray:
    """``dE/dz`` at the output layer, (B, O), for E the mean ``loss`` over the B rows.

    cross_entropy, binary_cross_entropy: ``(y - t) / B``; squared_error:
    ``(y - t) f'(z) / B``, i.e. ``(y - t) y (1 - y) / B`` for a sigmoid output and
    ``(y - t) / B`` for an identity output.
    """
    batch = out.shape[0]
    delta = out - T
    if loss == "squared_error" and output == "sigmoid":
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
    loss: str,
    l2: float = 0.0,
) -> None:
    """Back-propagate from the output delta and write dE/dparams into ``grad_out``
    (with the l2 term ``(l2/B) W_i`` on the weights)."""
    weights, _ = views(flat, sizes)
    grad_W, grad_b = views(grad_out, sizes)
    delta = _output_delta(activations[-1], T, output, loss)
    decay = l2 / activations[0].shape[0]
    for i in range(len(weights) - 1, -1, -1):
        np.matmul(activations[i].T, delta, out=grad_W[i])
        if l2:
            grad_W[i] += decay * weights[i]
        np.sum(delta, axis=0, out=grad_b[i])
        if i > 0:
            delta = _times_derivative(delta @ weights[i].T, activations[i], hidden)


def _forward_checked(flat, sizes, X, T, hidden, output, loss, out, empty) -> tuple:
    """The checks that gradients and curvature share, then the forward pass: returns
    (sizes, loss, X, T, activations, mean loss). ``out`` is (name, buffer) of the
    caller's output; ``empty`` the message for an empty batch."""
    sizes = check_sizes(sizes)
    _check_activations(hidden, output)
    loss = loss_for(output, loss)
    check_buffer("flat", flat, sizes)
    check_buffer(out[0], out[1], sizes, flat.dtype)
    X = _as_inputs(X, sizes, flat.dtype)
    if X.shape[0] == 0:
        raise ValueError(empty)
    T = _as_targets(T, X.shape[0], sizes[-1], flat.dtype)
    activations = _forward(flat, sizes, X, hidden, output)
    return sizes, loss, X, T, activations, loss_from_output(activations[-1], T, output, loss)


def gradients(
    flat: np.ndarray,
    sizes: Sequence[int],
    X: np.ndarray,
    T: np.ndarray,
    hidden: str,
    output: str,
    grad_out: np.ndarray,
    *,
    loss: str | None = None,
    l2: float = 0.0,
) -> float:
    """Write ``dE/dparams`` into ``grad_out`` (flat layout) and return E, the mean loss over X
    plus the l2 term ``l2/(2B) sum_i ||W_i||^2`` (see the module docstring).

    Back-propagation, with ``delta[i] = dE/dz[i]`` for the pre-activations ``z[i]`` of
    ``a[i]``: the output delta is that of the module docstring for ``loss`` (None: the
    default loss of ``output``); then, per layer from the last, ``dW[i] = a[i]^T delta[i+1]``,
    ``db[i] = sum_rows delta[i+1]`` and ``delta[i] = (delta[i+1] W[i]^T) * f'(a[i])``. For
    sigmoid units and squared error this is the lecture-note rule ``dE/dw_kj = -delta_j y_k``
    (their delta has the opposite sign, no 1/B). X (B, sizes[0]), T (B, sizes[-1]) encoded
    targets. Cost O(B P).
    """
    sizes, loss, X, T, activations, mean_loss = _forward_checked(
        flat, sizes, X, T, hidden, output, loss, ("grad_out", grad_out),
        "gradients of an empty batch are undefined")
    if l2:
        mean_loss += 0.5 * l2 * weight_squares(flat, sizes) / X.shape[0]
    _backward(grad_out, flat, sizes, activations, T, hidden, output, loss, l2)
    return mean_loss


def _output_curvature(out: np.ndarray, output: str, loss: str) -> np.ndarray:
    """``h = d^2E/dz^2`` at the output layer in the Gauss-Newton diagonal approximation,
    (B, O), for E the mean ``loss`` over the B rows.

    softmax + cross_entropy: ``y (1 - y) / B`` (the diagonal of the softmax Gauss-Newton
    block ``diag(y) - y y^T``; the off-diagonal ``-y_i y_j`` are dropped); sigmoid +
    binary_cross_entropy: ``y (1 - y) / B`` (exact); sigmoid + squared_error:
    ``(y (1 - y))^2 / B`` (``f'^2``: the residual term ``(y - t) f''`` is dropped);
    identity + squared_error: ``1 / B`` (exact).
    """
    batch = out.shape[0]
    if loss == "squared_error" and output == "identity":
        return np.full_like(out, 1 / batch)
    d = out * (1 - out)
    if loss == "squared_error":
        d = d * d
    return d / batch


def _times_derivative_squared(h: np.ndarray, a: np.ndarray, name: str) -> np.ndarray:
    """``h * f'(z)^2`` in place on ``h``, with f' in terms of ``a = f(z)``."""
    if name == "sigmoid":
        d = a * (1 - a)
        h *= d * d
    elif name == "tanh":
        d = 1 - a * a
        h *= d * d
    elif name == "relu":
        h *= a > 0
    return h


def curvature(
    flat: np.ndarray,
    sizes: Sequence[int],
    X: np.ndarray,
    T: np.ndarray,
    hidden: str,
    output: str,
    curv_out: np.ndarray,
    *,
    loss: str | None = None,
    l2: float = 0.0,
) -> float:
    """Write the diagonal Gauss-Newton curvature of E into ``curv_out`` (flat layout) and
    return E, the mean loss over X plus the l2 term ``l2/(2B) sum_i ||W_i||^2``, whose
    exact curvature ``l2/B`` is added to every weight entry (not the biases), scaled as
    :func:`gradients` scales its gradient.

    Becker and LeCun's second-order back-propagation: ``h[i] = d^2E/dz[i]^2`` for each
    unit's pre-activation, starting from :func:`_output_curvature` and back-propagated with
    the off-diagonal terms dropped, ``h[i] = (h[i+1] (W[i]**2)^T) * f'(a[i])**2`` (the
    ``f''`` term of the exact Hessian dropped too, as in Gauss-Newton); then
    ``c(W[i]) = (a[i]**2)^T h[i+1]`` and ``c(b[i]) = sum_rows h[i+1]``. Every entry is
    >= 0. Equal to the exact Hessian diagonal for a network that is linear in its outputs
    along each single path (identity units, squared error, at most one hidden layer).
    Cost: twice the gradient's products, O(B P).
    """
    sizes, loss, X, T, activations, mean_loss = _forward_checked(
        flat, sizes, X, T, hidden, output, loss, ("curv_out", curv_out),
        "the curvature of an empty batch is undefined")
    weights, _ = views(flat, sizes)
    curv_W, curv_b = views(curv_out, sizes)
    h = _output_curvature(activations[-1], output, loss)
    for i in range(len(weights) - 1, -1, -1):
        a = activations[i]
        np.matmul((a * a).T, h, out=curv_W[i])
        np.sum(h, axis=0, out=curv_b[i])
        if i > 0:
            h = _times_derivative_squared(h @ (weights[i] * weights[i]).T, a, hidden)
    if l2:
        mean_loss += 0.5 * l2 * weight_squares(flat, sizes) / X.shape[0]
        for c in curv_W:
            c += l2 / X.shape[0]
    return mean_loss


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
    loss: str | None = None,
    accuracy: str | None = None,
    l2: float = 0.0,
) -> tuple[float, int, int, bool]:
    """One epoch of (mini-batch) gradient descent with momentum, in place on flat and state.

    ``order`` (int64 row indices, normally a permutation of the rows of X) is walked in
    consecutive chunks of ``batch_size`` rows (the last chunk may be smaller). For each
    chunk, at the current weights: one forward pass; the per-sample losses (``loss``, None: the
    default loss of ``output``) are added to ``sum_loss`` and the correct rows,
    ``count_correct(y, t, accuracy)`` (None: ``default_accuracy(sizes[-1])``), to
    ``n_correct``, and with ``l2`` the chunk's ``l2/2 sum_i ||W_i||^2`` (its l2 term times
    its rows, as scikit-learn accumulates it) to ``sum_loss``; the gradient of the chunk's
    E (mean loss plus l2 term) goes into ``grad_buf``; then
    ``momcore.reference.momentum_step(flat, grad_buf, state, lr=lr, momentum=momentum,
    rule=rule, dampening=dampening, weight_decay=weight_decay)``. ``batch_size=1`` is online
    learning. ``n_correct`` is meaningful for classification only. A chunk whose loss is not finite stops the epoch
    before its update. Returns ``(sum_loss, n_correct, n_steps, stopped)``: the losses of
    the applied steps, the correct rows (including the stopping chunk's), the number of
    steps applied, and whether a non-finite loss stopped the epoch. Cost O(n P).
    """
    # Imported here so that the forward/backward half of this module does not depend on
    # the optimizer module.
    from momcore.reference import momentum_step

    sizes = check_sizes(sizes)
    _check_activations(hidden, output)
    loss = loss_for(output, loss)
    accuracy = default_accuracy(sizes[-1]) if accuracy is None else check_accuracy(accuracy)
    check_buffer("flat", flat, sizes)
    check_buffer("state", state, sizes, flat.dtype)
    check_buffer("grad_buf", grad_buf, sizes, flat.dtype)
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
        batch_loss = float(per_sample_loss(out, T_batch, output, loss).sum())
        if l2:
            batch_loss += 0.5 * l2 * weight_squares(flat, sizes)
        n_correct += count_correct(out, T_batch, accuracy)
        if not np.isfinite(batch_loss):
            return sum_loss, n_correct, n_steps, True
        sum_loss += batch_loss
        _backward(grad_buf, flat, sizes, activations, T_batch, hidden, output, loss, l2)
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

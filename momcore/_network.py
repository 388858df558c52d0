"""What both MLP backends share: the parameter layout, initialisation, target encoding,
predictions and accuracy counting.

The compiled backend and the numpy reference (:mod:`momcore._mlp_numpy`) both build on this
module, so that the reference can change without touching the fast path. Names of
activations and losses come from :mod:`momcore.registry`.

Dimension letters: B = batch rows, I = inputs of a layer (``sizes[i]``), O = outputs of a
layer (``sizes[i + 1]``), L = number of layers (``len(sizes) - 1``), P = ``n_params(sizes)``.

Flat layout
    All parameters live in one 1-D buffer, in the order W0, b0, W1, b1, ..., W[L-1], b[L-1].
    ``W[i]`` is (sizes[i], sizes[i+1]) row-major and ``b[i]`` is (sizes[i+1],). Gradients
    and optimizer state use the same layout, so one momentum step updates the whole network.

Targets (:func:`encode_targets`)
    1-D integer labels: one-hot rows, or a single 0/1 column when there is one output unit
    (two classes; the unit says "class 1"). 2-D (n, O) arrays: real targets, cast; with
    cross-entropy each row is a probability distribution, with binary cross-entropy every
    value lies in [0, 1] (0/1 indicator rows for multilabel classification, or soft targets).

Predictions and accuracy
    A row's class is its argmax (first maximum on ties); with one output unit, 1 where the
    unit is >= 1/2. Multilabel outputs threshold every unit at 1/2. Accuracy is counted
    apart from the loss, by one of :data:`ACCURACY`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from momcore import _core, registry
from momcore.registry import check_name, loss_for

__all__ = [
    "ACCURACY",
    "DTYPES",
    "check_sizes",
    "check_buffer",
    "n_params",
    "layer_offsets",
    "views",
    "weight_squares",
    "init_params",
    "encode_targets",
    "predicted_class",
    "predict_labels",
    "default_accuracy",
    "check_accuracy",
    "count_correct",
]

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
"""The dtypes of parameter buffers."""

ACCURACY = registry.ACCURACY
"""How rows are counted as correct: not at all; the argmax of the outputs equals the
argmax of the targets; every unit is on the same side of 1/2 as its target."""


# --------------------------------------------------------------------------- checks


def check_sizes(sizes: Sequence[int]) -> list[int]:
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


def check_buffer(
    name: str, buf: np.ndarray, sizes: list[int], dtype: np.dtype | None = None
) -> None:
    """Check that ``buf`` is a 1-D C-contiguous float32/float64 buffer of P elements."""
    if not isinstance(buf, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(buf).__name__}")
    if buf.dtype not in DTYPES:
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


# --------------------------------------------------------------------------- layout


def n_params(sizes: Sequence[int]) -> int:
    """Number of parameters: ``sum_i sizes[i] * sizes[i+1] + sizes[i+1]``."""
    sizes = check_sizes(sizes)
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def layer_offsets(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """Offsets into the flat buffer of ``W[i]`` and ``b[i]``, one pair per layer."""
    sizes = check_sizes(sizes)
    offsets = []
    offset = 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        offsets.append((offset, offset + n_in * n_out))
        offset += n_in * n_out + n_out
    return offsets


def views(flat: np.ndarray, sizes: Sequence[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-layer views ``(W, b)`` into ``flat``: ``W[i]`` (I, O), ``b[i]`` (O,). No copies."""
    sizes = check_sizes(sizes)
    check_buffer("flat", flat, sizes)
    weights, biases = [], []
    for (w_offset, b_offset), n_in, n_out in zip(layer_offsets(sizes), sizes[:-1], sizes[1:]):
        W = flat[w_offset:b_offset].reshape(n_in, n_out)
        b = flat[b_offset:b_offset + n_out]
        assert np.may_share_memory(W, flat) and np.may_share_memory(b, flat)
        weights.append(W)
        biases.append(b)
    return weights, biases


def weight_squares(flat: np.ndarray, sizes: Sequence[int]) -> float:
    """``sum_i ||W_i||^2`` over the weight blocks of ``flat`` (not the biases): the
    squares of the L2 penalty (``MLP(l2=...)``)."""
    weights, _ = views(flat, sizes)
    return sum(float(np.dot(W.ravel(), W.ravel())) for W in weights)


def init_params(
    flat: np.ndarray, sizes: Sequence[int], hidden: str, rng: np.random.Generator
) -> None:
    """Fill ``flat`` in place: ``W[i] ~ U(-r, r)``, ``b[i] = 0``.

    ``r = sqrt(6 / (I + O))`` (Glorot), except ``r = sqrt(6 / I)`` (He) for the hidden
    layers (0..L-2) of a relu network. Layers are drawn in order, each as one
    ``rng.uniform(-r, r, size=(I, O))`` call in float64, then cast to ``flat.dtype``; the
    compiled backend draws in exactly this order, so one seed gives one network.
    """
    sizes = check_sizes(sizes)
    check_name("hidden", hidden)
    check_buffer("flat", flat, sizes)
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


# --------------------------------------------------------------------------- targets


def encode_targets(
    y: np.ndarray, n_out: int, output: str, dtype: np.dtype, loss: str | None = None
) -> np.ndarray:
    """Targets T (n, n_out) in ``dtype`` from labels or a target array.

    ``loss`` is a registry name that pairs with ``output``; None means the output's
    default loss (``registry.DEFAULT_LOSS``).

    - 1-D integer labels: in [0, n_out) give one-hot rows, ``T[r, y[r]] = 1``; with
      ``n_out = 1`` they are 0/1 and give one 0/1 column.
    - 2-D (n, n_out) real array: a cast copy. Must be finite; with cross-entropy each row
      must be a probability distribution (non-negative, summing to 1), which the gradient
      ``y - t`` assumes; with binary cross-entropy every value must lie in [0, 1] (0/1
      indicator rows for multilabel classification, or soft targets).
    Anything else raises ValueError naming the problem.
    """
    loss = loss_for(output, loss)
    dtype = np.dtype(dtype)
    if dtype not in DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    if isinstance(n_out, (bool, np.bool_)) or not isinstance(n_out, (int, np.integer)) or n_out < 1:
        raise ValueError(f"n_out must be a positive integer, got {n_out!r}")
    return targets(np.asarray(y), int(n_out), dtype, loss)


def targets(y: np.ndarray, n_out: int, dtype: np.dtype, loss: str) -> np.ndarray:
    """:func:`encode_targets` of an array ``y`` for a network whose ``n_out`` (an int >=
    1), ``dtype`` (float32 or float64) and ``loss`` (a registry name) are checked
    already: the checks of ``y`` and the encoding, nothing else."""
    if y.ndim == 1:
        if y.dtype.kind not in "iu":  # (timedelta64 counts as a numpy integer type)
            raise ValueError(
                f"1-D targets must be integer class labels, got dtype {y.dtype}; pass "
                f"real-valued targets as a 2-D (n, {n_out}) array"
            )
        classes = max(n_out, 2)  # one output unit: two classes, the unit says "class 1"
        if n_out > 1:
            # One pass in C; a label outside [0, n_out) makes it return None (uint64
            # labels beyond int64 become negative: outside too).
            T = _core.one_hot(np.ascontiguousarray(y, np.int64), n_out, dtype)
            if T is not None:
                return T
        if y.size and (y.min() < 0 or y.max() >= classes):
            raise ValueError(
                f"class labels must lie in [0, {classes}), got values in [{y.min()}, {y.max()}]"
            )
        return y.astype(dtype).reshape(-1, 1)

    if y.ndim == 2:
        if y.shape[1] != n_out:
            raise ValueError(f"2-D targets must have {n_out} columns, got shape {y.shape}")
        if y.dtype.kind not in "biuf":
            raise ValueError(f"2-D targets must be real numbers, got dtype {y.dtype}")
        # booleans and integers are finite, and stay finite in float32 and float64
        exact = y.dtype.kind in "biu"
        if not exact and not np.all(np.isfinite(y)):
            raise ValueError("targets must be finite (found NaN or inf)")
        with np.errstate(over="ignore"):
            T = np.array(y, dtype=dtype, copy=True, order="C")
        if not exact and not np.all(np.isfinite(T)):
            raise ValueError(f"targets hold values beyond the range of {dtype}")
        if loss == "cross_entropy" and T.size:
            row_sums = T.sum(axis=1, dtype=np.float64)
            tolerance = 16 * n_out * float(np.finfo(dtype).eps)
            if T.min() < 0 or np.max(np.abs(row_sums - 1)) > tolerance:
                raise ValueError(
                    "softmax targets must be probability rows (non-negative, each summing to 1)"
                )
        # Checked on y, not on T: a value just outside [0, 1] must not round into it.
        if loss == "binary_cross_entropy" and y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(
                f"binary cross-entropy targets must lie in [0, 1] (0/1 indicators for "
                f"multilabel classification, or probabilities), got values in "
                f"[{y.min()}, {y.max()}]"
            )
        return T

    raise ValueError(
        f"targets must be 1-D integer labels or a 2-D (n, {n_out}) array, got shape {y.shape}"
    )


# --------------------------------------------------------------------------- predictions


def predicted_class(out: np.ndarray) -> np.ndarray:
    """The class of each row of ``out`` (B, O), shape (B,): the argmax (first maximum on
    ties); with one output column, 1 where it is >= 1/2."""
    if out.shape[1] == 1:
        return (out[:, 0] >= 0.5).astype(np.intp)
    return out.argmax(axis=1)


def predict_labels(out: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """Labels from outputs ``out`` (B, O): with ``multilabel``, a (B, O) int 0/1 matrix that
    is 1 where a unit is >= 1/2; otherwise :func:`predicted_class`, shape (B,)."""
    out = np.asarray(out)
    if out.ndim != 2:
        raise ValueError(f"outputs must be 2-D (n, n_out), got shape {out.shape}")
    if multilabel:
        return (out >= 0.5).astype(np.intp)
    return predicted_class(out)


# --------------------------------------------------------------------------- accuracy


def default_accuracy(n_out: int) -> str:
    """The accuracy of a network with ``n_out`` output units when none is named:
    ``"argmax"`` for several units, ``"threshold"`` for one (binary classification)."""
    return "argmax" if n_out > 1 else "threshold"


def check_accuracy(accuracy: str) -> str:
    """``accuracy`` if it is one of :data:`ACCURACY`; a ValueError listing them otherwise."""
    return check_name("accuracy", accuracy)


def count_correct(out: np.ndarray, T: np.ndarray, accuracy: str) -> int:
    """The number of correct rows of outputs ``out`` (B, O) against targets ``T`` (B, O).

    ``"none"``: 0. ``"argmax"``: rows with ``argmax y == argmax t`` (first maximum on ties).
    ``"threshold"``: rows where every unit has ``(y >= 1/2) == (t >= 1/2)``.
    """
    check_accuracy(accuracy)
    out = np.asarray(out)
    T = np.asarray(T)
    if out.ndim != 2 or T.shape != out.shape:
        raise ValueError(f"out and T must be 2-D of one shape, got {out.shape} and {T.shape}")
    if accuracy == "none":
        return 0
    if accuracy == "argmax":
        return int(np.count_nonzero(out.argmax(axis=1) == T.argmax(axis=1)))
    return int(np.count_nonzero(np.all((out >= 0.5) == (T >= 0.5), axis=1)))

"""Pure-numpy reference of momcore's momentum kernels: the ground truth.

Same names, signatures, checks and results as the compiled functions. Each rule
is written with numpy's in-place operators in the same order of operations as
the C kernel, so the two agree bit for bit. This module never imports the
compiled core.
"""
from __future__ import annotations

from collections.abc import Sequence
from math import isfinite
from numbers import Real

import numpy as np

from momcore import _mapped, registry

RULES = tuple(registry.RULES)
NONFINITE = registry.NONFINITE
_DAMPENING_RULES = registry.rules_taking("dampening")
_MOMENTA_RULES = registry.rules_taking("momenta")


def _real(x: object, name: str) -> float:
    # as the compiled kernel: booleans and times are not numbers
    if (isinstance(x, (bool, np.bool_, np.timedelta64, np.datetime64))
            or not (isinstance(x, Real) or (isinstance(x, np.ndarray) and x.ndim == 0
                                            and x.dtype.kind in "iuf"))):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if isinstance(x, np.ndarray) else ""))
    try:
        return float(x)  # type: ignore[arg-type]
    except OverflowError:
        raise ValueError(f"{name} is beyond the range of a float: {x!r}") from None


def _check_hyper(lr, momentum, rule, dampening, weight_decay, nonfinite) -> tuple:
    lr_, mom, damp, wd = (_real(lr, "lr"), _real(momentum, "momentum"),
                          _real(dampening, "dampening"), _real(weight_decay, "weight_decay"))
    if not (isfinite(lr_) and lr_ >= 0.0):
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    if not -1.0 < mom < 1.0:
        raise ValueError(f"momentum must lie in (-1, 1), got {momentum!r}")
    if not 0.0 <= damp < 1.0:
        raise ValueError(f"dampening must lie in [0, 1), got {dampening!r}")
    if not (isfinite(wd) and wd >= 0.0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    registry.check_name("rule", rule)
    if damp != 0.0 and rule not in _DAMPENING_RULES:
        which = (("rule " if len(_DAMPENING_RULES) == 1 else "rules ")
                 + ", ".join(map(repr, _DAMPENING_RULES)))
        raise ValueError(f"dampening is taken only by {which}; rule {rule!r} ignores it "
                         f"(leave it at 0)")
    registry.check_name("nonfinite", nonfinite)
    return lr_, mom, damp, wd


def _is_half(dtype: np.dtype) -> bool:
    """Whether dtype is a 16-bit storage format: float16, or bfloat16 (ml_dtypes's,
    recognised by name so that this module does not need ml_dtypes)."""
    return dtype == np.float16 or (dtype.name == "bfloat16" and dtype.kind == "V"
                                   and dtype.itemsize == 2)


def _check_array(a: object, name: str, written: bool) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array; momcore updates every element, so pass "
                        f"its .data (or .filled(...))")
    if not (a.dtype.type in (np.float32, np.float64) or _is_half(a.dtype)):
        raise TypeError(f"{name} has dtype {a.dtype}; momcore supports float32, float64, "
                        f"float16 and bfloat16 (ml_dtypes)")
    if not a.dtype.isnative:
        raise TypeError(f"{name} has non-native byte order (dtype {a.dtype.str!r})")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not a.flags.aligned:
        raise ValueError(f"{name} is not aligned to its dtype")
    if written and not a.flags.writeable:
        raise ValueError(f"{name} is read-only; it is updated in place")
    return a


def _check_operands(triples: list[tuple], many: bool,
                    names: tuple[str, str, str] = ("ws", "gs", "states")) -> None:
    called = dict(zip(("w", "g", "state"), names))

    def label(role: str, i: int) -> str:
        return f"{called[role]}[{i}]" if many else role

    extents = []
    for i, (w, g, s) in enumerate(triples):
        for a, role in ((w, "w"), (g, "g"), (s, "state")):
            _check_array(a, label(role, i), role != "g")
        if not (w.dtype == g.dtype == s.dtype):
            raise TypeError(f"{label('w', i)}, {label('g', i)} and {label('state', i)} must "
                            f"share one dtype; got {w.dtype}, {g.dtype} and {s.dtype}")
        if not (w.shape == g.shape == s.shape):
            raise ValueError(f"{label('w', i)}, {label('g', i)} and {label('state', i)} must "
                             f"share one shape; got {w.shape}, {g.shape} and {s.shape}")
        if w.size:
            for a, role in ((w, "w"), (g, "g"), (s, "state")):
                lo = a.__array_interface__["data"][0]
                extents.append((lo, lo + a.nbytes, label(role, i), role != "g"))
    # Sweep the extents by start address: a written extent must not begin before
    # any earlier extent ends, and a read one not before an earlier written one.
    extents.sort(key=lambda e: e[0])
    end_any = end_written = 0
    last_any = last_written = ""
    for lo, hi, name, written in extents:
        if written and lo < end_any:
            _raise_shared(last_any, name)
        if not written and lo < end_written:
            _raise_shared(last_written, name)
        if hi > end_any:
            end_any, last_any = hi, name
        if written and hi > end_written:
            end_written, last_written = hi, name
    _mapped.check((a, label(role, i), role != "g") for i, (w, g, s) in enumerate(triples)
                  for a, role in ((w, "w"), (g, "g"), (s, "state")))


def _raise_shared(a: str, b: str) -> None:
    raise ValueError(f"{a} and {b} share memory; w and state are written in place and "
                     f"must not overlap any other operand")


def _check_momenta(rule, momenta, ws, group=None) -> list:
    """One momenta array (or None) per w, checked against it."""
    if momenta is None:
        return [None] * len(ws)
    if rule not in _MOMENTA_RULES:
        which = (("rule " if len(_MOMENTA_RULES) == 1 else "rules ")
                 + ", ".join(map(repr, _MOMENTA_RULES)))
        raise ValueError(f"momenta is taken only by {which}; rule {rule!r} ignores it "
                         f"(leave it None)")
    where = "" if group is None else f" of groups[{group}]"
    if not isinstance(momenta, (list, tuple)):
        raise TypeError(f"momenta{where} must be a list or tuple of numpy arrays, got "
                        f"{type(momenta).__name__}")
    if len(momenta) != len(ws):
        raise ValueError(f"momenta{where} must have one array per parameter; got "
                         f"{len(momenta)} for {len(ws)}")
    for i, (p, w) in enumerate(zip(momenta, ws)):
        _check_array(p, "momenta", False)
        if p.dtype != w.dtype or p.shape != w.shape:
            raise ValueError(f"momenta must have the dtype and shape of w: "
                             f"{w.dtype}{w.shape}, got {p.dtype}{p.shape}")
        if p.size and any(np.shares_memory(p, other) for other in ws):
            raise ValueError(f"momenta and w share memory; w and state are written in "
                             f"place and must not overlap any other operand")
    return list(momenta)


def _apply(w, g, state, rule, lr, momentum, dampening, weight_decay, momenta=None) -> None:
    """One step of `rule` in place. The operation order is the C kernel's
    (src_c/kernel_impl.h), written out per rule in momcore_kernels.h: each
    right-hand side evaluated as its parentheses and left-to-right reading give,
    every operation rounded to the dtype.

    bfloat16 and float16 arrays are computed in float32: widened (exactly), stepped
    as float32 arrays, and each new w and state value rounded once by astype
    (nearest, ties to even: numpy's float16 cast and ml_dtypes' bfloat16 cast)."""
    if _is_half(w.dtype):
        w32, s32 = w.astype(np.float32), state.astype(np.float32)
        _apply(w32, g.astype(np.float32), s32, rule, lr, momentum, dampening, weight_decay,
               None if momenta is None else momenta.astype(np.float32))
        with np.errstate(over="ignore"):  # rounding past the largest value is inf
            np.copyto(w, w32.astype(w.dtype))
            np.copyto(state, s32.astype(state.dtype))
        return
    t = w.dtype.type
    lr_, mom = t(lr), t(momentum)
    if weight_decay != 0.0:
        g = g + t(weight_decay) * w
    if rule == "qian":
        # s = p*s - lr*g' ; w = w + s, p the per-weight momenta (or momentum)
        state *= mom if momenta is None else momenta
        state -= lr_ * g
        w += state
    elif rule in ("classical", "nesterov"):
        state *= mom
        state -= lr_ * g
        if rule == "classical":
            w += state
        else:
            w += mom * state
            w -= lr_ * g
    elif rule in ("velocity", "ema"):
        keep = t(1.0 - (momentum if rule == "ema" else dampening))
        state *= mom
        state += keep * g
        w -= lr_ * state
    elif rule == "nesterov_velocity":
        # s = m*s + g' ; w = w - lr*(g' + m*s)
        state *= mom
        state += g
        w -= lr_ * (g + mom * state)
    else:  # one_step
        step = t(-lr) * g
        w += step
        w += mom * state
        state[...] = step


def momentum_step(w: np.ndarray, g: np.ndarray, state: np.ndarray, *, lr: float,
                  momentum: float, rule: str = "classical", dampening: float = 0.0,
                  weight_decay: float = 0.0, nonfinite: str = "propagate",
                  momenta: np.ndarray | None = None) -> bool:
    """One momentum step in place on ``w`` and ``state``, in numpy.

    The same checks, errors and results as :func:`momcore.momentum_step`, bit for bit:
    each rule is written with numpy's in-place operators in the kernel's order of
    operations.

    Parameters
    ----------
    w, g, state : numpy.ndarray
        Weights (written), gradient (read), state (written); one shape and dtype.
    lr, momentum, rule, dampening, weight_decay, nonfinite, momenta
        As in :func:`momcore.momentum_step`.

    Returns
    -------
    bool
        True when the step was applied; False when ``nonfinite="skip"`` skipped it.

    Raises
    ------
    TypeError, ValueError, FloatingPointError
        As :func:`momcore.momentum_step`, with the same messages.

    Examples
    --------
    >>> import numpy as np, momcore
    >>> from momcore import reference
    >>> w1, w2 = np.linspace(-1, 1, 5), np.linspace(-1, 1, 5)
    >>> s1, s2 = np.zeros(5), np.zeros(5)
    >>> for _ in range(3):
    ...     _ = reference.momentum_step(w1, 0.5 * w1, s1, lr=0.1, momentum=0.9, rule="nesterov")
    ...     _ = momcore.momentum_step(w2, 0.5 * w2, s2, lr=0.1, momentum=0.9, rule="nesterov")
    >>> w1.tobytes() == w2.tobytes()                     # bit for bit
    True
    """
    hyper = _check_hyper(lr, momentum, rule, dampening, weight_decay, nonfinite)
    ps = _check_momenta(rule, None if momenta is None else [momenta], [w])
    _check_operands([(w, g, state)], many=False)
    return _step_all([(w, g, state)], [(rule, *hyper)], nonfinite, ps)


def momentum_step_many(ws: Sequence[np.ndarray], gs: Sequence[np.ndarray],
                       states: Sequence[np.ndarray], *, lr: float, momentum: float,
                       rule: str = "classical", dampening: float = 0.0,
                       weight_decay: float = 0.0, nonfinite: str = "propagate",
                       momenta: Sequence[np.ndarray] | None = None) -> bool:
    """:func:`momentum_step` over lists of arrays; all or none updated.

    Parameters
    ----------
    ws, gs, states : list or tuple of numpy.ndarray
        As in :func:`momcore.momentum_step_many`.
    lr, momentum, rule, dampening, weight_decay, nonfinite, momenta
        As in :func:`momcore.momentum_step_many`.

    Returns
    -------
    bool
        True when the step was applied; False when ``nonfinite="skip"`` skipped it.

    Raises
    ------
    TypeError, ValueError, FloatingPointError
        As :func:`momcore.momentum_step_many`, with the same messages.
    """
    hyper = _check_hyper(lr, momentum, rule, dampening, weight_decay, nonfinite)
    triples = _collect(ws, gs, states, ("ws", "gs", "states"), None)
    ps = _check_momenta(rule, momenta, [t[0] for t in triples])
    _check_operands(triples, many=True)
    return _step_all(triples, [(rule, *hyper)] * len(triples), nonfinite, ps)


_HYPER_KEYS = ("lr", "momentum", "rule", "dampening", "weight_decay")


def step_groups(groups: Sequence[tuple], *, nonfinite: str = "propagate",
                names: tuple[str, str, str] = ("ws", "gs", "states")) -> bool:
    """Groups ``(ws, gs, states, hyper)``, each stepped with its own ``hyper`` dict.

    The numpy counterpart of the compiled ``step_groups`` behind :class:`momcore.SGD`:
    arrays are numbered across groups by ``names`` in messages; all or none updated.

    Parameters
    ----------
    groups : list or tuple of tuple
        ``(ws, gs, states, hyper)`` or ``(ws, gs, states, hyper, momenta)`` per group;
        ``hyper`` has exactly the keys ``lr``, ``momentum``, ``rule``, ``dampening`` and
        ``weight_decay``.
    nonfinite : {"propagate", "raise", "skip"}
        As in :func:`momcore.momentum_step`, over all groups at once.
    names : tuple of str
        The caller's names of ws, gs and states, for error messages.

    Returns
    -------
    bool
        True when the step was applied; False when ``nonfinite="skip"`` skipped it.

    Raises
    ------
    TypeError
        If ``groups``, a group, ``hyper`` or ``names`` is malformed, or an operand is
        refused.
    ValueError
        If a ``hyper`` dict lacks a key or has an unknown one, a value is out of range, or
        operands share memory.
    FloatingPointError
        With ``nonfinite="raise"``, when the step would write a NaN or inf.
    """
    registry.check_name("nonfinite", nonfinite)
    if not (isinstance(names, tuple) and len(names) == 3
            and all(isinstance(n, str) for n in names)):
        raise TypeError(f"names must be a tuple of three strings, got {names!r}")
    if not isinstance(groups, (list, tuple)):
        raise TypeError(f"groups must be a list or tuple of (ws, gs, states, hyper), got "
                        f"{type(groups).__name__}")
    triples: list[tuple] = []
    hypers: list[tuple] = []
    ps: list = []
    for k, group in enumerate(groups):
        if not (isinstance(group, (list, tuple)) and len(group) in (4, 5)):
            raise TypeError(f"groups[{k}] must be a tuple (ws, gs, states, hyper), got "
                            f"{type(group).__name__}"
                            + (f" of length {len(group)}" if isinstance(group, (list, tuple))
                               else ""))
        ws, gs, states, hyper = group[:4]
        momenta = group[4] if len(group) == 5 else None
        if not isinstance(hyper, dict):
            raise TypeError(f"groups[{k}] hyper must be a dict, got {type(hyper).__name__}")
        missing = [key for key in _HYPER_KEYS if key not in hyper]
        unknown = [key for key in hyper if key not in _HYPER_KEYS]
        if missing or unknown:
            raise ValueError(
                f"groups[{k}] hyper must have exactly the keys {', '.join(_HYPER_KEYS)}; "
                + "; ".join(([f"missing {', '.join(map(repr, missing))}"] if missing else [])
                            + ([f"unknown {', '.join(map(repr, unknown))}"] if unknown
                               else [])))
        checked = _check_hyper(hyper["lr"], hyper["momentum"], hyper["rule"],
                               hyper["dampening"], hyper["weight_decay"], "propagate")
        group_triples = _collect(ws, gs, states, names, k)
        ps += _check_momenta(hyper["rule"], momenta, [t[0] for t in group_triples], k)
        triples += group_triples
        hypers += [(hyper["rule"], *checked)] * len(group_triples)
    _check_operands(triples, many=True, names=names)
    return _step_all(triples, hypers, nonfinite, ps)


def _collect(ws, gs, states, names, group) -> list[tuple]:
    where = "" if group is None else f" of groups[{group}]"
    for name, seq in zip(names, (ws, gs, states)):
        if not isinstance(seq, (list, tuple)):
            raise TypeError(f"{name}{where} must be a list or tuple of numpy arrays, got "
                            f"{type(seq).__name__}")
    if not len(ws) == len(gs) == len(states):
        raise ValueError(f"{names[0]}, {names[1]} and {names[2]}{where} must have one "
                         f"length; got {len(ws)}, {len(gs)} and {len(states)}")
    return list(zip(ws, gs, states))


_F32_OVERFLOW = 2.0**128 - 2.0**103  # float32 rounds |x| >= this to inf
_F32_BELOW_ONE = 1.0 - 2.0**-25  # and 1 - 2**-25 <= |x| < 1 to 1


def _check_in_dtype(dtype: np.dtype, lr: float, momentum: float, weight_decay: float) -> None:
    """The hyperparameters must keep their meaning in the precision the step computes
    in: float32 for float32, bfloat16 and float16 arrays."""
    if dtype == np.float64:
        return
    where = ("float32, the dtype of the arrays (the step computes in it)"
             if dtype == np.float32 else
             f"float32, in which the step computes for {dtype.name} arrays (they store "
             f"only its rounded result)")
    if lr >= _F32_OVERFLOW:
        raise ValueError(f"lr={lr!r} is beyond the range of {where}")
    if weight_decay >= _F32_OVERFLOW:
        raise ValueError(f"weight_decay={weight_decay!r} is beyond the range of {where}")
    if not -_F32_BELOW_ONE < momentum < _F32_BELOW_ONE:
        raise ValueError(f"momentum={momentum!r} rounds to {1 if momentum > 0 else -1} in "
                         f"{where}; it must lie in (-1, 1)")


NONFINITE_MESSAGE = ("the gradient holds NaN or inf, or the step would overflow to inf; w "
                     "and state were left unchanged (nonfinite='raise')")


def _step_all(triples, hypers, nonfinite, momenta=None) -> bool:
    """triples[i] stepped with hypers[i] = (rule, lr, momentum, dampening, weight_decay)
    and, for qian, the per-weight momenta[i] (or None).

    With nonfinite "raise" or "skip" the step is first computed on copies: if any
    gradient element, or any new value of w or state, is NaN or inf, nothing is
    written."""
    for (w, _, _), (_, lr, momentum, _, weight_decay) in zip(triples, hypers):
        _check_in_dtype(w.dtype, lr, momentum, weight_decay)
    momenta = [None] * len(triples) if momenta is None else momenta
    if nonfinite != "propagate":
        results = []
        with np.errstate(all="ignore"):
            for (w, g, s), (rule, lr, momentum, dampening, weight_decay), p in zip(
                    triples, hypers, momenta):
                w2, s2 = w.copy(), s.copy()
                if w.size:
                    _apply(w2, g, s2, rule, lr, momentum, dampening, weight_decay, p)
                if not (np.isfinite(g).all() and np.isfinite(w2).all()
                        and np.isfinite(s2).all()):
                    if nonfinite == "raise":
                        raise FloatingPointError(NONFINITE_MESSAGE)
                    return False
                results.append((w2, s2))
        for (w, _, s), (w2, s2) in zip(triples, results):
            np.copyto(w, w2)
            np.copyto(s, s2)
        return True
    for (w, g, s), (rule, lr, momentum, dampening, weight_decay), p in zip(triples, hypers,
                                                                         momenta):
        if w.size:
            _apply(w, g, s, rule, lr, momentum, dampening, weight_decay, p)
    return True

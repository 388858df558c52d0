# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled core of momcore: argument checking, GIL handling and the C kernels.

Every public function checks its inputs here, once, and then makes one call into
the plain-C kernels of ``src_c`` with the GIL released.
"""
import os
import threading as _threading
from numbers import Real as _Real

import numpy as np

cimport numpy as cnp
from numpy.random cimport bitgen_t
from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid
from libc.math cimport isfinite
from libc.stdint cimport int64_t, uint16_t, uint32_t
from libc.stdlib cimport qsort

from momcore._kernels cimport *

cnp.import_array()

from momcore import registry as _registry
from momcore import _mapped

# Each name of momcore.registry mapped to its C code, explicitly (tests/test_registry.py
# checks that the two sides cover each other).
ctypedef int (*_code_of)(const char *name) noexcept nogil


cdef dict _codes(tuple names, _code_of code_of, str kind):
    """Each registry name of a kind with its C code, looked up by name in the C lists;
    a name the C code does not know stops the import (the two sides must agree)."""
    codes = {name: code_of(name.encode()) for name in names}
    unknown = [name for name, code in codes.items() if code < 0]
    if unknown:
        raise ImportError(f"momcore.registry names {kind} {unknown} that the compiled "
                          f"core does not know; rebuild it")
    return codes


RULE_CODES = _codes(tuple(_registry.RULES), mc_rule_code, "rules")
N_RULES = MC_N_RULES
RULES = tuple(_registry.RULES)
"""The update rules, in registry order."""

cdef enum:
    PROPAGATE = 0
    RAISE = 1
    SKIP = 2
    N_NONFINITE_MODES = 3

NONFINITE_CODES = {"propagate": PROPAGATE, "raise": RAISE, "skip": SKIP}
N_NONFINITE = N_NONFINITE_MODES
NONFINITE = tuple(_registry.NONFINITE)

cdef tuple _DAMPENING_RULES = _registry.rules_taking("dampening")
cdef tuple _MOMENTA_RULES = _registry.rules_taking("momenta")
cdef dict _RULE_CODES = RULE_CODES
cdef dict _NONFINITE_CODES = NONFINITE_CODES

# ---- hyperparameters -----------------------------------------------------------


cdef double _real(object x, str name) except? -1.0:
    """x as a double if it is a real number (a Python or numpy real scalar, or a 0-d
    real array); a TypeError naming the argument otherwise, never a parse or a cast
    that drops an imaginary part."""
    if isinstance(x, float):  # float and numpy.float64: the fast path
        return <double>x
    # Booleans are not numbers here (True and numpy.True_ alike, as in the schedules),
    # nor are times (numpy counts timedelta64 among its integers).
    if (isinstance(x, (bool, np.bool_, np.timedelta64, np.datetime64))
            or not (isinstance(x, (int, _Real)) or (isinstance(x, np.ndarray) and x.ndim == 0
                                                    and x.dtype.kind in "iuf"))):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if isinstance(x, np.ndarray) else ""))
    try:
        return float(x)
    except OverflowError:
        raise ValueError(f"{name} is beyond the range of a float: {x!r}") from None


cdef int _parse_hyper(mc_hyper *h, object lr, object momentum, object rule,
                      object dampening, object weight_decay, object nonfinite) except -1:
    """Fills h from the keyword arguments; returns the nonfinite mode."""
    h.lr = _real(lr, "lr")
    h.momentum = _real(momentum, "momentum")
    h.dampening = _real(dampening, "dampening")
    h.weight_decay = _real(weight_decay, "weight_decay")
    if not (isfinite(h.lr) and h.lr >= 0.0):
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    if not (-1.0 < h.momentum < 1.0):
        raise ValueError(
            f"momentum must lie in (-1, 1), the range in which the iteration can "
            f"converge (Qian 1999, Result 3), got {momentum!r}")
    if not (0.0 <= h.dampening < 1.0):
        raise ValueError(f"dampening must lie in [0, 1), got {dampening!r}")
    if not (isfinite(h.weight_decay) and h.weight_decay >= 0.0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    code = _RULE_CODES.get(rule) if isinstance(rule, str) else None
    if code is None:
        _registry.check_name("rule", rule)
        raise ValueError(f"rule {rule!r} has no C code")  # tests/test_registry.py
    h.rule = code
    if h.dampening != 0.0 and rule not in _DAMPENING_RULES:
        raise ValueError(_not_taken("dampening", _DAMPENING_RULES, rule))
    return _parse_nonfinite(nonfinite)


cdef int _parse_nonfinite(object nonfinite) except -1:
    mode = _NONFINITE_CODES.get(nonfinite) if isinstance(nonfinite, str) else None
    if mode is None:
        _registry.check_name("nonfinite", nonfinite)
        raise ValueError(f"nonfinite {nonfinite!r} has no C code")
    return mode


cdef str _not_taken(str hyperparameter, tuple taking, object rule):
    """The message for a hyperparameter given to a rule that ignores it (the same
    words as momcore.reference)."""
    which = ("rule " if len(taking) == 1 else "rules ") + ", ".join(map(repr, taking))
    return (f"{hyperparameter} is taken only by {which}; rule {rule!r} ignores it "
            f"(leave it at 0)")


# float32 rounds a double x to +-inf exactly when |x| >= 2**128 - 2**103 (the midpoint
# between FLT_MAX and 2**128 rounds to the even 2**128), and to +-1 when
# 1 - 2**-25 <= |x| < 1.
cdef double _F32_OVERFLOW = 340282356779733661637539395458142568448.0
cdef double _F32_BELOW_ONE = 1.0 - 2.0 ** -25


cdef str _computed_in(int dtype):
    """How a message names the precision the step computes in for arrays of dtype."""
    if dtype == MC_FLOAT32:
        return "float32, the dtype of the arrays (the step computes in it)"
    return (f"float32, in which the step computes for {_DTYPE_NAMES[dtype]} arrays "
            f"(they store only its rounded result)")


cdef int _check_in_dtype(const mc_hyper *h, int dtype) except -1:
    """Raises unless the hyperparameters keep their meaning in the precision the
    kernel computes in: float64 for float64 arrays, float32 for float32, bfloat16 and
    float16 arrays (lr, momentum and weight_decay enter the step as float32 values
    whatever the storage): lr and weight_decay finite, momentum inside (-1, 1)."""
    if dtype == MC_FLOAT64:
        return 0
    if h.lr >= _F32_OVERFLOW:
        raise ValueError(f"lr={h.lr!r} is beyond the range of {_computed_in(dtype)}")
    if h.weight_decay >= _F32_OVERFLOW:
        raise ValueError(f"weight_decay={h.weight_decay!r} is beyond the range of "
                         f"{_computed_in(dtype)}")
    if not (-_F32_BELOW_ONE < h.momentum < _F32_BELOW_ONE):
        raise ValueError(f"momentum={h.momentum!r} rounds to {1 if h.momentum > 0 else -1} "
                         f"in {_computed_in(dtype)}; it must lie in (-1, 1)")
    return 0


def check_hyperparameters(*, lr, momentum, rule="classical", dampening=0.0,
                          weight_decay=0.0, nonfinite="propagate", dtype=None):
    """Raises the error momentum_step would raise for these hyperparameters (with
    arrays of ``dtype``, when given: float32, float64, float16 or bfloat16)."""
    cdef mc_hyper h
    _parse_hyper(&h, lr, momentum, rule, dampening, weight_decay, nonfinite)
    if dtype is not None:
        code = _dtype_code_of(np.dtype(dtype))
        if code >= 0:
            _check_in_dtype(&h, code)


# ---- arrays ------------------------------------------------------------------------

cdef enum:
    ROLE_W = 0
    ROLE_G = 1
    ROLE_S = 2
    ROLE_P = 3  # per-weight momenta: read only, like g


cdef tuple _ONE_NAMES = ("w", "g", "state")
cdef tuple _MANY_NAMES = ("ws", "gs", "states")


cdef int _check_mapped(list ws, list gs, list states, tuple names, bint many) except -1:
    """The file-region check of momcore._mapped, for the rare operands that are
    memory maps (a subclass of ndarray): their addresses alone cannot show that two
    maps of one file share bytes."""
    cdef Py_ssize_t i
    for i in range(len(ws)):
        if not (cnp.PyArray_CheckExact(ws[i]) and cnp.PyArray_CheckExact(gs[i])
                and cnp.PyArray_CheckExact(states[i])):
            break
    else:
        return 0
    _mapped.check([(a, _name(names, role, i if many else -1), role != ROLE_G)
                   for i in range(len(ws))
                   for role, a in ((ROLE_W, ws[i]), (ROLE_G, gs[i]), (ROLE_S, states[i]))])
    return 0


cdef str _name(tuple names, int role, Py_ssize_t index):
    """The caller's name of an operand: names[role], indexed unless index < 0."""
    name = "momenta" if role == ROLE_P else names[role]
    if index < 0:
        return name
    return f"{name}[{index}]"


cdef str _where(str label, tuple names, int role, Py_ssize_t index):
    return label if names is None else _name(names, role, index)


# Storage dtypes by mc_dtype code. bfloat16 is not a numpy dtype: ml_dtypes (optional)
# registers it, with a type number of its own, so it is recognised by name, kind and
# size, and momcore neither needs nor imports ml_dtypes.
cdef extern from "numpy/ndarraytypes.h":
    enum: NPY_USERDEF  # the first type number of a dtype registered at run time

cdef tuple _DTYPE_NAMES = ("float32", "float64", "bfloat16", "float16")
cdef int _bfloat16_type = -1  # its type number, once an array of it has been seen


cdef int _dtype_code_of(object dtype):
    """The mc_dtype of a numpy dtype, or -1 when momcore cannot step it."""
    if dtype == np.float32:
        return MC_FLOAT32
    if dtype == np.float64:
        return MC_FLOAT64
    if dtype == np.float16:
        return MC_FLOAT16
    if dtype.name == "bfloat16" and dtype.kind == "V" and dtype.itemsize == 2:
        return MC_BFLOAT16
    return -1


cdef int _dtype_code(cnp.ndarray a):
    """The mc_dtype of a's elements, or -1 when momcore cannot step them."""
    global _bfloat16_type
    cdef int t = cnp.PyArray_TYPE(a)
    if t == cnp.NPY_FLOAT32:
        return MC_FLOAT32
    if t == cnp.NPY_FLOAT64:
        return MC_FLOAT64
    if t == cnp.NPY_FLOAT16:
        return MC_FLOAT16
    if t == _bfloat16_type:
        return MC_BFLOAT16
    if t >= NPY_USERDEF and _dtype_code_of(a.dtype) == MC_BFLOAT16:
        _bfloat16_type = t
        return MC_BFLOAT16
    return -1


cdef cnp.ndarray _int64_vector(object obj, str name):
    """obj as the kernels read row indices and labels: a C-contiguous, aligned 1-D int64
    ndarray in native byte order (read in place, never converted), or a TypeError."""
    cdef cnp.ndarray a
    if cnp.PyArray_Check(obj):
        a = <cnp.ndarray>obj
        if (cnp.PyArray_TYPE(a) == cnp.NPY_INT64 and a.ndim == 1
                and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a)
                and cnp.PyArray_ISNOTSWAPPED(a)):
            return a
        got = f"dtype {a.dtype.str!r}, shape {(<object>a).shape}"
    else:
        got = type(obj).__name__
    raise TypeError(f"{name} must be a C-contiguous 1-D int64 array in native byte order, "
                    f"got {got}")


cdef int _check_rows(cnp.ndarray idx, Py_ssize_t n_rows, str name) except -1:
    """Raises ValueError unless every index of idx (from _int64_vector) is a row of X."""
    cdef const int64_t *o = <const int64_t *>cnp.PyArray_DATA(idx)
    cdef Py_ssize_t i
    for i in range(idx.shape[0]):
        if not 0 <= o[i] < n_rows:
            raise ValueError(f"{name}[{i}] = {o[i]} is not a row of X")
    return 0


cdef cnp.ndarray _checked(object obj, int role, str label, tuple names=None,
                          Py_ssize_t index=-1, bint half=False):
    """obj as an ndarray the kernels can work on in place, or a clear exception
    that calls it ``label`` (or, given names, _name(names, role, index): formatted
    only on error). float32 and float64; also bfloat16 and float16 with half."""
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{_where(label, names, role, index)} must be a numpy.ndarray, got "
                        f"{type(obj).__name__} (momcore never copies its operands)")
    if not cnp.PyArray_CheckExact(obj) and isinstance(obj, np.ma.MaskedArray):
        raise TypeError(f"{_where(label, names, role, index)} is a masked array; momcore updates "
                        f"every element, so pass its .data (or .filled(...))")
    cdef cnp.ndarray a = <cnp.ndarray>obj
    cdef int code = _dtype_code(a)
    if code < 0 or (not half and code > MC_FLOAT64):
        raise TypeError(f"{_where(label, names, role, index)} has dtype {a.dtype}; momcore supports "
                        + ("float32, float64, float16 and bfloat16 (ml_dtypes)" if half
                           else "float32 and float64"))
    if not cnp.PyArray_ISNOTSWAPPED(a):
        raise TypeError(f"{_where(label, names, role, index)} has non-native byte order "
                        f"(dtype {a.dtype.str!r}); convert it with .astype({a.dtype.name!r})")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{_where(label, names, role, index)} must be C-contiguous (momcore works in "
                         f"place and never copies); pass np.ascontiguousarray(...) "
                         f"and keep using that array")
    if not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"{_where(label, names, role, index)} is not aligned to its dtype")
    if role != ROLE_G and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{_where(label, names, role, index)} is read-only; it is updated in place")
    return a


def check_array(obj, *, name="w", writable=True):
    """Raises the error momentum_step would raise for ``obj`` as an operand."""
    _checked(obj, ROLE_W if writable else ROLE_G, name, None, -1, True)


cdef int _fill(mc_buffer *b, object w, object g, object s, tuple names,
               Py_ssize_t index, object p=None) except -1:
    cdef cnp.ndarray aw = _checked(w, ROLE_W, None, names, index, True)
    cdef cnp.ndarray ag = _checked(g, ROLE_G, None, names, index, True)
    cdef cnp.ndarray as_ = _checked(s, ROLE_S, None, names, index, True)
    cdef int t = cnp.PyArray_TYPE(aw)
    if cnp.PyArray_TYPE(ag) != t or cnp.PyArray_TYPE(as_) != t:
        raise TypeError(f"{_name(names, ROLE_W, index)}, {_name(names, ROLE_G, index)} and "
                        f"{_name(names, ROLE_S, index)} must share one dtype; got "
                        f"{aw.dtype}, {ag.dtype} and {as_.dtype} (momcore never converts "
                        f"its operands)")
    if not (_same_shape(aw, ag) and _same_shape(aw, as_)):
        raise ValueError(f"{_name(names, ROLE_W, index)}, {_name(names, ROLE_G, index)} and "
                         f"{_name(names, ROLE_S, index)} must share one shape; got "
                         f"{(<object>aw).shape}, {(<object>ag).shape} and {(<object>as_).shape}")
    b.w = cnp.PyArray_DATA(aw)
    b.g = cnp.PyArray_DATA(ag)
    b.s = cnp.PyArray_DATA(as_)
    b.p = NULL
    cdef cnp.ndarray ap
    if p is not None:
        ap = _checked(p, ROLE_G, _name(names, ROLE_P, index), None, -1, True)
        if cnp.PyArray_TYPE(ap) != t or not _same_shape(aw, ap):
            raise ValueError(f"{_name(names, ROLE_P, index)} must have the dtype and shape "
                             f"of {_name(names, ROLE_W, index)}: {aw.dtype}"
                             f"{(<object>aw).shape}, got {ap.dtype}{(<object>ap).shape}")
        b.p = cnp.PyArray_DATA(ap)
    b.n = <size_t>cnp.PyArray_SIZE(aw)
    b.dtype = _dtype_code(aw)
    return 0


cdef bint _same_shape(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef int d, nd = cnp.PyArray_NDIM(a)
    if cnp.PyArray_NDIM(b) != nd:
        return False
    cdef cnp.npy_intp *da = cnp.PyArray_DIMS(a)
    cdef cnp.npy_intp *db = cnp.PyArray_DIMS(b)
    for d in range(nd):
        if da[d] != db[d]:
            return False
    return True


# ---- aliasing ---------------------------------------------------------------------

ctypedef struct _extent:
    size_t lo          # first byte
    size_t hi          # one past the last byte
    int role
    Py_ssize_t index


cdef int _by_start(const void *a, const void *b) noexcept nogil:
    cdef size_t x = (<const _extent *>a).lo, y = (<const _extent *>b).lo
    return (x > y) - (x < y)


cdef int _check_disjoint(const mc_buffer *bufs, Py_ssize_t count, _extent *ext,
                         tuple names, bint many) except -1:
    """Raises unless every written extent (w, state) is disjoint from every other.

    Gradients may overlap one another (they are only read). Sorting the extents by
    start and sweeping keeps this O(k log k) for k operands."""
    cdef Py_ssize_t i, k = 0
    cdef size_t width
    for i in range(count):
        if bufs[i].n == 0:
            continue
        width = bufs[i].n * mc_dtype_size(bufs[i].dtype)
        ext[k].lo = <size_t>bufs[i].w; ext[k].hi = ext[k].lo + width
        ext[k].role = ROLE_W; ext[k].index = i if many else -1
        ext[k + 1].lo = <size_t>bufs[i].g; ext[k + 1].hi = ext[k + 1].lo + width
        ext[k + 1].role = ROLE_G; ext[k + 1].index = i if many else -1
        ext[k + 2].lo = <size_t>bufs[i].s; ext[k + 2].hi = ext[k + 2].lo + width
        ext[k + 2].role = ROLE_S; ext[k + 2].index = i if many else -1
        k += 3
        if bufs[i].p != NULL:
            ext[k].lo = <size_t>bufs[i].p; ext[k].hi = ext[k].lo + width
            ext[k].role = ROLE_P; ext[k].index = i if many else -1
            k += 1
    qsort(ext, k, sizeof(_extent), _by_start)
    cdef bint written
    cdef size_t end_any = 0, end_written = 0
    cdef Py_ssize_t last_any = -1, last_written = -1
    for i in range(k):
        written = ext[i].role == ROLE_W or ext[i].role == ROLE_S
        if written and ext[i].lo < end_any:
            _raise_shared(&ext[i], &ext[last_any], names)
        if not written and ext[i].lo < end_written:
            _raise_shared(&ext[i], &ext[last_written], names)
        if ext[i].hi > end_any:
            end_any = ext[i].hi; last_any = i
        if written and ext[i].hi > end_written:
            end_written = ext[i].hi; last_written = i
    return 0


cdef int _raise_shared(const _extent *a, const _extent *b, tuple names) except -1:
    raise ValueError(f"{_name(names, b.role, b.index)} and {_name(names, a.role, a.index)} "
                     f"share memory; "
                     f"w and state are written in place and must not overlap any "
                     f"other operand")


# ---- the step ----------------------------------------------------------------------


def momentum_step(w, g, state, *, lr, momentum, rule="classical", dampening=0.0,
                  weight_decay=0.0, nonfinite="propagate", momenta=None):
    r"""One momentum step, in place on ``w`` and ``state``; ``g`` is only read.

    With ``g' = g + weight_decay*w``, ``rule`` is one of::

        classical          state = momentum*state - lr*g' ; w = w + state
        nesterov           state = momentum*state - lr*g' ;
                           w = w + momentum*state - lr*g'
        velocity           state = momentum*state + (1-dampening)*g' ; w = w - lr*state
        ema                velocity with dampening = momentum
        one_step           step = -lr*g' ; w = w + step + momentum*state ; state = step
        nesterov_velocity  state = momentum*state + g' ;
                           w = w - lr*(g' + momentum*state)

    (``nesterov_velocity`` is PyTorch's and optax's Nesterov form, lr outside the
    state.) In the notation of Qian (1999), ``classical`` is his Eq. 2,

    .. math::

        \Delta w_t = -\eta \nabla E(w_t) + p \, \Delta w_{t-1},

    with ``lr`` = eta, ``momentum`` = p, ``g`` = grad E and the state the previous
    weight change.

    Parameters
    ----------
    w, g, state : numpy.ndarray
        One shape, one dtype (float32, float64, float16, or bfloat16 from the
        optional ml_dtypes package), C-contiguous; ``w`` and ``state`` writable
        and not overlapping any other operand. ``state`` starts at zero.
        float16 and bfloat16 are storage only: the step computes in float32 and
        rounds each new w and state value once, to nearest even, as it stores
        it (float16 overflows to inf above 65504).
    lr : float
        Learning rate, finite and >= 0.
    momentum : float
        Momentum coefficient in (-1, 1).
    rule : str
        One of ``momcore.registry.RULES`` (the table above; ``qian`` reads
        ``momenta``). Default ``"classical"``.
    dampening : float
        In [0, 1); taken by ``velocity`` only: nonzero with any other rule is a
        ValueError.
    weight_decay : float
        Coupled L2 weight decay, >= 0.
    nonfinite : {"propagate", "raise", "skip"}
        What a NaN or inf in ``g`` does: flow into ``w``; raise
        FloatingPointError; or return False. With "raise" and "skip" the step
        is first computed without writing: when any element of ``g``, or any new
        value of ``w`` or ``state`` (an overflow of finite values), would be NaN
        or inf, ``w`` and ``state`` are left bit for bit untouched, so a step that
        is applied stays finite.
    momenta : numpy.ndarray or None
        Taken by ``qian`` only: the momentum of each weight, of ``w``'s shape and
        dtype, read in the same pass (``state = momenta*state - lr*g' ; w = w +
        state``); None uses ``momentum`` for every weight (then ``qian`` is
        ``classical``). The caller keeps its values in (-1, 1) (momcore.SGD clips
        them; the kernel does not look).

    Returns
    -------
    bool
        True when the step was applied; False when ``nonfinite="skip"`` skipped it.

    Raises
    ------
    TypeError
        If an operand is not a numpy array of a supported dtype, is byte-swapped,
        non-contiguous or read-only where it is written, or a hyperparameter is not a
        real number (booleans and times are not numbers).
    ValueError
        If shapes or dtypes differ, ``w`` or ``state`` shares memory with another
        operand, a hyperparameter is out of range (or loses its meaning in the dtype,
        see Notes), or a rule is given a hyperparameter it does not take.
    FloatingPointError
        With ``nonfinite="raise"``, when the step would write a NaN or inf (nothing is
        written).

    See Also
    --------
    momentum_step_many : the same step over lists of arrays, in one C call.
    momcore.reference.momentum_step : the same step in numpy, bit for bit.
    momcore.SGD : the optimizer that owns parameters, state and hyperparameters.

    Notes
    -----
    lr, weight_decay and momentum must keep their meaning in the precision the
    step computes in: with float32, float16 or bfloat16 arrays (all computed in
    float32) an lr or weight_decay beyond float32's range, or a momentum that
    rounds to +-1 in float32, is a ValueError.

    Cost: one pass over memory (read w, g, state; write w, state; read momenta
    with ``qian``), plus one read of w, g and state (the dry run) with
    ``nonfinite`` "raise" or "skip". The GIL is released meanwhile.

    Examples
    --------
    >>> import numpy as np, momcore
    >>> w, state = np.array([3.56]), np.array([0.044])
    >>> momcore.momentum_step(w, np.array([-2.70]), state, lr=0.01, momentum=0.5,
    ...                       rule="one_step")          # McCaffrey's worked example
    True
    >>> round(float(w[0]), 3)
    3.609
    >>> g = np.array([np.nan])
    >>> momcore.momentum_step(w, g, state, lr=0.01, momentum=0.5, nonfinite="skip")
    False
    """
    cdef mc_hyper h
    cdef mc_buffer b
    cdef _extent ext[4]
    cdef int applied
    cdef int mode = _parse_hyper(&h, lr, momentum, rule, dampening, weight_decay, nonfinite)
    _check_momenta_taken(rule, momenta)
    _fill(&b, w, g, state, _ONE_NAMES, -1, momenta)
    _check_disjoint(&b, 1, ext, _ONE_NAMES, False)
    _check_mapped([w], [g], [state], _ONE_NAMES, False)
    _check_in_dtype(&h, b.dtype)
    if b.n == 0:
        return True
    with nogil:
        applied = mc_momentum_step(&b, 1, &h, mode != PROPAGATE)
    return _outcome(applied, mode)


cdef int _check_momenta_taken(object rule, object momenta) except -1:
    if momenta is not None and rule not in _MOMENTA_RULES:
        which = ("rule " if len(_MOMENTA_RULES) == 1 else "rules ") + ", ".join(
            map(repr, _MOMENTA_RULES))
        raise ValueError(f"momenta is taken only by {which}; rule {rule!r} ignores it "
                         f"(leave it None)")
    return 0


cdef object _outcome(int applied, int mode):
    if applied:
        return True
    if mode == RAISE:
        raise FloatingPointError(
            "the gradient holds NaN or inf, or the step would overflow to inf; w and state "
            "were left unchanged (nonfinite='raise')")
    return False


def momentum_step_many(ws, gs, states, *, lr, momentum, rule="classical", dampening=0.0,
                       weight_decay=0.0, nonfinite="propagate", momenta=None):
    """momentum_step applied to lists of arrays in one C call (GIL released once).

    ``ws[i]``, ``gs[i]`` and ``states[i]`` follow the rules of momentum_step;
    the arrays may differ in shape and dtype from one ``i`` to the next. With
    ``nonfinite`` "raise" or "skip", every gradient is checked before anything
    is written, so either all arrays are updated or none is.

    Parameters
    ----------
    ws, gs, states : list or tuple of numpy.ndarray
        The weights (written), gradients (read) and states (written), one list
        each, of one length; entry ``i`` of the three as ``w, g, state`` of
        :func:`momentum_step`.
    lr, momentum, rule, dampening, weight_decay, nonfinite
        As in :func:`momentum_step`, the same for every entry.
    momenta : list of numpy.ndarray or None
        Taken by ``qian`` only: one per-weight momentum array per entry (None in
        the list, or None for all: ``momentum`` for those weights).

    Returns
    -------
    bool
        True when the step was applied; False when ``nonfinite="skip"`` skipped it
        (no array written).

    Raises
    ------
    TypeError
        If ``ws``, ``gs`` or ``states`` is not a list or tuple, their lengths differ,
        or an operand or hyperparameter is refused as by :func:`momentum_step` (the
        message names the entry, e.g. ``ws[3]``).
    ValueError
        As :func:`momentum_step`, also for operands of different entries that share
        memory.
    FloatingPointError
        With ``nonfinite="raise"``, when any entry's step would write a NaN or inf
        (no array written).

    Examples
    --------
    >>> import numpy as np, momcore
    >>> ws = [np.ones(3, np.float32), np.ones((2, 2))]
    >>> gs = [np.ones_like(w) for w in ws]
    >>> states = [np.zeros_like(w) for w in ws]
    >>> momcore.momentum_step_many(ws, gs, states, lr=0.1, momentum=0.9)
    True
    >>> ws[1]
    array([[0.9, 0.9],
           [0.9, 0.9]])
    """
    cdef mc_hyper h
    cdef int mode = _parse_hyper(&h, lr, momentum, rule, dampening, weight_decay, nonfinite)
    _check_momenta_taken(rule, momenta)
    cdef list all_ws = [], all_gs = [], all_states = [], all_momenta = []
    _collect(all_ws, all_gs, all_states, ws, gs, states, _MANY_NAMES, -1)
    _collect_momenta(all_momenta, momenta, len(all_ws), -1)
    return _step_arrays(all_ws, all_gs, all_states, &h, False, mode, _MANY_NAMES,
                        all_momenta)


_HYPER_KEYS = ("lr", "momentum", "rule", "dampening", "weight_decay")


def step_groups(groups, *, nonfinite="propagate", names=("ws", "gs", "states")):
    """Parameter groups, each with its own hyperparameters, stepped in one C call.

    ``groups`` is a sequence of ``(ws, gs, states, hyper)``: three lists (or
    tuples) of arrays as in momentum_step_many, and ``hyper`` a dict with exactly
    the keys ``lr``, ``momentum``, ``rule``, ``dampening`` and ``weight_decay``
    (all required; the values are checked as by momentum_step). Group k's
    arrays are stepped with group k's hyperparameters.

    The arrays are numbered across the groups, in order, and error messages call
    them by ``names`` (the caller's words for ws, gs and states): with
    ``names=("params", "grads", "state")`` the fourth array of all is
    ``params[3]``. No w or state may share memory with any other operand of any
    group. With ``nonfinite`` "raise" or "skip" every gradient of every group is
    checked before anything is written: all arrays are updated or none is.

    Parameters
    ----------
    groups : list or tuple of tuple
        ``(ws, gs, states, hyper)`` per group, or ``(ws, gs, states, hyper,
        momenta)`` with per-weight momenta for ``qian``.
    nonfinite : {"propagate", "raise", "skip"}
        As in :func:`momentum_step`, over all groups at once.
    names : tuple of str
        The caller's names of ws, gs and states, for error messages.

    Returns
    -------
    bool
        True when the step was applied, False when ``nonfinite="skip"`` skipped it.

    Raises
    ------
    TypeError
        If ``groups`` or a group is malformed, ``names`` is not three strings, or an
        operand or hyperparameter is refused as by :func:`momentum_step`.
    ValueError
        If a ``hyper`` dict lacks a key or has an unknown one, a value is out of
        range, or operands share memory.
    FloatingPointError
        With ``nonfinite="raise"``, when the step would write a NaN or inf.
    """
    cdef int mode = _parse_nonfinite(nonfinite)
    if not (isinstance(names, tuple) and len(names) == 3
            and all(isinstance(n, str) for n in names)):
        raise TypeError(f"names must be a tuple of three strings, got {names!r}")
    if not isinstance(groups, (list, tuple)):
        raise TypeError(f"groups must be a list or tuple of (ws, gs, states, hyper), got "
                        f"{type(groups).__name__}")
    groups = tuple(groups)
    cdef list all_ws = [], all_gs = [], all_states = [], all_momenta = []
    cdef Py_ssize_t k, i, n_groups = len(groups), start = 0
    cdef mc_hyper *group_hypers = <mc_hyper *>PyMem_Malloc((n_groups + 1) * sizeof(mc_hyper))
    cdef mc_hyper *hypers = NULL
    cdef list ends = []
    try:
        if group_hypers == NULL:
            raise MemoryError()
        for k in range(n_groups):
            group = groups[k]
            if not (isinstance(group, (list, tuple)) and len(group) in (4, 5)):
                raise TypeError(
                    f"groups[{k}] must be a tuple (ws, gs, states, hyper), got "
                    f"{type(group).__name__}"
                    + (f" of length {len(group)}" if isinstance(group, (list, tuple)) else ""))
            ws, gs, states, hyper = group[:4]
            momenta = group[4] if len(group) == 5 else None
            if not isinstance(hyper, dict):
                raise TypeError(f"groups[{k}] hyper must be a dict, got "
                                f"{type(hyper).__name__}")
            missing = [key for key in _HYPER_KEYS if key not in hyper]
            unknown = [key for key in hyper if key not in _HYPER_KEYS]
            if missing or unknown:
                raise ValueError(
                    f"groups[{k}] hyper must have exactly the keys "
                    f"{', '.join(_HYPER_KEYS)}; "
                    + "; ".join(([f"missing {', '.join(map(repr, missing))}"] if missing
                                 else [])
                                + ([f"unknown {', '.join(map(repr, unknown))}"] if unknown
                                   else [])))
            _parse_hyper(&group_hypers[k], hyper["lr"], hyper["momentum"], hyper["rule"],
                         hyper["dampening"], hyper["weight_decay"], "propagate")
            _check_momenta_taken(hyper["rule"], momenta)
            n_before = len(all_ws)
            _collect(all_ws, all_gs, all_states, ws, gs, states, names, k)
            _collect_momenta(all_momenta, momenta, len(all_ws) - n_before, k)
            ends.append(len(all_ws))
        hypers = <mc_hyper *>PyMem_Malloc((len(all_ws) + 1) * sizeof(mc_hyper))
        if hypers == NULL:
            raise MemoryError()
        for k in range(n_groups):
            for i in range(start, <Py_ssize_t>ends[k]):
                hypers[i] = group_hypers[k]
            start = ends[k]
        return _step_arrays(all_ws, all_gs, all_states, hypers, True, mode, names,
                            all_momenta)
    finally:
        PyMem_Free(group_hypers)
        PyMem_Free(hypers)


cdef int _collect(list all_ws, list all_gs, list all_states, object ws, object gs,
                  object states, tuple names, Py_ssize_t group) except -1:
    """Appends the arrays of one group to the lists after checking that the three
    sequences are lists or tuples of one length (group < 0: the only group)."""
    where = "" if group < 0 else f" of groups[{group}]"
    for name, seq in zip(names, (ws, gs, states)):
        if not isinstance(seq, (list, tuple)):
            raise TypeError(f"{name}{where} must be a list or tuple of numpy arrays, got "
                            f"{type(seq).__name__}")
    if len(gs) != len(ws) or len(states) != len(ws):
        raise ValueError(f"{names[0]}, {names[1]} and {names[2]}{where} must have one "
                         f"length; got {len(ws)}, {len(gs)} and {len(states)}")
    # Lists of our own hold every operand alive while the GIL is released, whatever
    # the caller's sequences do meanwhile, and their lengths are true.
    all_ws.extend(ws)
    all_gs.extend(gs)
    all_states.extend(states)
    return 0


cdef int _collect_momenta(list all_momenta, object momenta, Py_ssize_t count,
                          Py_ssize_t group) except -1:
    """Appends a group's momenta arrays (None: count Nones) to all_momenta."""
    if momenta is None:
        all_momenta.extend([None] * count)
        return 0
    where = "" if group < 0 else f" of groups[{group}]"
    if not isinstance(momenta, (list, tuple)):
        raise TypeError(f"momenta{where} must be a list or tuple of numpy arrays, got "
                        f"{type(momenta).__name__}")
    if len(momenta) != count:
        raise ValueError(f"momenta{where} must have one array per parameter; got "
                         f"{len(momenta)} for {count}")
    all_momenta.extend(momenta)
    return 0


cdef object _step_arrays(list ws, list gs, list states, const mc_hyper *hypers, bint each,
                         int mode, tuple names, list momenta):
    """The step behind momentum_step_many and step_groups: checks every operand
    (called by names, numbered in order), then one C call; array i takes
    hypers[i] with each, hypers[0] otherwise."""
    cdef Py_ssize_t i, count = len(ws)
    if count == 0:
        return True
    cdef int applied
    cdef mc_buffer *bufs = <mc_buffer *>PyMem_Malloc(count * sizeof(mc_buffer))
    cdef _extent *ext = <_extent *>PyMem_Malloc(4 * count * sizeof(_extent))
    try:
        if bufs == NULL or ext == NULL:
            raise MemoryError()
        for i in range(count):
            _fill(&bufs[i], ws[i], gs[i], states[i], names, i, momenta[i])
        _check_disjoint(bufs, count, ext, names, True)
        _check_mapped(ws, gs, states, names, True)
        for i in range(count):
            _check_in_dtype(&hypers[i if each else 0], bufs[i].dtype)
        with nogil:
            if each:
                applied = mc_momentum_step_each(bufs, hypers, <size_t>count,
                                                mode != PROPAGATE)
            else:
                applied = mc_momentum_step(bufs, <size_t>count, hypers, mode != PROPAGATE)
    finally:
        PyMem_Free(bufs)
        PyMem_Free(ext)
    return _outcome(applied, mode)


# ---- configuration ------------------------------------------------------------------


def set_num_threads(n):
    """Sets the number of threads the kernels use for large arrays.

    Arrays smaller than ``OMP_MIN_ELEMENTS`` (65,536) always run on the calling thread.
    Without OpenMP in the build this has no effect and get_num_threads() is 1. Results
    do not depend on the thread count (bit for bit).

    Parameters
    ----------
    n : int
        The number of threads, ``>= 1``; more than the machine's processors counts as
        that many.

    Raises
    ------
    TypeError
        If ``n`` is not an integer (2.5, True and "2" are refused, not truncated).
    ValueError
        If ``n < 1``.

    Examples
    --------
    >>> import momcore
    >>> previous = momcore.get_num_threads()
    >>> momcore.set_num_threads(1)
    >>> momcore.get_num_threads()
    1
    >>> momcore.set_num_threads(previous)
    """
    if (isinstance(n, (bool, np.bool_, np.timedelta64))
            or not isinstance(n, (int, np.integer))):
        raise TypeError(f"n must be an integer, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    mc_set_num_threads(min(int(n), 2**31 - 1))


def get_num_threads():
    """The number of threads the kernels use for large arrays.

    Returns
    -------
    int
        The thread count set by :func:`set_num_threads` (by default OpenMP's, from
        ``OMP_NUM_THREADS`` or the processors), 1 without OpenMP.
    """
    return mc_get_num_threads()


OMP_MIN_ELEMENTS = MC_OMP_MIN_ELEMENTS
SIMD_PATHS = ("avx512", "avx2", "baseline")


def simd_path():
    """The SIMD path in use: "avx512", "avx2" or "baseline"."""
    return mc_isa_name().decode()


def simd_supported():
    """The SIMD paths this build and this CPU can run, best first."""
    return tuple(p for p in SIMD_PATHS if mc_isa_supported(p.encode()))


def select_simd(str name):
    """Selects a SIMD path ("auto" = the best supported); returns the previous one.

    The momentum kernel gives bit-identical results on every path; the MLP passes,
    which follow the same switch, agree to rounding. This exists for testing and
    benchmarking. Not thread-safe: call it while no step runs.
    """
    previous = simd_path()
    if mc_select_isa(name.encode()) != 0:
        raise ValueError(f"SIMD path {name!r} is not available here; choose one of "
                         f"{('auto',) + simd_supported()}")
    return previous


def have_openmp():
    """True when the kernels were built with OpenMP."""
    return bool(mc_have_openmp())


def vector_math():
    """What the vectorised exp and tanh of the MLP passes run: {"exp": source,
    "tanh": source}, each "libmvec" (glibc's vector math library, found at load) or
    "libm" (the scalar function per element)."""
    return {"exp": mc_vmath_source(MC_VMATH_EXP).decode(),
            "tanh": mc_vmath_source(MC_VMATH_TANH).decode()}


def _stream5(w, g, s, Py_ssize_t repeat=1):
    """Benchmark roofline: w += g; s += g over the same five streams as a step,
    ``repeat`` times in one compiled loop."""
    cdef mc_buffer b
    cdef _extent ext[4]
    cdef Py_ssize_t i
    _fill(&b, w, g, s, _ONE_NAMES, -1)
    _check_disjoint(&b, 1, ext, _ONE_NAMES, False)
    with nogil:
        for i in range(repeat):
            mc_stream5(&b)


# A pass over fewer bytes than this keeps the GIL: releasing and taking it back again
# (0.1-0.2 us) would cost more than such a pass saves other threads.
cdef size_t _NOGIL_MIN_BYTES = 1 << 16


cdef bint _finite(cnp.ndarray arr):
    cdef const void *data = cnp.PyArray_DATA(arr)
    cdef size_t n = <size_t>cnp.PyArray_SIZE(arr)
    cdef int dtype = _dtype_code(arr)
    cdef int finite
    if <size_t>cnp.PyArray_NBYTES(arr) < _NOGIL_MIN_BYTES:
        return mc_all_finite(data, n, dtype) != 0
    with nogil:
        finite = mc_all_finite(data, n, dtype)
    return finite != 0


def all_finite(a):
    """Whether every element of the C-contiguous float32 or float64 array ``a`` is
    finite: one pass over its bits, no temporary, the GIL released."""
    return _finite(_checked(a, ROLE_G, "a"))


def all_finite_or_none(a):
    """:func:`all_finite` of ``a`` when it can read it (a C-contiguous, aligned float32
    or float64 ndarray in native byte order); None for anything else, without an
    exception, for callers that then decide another way."""
    if not cnp.PyArray_Check(a):
        return None
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int t = cnp.PyArray_TYPE(arr)
    if ((t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64) or not cnp.PyArray_ISNOTSWAPPED(arr)
            or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISALIGNED(arr)):
        return None
    return _finite(arr)


def copy_into(dst, src):
    """dst[...] = src for two C-contiguous ndarrays of the same dtype (native byte
    order) and shape that do not overlap, on up to :func:`get_num_threads` threads
    (large arrays), the GIL released. Returns False, copying nothing, for any other
    pair (callers then copy with numpy)."""
    if not (cnp.PyArray_Check(dst) and cnp.PyArray_Check(src)):
        return False
    cdef cnp.ndarray d = <cnp.ndarray>dst, s = <cnp.ndarray>src
    if (not cnp.PyArray_IS_C_CONTIGUOUS(d) or not cnp.PyArray_IS_C_CONTIGUOUS(s)
            or not cnp.PyArray_ISWRITEABLE(d)
            or cnp.PyArray_TYPE(d) != cnp.PyArray_TYPE(s)
            or not cnp.PyArray_ISNOTSWAPPED(d) or not cnp.PyArray_ISNOTSWAPPED(s)
            or not cnp.PyArray_SAMESHAPE(d, s)):
        return False
    cdef char *dp = <char *>cnp.PyArray_DATA(d)
    cdef const char *sp = <const char *>cnp.PyArray_DATA(s)
    cdef size_t nbytes = <size_t>cnp.PyArray_NBYTES(d)
    if nbytes and dp < sp + nbytes and sp < dp + nbytes:
        return False
    cdef int threads = mc_get_num_threads()
    if nbytes < _NOGIL_MIN_BYTES:
        mc_copy(dp, sp, nbytes, threads)
    else:
        with nogil:
            mc_copy(dp, sp, nbytes, threads)
    return True


def ready_rows(X, dtype, Py_ssize_t width, bint finite=True):
    """Whether ``X`` can serve as it is as rows of ``width`` inputs in ``dtype`` (float32
    or float64): a plain ndarray (no subclass) of that dtype in native byte order,
    C-contiguous and aligned, 2-D with ``width`` columns and at least one row, every
    element finite (not tested with ``finite=False``: for a caller whose compiled pass
    checks the rows as it reads them). One call for the common case of the checks of
    momcore.MLP's inputs; False sends the caller down its full checks (conversions,
    error messages)."""
    if not cnp.PyArray_CheckExact(X) or not cnp.PyArray_DescrCheck(dtype):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>X
    cdef int t = cnp.PyArray_TYPE(arr)
    if ((t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64) or t != (<cnp.dtype>dtype).type_num
            or not cnp.PyArray_ISNOTSWAPPED(arr) or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
            or not cnp.PyArray_ISALIGNED(arr) or cnp.PyArray_NDIM(arr) != 2
            or cnp.PyArray_DIMS(arr)[1] != width or cnp.PyArray_DIMS(arr)[0] < 1):
        return False
    return not finite or _finite(arr)


_GENERATOR = np.random.Generator
_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)


def permutation(rng, Py_ssize_t n):
    """``rng.permutation(n)`` for a ``numpy.random.Generator`` (int64, 0..n-1 shuffled),
    the same values drawn the same way from its bit generator (see mc_permutation), in
    one C pass under the bit generator's lock. A subclass of Generator, or n >= 2^32,
    gets ``rng.permutation(n)`` itself."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if type(rng) is not _GENERATOR or n > 0xFFFFFFFF:
        return rng.permutation(n)
    bit_generator = rng.bit_generator
    capsule = bit_generator.capsule
    if not PyCapsule_IsValid(capsule, b"BitGenerator"):
        return rng.permutation(n)
    cdef bitgen_t *bitgen = <bitgen_t *>PyCapsule_GetPointer(capsule, b"BitGenerator")
    cdef cnp.ndarray out = np.empty(n, np.int64)
    cdef int64_t *data = <int64_t *>cnp.PyArray_DATA(out)
    with bit_generator.lock:
        if <size_t>n * 8 < _NOGIL_MIN_BYTES:
            mc_permutation(data, <uint32_t>n, bitgen.next_uint32, bitgen.state)
        else:
            with nogil:
                mc_permutation(data, <uint32_t>n, bitgen.next_uint32, bitgen.state)
    return out


def one_hot(labels, Py_ssize_t k, dtype):
    """The one-hot rows of labels (a C-contiguous 1-D int64 array), a new C-contiguous
    (len(labels), k) array of dtype (float32 or float64) with ``out[r, labels[r]] = 1``
    and 0 elsewhere, made in one pass; None when a label lies outside [0, k)."""
    cdef cnp.ndarray y = _int64_vector(labels, "labels")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    cdef int type_num
    if dtype is _FLOAT64 or dtype == _FLOAT64:
        type_num = cnp.NPY_FLOAT64
    elif dtype is _FLOAT32 or dtype == _FLOAT32:
        type_num = cnp.NPY_FLOAT32
    else:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    cdef Py_ssize_t r, n = y.shape[0]
    cdef cnp.npy_intp shape[2]
    shape[0] = n
    shape[1] = k
    cdef cnp.ndarray t = cnp.PyArray_ZEROS(2, shape, type_num, 0)
    cdef const int64_t *lab = <const int64_t *>cnp.PyArray_DATA(y)
    cdef float *f32 = <float *>cnp.PyArray_DATA(t)
    cdef double *f64 = <double *>cnp.PyArray_DATA(t)
    cdef bint wide = type_num == cnp.NPY_FLOAT64
    cdef bint ok = True
    with nogil:
        for r in range(n):
            if not 0 <= lab[r] < k:
                ok = False
                break
            if wide:
                f64[r * k + lab[r]] = 1.0
            else:
                f32[r * k + lab[r]] = 1.0
    return t if ok else None


def _round_to_half(const float[::1] src, uint16_t[::1] dst, str dtype):
    """dst := the bits of src rounded to dtype ("bfloat16" or "float16") as the step
    stores them, on the SIMD path in use (for tests of the rounding)."""
    if dst.shape[0] != src.shape[0]:
        raise ValueError("src and dst must have one length")
    cdef int code = MC_BFLOAT16 if dtype == "bfloat16" else MC_FLOAT16
    with nogil:
        mc_round_to_half(&dst[0] if dst.shape[0] else NULL, &src[0] if src.shape[0] else NULL,
                         <size_t>dst.shape[0], code)


def _widen_half(const uint16_t[::1] src, float[::1] dst, str dtype):
    """dst := the float32 values of the dtype bits src, as the step widens them."""
    if dst.shape[0] != src.shape[0]:
        raise ValueError("src and dst must have one length")
    cdef int code = MC_BFLOAT16 if dtype == "bfloat16" else MC_FLOAT16
    with nogil:
        mc_widen_half(&dst[0] if dst.shape[0] else NULL, &src[0] if src.shape[0] else NULL,
                      <size_t>dst.shape[0], code)


if mc_select_isa(os.environ.get("MOMCORE_SIMD", "auto").encode()) != 0:
    mc_select_isa(b"auto")

def _after_fork_in_child():
    # OpenMP's thread pool does not survive fork(): a child process (multiprocessing's
    # default on Linux) runs the kernels on one thread instead of hanging; and BLAS gets
    # back the thread count that an epoch's team in another thread of the parent held
    # at one.
    mc_set_num_threads(1)
    mc_team_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


# ---- multilayer perceptron ---------------------------------------------------------

from scipy.linalg.cython_blas cimport dgemm, sgemm

mc_set_gemm(sgemm, dgemm)

GEMM_MIN_MACS = MC_GEMM_MIN_MACS
TEAM_MIN_MACS = MC_TEAM_MIN_MACS


def _blas_thread_functions():
    """The addresses of the set and get thread-count functions of the OpenBLAS behind
    scipy.linalg.cython_blas (scipy's wheels name them with a ``scipy_`` prefix), and
    the name found; (0, 0, None) for another BLAS, or with MOMCORE_NO_BLAS_TEAM=1."""
    import ctypes
    import scipy.linalg.cython_blas as cython_blas

    if os.environ.get("MOMCORE_NO_BLAS_TEAM", "") not in ("", "0"):
        return 0, 0, None
    try:  # (RTLD_NOLOAD: the library scipy loaded, never a second copy; POSIX only)
        lib = ctypes.CDLL(cython_blas.__file__, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except (OSError, AttributeError):
        return 0, 0, None
    for prefix in ("scipy_openblas", "openblas"):
        try:
            set_ = getattr(lib, prefix + "_set_num_threads")
            get = getattr(lib, prefix + "_get_num_threads")
        except AttributeError:
            continue
        return (ctypes.cast(set_, ctypes.c_void_p).value,
                ctypes.cast(get, ctypes.c_void_p).value, prefix + "_set_num_threads")
    return 0, 0, None


cdef _register_blas_threads():
    cdef size_t set_, get
    set_, get, name = _blas_thread_functions()
    mc_set_blas_threads(<mc_set_threads_t>set_, <mc_get_threads_t>get)
    return name


BLAS_THREADS_CONTROL = _register_blas_threads()

# Hidden and output activations of momcore.registry share one C enum.
ACTIVATION_CODES = _codes(_registry.HIDDEN + tuple(o for o in _registry.OUTPUTS
                                                   if o not in _registry.HIDDEN),
                          mc_activation_code, "activations")
N_ACTIVATIONS = MC_N_ACTIVATIONS
LOSS_CODES = _codes(tuple(_registry.LOSSES), mc_loss_code, "losses")
N_LOSSES = MC_N_LOSSES
ACCURACY_CODES = _codes(_registry.ACCURACY, mc_accuracy_code, "accuracy modes")
N_ACCURACIES = MC_N_ACCURACIES
ACCURACIES = tuple(_registry.ACCURACY)
"""How training accuracy is counted (registry.ACCURACY)."""


cdef bint _overlap(cnp.ndarray a, cnp.ndarray b):
    """Whether two C-contiguous arrays share any byte."""
    cdef size_t lo_a = <size_t>cnp.PyArray_DATA(a), lo_b = <size_t>cnp.PyArray_DATA(b)
    return (cnp.PyArray_NBYTES(a) > 0 and cnp.PyArray_NBYTES(b) > 0
            and lo_a < lo_b + <size_t>cnp.PyArray_NBYTES(b)
            and lo_b < lo_a + <size_t>cnp.PyArray_NBYTES(a))


# Work (rows x parameters) between two checks for pending signals in a compiled epoch:
# about a millisecond of online training (a 784-512-10 network: ~1.1 ns per row and
# parameter), so that Ctrl-C stops an epoch within a few milliseconds.
cdef size_t _CHECK_WORK = 1 << 20


cdef int _signals_pending(void *ctx) noexcept nogil:
    """mc_mlp.check of NetCore.train_epoch: runs the Python signal handlers (the GIL
    taken for a moment); an exception they raise (KeyboardInterrupt) is kept on the
    NetCore and ends the epoch."""
    with gil:
        try:
            PyErr_CheckSignals()
        except BaseException as exc:
            (<NetCore>ctx)._interrupt = exc
            return 1
    return 0


class NonFiniteRows(ValueError):
    """A row of X that :meth:`NetCore.train_epoch` read with ``check_rows`` held NaN or
    inf; the epoch stopped before that batch."""


cdef class NetCore:
    """The compiled passes of one network over caller-owned flat buffers.

    Holds the workspaces for up to ``max_batch`` rows (activations of every
    layer and two delta buffers), allocated once here and reused by every call.
    ``grad`` may be None when every training step folds the momentum update into
    the weight-gradient products. Not thread-safe: one NetCore per thread.

    ``loss`` (a name of momcore.registry.LOSSES) must pair with ``output``; None
    takes registry.DEFAULT_LOSS[output]. ``accuracy`` is one of ACCURACIES, or
    None: "argmax" when the output layer has several units, "threshold" when it
    has one. ``l2`` (>= 0, settable) adds ``l2/(2B) sum_i ||W_i||^2`` over the
    weight blocks (not the biases) to the loss E of every batch of B rows;
    ``epoch_penalty`` is the l2 part of the last ``train_epoch``'s sum of losses.
    """
    cdef mc_mlp net
    cdef readonly object params, state, grad, sizes, loss, accuracy
    cdef readonly Py_ssize_t max_batch
    cdef readonly long long steps_applied
    cdef object _interrupt
    cdef readonly double epoch_penalty  # the l2 part of the last train_epoch's sum of losses
    cdef list _workspace
    cdef list _curvature_workspace
    cdef mc_curvature_work _curvature_work
    cdef void **_act_ptrs
    cdef int _typenum
    cdef Py_ssize_t _n_in, _n_out

    def __cinit__(self):
        self._act_ptrs = NULL

    def __init__(self, params, state, grad, sizes, str hidden, str output,
                 Py_ssize_t max_batch, *, loss=None, accuracy=None, l2=0.0):
        if self._act_ptrs != NULL:
            raise TypeError("a NetCore is initialised once")
        cdef cnp.ndarray p = _checked(params, ROLE_W, "params")
        cdef cnp.ndarray s = _checked(state, ROLE_S, "state")
        cdef Py_ssize_t i, total = 0
        sizes = cnp.PyArray_FROMANY(sizes, cnp.NPY_INT64, 1, 1, cnp.NPY_ARRAY_CARRAY)
        if sizes.shape[0] < 2 or (sizes < 1).any() or (sizes > 2**30).any():
            raise ValueError("sizes must hold at least two layer widths in [1, 2**30]")
        for i in range(sizes.shape[0] - 1):
            total += sizes[i] * sizes[i + 1] + sizes[i + 1]
        self._typenum = cnp.PyArray_TYPE(p)
        for name, a in (("params", p), ("state", s)) + ((("grad", grad),) if grad is not None else ()):
            a = _checked(a, ROLE_S, name)
            if a.ndim != 1 or a.shape[0] != total or cnp.PyArray_TYPE(a) != self._typenum:
                raise ValueError(f"{name} must be a 1-D {p.dtype} buffer of {total} elements")
        buffers = [("params", p), ("state", s)] + ([("grad", grad)] if grad is not None else [])
        for i, (name_a, a) in enumerate(buffers):
            for name_b, b in buffers[i + 1:]:
                if _overlap(a, b):
                    raise ValueError(f"{name_a} and {name_b} share memory")
        if max_batch < 1 or max_batch * int(sizes.max()) > 2**31 - 1:
            raise ValueError(f"max_batch must be in [1, (2**31-1)/max(sizes)], got {max_batch}")
        _registry.check_name("hidden", hidden, "hidden")
        _registry.check_name("output", output, "output")
        loss = _registry.loss_for(output, loss)
        if accuracy is None:
            accuracy = "argmax" if sizes[sizes.shape[0] - 1] > 1 else "threshold"
        elif not (isinstance(accuracy, str) and accuracy in ACCURACY_CODES):
            raise ValueError(f"accuracy must be one of "
                             f"{', '.join(map(repr, ACCURACIES))} or None; got {accuracy!r}")
        self.loss, self.accuracy = loss, accuracy
        self.params, self.state, self.grad, self.sizes = p, s, grad, sizes
        self._n_in, self._n_out = int(sizes[0]), int(sizes[sizes.shape[0] - 1])
        self.max_batch = max_batch
        dtype = p.dtype
        widest = int(sizes.max())
        self._workspace = [np.empty(max_batch * int(w), dtype) for w in sizes]
        self._workspace += [np.empty(max_batch * widest, dtype), np.empty(max_batch * widest, dtype),
                            np.empty(widest, dtype)]
        self._act_ptrs = <void **>PyMem_Malloc(sizes.shape[0] * sizeof(void *))
        if self._act_ptrs == NULL:
            raise MemoryError()
        for i in range(sizes.shape[0]):
            self._act_ptrs[i] = cnp.PyArray_DATA(<cnp.ndarray>self._workspace[i])
        self.net.dtype = MC_FLOAT32 if self._typenum == cnp.NPY_FLOAT32 else MC_FLOAT64
        self.net.n_layers = sizes.shape[0] - 1
        self.net.sizes = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>sizes)
        self.net.n_params = <size_t>total
        self.net.hidden = ACTIVATION_CODES[hidden]
        self.net.output = ACTIVATION_CODES[output]
        self.net.loss = LOSS_CODES[loss]
        self.net.accuracy = ACCURACY_CODES[accuracy]
        self.net.params = cnp.PyArray_DATA(p)
        self.net.state = cnp.PyArray_DATA(s)
        self.net.grad = cnp.PyArray_DATA(<cnp.ndarray>grad) if grad is not None else NULL
        self.net.max_batch = max_batch
        self.net.acts = self._act_ptrs
        self.net.delta = cnp.PyArray_DATA(<cnp.ndarray>self._workspace[sizes.shape[0]])
        self.net.delta_prev = cnp.PyArray_DATA(<cnp.ndarray>self._workspace[sizes.shape[0] + 1])
        self.net.scratch = cnp.PyArray_DATA(<cnp.ndarray>self._workspace[sizes.shape[0] + 2])
        self.net.check = NULL
        self.net.check_ctx = NULL
        self.net.check_work = _CHECK_WORK
        self.net.check_rows = 0
        self.l2 = l2

    @property
    def l2(self):
        """The L2 penalty factor on the weights (see the class docstring)."""
        return self.net.l2

    @l2.setter
    def l2(self, value):
        cdef double v = _real(value, "l2")
        if not (isfinite(v) and v >= 0):
            raise ValueError(f"l2 must be a finite number >= 0, got {value!r}")
        self.net.l2 = v

    def __dealloc__(self):
        PyMem_Free(self._act_ptrs)

    cdef cnp.ndarray _rows(self, object a, str name, Py_ssize_t width, bint written=False):
        """a as a C-contiguous (n, width) array of the network's dtype, not sharing
        memory with the network's buffers, or an error."""
        cdef cnp.ndarray arr = _checked(a, ROLE_S if written else ROLE_G, name)
        if cnp.PyArray_TYPE(arr) != self._typenum:
            raise TypeError(f"{name} must have dtype {self.params.dtype}, got {arr.dtype}")
        if arr.ndim != 2 or arr.shape[1] != width:
            raise ValueError(f"{name} must have shape (n, {width}), got {(<object>arr).shape}")
        if (_overlap(arr, self.params) or _overlap(arr, self.state)
                or (self.grad is not None and _overlap(arr, self.grad))):
            raise ValueError(f"{name} shares memory with the network's parameters, state or "
                             f"gradient")
        return arr

    def predict(self, X, out):
        """out[n, sizes[-1]] := the network's outputs for X[n, sizes[0]]."""
        cdef cnp.ndarray x = self._rows(X, "X", self._n_in)
        cdef cnp.ndarray y = self._rows(out, "out", self._n_out, True)
        if y.shape[0] != x.shape[0]:
            raise ValueError("X and out must have the same number of rows")
        if _overlap(y, x):
            raise ValueError("out shares memory with X")
        with nogil:
            mc_mlp_predict(&self.net, cnp.PyArray_DATA(x), x.shape[0], cnp.PyArray_DATA(y))
        return out

    def gradients(self, X, T):
        """grad := dE/dparams for E the mean of the per-sample loss over the rows of X
        (plus the l2 term).

        Returns (E, the number of rows the accuracy mode counts correct)."""
        cdef cnp.ndarray x = self._rows(X, "X", self._n_in)
        cdef cnp.ndarray t = self._rows(T, "T", self._n_out)
        cdef double loss
        cdef int64_t correct = 0
        if self.grad is None:
            raise ValueError("this NetCore has no gradient buffer")
        if x.shape[0] != t.shape[0] or not 0 < x.shape[0] <= self.max_batch:
            raise ValueError(f"X and T must have the same number of rows, 1..{self.max_batch}")
        with nogil:
            loss = mc_mlp_gradients(&self.net, cnp.PyArray_DATA(x), cnp.PyArray_DATA(t),
                                    x.shape[0], &correct)
        return loss, correct

    def curvature(self, X, T, out):
        """out := the diagonal Gauss-Newton curvature of E, the mean loss over the rows
        of X (Becker & LeCun's second-order back-propagation; see mc_mlp_curvature),
        in the flat layout; from the same forward pass, grad := dE/dparams when this
        NetCore has a gradient buffer.

        Returns (E, the number of rows the accuracy mode counts correct). The
        workspaces of the pass are made at the first call and kept."""
        cdef cnp.ndarray x = self._rows(X, "X", self._n_in)
        cdef cnp.ndarray t = self._rows(T, "T", self._n_out)
        cdef cnp.ndarray c = _checked(out, ROLE_S, "out")
        cdef double loss
        cdef int64_t correct = 0
        if (cnp.PyArray_TYPE(c) != self._typenum or c.ndim != 1
                or c.shape[0] != <Py_ssize_t>self.net.n_params):
            raise ValueError(f"out must be a 1-D {self.params.dtype} buffer of "
                             f"{self.net.n_params} elements")
        if (_overlap(c, self.params) or _overlap(c, self.state) or _overlap(c, x)
                or _overlap(c, t) or (self.grad is not None and _overlap(c, self.grad))):
            raise ValueError("out shares memory with another operand")
        if x.shape[0] != t.shape[0] or not 0 < x.shape[0] <= self.max_batch:
            raise ValueError(f"X and T must have the same number of rows, 1..{self.max_batch}")
        if self._curvature_workspace is None:
            sizes = self.sizes
            rows = self.max_batch * int(sizes.max())
            layer = max(int(sizes[i]) * int(sizes[i + 1]) for i in range(len(sizes) - 1))
            self._curvature_workspace = [np.empty(rows, self.params.dtype),
                                         np.empty(rows, self.params.dtype),
                                         np.empty(max(rows, layer), self.params.dtype)]
            self._curvature_work.h = cnp.PyArray_DATA(<cnp.ndarray>self._curvature_workspace[0])
            self._curvature_work.h_below = cnp.PyArray_DATA(
                <cnp.ndarray>self._curvature_workspace[1])
            self._curvature_work.squares = cnp.PyArray_DATA(
                <cnp.ndarray>self._curvature_workspace[2])
        with nogil:
            loss = mc_mlp_curvature(&self.net, &self._curvature_work, cnp.PyArray_DATA(x),
                                    cnp.PyArray_DATA(t), x.shape[0], cnp.PyArray_DATA(c),
                                    &correct)
        return loss, correct

    def gradient_share(self, X, T, rows, Py_ssize_t divisor, double l2=0.0):
        """grad := one process's share of the gradient of a global batch of ``divisor``
        rows (data-parallel training; see mc_mlp_gradient_share): the rows ``rows``
        (C-contiguous int64, at most max_batch, possibly none) of X and T, the sum of
        their per-sample losses' gradients over ``divisor``, plus ``(l2/divisor) W``
        on the weights (give l2 to one process only). The processes' buffers add up to
        dE/dparams of the global batch.

        Returns (sum of the rows' per-sample losses, rows the accuracy mode counts
        correct, sum_i ||W_i||^2 when l2 is not 0, else 0)."""
        cdef cnp.ndarray x = self._rows(X, "X", self._n_in)
        cdef cnp.ndarray t = self._rows(T, "T", self._n_out)
        cdef cnp.ndarray idx = _int64_vector(rows, "rows")
        if self.grad is None:
            raise ValueError("this NetCore has no gradient buffer")
        if x.shape[0] != t.shape[0]:
            raise ValueError("X and T must have the same number of rows")
        cdef Py_ssize_t n = idx.shape[0], n_rows = x.shape[0]
        if n > self.max_batch or divisor < max(n, 1):
            raise ValueError(f"rows must hold at most {self.max_batch} rows and divisor at "
                             f"least as many (and 1), got {n} and {divisor}")
        if not (isfinite(l2) and l2 >= 0):
            raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
        _check_rows(idx, n_rows, "rows")
        cdef const int64_t *o = <const int64_t *>cnp.PyArray_DATA(idx)
        cdef double loss, squares
        cdef int64_t correct = 0
        with nogil:
            loss = mc_mlp_gradient_share(&self.net, cnp.PyArray_DATA(x), cnp.PyArray_DATA(t),
                                         o, n, divisor, l2, &correct, &squares)
        return loss, correct, squares

    def step(self, *, lr, momentum, rule="classical", dampening=0.0, weight_decay=0.0,
             momenta=None):
        """params, state := one momentum step with the gradient buffer, on the calling
        thread (as the training loop does it; see mc_mlp_train_epoch); ``momenta`` as in
        momentum_step (a flat buffer of the parameters' layout)."""
        cdef mc_hyper h
        cdef mc_buffer b
        cdef cnp.ndarray ap
        _parse_hyper(&h, lr, momentum, rule, dampening, weight_decay, "propagate")
        _check_momenta_taken(rule, momenta)
        _check_in_dtype(&h, self.net.dtype)
        if self.grad is None:
            raise ValueError("this NetCore has no gradient buffer")
        b.w, b.g, b.s = self.net.params, self.net.grad, self.net.state
        b.n = self.net.n_params
        b.dtype = self.net.dtype
        b.p = NULL
        if momenta is not None:
            ap = _checked(momenta, ROLE_G, "momenta")
            if (cnp.PyArray_TYPE(ap) != self._typenum or ap.ndim != 1
                    or ap.shape[0] != <Py_ssize_t>self.net.n_params):
                raise ValueError(f"momenta must be a 1-D {self.params.dtype} buffer of "
                                 f"{self.net.n_params} elements")
            if (_overlap(ap, self.params) or _overlap(ap, self.state)):
                raise ValueError("momenta shares memory with the parameters or the state")
            b.p = cnp.PyArray_DATA(ap)
        with nogil:
            mc_momentum_step_threads(&b, 1, &h, 0, 1)

    def team_threads(self, Py_ssize_t batch):
        """The threads train_epoch runs epochs of batches of ``batch`` rows on (see
        mc_mlp_team_threads): 1, or momcore's thread count when every layer's products
        go to gemm, they are enough work and BLAS's thread count can be held at 1."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        return mc_mlp_team_threads(&self.net, batch)

    def train_epoch(self, X, T, order, Py_ssize_t batch, *, lr, momentum, rule="classical",
                    dampening=0.0, weight_decay=0.0, bint check_rows=False):
        """One epoch over the rows ``order`` in batches of ``batch``; see mc_mlp_train_epoch.
        Without a gradient buffer the classical step is folded into the backward pass.

        Returns (sum of per-sample losses plus per batch l2/2 sum_i ||W_i||^2,
        correct predictions, steps applied, stopped on a non-finite loss); the l2 part
        of the sum is left in ``epoch_penalty``.

        ``check_rows``: every row of X the epoch reads is checked for NaN and inf as it
        is gathered (while it is in cache); a batch holding one raises
        :class:`NonFiniteRows` before its forward pass, with the steps of the batches
        before it applied and counted in :attr:`steps_applied`.

        Interrupts: called from the main thread, the epoch runs Python's signal
        handlers every millisecond or so of work (between batches); when one raises
        (Ctrl-C: KeyboardInterrupt) the epoch ends after the batch in progress and the
        exception propagates. Every step applied, interrupted or not, is added to
        :attr:`steps_applied` before anything can raise, so a caller that reads it
        around the call (in a ``finally``) counts exactly the steps applied."""
        cdef mc_hyper h
        _parse_hyper(&h, lr, momentum, rule, dampening, weight_decay, "propagate")
        _check_in_dtype(&h, self.net.dtype)
        cdef cnp.ndarray x = self._rows(X, "X", self._n_in)
        cdef cnp.ndarray t = self._rows(T, "T", self._n_out)
        cdef cnp.ndarray idx = _int64_vector(order, "order")
        if x.shape[0] != t.shape[0]:
            raise ValueError("X and T must have the same number of rows")
        if not 1 <= batch <= self.max_batch:
            raise ValueError(f"batch must be in [1, {self.max_batch}], got {batch}")
        cdef Py_ssize_t n_order = idx.shape[0]
        _check_rows(idx, x.shape[0], "order")
        cdef const int64_t *o = <const int64_t *>cnp.PyArray_DATA(idx)
        # Whether to fold is the caller's choice, made when it gave no gradient buffer
        # (momcore.SGD.folds decides it for MLP); only the classical rule without weight
        # decay can be folded into the weight-gradient products.
        cdef int fold = self.grad is None
        if fold and not (h.rule == MC_CLASSICAL and h.weight_decay == 0.0):
            raise ValueError(f"rule {rule!r} with weight_decay={weight_decay} needs a "
                             f"gradient buffer")
        cdef mc_fit_result r
        # Only the main thread runs signal handlers; elsewhere the check would only
        # contend for the GIL.
        if _threading.get_ident() == _threading.main_thread().ident:
            self.net.check = _signals_pending
            self.net.check_ctx = <void *>self
        self._interrupt = None
        self.net.check_rows = check_rows
        with nogil:
            r = mc_mlp_train_epoch(&self.net, cnp.PyArray_DATA(x), cnp.PyArray_DATA(t), o,
                                   n_order, batch, &h, fold)
        self.epoch_penalty = r.sum_penalty
        self.net.check = NULL
        self.net.check_ctx = NULL
        self.steps_applied += r.n_steps
        if r.interrupted:
            exc, self._interrupt = self._interrupt, None
            raise exc
        if r.bad_input:
            raise NonFiniteRows(f"X holds NaN or inf in a row of the batch at order"
                                f"[{r.n_steps * batch}]; the {r.n_steps} steps before it "
                                f"were applied")
        return r.sum_loss, r.n_correct, r.n_steps, bool(r.stopped)

"""Fuzzing the public Python API with hypothesis.

Every call of a public entry point on adversarial input either succeeds or raises a clear
exception (TypeError, ValueError or FloatingPointError, with a non-empty message), and
never crashes the interpreter:

- ``momcore.momentum_step`` / ``momentum_step_many`` against ``momcore.reference``: both
  raise (the same exception type, leaving every operand untouched) or both succeed with
  bit-identical ``w`` and ``state`` (bytes compared);
- ``momcore.SGD(...)`` and ``.step`` (checked against the reference's many-step),
  ``.load_state_dict`` (success round-trips, failure leaves the optimizer as it was);
- ``momcore.MLP(...)`` and ``.predict``, ``.predict_proba``, ``.score``, ``.loss``,
  ``.gradients``, ``.fit``: both backends raise the same exception type or both succeed,
  with close results where the numbers are moderate;
- ``momcore.MLP.load`` on model files broken by truncation, flipped bytes, hostile
  metadata (any JSON in any field), hostile ``.npy`` headers, missing, extra or renamed
  members and compression: it loads or raises ValueError naming the file, and its peak
  traced allocation stays under twice the file's size plus 1 MiB.

The inputs: dtypes int, bool, float16, complex, object, structured, datetime, timedelta,
strings, long double; byte-swapped, negative-stride, strided, Fortran, broadcast,
unaligned and read-only arrays; overlapping views of one buffer and the same array
passed twice; 0-d and empty arrays; huge (1e308), subnormal, NaN and inf values; every
keyword given str, None, list, complex, numpy arrays, bool, Fraction, Decimal...; lists
and tuples instead of arrays.

Each target runs in-process with 100-300 examples (hypothesis shrinks a failure to a
readable example), and all of them run again in a subprocess
(``test_fuzz_targets_in_a_subprocess``), so that a segfault or an abort fails a test,
with the signal and the target that was running, instead of killing the pytest run.

Long run: ``test_fuzz_targets_in_a_subprocess_long`` is marked ``slow``. Select it with
``-m slow`` (the pytest configuration deselects slow tests by default); it also runs when
``MOMCORE_FUZZ_EXAMPLES`` is set and slow tests are not deselected, and is skipped
otherwise. ``MOMCORE_FUZZ_EXAMPLES`` is the number of examples per target (default 5000)::

    MOMCORE_FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz.py -p no:cacheprovider -m slow

The bugs this fuzzing found (use after free and a size overflow in momentum_step_many,
hyperparameters parsed or cast instead of refused, masked arrays, a non-atomic
load_state_dict, unchecked names and labels, unaligned input) are fixed; the tests at the
end of this file pin each of them.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap
import tracemalloc
import warnings
import zipfile
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import momcore
from momcore import reference as ref

# When a hypothesis test fails, its pytest plugin imports hypothesis.extra._patching
# (libcst), which warns on import; under filterwarnings = error that turns the failure
# report into an INTERNALERROR. Imported here, quietly, so a failure reads as one.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:
        pass

THIS_FILE = pathlib.Path(__file__).resolve()
# The directory holding the imported package: the subprocess imports the same momcore.
PACKAGE_DIR = pathlib.Path(momcore.__file__).resolve().parent
PACKAGE_PARENT = PACKAGE_DIR.parent

RULES = ("classical", "nesterov", "velocity", "ema", "one_step")
NONFINITE = ("propagate", "raise", "skip")
CLEAR = (TypeError, ValueError, FloatingPointError)
MISSING = object()  # a keyword left out of a call

IN_PROCESS_EXAMPLES = {"kernel": 300, "sgd": 150, "mlp": 100, "checkpoint": 150}
SUBPROCESS_EXAMPLES = 60  # per target, default run
LONG_EXAMPLES = 5000  # per target, the slow run without MOMCORE_FUZZ_EXAMPLES

# ---- outcomes ------------------------------------------------------------------------


@dataclass
class Outcome:
    value: Any = None
    error: Exception | None = None

    def __repr__(self) -> str:
        if self.error is not None:
            return f"raised {type(self.error).__name__}: {self.error}"
        return f"returned {self.value!r}"[:300]


def _run(fn, *args, **kwargs) -> Outcome:
    """fn(*args, **kwargs) with numpy's floating-point warnings off and stdout swallowed.

    Any other warning is an error here as in the pytest configuration (and in the
    subprocess), so it shows up as an exception that is not one of CLEAR."""
    try:
        with np.errstate(all="ignore"), contextlib.redirect_stdout(io.StringIO()):
            return Outcome(value=fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - judged by _assert_clear
        return Outcome(error=exc)


def _assert_clear(out: Outcome, what: str) -> None:
    if out.error is None:
        return
    exc = out.error
    assert isinstance(exc, CLEAR), f"{what} raised {type(exc).__name__}: {exc}"
    assert str(exc).strip(), f"{what} raised {type(exc).__name__} without a message"


def _snap(x: Any) -> Any:
    """A comparable fingerprint of an operand (its bytes, for an array)."""
    if isinstance(x, np.ndarray):
        return (x.dtype.str, x.shape, x.tobytes())
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, [_snap(v) for v in x])
    return repr(x)


def _result(x: Any) -> Any:
    """_snap with every NaN made the same NaN: the kernel and the reference agree bit for
    bit except in the sign and payload of a NaN, which IEEE 754 leaves unspecified (the
    compiler may swap the operands of x + y, and x86 returns the first NaN operand)."""
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        x = np.where(np.isnan(x), np.array(np.nan, x.dtype), x)
    return _snap(x)


# ---- operand recipes -------------------------------------------------------------------
# A strategy draws a recipe; build() makes fresh objects from it, so that the compiled
# and the reference implementation each get their own, identical, operands (the same
# layout, the same aliasing, the same bytes).

FLOAT_EDGES = [0.0, -0.0, 1.0, -1.0, 0.1, 1e4, -1e4, 1e308, -1e308, float(np.finfo(float).max),
               5e-324, -5e-324, 1e-310, float(np.finfo(float).tiny),
               float(np.finfo(np.float32).max),
               float(np.finfo(np.float32).smallest_subnormal), float(np.finfo(np.float32).tiny),
               65504.0, math.nan, math.inf, -math.inf]
ELEMENTS = st.one_of(st.sampled_from(FLOAT_EDGES), st.floats(-1e3, 1e3),
                     st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True))
MODERATE = st.floats(-10.0, 10.0)
ODD_DTYPES = ["i1", "i8", "u8", "?", "f2", "c8", "c16", "O", "V", ">f4", ">f8", "M8[s]",
              "m8[s]", "U4", "g"]
LAYOUTS = ["c", "reversed", "strided", "fortran", "broadcast", "unaligned", "readonly"]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
NOT_ARRAYS = [None, "w", b"\x00" * 8, 1.5, 0, 1j, True, {"w": 1.0}, set(), Fraction(1, 2),
              np.float64(1.0), np.float32(1.0)]


def _template(dtype: Any, shape: tuple, values: list[float]) -> np.ndarray:
    """An array of `dtype` and `shape` holding `values` (cycled), cast as numpy casts."""
    n = math.prod(shape)
    base = np.resize(np.asarray(values, np.float64), n)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = np.dtype(dtype).str if not isinstance(dtype, str) else dtype
        if code == "V":
            a = np.zeros(n, [("a", "<f8")])
            a["a"] = base
        elif code in ("M8[s]", "m8[s]"):
            a = np.nan_to_num(base, posinf=0, neginf=0).clip(-1e9, 1e9).astype(np.int64)
            a = a.astype(code)
        elif code == "U4":
            a = base.astype("U4")
        elif code == "O":
            a = base.astype(object)
        else:
            a = base.astype(code)
    return a.reshape(shape)


def _materialize(t: np.ndarray, layout: str) -> np.ndarray:
    """A fresh array with the content of t, in the given memory layout."""
    if layout == "reversed" and t.ndim:
        return t[::-1].copy()[::-1]
    if layout == "strided" and t.ndim:
        return np.repeat(t, 2, axis=0)[::2]
    if layout == "fortran":
        return np.asfortranarray(t.copy())
    if layout == "broadcast":
        src = t.reshape(-1)[:1].copy().reshape(()) if t.size else t.copy()
        return np.broadcast_to(src, t.shape)
    if layout == "unaligned" and t.dtype.itemsize > 1 and not t.dtype.hasobject:
        buf = np.zeros(t.nbytes + 1, np.uint8)
        a = buf[1:].view(t.dtype).reshape(t.shape)
        a[...] = t
        return a
    a = t.copy()
    if layout == "readonly":
        a.flags.writeable = False
    return a


@dataclass(eq=False)
class Arr:
    template: np.ndarray
    layout: str = "c"


@dataclass(eq=False)
class PoolView:
    """A view into the call's one shared buffer."""
    start: int
    shape: tuple


@dataclass(eq=False)
class Same:
    """The very object built for an earlier operand."""
    index: int


@dataclass(eq=False)
class Obj:
    """Not an array: copied as is."""
    value: Any


@dataclass(eq=False)
class Recipe:
    specs: list
    pool: np.ndarray | None = None
    containers: list = field(default_factory=list)  # for the many-step: (kind, drop)

    def build(self) -> tuple[list, np.ndarray | None]:
        pool = self.pool.copy() if self.pool is not None else None
        out: list = []
        for spec in self.specs:
            if isinstance(spec, Arr):
                out.append(_materialize(spec.template, spec.layout))
            elif isinstance(spec, PoolView):
                size = math.prod(spec.shape)
                out.append(pool[spec.start:spec.start + size].reshape(spec.shape))
            elif isinstance(spec, Same):
                out.append(out[spec.index])
            else:
                out.append(copy.deepcopy(spec.value))
        return out, pool


def _chance(n: int):
    """True about once in n draws. (Hypothesis favours the ends of a range, so the
    rare value sits in the middle.)"""
    return st.integers(0, n - 1).map(lambda k: k == n // 2)


def _weighted(good, bad, ratio: int = 8):
    """good, and bad about once in ratio + 1 draws."""
    return _chance(ratio + 1).flatmap(lambda rare: bad if rare else good)


@st.composite
def operand(draw, shape: tuple, dtype: Any, pool: np.ndarray | None, n_prev: int):
    """A well-formed operand of `shape` and `dtype` most of the time, else anything."""
    if not draw(_chance(6)):
        fits = pool is not None and math.prod(shape) <= pool.size
        if fits and draw(_chance(3)):
            start = draw(st.integers(0, pool.size - math.prod(shape)))
            return PoolView(start, shape)
        values = draw(st.lists(ELEMENTS, min_size=1, max_size=6))
        return Arr(_template(dtype, shape, values))
    kind = draw(st.sampled_from(["arr", "pool", "same", "obj", "list"]))
    if kind == "pool" and pool is not None and math.prod(shape) <= pool.size:
        start = draw(st.integers(0, pool.size - math.prod(shape)))
        return PoolView(start, shape)
    if kind == "same" and n_prev:
        return Same(draw(st.integers(0, n_prev - 1)))
    if kind == "obj":
        return Obj(draw(st.sampled_from(NOT_ARRAYS)))
    values = draw(st.lists(ELEMENTS, min_size=1, max_size=6))
    if kind == "list":  # the right numbers, as nested lists or tuples instead of an array
        as_list = _template(dtype, shape, values).tolist()
        return Obj(tuple(as_list) if draw(st.booleans()) and shape else as_list)
    if draw(st.booleans()):
        dtype = draw(st.sampled_from(ODD_DTYPES))
    if draw(_chance(3)):
        shape = draw(SHAPES)
    return Arr(_template(dtype, shape, values), draw(st.sampled_from(LAYOUTS)))


@st.composite
def triples(draw, count: int):
    """Specs for `count` (w, g, state) triples of one call, maybe over one shared buffer."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    pool = None
    if draw(st.booleans()):
        values = draw(st.lists(ELEMENTS, min_size=1, max_size=6))
        pool = _template(dtype, (draw(st.integers(0, 60)),), values)
    specs: list = []
    for _ in range(count):
        shape = draw(SHAPES)
        for _ in range(3):
            specs.append(draw(operand(shape, dtype, pool, len(specs))))
    return Recipe(specs, pool)


# ---- hyperparameters -----------------------------------------------------------------

JUNK = [None, "0.1", b"0.1", "", [0.1], (0.1,), {"lr": 0.1}, 1j, complex(0.5, 0),
        bytearray(b"0.5"), np.complex128(0.1 + 1j), np.complex64(0.5), np.array("0.1"),
        np.array(b"0.1"), 10**400, -(10**400),
        np.array([0.1]), np.array([[0.1]]), np.array([]), np.array(0.1), np.array(0.5, np.float32),
        np.array(0.1 + 0j), np.array(None, object), np.float32(0.1), np.float16(0.5),
        np.int64(1), np.uint8(0), True, False, np.bool_(True), Fraction(1, 10), Decimal("0.1"),
        Decimal("nan"), 2**1023, -(2**1023), object(), np.datetime64(1, "s"),
        np.timedelta64(1, "s"), np.longdouble(0.25), math.nan, math.inf, -math.inf]
LR = _weighted(st.one_of(st.floats(0.0, 10.0),
                         st.sampled_from([0.0, -0.0, 5e-324, 1e-45, 1e30, 1e308,
                                          float(np.finfo(float).max), -1e-300, -1.0])),
               st.sampled_from(JUNK))
MOMENTUM = _weighted(st.one_of(st.floats(-1.0, 1.0),
                               st.sampled_from([-1.0, 1.0, 0.9999999999999999, -0.9999999999999999,
                                                0.0, -0.0, 1.5, 5e-324])),
                     st.sampled_from(JUNK))
DAMPENING = _weighted(st.one_of(st.floats(0.0, 1.0),
                                st.sampled_from([1.0, -5e-324, 0.9999999999999999])),
                      st.sampled_from(JUNK))
WEIGHT_DECAY = _weighted(st.one_of(st.just(0.0), st.floats(0.0, 10.0),
                                   st.sampled_from([5e-324, 1e308, -5e-324])),
                         st.sampled_from(JUNK))
RULE = _weighted(st.sampled_from(RULES), st.sampled_from(
    ["adam", "", "Classical", None, b"classical", ["classical"], np.str_("nesterov"), 0]))
NONFINITE_MODE = _weighted(st.sampled_from(NONFINITE), st.sampled_from(
    ["ignore", None, "", b"raise", np.str_("skip"), 1]))


def _optional(strategy, p_missing: int = 15):
    """strategy, or MISSING (the keyword left out) about once in p_missing draws."""
    return _chance(p_missing).flatmap(lambda rare: st.just(MISSING) if rare else strategy)


@st.composite
def hyper(draw):
    kw = {"lr": draw(_optional(LR)), "momentum": draw(_optional(MOMENTUM))}
    for name, strategy in (("rule", RULE), ("dampening", DAMPENING),
                           ("weight_decay", WEIGHT_DECAY), ("nonfinite", NONFINITE_MODE)):
        kw[name] = draw(_optional(strategy, 3))
    if draw(_chance(40)):
        kw["learning_rate"] = 0.1  # an unknown keyword
    return {k: v for k, v in kw.items() if v is not MISSING}


# ---- targets ---------------------------------------------------------------------------

IMPLS = {"compiled": momcore, "reference": ref}
FUZZ_TARGETS: dict = {}


def fuzz_target(group: str, *strategies):
    """Registers a property as a fuzz target; .make(n) gives its hypothesis test (n
    examples; by default the in-process number of its group)."""
    def register(body):
        def make(max_examples: int = IN_PROCESS_EXAMPLES[group]):
            return settings(max_examples=max_examples, deadline=None, database=None,
                            suppress_health_check=list(HealthCheck))(given(*strategies)(body))
        body.make = make
        FUZZ_TARGETS[body.__name__] = body
        return body
    return register


def _event(out: Outcome) -> None:
    """Tallies outcomes (pytest --hypothesis-show-statistics shows how often each occurs)."""
    event("ok" if out.error is None else type(out.error).__name__)


def _compare_kernel_runs(runs: dict, what: str) -> None:
    (c_out, c_ops, c_pool), (r_out, r_ops, r_pool) = runs["compiled"], runs["reference"]
    _event(c_out)
    detail = f"{what}: compiled {c_out!r}; reference {r_out!r}"
    if c_out.error is not None or r_out.error is not None:
        assert type(c_out.error) is type(r_out.error), detail
        return
    assert c_out.value is r_out.value and isinstance(c_out.value, bool), detail
    for i, (a, b) in enumerate(zip(c_ops, r_ops)):
        assert _result(a) == _result(b), f"{what}: operand {i} differs from the reference\n" \
                                         f"compiled  {a!r}\nreference {b!r}"
    if c_pool is not None:
        assert _result(c_pool) == _result(r_pool), f"{what}: shared buffer differs"


def _run_kernel(fn, recipe: Recipe, make_args, kwargs: dict, what: str):
    ops, pool = recipe.build()
    before = [_snap(x) for x in ops], (pool.tobytes() if pool is not None else None)
    out = _run(fn, *make_args(ops), **kwargs)
    _assert_clear(out, what)
    after = [_snap(x) for x in ops], (pool.tobytes() if pool is not None else None)
    if out.error is not None or out.value is False:
        assert after == before, f"{what} {out!r} but changed an operand"
    else:  # gradients are only read
        assert [after[0][i] for i in range(1, len(ops), 3)] == \
            [before[0][i] for i in range(1, len(ops), 3)], f"{what} wrote to a gradient"
    return out, ops, pool


@fuzz_target("kernel", triples(1), hyper())
def fuzz_momentum_step(recipe, kwargs):
    runs = {name: _run_kernel(impl.momentum_step, recipe, lambda ops: ops, kwargs,
                              f"{name}.momentum_step")
            for name, impl in IMPLS.items()}
    _compare_kernel_runs(runs, "momentum_step")


CONTAINERS = _weighted(st.sampled_from(["list", "tuple"]),
                       st.sampled_from(["generator", "ndarray", "none", "dict", "str"]))


def _container(kind: str, items: list) -> Any:
    if kind == "list":
        return list(items)
    if kind == "tuple":
        return tuple(items)
    if kind == "generator":
        return (x for x in items)
    if kind == "ndarray":
        return np.zeros((len(items), 2))
    if kind == "dict":
        return dict(enumerate(items))
    if kind == "str":
        return "ws"
    return None


@st.composite
def many_recipe(draw):
    recipe = draw(triples(draw(st.integers(0, 4))))
    recipe.containers = [(draw(CONTAINERS), draw(_chance(12))) for _ in range(3)]
    return recipe


def _many_args(recipe: Recipe):
    def make(ops):
        seqs = []
        for role, (kind, drop) in enumerate(recipe.containers):
            items = ops[role::3]
            seqs.append(_container(kind, items[:-1] if drop and items else items))
        return seqs
    return make


@fuzz_target("kernel", many_recipe(), hyper())
def fuzz_momentum_step_many(recipe, kwargs):
    runs = {name: _run_kernel(impl.momentum_step_many, recipe, _many_args(recipe), kwargs,
                              f"{name}.momentum_step_many")
            for name, impl in IMPLS.items()}
    _compare_kernel_runs(runs, "momentum_step_many")


# ---- SGD -----------------------------------------------------------------------------

SGD_DEFAULTS = dict(momentum=0.0, rule="classical", dampening=0.0, weight_decay=0.0,
                    nonfinite="propagate")


def _expected_sgd_error(params: Any, kwargs: dict) -> type | None:
    """The exception type SGD(params, **kwargs) should raise, from the reference's checks."""
    if "learning_rate" in kwargs or "lr" not in kwargs:
        return TypeError
    if isinstance(params, np.ndarray) or not isinstance(params, (list, tuple)):
        return TypeError
    full = {**SGD_DEFAULTS, **kwargs}
    try:
        with np.errstate(all="ignore"):
            ref._check_hyper(full["lr"], full["momentum"], full["rule"], full["dampening"],
                             full["weight_decay"], full["nonfinite"])
            for i, p in enumerate(params):
                ref._check_array(p, f"params[{i}]", True)
    except Exception as exc:  # noqa: BLE001
        return type(exc)
    # SGD refuses parameters that overlap when it is made (each is written in place)
    if any(a.size and b.size and np.shares_memory(a, b)
           for i, a in enumerate(params) for b in params[i + 1:]):
        return ValueError
    return None


@st.composite
def sgd_recipe(draw):
    count = draw(st.integers(0, 3))
    recipe = draw(triples(count))  # (param, grad, unused) triples: w, g roles as in the kernel
    recipe.containers = [(draw(CONTAINERS), False),
                         (draw(_weighted(st.just("list"),
                                         st.sampled_from(["tuple", "generator", "none"]), 4)),
                          draw(_chance(12)))]
    return recipe


@fuzz_target("sgd", sgd_recipe(), hyper(), st.integers(1, 3))
def fuzz_sgd(recipe, kwargs, steps):
    ops, pool = recipe.build()
    (params_kind, _), grads = recipe.containers
    params = _container(params_kind, ops[0::3])
    expected = _expected_sgd_error(params, kwargs)
    params = _container(params_kind, ops[0::3])  # a generator is used up by the check
    made = _run(momcore.SGD, params, **kwargs)
    _event(made)
    _assert_clear(made, "SGD(...)")
    assert type(made.error) is (type(None) if expected is None else expected), \
        f"SGD(...) {made!r}; the reference's checks give {expected}"
    if made.error is not None:
        return
    opt = made.value
    # The reference: the same arrays (rebuilt), zero states, momentum_step_many per step.
    r_ops, r_pool = recipe.build()
    r_params = list(r_ops[0::3])
    r_states = [np.zeros_like(p) for p in r_params]
    full = {**SGD_DEFAULTS, **kwargs}
    applied = 0
    for step in range(steps):
        g_c = _container(grads[0], ops[1::3][:len(ops[1::3]) - grads[1]])
        g_r = _container(grads[0], r_ops[1::3][:len(r_ops[1::3]) - grads[1]])
        if grads[0] in ("generator", "none"):  # SGD.step takes any iterable: list() of it
            g_r = list(g_r) if g_r is not None else None
        c = _run(opt.step, g_c)
        event(f"step: {'ok' if c.error is None else type(c.error).__name__}")
        _assert_clear(c, "SGD.step")
        r = _run(ref.momentum_step_many, r_params, g_r, r_states, **full) \
            if g_r is not None else Outcome(error=TypeError("None"))
        detail = f"step {step}: SGD {c!r}; reference {r!r}"
        assert type(c.error) is type(r.error), detail
        if c.error is None:
            assert c.value is r.value, detail
            applied += bool(c.value)
            for i, (a, b) in enumerate(zip(opt.params, r_params)):
                assert _result(a) == _result(b), f"{detail}: params[{i}] differs"
            for i, (a, b) in enumerate(zip(opt.state, r_states)):
                assert _result(a) == _result(b), f"{detail}: state[{i}] differs"
    assert opt.steps == applied


def _hyper_error(**kwargs) -> type | None:
    """The exception type the reference's checks raise for these hyperparameters."""
    full = {**SGD_DEFAULTS, **kwargs}
    try:
        ref._check_hyper(full["lr"], full["momentum"], full["rule"], full["dampening"],
                         full["weight_decay"], full["nonfinite"])
    except Exception as exc:  # noqa: BLE001
        return type(exc)
    return None


@fuzz_target("sgd", st.lists(st.tuples(st.sampled_from(["lr", "momentum"]),
                                       st.one_of(LR, MOMENTUM)), min_size=1, max_size=4),
             st.sampled_from(RULES))
def fuzz_sgd_setters(assignments, rule):
    """lr and momentum set between steps (schedules): a bad value raises and changes
    nothing; a good one is used by the next step exactly as the reference would."""
    w, g = np.linspace(-1.0, 1.0, 7), np.linspace(2.0, -1.0, 7)
    opt = momcore.SGD([w.copy()], lr=0.1, momentum=0.5, rule=rule)
    w_ref, s_ref = [w.copy()], [np.zeros(7)]
    for name, value in assignments:
        current = {"lr": opt.lr, "momentum": opt.momentum}
        expected = _hyper_error(**{**current, name: value})
        out = _run(setattr, opt, name, value)
        _event(out)
        _assert_clear(out, f"SGD.{name} = {value!r}")
        assert type(out.error) is (type(None) if expected is None else expected), \
            f"SGD.{name} = {value!r} {out!r}; the reference's checks give {expected}"
        if out.error is not None:
            assert {"lr": opt.lr, "momentum": opt.momentum} == current
            continue
        assert getattr(opt, name) == float(value)
        assert opt.step([g]) is True
        with np.errstate(all="ignore"):
            assert ref.momentum_step_many(w_ref, [g], s_ref, lr=opt.lr,
                                          momentum=opt.momentum, rule=rule) is True
        assert _result(opt.params[0]) == _result(w_ref[0])
        assert _result(opt.state[0]) == _result(s_ref[0])


def _state_snapshot(opt: momcore.SGD) -> list:
    d = opt.state_dict()
    return [(k, repr(v)) if k != "state" else (k, [_snap(a) for a in v])
            for k, v in sorted(d.items())]


STATE_JUNK = [None, [], [np.zeros(3)], [[0.0, 0.0, 0.0]], "state", np.zeros(3),
              [np.zeros(3, np.float32)], [np.zeros((1, 3))], [np.zeros(3, ">f8")],
              [np.zeros(6)[::2]], [np.zeros(3, object)], [np.full(3, np.nan)],
              [np.zeros(3, "U3")], [np.zeros(3, complex)]]


@st.composite
def state_dicts(draw):
    """A valid state_dict of SGD([zeros(3), zeros(2)]), then some entries broken."""
    d: dict = {"lr": 0.25, "momentum": 0.5, "rule": "velocity", "dampening": 0.125,
               "weight_decay": 0.0, "nonfinite": "skip", "steps": 7,
               "state": [np.full(3, -1.5), np.arange(2.0)]}
    strategies = {"lr": LR, "momentum": MOMENTUM, "rule": RULE, "dampening": DAMPENING,
                  "weight_decay": WEIGHT_DECAY, "nonfinite": NONFINITE_MODE,
                  # junk in "steps" is pinned by test_failed_load_state_dict_changes_nothing
                  "steps": st.one_of(st.integers(0, 10**6), st.just(np.int64(3))),
                  "state": st.one_of(st.sampled_from(STATE_JUNK).map(copy.deepcopy),
                                     st.just([[1.0, 2.0, 3.0], (4.0, 5.0)]),
                                     st.just((np.ones(3), np.ones(2))))}
    for key in draw(st.lists(st.sampled_from(sorted(strategies)), max_size=3, unique=True)):
        if draw(_chance(5)):
            del d[key]
        else:
            d[key] = draw(strategies[key])
    if draw(_chance(10)):
        d["extra"] = 1
    container = draw(_weighted(st.just("dict"), st.sampled_from(["items", "none", "keys"])))
    if container == "items":
        return list(d.items())
    if container == "keys":
        return list(d)
    return None if container == "none" else d


@fuzz_target("sgd", state_dicts())
def fuzz_load_state_dict(sd):
    opt = momcore.SGD([np.ones(3), np.ones(2)], lr=0.1, momentum=0.9, nonfinite="raise")
    opt.step([np.full(3, 0.5), np.full(2, -0.5)])
    before = _state_snapshot(opt)
    out = _run(opt.load_state_dict, sd)
    _event(out)
    _assert_clear(out, "SGD.load_state_dict")
    if out.error is not None:
        assert _state_snapshot(opt) == before, f"load_state_dict {out!r} but changed the optimizer"
        return
    got = opt.state_dict()
    for key in ("lr", "momentum", "dampening", "weight_decay"):
        assert got[key] == float(sd[key]), key
    assert got["rule"] == sd["rule"] and got["nonfinite"] == sd["nonfinite"]
    assert got["steps"] == int(sd["steps"])
    for mine, theirs in zip(got["state"], sd["state"]):
        assert mine.tobytes() == np.asarray(theirs).tobytes()
    # and the loaded optimizer still steps like the reference
    w = [p.copy() for p in opt.params]
    s = [x.copy() for x in opt.state]
    g = [np.full(3, 0.25), np.full(2, 2.0)]
    c = _run(opt.step, g)
    kw = {k: got[k] for k in ("lr", "momentum", "rule", "dampening", "weight_decay", "nonfinite")}
    r = _run(ref.momentum_step_many, w, g, s, **kw)
    assert type(c.error) is type(r.error), f"step after load: {c!r}; reference {r!r}"
    assert [_result(a) for a in opt.params + opt.state] == [_result(a) for a in w + s]


# ---- MLP -----------------------------------------------------------------------------

HIDDEN = ("sigmoid", "tanh", "relu", "identity")
OUTPUT = ("softmax", "sigmoid", "identity")
# 1-element numpy string arrays pass the name checks (pinned by
# test_mlp_rejects_an_array_as_an_activation_name), so they are not drawn here.
NAME_JUNK = [None, "", "Sigmoid", "softmax ", b"relu", ["relu"], 1, np.str_("tanh"),
             np.array(["relu", "tanh"]), "c", "numpy"]
SIZES = st.one_of(
    st.lists(st.integers(1, 6), min_size=2, max_size=4),
    st.lists(st.integers(1, 6), min_size=2, max_size=4).map(tuple),
    st.lists(st.integers(1, 6), min_size=2, max_size=4).map(np.array),
    st.lists(st.integers(1, 6).map(np.int32), min_size=2, max_size=3),
    st.sampled_from([[], [3], [0, 2], [-1, 2], [2.0, 3], [True, 2], [3, [2]], "34", b"34", 5,
                     None, 2.5, [3, None], [3, "2"], np.array([[3, 2]]), np.array([3.0, 2.0]),
                     [3, 2**70], {3: 0, 2: 0}, [np.float64(3), 2], [3, np.uint8(2)]]))
DTYPE = st.sampled_from([np.float32, np.float64, "float32", "f8", np.dtype("<f4"), None,
                         np.float16, int, bool, complex, object, "foo", np.dtype(">f8"),
                         [("a", "f8")], "M8[s]", 1.5, np.longdouble, "U3"])
SEED = st.one_of(st.integers(0, 2**64 + 5), st.sampled_from(
    [-1, None, 1.5, "1", True, np.int64(3), np.uint64(2**63), [1], np.array(3), 2**200]))


@st.composite
def mlp_kwargs(draw):
    kw = {"hidden": draw(_weighted(st.sampled_from(HIDDEN), st.sampled_from(NAME_JUNK))),
          "output": draw(_weighted(st.sampled_from(OUTPUT), st.sampled_from(NAME_JUNK))),
          "dtype": draw(_weighted(st.sampled_from([np.float32, np.float64]), DTYPE)),
          "seed": draw(_weighted(st.integers(0, 100), SEED)),
          "backend": draw(_weighted(st.sampled_from(["c", "numpy"]),
                                    st.sampled_from(NAME_JUNK)))}
    return {k: v for k, v in kw.items() if draw(st.integers(0, 5))}


@fuzz_target("mlp", SIZES, mlp_kwargs())
def fuzz_mlp_init(sizes, kwargs):
    out = _run(momcore.MLP, copy.deepcopy(sizes), **kwargs)
    _event(out)
    _assert_clear(out, "MLP(...)")
    if out.error is not None:
        return
    net = out.value
    assert net.params.shape == (net.n_params,) and repr(net)
    assert [W.shape for W in net.weights] == list(zip(net.sizes[:-1], net.sizes[1:]))
    assert all(np.shares_memory(W, net.params) for W in net.weights + net.biases)
    other = "numpy" if net.backend == "c" else "c"
    twin = momcore.MLP(copy.deepcopy(sizes), **{**kwargs, "backend": other})
    assert twin.params.tobytes() == net.params.tobytes()  # one seed, one network


def _tol(dtype) -> dict:
    return {"rtol": 1e-4, "atol": 1e-4} if np.dtype(dtype) == np.float32 else \
        {"rtol": 1e-9, "atol": 1e-10}


@dataclass(eq=False)
class NetCase:
    sizes: list
    hidden: str
    output: str
    dtype: Any
    X: Any  # an Arr or Obj spec
    y: Any
    moderate: bool  # finite X and y of moderate size: the backends' numbers can be compared

    def net(self, backend: str) -> momcore.MLP:
        return momcore.MLP(self.sizes, hidden=self.hidden, output=self.output,
                           dtype=self.dtype, seed=3, backend=backend)

    def data(self) -> tuple:
        return Recipe([self.X, self.y]).build()[0]


METHODS = ["predict", "predict_proba", "score", "loss", "gradients", "fit"]
# An unaligned X is refused by the C backend only (pinned by
# test_unaligned_inputs_work_in_both_backends), so it is not drawn here.
X_LAYOUTS = [layout for layout in LAYOUTS if layout != "unaligned"]


@st.composite
def net_cases(draw):
    sizes = [draw(st.integers(1, 4))] + draw(st.lists(st.integers(1, 4), max_size=1)) + \
        [draw(st.integers(1, 4))]
    n_in, n_out = sizes[0], sizes[-1]
    output = draw(st.sampled_from(OUTPUT))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(1, 5))
    moderate = True
    # X: mostly the right shape and moderate numbers; sometimes anything
    x_values = draw(st.lists(MODERATE, min_size=1, max_size=8))
    x_kind = draw(_weighted(st.just("ok"), st.sampled_from(["list", "extreme", "odd", "obj"]), 3))
    if x_kind == "obj":
        X = Obj(draw(st.sampled_from(NOT_ARRAYS + [[[1.0] * n_in], [[1.0] * (n_in + 1)],
                                                   [[1.0] * n_in, [1.0]], [["1"] * n_in]])))
        moderate = False
    elif x_kind == "list":
        X = Obj(_template(np.float64, (n, n_in), x_values).tolist())
    else:
        shape = (n, n_in)
        x_dtype = draw(st.sampled_from([np.float64, np.float32, np.int64, "?", "f2", ">f8",
                                        "u1", "g"]))
        if x_kind == "extreme":
            x_values = draw(st.lists(ELEMENTS, min_size=1, max_size=8))
            moderate = False
        if x_kind == "odd":
            x_dtype = draw(st.sampled_from([d for d in ODD_DTYPES if d != "m8[s]"]))
            shape = draw(st.sampled_from([shape, (n,), (n, n_in, 1), (), (0, n_in), (n, n_in + 1)]))
            moderate = False
        X = Arr(_template(x_dtype, shape, x_values), draw(st.sampled_from(X_LAYOUTS)))
    # y: labels or targets, mostly right; sometimes anything (not timedelta64 labels:
    # pinned by test_timedelta_labels_get_a_clear_error)
    y_kind = draw(_weighted(st.sampled_from(["labels", "targets"]),
                            st.sampled_from(["odd", "obj", "list"]), 3))
    if y_kind == "labels":
        labels = draw(st.lists(st.integers(0, n_out - 1), min_size=n, max_size=n))
        y_dtype = draw(st.sampled_from([np.int64, np.int64, np.int32, np.uint8, np.uint64]))
        y = Arr(np.array(labels, dtype=y_dtype), draw(st.sampled_from(LAYOUTS)))
    elif y_kind == "list":
        y = Obj(draw(st.lists(st.integers(0, n_out - 1), min_size=n, max_size=n)))
    elif y_kind == "targets":
        if output == "softmax" and draw(st.booleans()):
            T = np.eye(n_out)[draw(st.lists(st.integers(0, n_out - 1), min_size=n, max_size=n))]
        else:
            T = _template(np.float64, (n, n_out), draw(st.lists(MODERATE, min_size=1, max_size=6)))
        y = Arr(T.astype(draw(st.sampled_from([np.float64, np.float32, np.int64]))),
                draw(st.sampled_from(LAYOUTS)))
    elif y_kind == "obj":
        y = Obj(draw(st.sampled_from(NOT_ARRAYS + [[0] * (n + 1), [[0.5] * n_out] * n])))
        moderate = False
    else:
        values = draw(st.lists(ELEMENTS, min_size=1, max_size=6))
        y_dtype = draw(st.sampled_from([d for d in ODD_DTYPES if d != "m8[s]"] +
                                       [np.float64, np.int64]))
        shape = draw(st.sampled_from([(n,), (n, n_out), (n + 1,), (n, n_out + 1), (), (n, 1, 1)]))
        y = Arr(_template(y_dtype, shape, values), draw(st.sampled_from(LAYOUTS)))
        moderate = False
    return NetCase(sizes, draw(st.sampled_from(HIDDEN)), output, dtype, X, y, moderate)



def _call_method(net: momcore.MLP, method: str, X: Any, y: Any):
    if method in ("predict", "predict_proba"):
        return getattr(net, method)(X)
    if method == "fit":
        return net.fit(X, y, epochs=1, batch_size=2, lr=0.05)
    return getattr(net, method)(X, y)


def _clear_margin(proba: np.ndarray) -> np.ndarray:
    """Rows whose two largest outputs differ by more than rounding: argmax is well defined."""
    if proba.shape[1] < 2:
        return np.ones(proba.shape[0], bool)
    top = np.sort(proba, axis=1)
    return (top[:, -1] - top[:, -2]) > 1e-3


def _assert_backends_agree(case: NetCase, method: str, c: Any, n: Any, nets: dict) -> None:
    tol = _tol(case.dtype)
    if method == "predict_proba":
        np.testing.assert_allclose(c, n, **tol)
    elif method == "gradients":
        for a, b in zip(c[0] + c[1], n[0] + n[1]):
            np.testing.assert_allclose(a, b, **tol)
    elif method == "loss":
        assert c == pytest.approx(n, rel=tol["rtol"], abs=tol["atol"])
    elif method == "fit":
        np.testing.assert_allclose(c.loss, n.loss, **tol)
        np.testing.assert_allclose(nets["c"].params, nets["numpy"].params, **tol)
    elif method in ("predict", "score"):
        X, _ = case.data()
        proba = nets["numpy"].predict_proba(X)
        if case.output == "identity" and method == "predict":
            np.testing.assert_allclose(c, n, **tol)
        elif method == "predict":
            clear = _clear_margin(proba)
            assert (c[clear] == n[clear]).all()
        elif _clear_margin(proba).all() and not math.isnan(n):
            assert c == pytest.approx(n, rel=tol["rtol"], abs=tol["atol"])


@fuzz_target("mlp", net_cases(), st.sampled_from(METHODS))
def fuzz_mlp_methods(case, method):
    outs, nets = {}, {}
    for backend in ("c", "numpy"):
        nets[backend] = case.net(backend)
        params0 = nets[backend].params.copy()
        X, y = case.data()
        X0, y0 = _snap(X), _snap(y)
        outs[backend] = out = _run(_call_method, nets[backend], method, X, y)
        _assert_clear(out, f"MLP({backend}).{method}")
        assert (_snap(X), _snap(y)) == (X0, y0), f"{method} changed its input"
        if out.error is not None and not isinstance(out.error, FloatingPointError):
            assert nets[backend].params.tobytes() == params0.tobytes(), \
                f"{method} {out!r} but changed the weights"
    c, n = outs["c"], outs["numpy"]
    event(f"{method}: {'ok' if c.error is None else type(c.error).__name__}")
    detail = f"{method}: c {c!r}; numpy {n!r}"
    if {type(c.error), type(n.error)} == {FloatingPointError, type(None)}:
        return  # the C backend may miss a NaN loss: pinned in test_robustness.py
    assert type(c.error) is type(n.error), detail
    if c.error is None and case.moderate:
        with np.errstate(all="ignore"):
            _assert_backends_agree(case, method, c.value, n.value, nets)


def _fit_junk(good, *extra):
    junk = list(extra) + [None, "1", [1], 1j, np.array([1.0, 2.0])]
    return _weighted(good, st.sampled_from(junk))


def _constant(value):
    return lambda epoch: value


FIT_KWARGS = {
    "epochs": _fit_junk(st.integers(0, 2), -1, 1.0, True, np.int64(2), np.array(1)),
    "batch_size": _fit_junk(st.integers(1, 20), 0, -3, 2.0, True, np.int64(4), 2**62),
    # (a huge lr that drives the weights to NaN is pinned in test_robustness.py)
    "lr": _fit_junk(st.floats(0.0, 0.5), 0.0, 5e-324, -0.1, math.nan, math.inf, True,
                    np.float32(0.1), Fraction(1, 10), np.array(0.1)),
    "momentum": _fit_junk(st.floats(-0.99, 0.99), 1.0, -1.0, math.nan, 0.9999999999999999),
    "rule": RULE,
    "dampening": DAMPENING,
    "weight_decay": _fit_junk(st.floats(0.0, 0.1), -1e-3, math.inf, math.nan),
    "lr_schedule": st.sampled_from([None, _constant(0.05), momcore.schedules.Step(0.1, 0.5, 1),
                                    _constant("x"), _constant(math.nan), _constant(-1.0),
                                    _constant(None), _constant(1j), 0.05, "0.05", [0.1]]),
    "momentum_schedule": st.sampled_from([None, momcore.schedules.momentum_annealing(epochs=2),
                                          _constant(1.0), _constant(math.nan), _constant("x"),
                                          0.5, [0.5]]),
    "shuffle": st.sampled_from([True, False, None, 0, 1, "yes", np.bool_(False),
                                np.array([1, 2])]),
    "target_loss": st.sampled_from([None, 0.0, 1e9, -1.0, math.nan, math.inf, np.float32(0.5),
                                    "0.5", 1j, [0.5], np.array(0.5), True]),
    # (a verbose whose truth value raises is pinned by test_bad_verbose_leaves_the_model_untouched)
    "verbose": st.sampled_from([False, True, 1, None, np.bool_(True), "yes"]),
    "callback": st.sampled_from([None, lambda e, logs: False, lambda e, logs: None,
                                 lambda e, logs: True, 1, "cb", [len]]),
}


@st.composite
def fit_kwargs(draw):
    return {k: draw(s) for k, s in FIT_KWARGS.items() if draw(_chance(3))}


def _iris_subset():
    data = momcore.datasets.load_iris()
    X = (data.X - data.X.mean(axis=0)) / data.X.std(axis=0)
    rows = np.arange(0, 150, 10)
    return X[rows], data.y[rows]


@fuzz_target("mlp", st.sampled_from([np.float32, np.float64]), st.sampled_from(HIDDEN),
             st.booleans(), fit_kwargs())
def fuzz_mlp_fit(dtype, hidden, targets, kwargs):
    X, y = _iris_subset()
    if targets:  # squared error on 2-D targets
        y = np.eye(3)[y] * 0.8 + 0.1
    outs, nets = {}, {}
    for backend in ("c", "numpy"):
        nets[backend] = net = momcore.MLP([4, 5, 3], hidden=hidden, output="sigmoid" if targets
                                          else "softmax", dtype=dtype, seed=1, backend=backend)
        params0 = net.params.copy()
        outs[backend] = out = _run(net.fit, X.copy(), y.copy(), **kwargs)
        _assert_clear(out, f"MLP({backend}).fit")
        if out.error is not None and not isinstance(out.error, FloatingPointError):
            assert net.params.tobytes() == params0.tobytes(), \
                f"fit {out!r} but changed the weights"
        if out.error is None:
            assert out.value.stopped in ("epochs", "target_loss", "callback")
            assert np.isfinite(net.params).all()
    c, n = outs["c"], outs["numpy"]
    _event(c)
    detail = f"fit: c {c!r}; numpy {n!r}"
    if {type(c.error), type(n.error)} == {FloatingPointError, type(None)}:
        return  # the C backend may miss a NaN loss: pinned in test_robustness.py
    assert type(c.error) is type(n.error), detail
    if c.error is None:
        assert c.value.epochs == n.value.epochs and c.value.stopped == n.value.stopped, detail
        # every accepted setting here is modest (lr <= 0.5, two epochs of 15 rows): the
        # backends' rounding differences stay small
        np.testing.assert_allclose(c.value.loss, n.value.loss, **_tol(dtype))
        np.testing.assert_allclose(nets["c"].params, nets["numpy"].params, **_tol(dtype))


# ---- checkpoint files ----------------------------------------------------------------
# MLP.load on a real model file broken by truncation, flipped bytes, hostile metadata or a
# hostile .npy header: it loads, or raises ValueError naming the file, and allocates no
# more than the file could justify (its arrays are in it) plus a little.

_CHECKPOINT_MEMBERS: dict = {}
CHECKPOINT_KINDS = {"plain": dict(rule="nesterov"), "auto": dict(momentum="auto"),
                    "qian": dict(rule="qian", lr=0.1)}
"""The models fuzzed: a version-1 file, and version-2 files of the tuner and of the
per-weight momenta."""


def _checkpoint_members(kind: str = "plain") -> tuple[dict, dict]:
    """(member name -> bytes, metadata) of a small model trained as ``kind``
    (CHECKPOINT_KINDS), saved by MLP.save, made once per kind."""
    if kind not in _CHECKPOINT_MEMBERS:
        net = momcore.MLP([3, 4, 2], hidden="tanh", seed=0)
        X = np.linspace(-1, 1, 24).reshape(8, 3)
        net.fit(X, np.arange(8) % 2, epochs=2, batch_size=3, **CHECKPOINT_KINDS[kind])
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "model.npz")
            net.save(path)
            with zipfile.ZipFile(path) as zf:
                members = {name: zf.read(name) for name in zf.namelist()}
        meta = json.loads(str(np.load(io.BytesIO(members["metadata.npy"]))))
        _CHECKPOINT_MEMBERS[kind] = (members, meta)
    members, meta = _CHECKPOINT_MEMBERS[kind]
    return dict(members), copy.deepcopy(meta)


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _zip_bytes(members: dict, method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**130, 2**130),
              st.floats(allow_nan=False), st.text(max_size=8),
              st.sampled_from(["PCG64", "relu", "float32", "float16", "momcore.MLP", "c"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12)
META_KEYS = ["format", "version", "sizes", "hidden", "output", "loss", "dtype", "seed",
             "backend", "steps", "epochs", "state_rule", "rng", "optimizer", "tuner",
             "per_weight", "tuner.window", "tuner.previous", "tuner.beta", "tuner.avg",
             "per_weight.every", "per_weight.observations"]
DESCR = st.sampled_from(["<f8", "<f4", ">f8", "|O", "<U5", "<i8", "<c16", "f8", "<f2", "V8",
                         "[('a', '<f8')]", "'<f8'", "None", "<f8 "])
SHAPE = st.one_of(st.sampled_from(["(26,)", "(10**12,)", "(2**64,)", "(-1,)", "()", "(26, 1)",
                                   "(1, 26)", "[26]", "(26.0,)", "(True,)", "None"]),
                  st.integers(0, 2**70).map(lambda n: f"({n},)"))


@st.composite
def npy_headers(draw):
    """The text of a .npy header dict, mostly well formed, with hostile values."""
    parts = {"descr": draw(DESCR).join("''") if draw(st.booleans()) else draw(DESCR),
             "fortran_order": draw(st.sampled_from(["False", "True", "0", "'no'"])),
             "shape": draw(SHAPE)}
    if draw(_chance(6)):
        del parts[draw(st.sampled_from(sorted(parts)))]
    if draw(_chance(8)):
        parts["extra"] = "1"
    text = "{" + ", ".join(f"'{k}': {v}" for k, v in parts.items()) + ", }"
    if draw(_chance(10)):
        text = draw(st.sampled_from(["[" * 2000 + "]" * 2000, "{", "", "1e999", "'x' * 10**9",
                                     "{'descr': '<f8'" + " " * 12000 + "}"]))
    return text


@st.composite
def checkpoint_files(draw):
    """The bytes of a model file: a real one broken in one of several ways."""
    members, meta = _checkpoint_members(draw(st.sampled_from(sorted(CHECKPOINT_KINDS))))
    how = draw(st.sampled_from(["truncate", "flip", "metadata", "header", "members",
                                "compressed", "intact"]))
    if how == "metadata":
        for _ in range(draw(st.integers(1, 3))):
            key = draw(st.sampled_from(META_KEYS + ["rng.state", "rng.inc", "rng.has_uint32"]))
            value = draw(JSON)
            rng = meta.get("rng")
            part, _, field_ = key.partition(".")
            if part in ("tuner", "per_weight") and field_:
                if isinstance(meta.get(part), dict):
                    meta[part][field_] = value
            elif key.startswith("rng.") and isinstance(rng, dict):
                field_ = key[4:]
                target = rng if field_ == "has_uint32" else rng.get("state")
                if isinstance(target, dict):
                    target[field_] = value
            elif draw(_chance(6)):
                meta.pop(key, None)
            else:
                meta[key] = value
        if draw(_chance(10)):
            meta = draw(JSON)
        members["metadata.npy"] = _npy_bytes(np.array(json.dumps(meta)))
    elif how == "header":
        name = draw(st.sampled_from(sorted(members)))
        text = draw(npy_headers()).encode("latin1")
        version = draw(st.sampled_from([1, 1, 2, 3, 7]))
        size = (len(text).to_bytes(2, "little") if version == 1
                else len(text).to_bytes(4, "little"))
        payload = draw(st.sampled_from([b"", b"\0" * 208, b"\0" * 104, b"\1" * 7]))
        members[name] = b"\x93NUMPY" + bytes([version, 0]) + size + text + payload
    elif how == "members":
        change = draw(st.sampled_from(["drop", "extra", "rename", "garbage"]))
        name = draw(st.sampled_from(sorted(members)))
        if change == "drop":
            del members[name]
        elif change == "extra":
            members["extra.npy"] = members[name]
        elif change == "rename":
            members[name[:-4]] = members.pop(name)
        else:
            members[name] = draw(st.binary(max_size=64))
    raw = _zip_bytes(members, zipfile.ZIP_DEFLATED if how == "compressed" else zipfile.ZIP_STORED)
    if how == "truncate":
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif how == "flip":
        data = bytearray(raw)
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
        raw = bytes(data)
    return how, raw


@fuzz_target("checkpoint", checkpoint_files())
def fuzz_mlp_load(case):
    how, raw = case
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.npz")
        with open(path, "wb") as f:
            f.write(raw)
        tracemalloc.start()
        try:
            out = _run(momcore.MLP.load, path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    event(how)
    _event(out)
    if out.error is not None:
        assert isinstance(out.error, ValueError), \
            f"MLP.load ({how}) raised {type(out.error).__name__}: {out.error}"
        assert path in str(out.error)
    else:
        net = out.value
        assert 2 * net.params.nbytes <= len(raw)  # both arrays were in the file
    assert peak < 2 * len(raw) + (1 << 20), f"MLP.load ({how}) allocated {peak} bytes"


# ---- in-process runs -------------------------------------------------------------------

test_momentum_step_fuzz = fuzz_momentum_step.make()
test_momentum_step_many_fuzz = fuzz_momentum_step_many.make()
test_sgd_fuzz = fuzz_sgd.make()
test_sgd_setters_fuzz = fuzz_sgd_setters.make()
test_load_state_dict_fuzz = fuzz_load_state_dict.make()
test_mlp_init_fuzz = fuzz_mlp_init.make()
test_mlp_methods_fuzz = fuzz_mlp_methods.make()
test_mlp_fit_fuzz = fuzz_mlp_fit.make()
test_mlp_load_fuzz = fuzz_mlp_load.make()


# ---- subprocess runs: a crash fails the test --------------------------------------------


def run_targets(max_examples: int, names: list[str] | None = None) -> None:
    """Runs the fuzz targets (all by default), max_examples each; used by the subprocess."""
    for name in names or list(FUZZ_TARGETS):
        print(f"fuzz target {name}: {max_examples} examples", file=sys.stderr, flush=True)
        FUZZ_TARGETS[name].make(max_examples)()


RUNNER = textwrap.dedent("""\
    import importlib.util, os, sys, warnings
    path, package_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spec = importlib.util.spec_from_file_location("momcore_fuzz_targets", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import momcore
    here = os.path.dirname(os.path.realpath(momcore.__file__))
    assert here == package_dir, f"imported momcore from {here}, not {package_dir}"
    warnings.simplefilter("error")  # as pytest's filterwarnings = error
    module.run_targets(n, sys.argv[4:] or None)
    print("fuzz done")
""")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE_PARENT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_python(tmp_path: pathlib.Path, code: str, *args: str,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter that imports the momcore under test (cwd tmp_path)."""
    script = tmp_path / "fuzz_script.py"
    script.write_text(code)
    return subprocess.run([sys.executable, "-X", "faulthandler", str(script), *args],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _assert_survived(proc: subprocess.CompletedProcess) -> None:
    tail = f"\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
    assert proc.returncode >= 0, f"the interpreter died of signal {-proc.returncode}{tail}"
    assert proc.returncode == 0, f"exit status {proc.returncode}{tail}"


def _fuzz_in_subprocess(tmp_path: pathlib.Path, n: int) -> None:
    proc = run_python(tmp_path, RUNNER, str(THIS_FILE), str(PACKAGE_DIR), str(n),
                      timeout=max(600, n))
    _assert_survived(proc)
    assert "fuzz done" in proc.stdout


def test_fuzz_targets_in_a_subprocess(tmp_path):
    _fuzz_in_subprocess(tmp_path, SUBPROCESS_EXAMPLES)


@pytest.mark.slow
def test_fuzz_targets_in_a_subprocess_long(tmp_path, request):
    wanted = os.environ.get("MOMCORE_FUZZ_EXAMPLES")
    if not wanted and "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("long fuzz run: select it with -m slow or set MOMCORE_FUZZ_EXAMPLES")
    _fuzz_in_subprocess(tmp_path, int(wanted or LONG_EXAMPLES))


def test_subprocess_imports_the_momcore_under_test(tmp_path):
    proc = run_python(tmp_path, "import momcore, os; print(os.path.realpath(momcore.__file__))")
    _assert_survived(proc)
    assert pathlib.Path(proc.stdout.strip()).parent == PACKAGE_DIR


# ---- inputs that once crashed or misled: one test each -------------------------------------

FRESH_ARRAYS = textwrap.dedent("""\
    import numpy as np, momcore

    class Fresh(list):
        # A list whose items are made on access: nothing else holds them.
        def __getitem__(self, i):
            return np.zeros(5_000_000)  # 40 MB: mmap-ed, unmapped again when freed

    try:
        momcore.momentum_step_many(Fresh([0]), Fresh([0]), Fresh([0]), lr=0.1, momentum=0.9)
    except (TypeError, ValueError) as exc:
        print("rejected:", exc)
    print("survived")
""")

LYING_LENGTH = textwrap.dedent("""\
    import numpy as np, momcore

    class Liar(list):
        def __len__(self):
            return 2**62  # count * sizeof(mc_buffer) wraps around to 0 bytes

        def __getitem__(self, i):
            return list.__getitem__(self, i % 5)

    ws, gs, ss = (Liar(np.zeros(3) for _ in range(5)) for _ in range(3))
    try:
        momcore.momentum_step_many(ws, gs, ss, lr=0.1, momentum=0.9)
    except (TypeError, ValueError, MemoryError) as exc:
        print("rejected:", exc)
    print("survived")
""")


def test_many_keeps_its_operands_alive(tmp_path):
    # _core.pyx, momentum_step_many: _fill(&bufs[i], ws[i], gs[i], states[i], i) takes the
    # data pointers of temporaries; a list subclass (or another thread emptying the list
    # while the GIL is released) frees them before the C loop writes: SIGSEGV here.
    proc = run_python(tmp_path, FRESH_ARRAYS, timeout=120)
    _assert_survived(proc)
    assert "survived" in proc.stdout


def test_many_with_a_lying_length_does_not_crash(tmp_path):
    # _core.pyx, momentum_step_many: PyMem_Malloc(count * sizeof(mc_buffer)) with
    # count = len(ws) = 2**62 wraps to 0 bytes; _fill then writes bufs[0], bufs[1], ...
    proc = run_python(tmp_path, LYING_LENGTH, timeout=120)
    _assert_survived(proc)
    assert "survived" in proc.stdout


def _ops():
    return np.ones(4), np.full(4, 0.5), np.zeros(4)


@pytest.mark.parametrize("impl", [
    "compiled",
    "reference",
])
def test_bytearray_hyperparameter_is_rejected(impl):
    with pytest.raises(TypeError, match="lr must be a real number"):
        IMPLS[impl].momentum_step(*_ops(), lr=bytearray(b"0.5"), momentum=0.5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("value", [np.complex128(0.1 + 1j), np.complex64(0.5),
                                   np.array("0.1"), np.array(b"0.1")], ids=repr)
def test_non_real_numpy_hyperparameter_is_rejected(impl, value):
    # 1j and "0.1" give TypeError("lr must be a real number, got ..."); these do not.
    with pytest.raises(TypeError, match="lr must be a real number"):
        IMPLS[impl].momentum_step(*_ops(), lr=value, momentum=0.5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", ["lr", "momentum", "dampening", "weight_decay"])
def test_huge_int_hyperparameter_gets_a_clear_error(impl, name):
    kwargs = {"lr": 0.1, "momentum": 0.5, name: 10**400}
    with pytest.raises((TypeError, ValueError), match=name):
        IMPLS[impl].momentum_step(*_ops(), **kwargs)


@pytest.mark.parametrize("nonfinite", ["propagate", "raise"])
def test_masked_arrays_agree_with_the_reference(nonfinite):
    def operands():
        return (np.ma.array([1.0, 2.0, 3.0], mask=[0, 1, 0]),
                np.ma.array([1.0, np.nan, 1.0], mask=[0, 1, 0]),
                np.ma.zeros(3))
    runs = {}
    for name, impl in IMPLS.items():
        ops = operands()
        out = _run(impl.momentum_step, *ops, lr=0.5, momentum=0.9, nonfinite=nonfinite)
        runs[name] = (out, [np.asarray(ops[0]).tobytes(), np.asarray(ops[2]).tobytes()])
    (c, c_bytes), (r, r_bytes) = runs["compiled"], runs["reference"]
    assert type(c.error) is type(r.error), f"compiled {c!r}; reference {r!r}"
    assert c_bytes == r_bytes


@pytest.mark.parametrize("steps", ["many", None, math.inf, [3]], ids=repr)
def test_failed_load_state_dict_changes_nothing(steps):
    # optim.py, load_state_dict: self.steps = int(d["steps"]) runs after np.copyto(state)
    # and the lr/momentum/rule assignments; math.inf even raises OverflowError.
    opt = momcore.SGD([np.ones(3)], lr=0.1, momentum=0.9)
    opt.step([np.ones(3)])
    before = _state_snapshot(opt)
    sd = {"lr": 0.5, "momentum": 0.0, "rule": "nesterov", "dampening": 0.0,
          "weight_decay": 0.0, "nonfinite": "skip", "steps": steps, "state": [np.full(3, 7.0)]}
    with pytest.raises((TypeError, ValueError)):
        opt.load_state_dict(sd)
    assert _state_snapshot(opt) == before


@pytest.mark.parametrize("kwargs", [{"hidden": np.array(["relu"])},
                                    {"output": np.array(["sigmoid"])},
                                    {"backend": np.array(["c"])}], ids=lambda k: next(iter(k)))
def test_mlp_rejects_an_array_as_an_activation_name(kwargs):
    # Accepted today; the C backend then fails in predict with Cython's "Argument 'hidden'
    # has incorrect type (expected str, got numpy.ndarray)", the numpy backend works.
    with pytest.raises((TypeError, ValueError)):
        momcore.MLP([3, 2, 2], **kwargs)


@pytest.mark.parametrize("method", ["score", "loss", "gradients", "fit"])
def test_timedelta_labels_get_a_clear_error(method):
    # _network.encode_targets: np.issubdtype(y.dtype, np.integer) is True for m8.
    X, y = _iris_subset()
    net = momcore.MLP([4, 3, 3])
    with pytest.raises(ValueError, match="labels"):
        _call_method(net, method, X, y.astype("m8[s]"))


@pytest.mark.parametrize("what", ["X", "y"])
def test_float32_overflowing_input_gets_a_clear_error(what):
    # mlp.py _inputs: np.ascontiguousarray(X, dtype=float32); _network.encode_targets:
    # np.array(y, dtype=float32) -- both without np.errstate.
    net = momcore.MLP([2, 2], output="identity", dtype=np.float32)
    X, Y = np.ones((3, 2)), np.ones((3, 2))
    (X if what == "X" else Y)[1, 1] = 1e300
    with pytest.raises(ValueError, match=what if what == "X" else "targets"):
        net.loss(X, Y)


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("method", METHODS)
def test_unaligned_inputs_work_in_both_backends(backend, method):
    X, y = _iris_subset()
    unaligned = _materialize(X, "unaligned")
    assert not unaligned.flags.aligned
    expected = _call_method(momcore.MLP([4, 3, 3], seed=2, backend="numpy"), method, X, y)
    got = _call_method(momcore.MLP([4, 3, 3], seed=2, backend=backend), method, unaligned, y)
    if method == "fit":
        got, expected = [got.loss], [expected.loss]
    elif method == "gradients":
        got, expected = got[0] + got[1], expected[0] + expected[1]
    else:
        got, expected = [got], [expected]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9)


@pytest.mark.parametrize("method", ["gradients", "fit"])
def test_fortran_ordered_targets_work_in_both_backends(method):
    # Found by this fuzzing ("T must be C-contiguous" from the C backend only), fixed in
    # 31aa044. E.g. DataFrame.to_numpy() of a float frame is Fortran-ordered.
    X, y = _iris_subset()
    T = np.eye(3)[y] * 0.8 + 0.1
    results = []
    for backend, targets in (("numpy", T), ("c", T), ("c", np.asfortranarray(T))):
        net = momcore.MLP([4, 3, 3], output="sigmoid", seed=4, backend=backend)
        out = _call_method(net, method, X, targets)
        results.append(out[0] + out[1] if method == "gradients" else [net.params])
    for c_f, c_c, n_c in zip(results[2], results[1], results[0], strict=True):
        assert c_f.tobytes() == c_c.tobytes()
        np.testing.assert_allclose(c_f, n_c, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_bad_verbose_leaves_the_model_untouched(backend):
    X, y = _iris_subset()
    net = momcore.MLP([4, 3, 3], backend=backend)
    before = net.params.copy()
    with pytest.raises((TypeError, ValueError)):
        net.fit(X, y, epochs=1, verbose=np.array([1, 2]))
    assert net.params.tobytes() == before.tobytes() and net.epochs == 0

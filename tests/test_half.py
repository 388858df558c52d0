"""bfloat16 and float16 storage: the compiled step against the numpy reference bit for
bit (float32 arithmetic, one rounding to nearest even at each store), the rounding
itself against numpy's and ml_dtypes' casts, ties, subnormals, overflow and NaN.

bfloat16 arrays need the optional ml_dtypes; without it those cases are skipped."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import RULES

import momcore
from momcore import _core
from momcore import reference as ref
from momcore import registry

try:
    from ml_dtypes import bfloat16
except ImportError:
    bfloat16 = None

NEEDS_ML_DTYPES = pytest.mark.skipif(bfloat16 is None, reason="bfloat16 needs ml_dtypes")
HALF = [pytest.param(np.float16, id="float16"),
        pytest.param(bfloat16, id="bfloat16", marks=NEEDS_ML_DTYPES)]
SIZES = [0, 1, 7, 15, 16, 17, 31, 33, 63, 65, 1000, 65537]
STEPS = 3
IMPLS = {"compiled": _core, "reference": ref}


def _hyper(rule, weight_decay=0.0):
    extra = {"dampening": 0.1} if rule in registry.rules_taking("dampening") else {}
    return dict(lr=0.05, momentum=0.9, weight_decay=weight_decay, **extra)


def _operands(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(n).astype(dtype)
    # positive gradients: every state element moves away from zero, so an element
    # the kernel missed shows as a zero state
    grads = [(0.5 + np.abs(rng.standard_normal(n))).astype(dtype) for _ in range(STEPS)]
    return w, np.zeros(n, dtype), grads


def _bits(a):
    return a.view(np.uint16)


def _assert_same_bits(got, want):
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(_bits(a), _bits(b), strict=True)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01], ids=["no_wd", "wd"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("rule", RULES)
def test_every_path_matches_reference_bit_for_bit(simd, rule, dtype, n, weight_decay):
    w, s, grads = _operands(n, dtype)
    w_ref, s_ref = w.copy(), s.copy()
    for g in grads:
        assert momcore.momentum_step(w, g, s, rule=rule, **_hyper(rule, weight_decay))
        assert ref.momentum_step(w_ref, g, s_ref, rule=rule, **_hyper(rule, weight_decay))
    _assert_same_bits((w, s), (w_ref, s_ref))
    assert np.all(s.astype(np.float32) != 0)


@pytest.mark.parametrize("dtype", HALF)
def test_reference_is_the_float32_step_rounded_once(dtype):
    # The definition, spelled out: widen, one float32 step, astype back.
    w, s, grads = _operands(1000, dtype, seed=3)
    s[:] = (0.1 * np.arange(1000) / 1000).astype(dtype)
    w32, s32, g32 = w.astype(np.float32), s.astype(np.float32), grads[0].astype(np.float32)
    ref.momentum_step(w32, g32, s32, rule="nesterov", lr=0.05, momentum=0.9)
    momcore.momentum_step(w, grads[0], s, rule="nesterov", lr=0.05, momentum=0.9)
    _assert_same_bits((w, s), (w32.astype(dtype), s32.astype(dtype)))


@pytest.mark.parametrize("dtype", HALF)
def test_qian_momenta_in_half(simd, dtype):
    w, s, grads = _operands(1000 + 17, dtype, seed=1)
    momenta = np.linspace(0.1, 0.95, w.size).astype(dtype)
    w_ref, s_ref = w.copy(), s.copy()
    for g in grads:
        momcore.momentum_step(w, g, s, rule="qian", momenta=momenta, lr=0.05, momentum=0.9)
        ref.momentum_step(w_ref, g, s_ref, rule="qian", momenta=momenta, lr=0.05,
                          momentum=0.9)
    _assert_same_bits((w, s), (w_ref, s_ref))


def _at_offset(values, offset):
    """A copy of values whose data starts offset elements past a 64-byte boundary."""
    raw = np.zeros(values.size + offset + 64, values.dtype)
    start = (-raw.ctypes.data % 64) // values.itemsize + offset
    view = raw[start:start + values.size]
    view[...] = values
    return view


# element offsets of (w, g, state) from a cache line: equal, so the chunks of all
# three line up, and unequal
OFFSETS = [(0, 0, 0), (1, 1, 1), (8, 8, 8), (31, 31, 31), (0, 5, 30), (31, 0, 17), (7, 3, 0)]


@pytest.mark.parametrize("offsets", OFFSETS, ids=str)
@pytest.mark.parametrize("n", [31, 32, 33, 64, 95, 200])
@pytest.mark.parametrize("dtype", HALF)
def test_unaligned_starts_match_reference_bit_for_bit(simd, dtype, n, offsets):
    w, s, grads = _operands(n, dtype, seed=4)
    s[:] = (np.arange(n) / n).astype(dtype)
    w_ref, s_ref = w.copy(), s.copy()
    w, s = _at_offset(w, offsets[0]), _at_offset(s, offsets[2])
    momenta = np.linspace(0.1, 0.95, n).astype(dtype)
    for rule, extra in (("nesterov", {"weight_decay": 0.01}), ("qian", {"momenta": momenta})):
        for g in grads:
            g_off = _at_offset(g, offsets[1])
            momcore.momentum_step(w, g_off, s, rule=rule, lr=0.05, momentum=0.9, **extra)
            ref.momentum_step(w_ref, g, s_ref, rule=rule, lr=0.05, momentum=0.9, **extra)
        _assert_same_bits((w, s), (w_ref, s_ref))


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("rule", RULES)
def test_every_bit_pattern_steps_like_the_reference(simd, rule, dtype):
    # w, g, state (and the momenta) each hold all 2**16 patterns, shuffled: every
    # lane of every chunk meets NaN, inf, subnormals, zeros and overflows at the
    # rounding. Equal bits, except in NaNs: which input NaN an operation passes on
    # depends on its operand order, which compilers may swap. bfloat16 stores every
    # NaN as the quiet NaN 0x7fc0 with a sign, whatever the payload it came with.
    rng = np.random.default_rng(5)
    w, g, s, momenta = (rng.permutation(1 << 16).astype(np.uint16).view(dtype)
                        for _ in range(4))
    extra = {"momenta": momenta} if rule == "qian" else {}
    w_ref, s_ref = w.copy(), s.copy()
    with np.errstate(all="ignore"):
        momcore.momentum_step(w, g, s, rule=rule, **_hyper(rule, 0.01), **extra)
        ref.momentum_step(w_ref, g, s_ref, rule=rule, **_hyper(rule, 0.01), **extra)
    for got, want in ((w, w_ref), (s, s_ref)):
        _same_or_both_nan(_bits(got), _bits(want), dtype)
        if dtype is bfloat16:
            np.testing.assert_array_equal(_bits(got) & 0x7fff, _bits(want) & 0x7fff)


@pytest.mark.parametrize("n", [2**16, 2**16 + 17, 2**20 + 3])
@pytest.mark.parametrize("dtype", HALF)
def test_one_and_two_threads_agree(threads, dtype, n):
    results = []
    for nt in (1, 2):
        momcore.set_num_threads(nt)
        w, s, grads = _operands(n, dtype)
        for g in grads:
            momcore.momentum_step(w, g, s, rule="nesterov", lr=0.05, momentum=0.9)
        results.append((w.tobytes(), s.tobytes()))
    assert results[0] == results[1]


# ---- the rounding --------------------------------------------------------------------


def _float32_samples():
    """float32 bit patterns: every exponent with the low 16 bits at the values that
    decide rounding (ties, just below and above, odd and even kept bits) for both
    formats, and a random sample of all patterns (NaNs, infs and zeros included)."""
    low = np.array([0, 1, 0x7ff, 0xfff, 0x1000, 0x1001, 0x17ff, 0x1fff, 0x2000, 0x3000,
                    0x7fff, 0x8000, 0x8001, 0xffff], np.uint32)
    high = np.arange(1 << 16, dtype=np.uint32) << np.uint32(16)
    patterns = (high[:, None] | low[None, :]).ravel()
    rng = np.random.default_rng(0)
    return np.concatenate([patterns, rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint32)])


def _same_or_both_nan(got, want, dtype):
    """Bit-equal, except that a NaN may differ in payload: numpy's float16 cast keeps
    a signalling float32 NaN signalling, the conversion instructions (and so every
    path of the kernel) make it quiet. Arithmetic never yields a signalling NaN, so
    the step's stores are bit-equal all the same (tested above)."""
    nan_got = np.isnan(got.view(dtype).astype(np.float32))
    nan_want = np.isnan(want.view(dtype).astype(np.float32))
    np.testing.assert_array_equal(nan_got, nan_want)
    np.testing.assert_array_equal(got[~nan_want], want[~nan_want])


@pytest.mark.parametrize("dtype", HALF)
def test_rounding_matches_the_numpy_cast(simd, dtype):
    bits = _float32_samples()
    x = bits.view(np.float32)
    got = np.empty(x.size, np.uint16)
    _core._round_to_half(x, got, np.dtype(dtype).name)
    with np.errstate(all="ignore"):
        want = x.astype(dtype).view(np.uint16)
    _same_or_both_nan(got, want, dtype)
    quiet = (bits & 0x7fffffff) >= 0x7fc00000  # quiet NaNs: identical bits too
    np.testing.assert_array_equal(got[quiet], want[quiet])


@pytest.mark.parametrize("dtype", HALF)
def test_widening_is_exact(simd, dtype):
    h = np.arange(1 << 16, dtype=np.uint16)
    got = np.empty(h.size, np.float32)
    _core._widen_half(h, got, np.dtype(dtype).name)
    want = h.view(dtype).astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], want.view(np.uint32)[~nan])


def _subtract(w, g, dtype, impl=momcore, **kw):
    """One classical step with momentum 0 and lr 1 (state = -g; w = w - g, exact in
    float32 for these values, then rounded): returns (w, state) as float64."""
    w, g = np.array(w, dtype), np.array(g, dtype)
    s = np.zeros_like(w)
    applied = impl.momentum_step(w, g, s, lr=kw.pop("lr", 1.0), momentum=0.0, **kw)
    return applied, w.astype(np.float64), s.astype(np.float64)


# (w, g, the rounded w - g): ties go to the even neighbour, either way
TIES = {
    "float16": [(2048.0, -1.0, 2048.0), (2050.0, -1.0, 2052.0), (-2048.0, 1.0, -2048.0),
                (1.0, -2.0**-11, 1.0), (1.0 + 2.0**-10, -2.0**-11, 1.0 + 2.0**-9),
                (2.0**-14, -2.0**-24, 2.0**-14 + 2.0**-24)],  # subnormal step, exact
    "bfloat16": [(256.0, -1.0, 256.0), (258.0, -1.0, 260.0), (-256.0, 1.0, -256.0),
                 (1.0, -2.0**-8, 1.0), (1.0 + 2.0**-7, -2.0**-8, 1.0 + 2.0**-6)],
}


@pytest.mark.parametrize("dtype", HALF)
def test_ties_round_to_even(simd, dtype):
    for w, g, want in TIES[np.dtype(dtype).name]:
        for impl in (momcore, ref):
            _, got, s = _subtract([w] * 17, [g] * 17, dtype, impl)
            assert got.tolist() == [want] * 17, (impl.__name__, w, g)
            assert s.tolist() == [-g] * 17


@pytest.mark.parametrize("dtype", HALF)
def test_subnormal_ties_round_to_even(simd, dtype):
    # lr = 1/2 halves the smallest subnormal: state = 2**-k/2 ties to 0, and
    # w = 2**-k + 2**-k/2 (1.5 steps) ties to 2 steps.
    tiny = 2.0**-24 if dtype == np.float16 else 2.0**-133
    for impl in (momcore, ref):
        _, w, s = _subtract([tiny] * 33, [-tiny] * 33, dtype, impl, lr=0.5)
        assert w.tolist() == [2 * tiny] * 33 and s.tolist() == [0.0] * 33


# Each format's largest finite value, and a w, g whose w - g is finite in float32 but
# rounds to inf in the format (its midpoint with the next power of two ties to even,
# the infinity).
LARGEST = {"float16": 65504.0, "bfloat16": float(np.float32(2.0**127 * (2 - 2.0**-7)))}
OVERFLOWS = {"float16": (65504.0, -16.0), "bfloat16": (LARGEST["bfloat16"], -2.0**119)}
STAYS = {"float16": (65504.0, -8.0), "bfloat16": (LARGEST["bfloat16"], -2.0**118)}


@pytest.mark.parametrize("impl", IMPLS, ids=str)
@pytest.mark.parametrize("dtype", HALF)
def test_overflow_at_the_rounding(simd, impl, dtype):
    name = np.dtype(dtype).name
    # propagate: the store rounds to inf
    _, w, _ = _subtract([OVERFLOWS[name][0]] * 20, [OVERFLOWS[name][1]] * 20, dtype,
                        IMPLS[impl])
    assert np.all(np.isposinf(w))
    # raise / skip: nothing is written, the step is refused
    w0, g0 = np.full(20, OVERFLOWS[name][0], dtype), np.full(20, OVERFLOWS[name][1], dtype)
    w0[:19] = 1.0  # only the last element overflows, in the vector loop's tail
    for nonfinite in ("raise", "skip"):
        w, s = w0.copy(), np.full(20, 0.5, dtype)
        if nonfinite == "raise":
            with pytest.raises(FloatingPointError, match="overflow"):
                IMPLS[impl].momentum_step(w, g0, s, lr=1.0, momentum=0.0, nonfinite="raise")
        else:
            assert IMPLS[impl].momentum_step(w, g0, s, lr=1.0, momentum=0.0,
                                             nonfinite="skip") is False
        _assert_same_bits((w, s), (w0, np.full(20, 0.5, dtype)))
    # just below the midpoint: rounds down to the largest finite value, applied
    applied, w, _ = _subtract([STAYS[name][0]] * 20, [STAYS[name][1]] * 20, dtype,
                              IMPLS[impl], nonfinite="raise")
    assert applied is True and w.tolist() == [LARGEST[name]] * 20


@pytest.mark.parametrize("dtype", HALF)
def test_nan_and_inf_propagate_like_the_reference(simd, dtype):
    n = 40
    w, s, grads = _operands(n, dtype, seed=2)
    g = grads[0].copy()
    g[[0, 17, 39]] = np.array([np.nan, np.inf, -np.inf], np.float32).astype(dtype)
    w_ref, s_ref = w.copy(), s.copy()
    momcore.momentum_step(w, g, s, lr=0.05, momentum=0.9)
    ref.momentum_step(w_ref, g, s_ref, lr=0.05, momentum=0.9)
    _assert_same_bits((w, s), (w_ref, s_ref))
    assert np.isnan(w.astype(np.float32)[0]) and np.isneginf(w.astype(np.float32)[17])
    # raise and skip refuse the gradient and write nothing
    w0, s0 = w_ref.copy(), s_ref.copy()
    g[[0, 17, 39]] = 0
    g[33] = np.array(np.nan, np.float32).astype(dtype)
    assert momcore.momentum_step(w, g, s, lr=0.05, momentum=0.9, nonfinite="skip") is False
    _assert_same_bits((w, s), (w0, s0))


@pytest.mark.parametrize("dtype", HALF)
def test_skip_finds_one_bad_element_anywhere(simd, dtype):
    # one NaN or inf gradient, or one overflow at the rounding, at each position in
    # turn (heads, chunks of the vector loop, tails): the step is refused, nothing
    # is written
    name = np.dtype(dtype).name
    n = 300
    w0, s0, grads = _operands(n, dtype, seed=6)
    for i in (0, 1, 30, 31, 32, 63, 64, 150, 267, 298, 299):
        for kind in ("nan", "inf", "overflow"):
            w, s, g = w0.copy(), s0.copy(), grads[0].copy()
            if kind == "overflow":
                w[i], g[i] = OVERFLOWS[name]
            else:
                g[i] = np.array(np.nan if kind == "nan" else -np.inf, np.float32).astype(dtype)
            before = (w.copy(), s.copy())
            assert momcore.momentum_step(w, g, s, lr=1.0, momentum=0.5,
                                         nonfinite="skip") is False, (i, kind)
            _assert_same_bits((w, s), before)
    w, s = w0.copy(), s0.copy()
    assert momcore.momentum_step(w, grads[0], s, lr=1.0, momentum=0.5, nonfinite="skip")


# ---- many, groups and errors ----------------------------------------------------------


def _mixed_arrays(seed=0):
    """Arrays of every supported dtype (bfloat16 with ml_dtypes) and odd sizes."""
    dtypes = [np.float16, np.float32, np.float64] + ([bfloat16] if bfloat16 else [])
    rng = np.random.default_rng(seed)
    ws = [rng.standard_normal(n).astype(dt) for n, dt in
          zip([17, 1000, 33, 65537, 7, 65], dtypes * 2)]
    return ws, [np.zeros_like(w) for w in ws]


def test_many_and_groups_mix_half_and_float_arrays():
    rng = np.random.default_rng(1)
    ws, ss = _mixed_arrays()
    ws_ref, ss_ref = [w.copy() for w in ws], [s.copy() for s in ss]
    ws_grp, ss_grp = [w.copy() for w in ws], [s.copy() for s in ss]
    hyper = dict(lr=0.05, momentum=0.9, rule="nesterov", dampening=0.0, weight_decay=0.01)
    for _ in range(STEPS):
        gs = [rng.standard_normal(w.shape).astype(w.dtype) for w in ws]
        assert momcore.momentum_step_many(ws, gs, ss, **hyper)
        assert ref.momentum_step_many(ws_ref, gs, ss_ref, **hyper)
        assert _core.step_groups([(ws_grp[:3], gs[:3], ss_grp[:3], hyper),
                                  (ws_grp[3:], gs[3:], ss_grp[3:], hyper)])
    for got in ((ws, ss), (ws_grp, ss_grp)):
        for a, b in zip(got[0] + got[1], ws_ref + ss_ref):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("impl", IMPLS, ids=str)
def test_many_all_or_none_when_a_half_array_would_overflow(impl):
    ws, ss = _mixed_arrays()
    gs = [np.full(w.shape, 0.5, w.dtype) for w in ws]
    ws[0][-1] = 65504.0
    gs[0][-1] = -16.0  # lr 1: 65520 in float32, inf in float16
    before = [a.copy() for a in ws + ss]
    with pytest.raises(FloatingPointError):
        IMPLS[impl].momentum_step_many(ws, gs, ss, lr=1.0, momentum=0.5, nonfinite="raise")
    for a, b in zip(ws + ss, before):
        assert a.tobytes() == b.tobytes()


def _half_pairs():
    yield "float16_float32", np.float16, np.float32
    if bfloat16 is not None:
        yield "bfloat16_float16", bfloat16, np.float16
        yield "bfloat16_float32", bfloat16, np.float32


@pytest.mark.parametrize("impl", IMPLS, ids=str)
@pytest.mark.parametrize("pair", list(_half_pairs()), ids=lambda p: p[0])
def test_mixed_dtypes_are_refused(impl, pair):
    _, a, b = pair
    w, s = np.ones(8, a), np.zeros(8, a)
    for g in (np.ones(8, b),):
        with pytest.raises(TypeError, match="share one dtype"):
            IMPLS[impl].momentum_step(w, g, s, lr=0.1, momentum=0.5)
        with pytest.raises(TypeError, match="share one dtype"):
            IMPLS[impl].momentum_step(w, np.ones(8, a), s.astype(b), lr=0.1, momentum=0.5)
    with pytest.raises(ValueError, match="dtype and shape"):
        IMPLS[impl].momentum_step(w, np.ones(8, a), s, lr=0.1, momentum=0.5, rule="qian",
                                  momenta=np.full(8, 0.5, b))
    assert w.tolist() == [1.0] * 8 and s.tolist() == [0.0] * 8


@pytest.mark.parametrize("impl", IMPLS, ids=str)
@pytest.mark.parametrize("dtype", HALF)
def test_hyperparameters_are_checked_in_float32(impl, dtype):
    # lr, momentum and weight_decay enter the step as float32 values whatever the
    # storage, so float32's limits apply to half arrays too.
    w, g, s = np.ones(4, dtype), np.ones(4, dtype), np.zeros(4, dtype)
    step = IMPLS[impl].momentum_step
    with pytest.raises(ValueError, match="beyond the range of float32, in which the step"):
        step(w, g, s, lr=1e39, momentum=0.5)
    with pytest.raises(ValueError, match="weight_decay.*float32"):
        step(w, g, s, lr=0.1, momentum=0.5, weight_decay=1e39)
    with pytest.raises(ValueError, match="rounds to 1 in float32"):
        step(w, g, s, lr=0.1, momentum=1 - 2.0**-26)
    assert w.tolist() == [1.0] * 4 and s.tolist() == [0.0] * 4
    # within float32's range: accepted, even where the result overflows the storage
    # (float16's; bfloat16 has float32's range)
    assert step(w, g, s, lr=1e30, momentum=0.5) is True
    assert np.all(np.isinf(w.astype(np.float32))) == (dtype == np.float16)
    with pytest.raises(ValueError, match="float32"):
        _core.check_hyperparameters(lr=1e39, momentum=0.5, dtype=dtype)
    _core.check_hyperparameters(lr=1e38, momentum=0.5, dtype=dtype)


def test_other_16_bit_dtypes_are_refused():
    for dt in (np.int16, np.uint16):
        w = np.zeros(4, dt)
        with pytest.raises(TypeError, match="supports float32, float64, float16 and bfloat16"):
            momcore.momentum_step(w, w.copy(), w.copy(), lr=0.1, momentum=0.5)


@pytest.mark.parametrize("dtype", HALF)
def test_sgd_trains_half_parameters_and_round_trips_its_state(dtype):
    rng = np.random.default_rng(7)
    params = [rng.standard_normal(n).astype(dtype) for n in (10, 33)]
    expected = [p.copy() for p in params]
    states = [np.zeros_like(p) for p in params]
    opt = momcore.SGD(params, lr=0.1, momentum=0.9, rule="nesterov")
    for _ in range(3):
        grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
        opt.step(grads)
        ref.momentum_step_many(expected, grads, states, lr=0.1, momentum=0.9,
                               rule="nesterov")
    _assert_same_bits(params, expected)
    copy = momcore.SGD([p.copy() for p in params], lr=0.1, momentum=0.9, rule="nesterov")
    copy.load_state_dict(opt.state_dict())
    _assert_same_bits(copy.state_dict()["state"], opt.state_dict()["state"])


# ---- the benchmark's 16-bit rows -------------------------------------------------------


def test_bench_half_rows_and_the_torch_comparison():
    from momcore import _bench

    rows = _bench.half_table(n=4096, budget=0.001, settle=0)
    assert [r["case"].split()[2] for r in rows] == [np.dtype(d).name for d in _bench.half_dtypes()]
    text = _bench.format_table(rows)
    for r in rows:
        assert r["momcore_us"] > 0 and r["speedup"] > 0
        if "over_torch_fused" in r:
            assert r["over_torch_fused"] > 0
    skipped = [r for r in rows if r.get("torch_fused_skips_parameters")]
    assert ("pytorch issue 191763" in text) == bool(skipped)
    torch = pytest.importorskip("torch")
    # the probe against torch's own single-tensor SGD, which stores every parameter
    for dtype in _bench.half_dtypes() + [np.float32]:
        name = np.dtype(dtype).name
        tdtype = getattr(torch, name)
        params = [torch.ones(256, dtype=tdtype) for _ in range(2)]
        for p in params:
            p.grad = torch.ones(256, dtype=tdtype)
        try:
            torch.optim.SGD(params[:1], lr=0.5, momentum=0.9, fused=True).step()
        except (RuntimeError, TypeError):
            continue
        torch.optim.SGD(params[1:], lr=0.5, momentum=0.9, foreach=False).step()
        assert _bench.torch_fused_skips_parameters(dtype) == (not torch.equal(*params)), name

"""Bad input: the compiled step and the reference raise the same clear exception,
and leave every operand untouched."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import DTYPES, RULES

import momcore
from momcore import _core
from momcore import reference as ref
from momcore import registry

IMPLS = {"compiled": momcore, "reference": ref}
OK = dict(lr=0.1, momentum=0.9)


def _fresh(n=33, dtype=np.float64):
    rng = np.random.default_rng(0)
    return rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype), \
        rng.standard_normal(n).astype(dtype)


def _readonly(a):
    a.flags.writeable = False
    return a


def _operand_cases():
    w, g, s = _fresh()
    base = np.zeros(66)
    yield "list_w", (list(w), g, s), TypeError, "w must be a numpy.ndarray"
    yield "list_g", (w, list(g), s), TypeError, "g must be a numpy.ndarray"
    yield "int_dtype", (w.astype(np.int64), g, s), TypeError, "supports float32, float64"
    yield "complex", (w.astype(complex), g.astype(complex), s.astype(complex)), \
        TypeError, "supports float32, float64"
    yield "float16_with_float32_g", (w.astype(np.float16), g.astype(np.float32),
                                     s.astype(np.float16)), TypeError, "share one dtype"
    yield "mixed_dtype", (w, g.astype(np.float32), s), TypeError, "share one dtype"
    yield "shape", (w, g[:-1].copy(), s), ValueError, "share one shape"
    yield "shape_2d", (w.reshape(3, 11), g.reshape(11, 3), s.reshape(3, 11)), ValueError, \
        "share one shape"
    yield "byteswapped", (w.astype(">f8"), g.astype(">f8"), s.astype(">f8")), TypeError, \
        "byte order"
    yield "strided_w", (np.zeros(66)[::2], g, s), ValueError, "w must be C-contiguous"
    yield "strided_g", (w, np.zeros(66)[::2], s), ValueError, "g must be C-contiguous"
    yield "negative_stride", (w[::-1], g, s), ValueError, "C-contiguous"
    yield "fortran", (np.asfortranarray(np.zeros((3, 11))), np.zeros((3, 11)),
                      np.zeros((3, 11))), ValueError, "C-contiguous"
    yield "readonly_w", (_readonly(w.copy()), g, s), ValueError, "w is read-only"
    yield "readonly_state", (w, g, _readonly(s.copy())), ValueError, "state is read-only"
    yield "w_is_g", (w, w, s), ValueError, "share memory"
    yield "w_is_state", (w, g, w), ValueError, "share memory"
    yield "g_is_state", (w, s, s), ValueError, "share memory"
    yield "w_overlaps_state", (base[:33], g, base[32:65]), ValueError, "share memory"
    yield "g_overlaps_w", (base[:33], base[20:53], s), ValueError, "share memory"


@pytest.mark.parametrize("impl", IMPLS, ids=str)
@pytest.mark.parametrize("case", list(_operand_cases()), ids=lambda c: c[0])
def test_bad_operands(impl, case):
    _, args, exc, match = case
    before = [np.array(a, copy=True) for a in args]
    with pytest.raises(exc, match=match):
        IMPLS[impl].momentum_step(*args, **OK)
    for a, b in zip(args, before):
        np.testing.assert_array_equal(np.asarray(a), b, strict=True)


HYPER_CASES = [
    ("lr_negative", dict(lr=-0.1), ValueError, "lr must be a finite number >= 0"),
    ("lr_nan", dict(lr=float("nan")), ValueError, "lr must be"),
    ("lr_inf", dict(lr=float("inf")), ValueError, "lr must be"),
    ("lr_str", dict(lr="0.1"), TypeError, "lr must be a real number"),
    ("lr_none", dict(lr=None), TypeError, "lr must be a real number"),
    ("lr_complex", dict(lr=1j), TypeError, "lr must be a real number"),
    ("momentum_one", dict(momentum=1.0), ValueError, r"momentum must lie in \(-1, 1\)"),
    ("momentum_minus_one", dict(momentum=-1.0), ValueError, "momentum must lie"),
    ("momentum_big", dict(momentum=1.5), ValueError, "momentum must lie"),
    ("momentum_nan", dict(momentum=float("nan")), ValueError, "momentum must lie"),
    ("dampening_one", dict(dampening=1.0), ValueError, r"dampening must lie in \[0, 1\)"),
    ("dampening_negative", dict(dampening=-0.1), ValueError, "dampening must lie"),
    ("weight_decay_negative", dict(weight_decay=-1e-4), ValueError, "weight_decay must be"),
    ("weight_decay_inf", dict(weight_decay=float("inf")), ValueError, "weight_decay must be"),
    ("rule_unknown", dict(rule="adam"), ValueError, "rule must be one of"),
    ("rule_none", dict(rule=None), ValueError, "rule must be one of"),
    ("nonfinite_unknown", dict(nonfinite="ignore"), ValueError, "nonfinite must be one of"),
]


@pytest.mark.parametrize("impl", IMPLS, ids=str)
@pytest.mark.parametrize("case", HYPER_CASES, ids=lambda c: c[0])
def test_bad_hyperparameters(impl, case):
    _, override, exc, match = case
    w, g, s = _fresh()
    w0, s0 = w.copy(), s.copy()
    with pytest.raises(exc, match=match):
        IMPLS[impl].momentum_step(w, g, s, **{**OK, **override})
    np.testing.assert_array_equal(w, w0, strict=True)
    np.testing.assert_array_equal(s, s0, strict=True)


@pytest.mark.parametrize("impl", IMPLS, ids=str)
def test_lr_and_momentum_are_required_keywords(impl):
    w, g, s = _fresh()
    with pytest.raises(TypeError):
        IMPLS[impl].momentum_step(w, g, s, momentum=0.9)
    with pytest.raises(TypeError):
        IMPLS[impl].momentum_step(w, g, s, 0.1, 0.9)


@pytest.mark.parametrize("impl", IMPLS, ids=str)
def test_read_only_gradient_is_fine(impl):
    w, g, s = _fresh()
    assert IMPLS[impl].momentum_step(w, _readonly(g), s, **OK) is True


@pytest.mark.parametrize("impl", IMPLS, ids=str)
@pytest.mark.parametrize("nonfinite", ["propagate", "raise", "skip"])
def test_empty_arrays_are_a_no_op(impl, nonfinite):
    e = np.empty((0, 3))
    assert IMPLS[impl].momentum_step(e, np.empty((0, 3)), np.empty((0, 3)), **OK,
                                     nonfinite=nonfinite) is True


@pytest.mark.parametrize("impl", IMPLS, ids=str)
def test_zero_dim_arrays_work(impl):
    w, g, s = np.array(1.0), np.array(1.0), np.array(0.0)
    IMPLS[impl].momentum_step(w, g, s, lr=0.25, momentum=0.5)
    assert (float(w), float(s)) == (0.75, -0.25)


# ---- many ---------------------------------------------------------------------------


def _many_cases():
    ws = [np.zeros(4), np.zeros(5)]
    gs = [np.ones(4), np.ones(5)]
    ss = [np.zeros(4), np.zeros(5)]
    base = np.zeros(20)
    yield "not_a_list", (np.zeros((2, 4)), gs, ss), TypeError, "ws must be a list"
    yield "lengths", (ws, gs[:1], ss), ValueError, "one length"
    yield "bad_item_named", (ws, [gs[0], np.ones(4)], ss), ValueError, r"gs\[1\]"
    yield "dtype_item_named", (ws, gs, [ss[0], np.zeros(5, np.float32)]), TypeError, \
        r"states\[1\]"
    yield "w_shared_across_items", ([base[:4], base[2:7]], gs, ss), ValueError, \
        r"ws\[0\] and ws\[1\] share memory"
    yield "state_overlaps_other_w", ([base[:4], np.zeros(5)], gs, [np.zeros(4), base[3:8]]), \
        ValueError, "share memory"
    yield "grad_overlaps_other_w", ([base[:4], np.zeros(5)], [np.ones(4), base[:5]], ss), \
        ValueError, "share memory"


@pytest.mark.parametrize("impl", IMPLS, ids=str)
@pytest.mark.parametrize("case", list(_many_cases()), ids=lambda c: c[0])
def test_bad_many(impl, case):
    _, args, exc, match = case
    before = [[np.array(a, copy=True) for a in seq] for seq in args]
    with pytest.raises(exc, match=match):
        IMPLS[impl].momentum_step_many(*args, **OK)
    for seq, seq0 in zip(args, before):
        for a, b in zip(seq, seq0):
            np.testing.assert_array_equal(a, b, strict=True)


# ---- non-finite gradients --------------------------------------------------------------

POSITIONS = {"first": 0, "middle": 500, "last_vector": 992, "tail": 1000}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", POSITIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("impl", IMPLS, ids=str)
def test_raise_and_skip_leave_memory_untouched(impl, rule, dtype, where, bad):
    n = 1001
    w, g, s = _fresh(n, dtype)
    g[POSITIONS[where]] = bad
    w0, s0 = w.tobytes(), s.tobytes()
    f = IMPLS[impl].momentum_step
    with pytest.raises(FloatingPointError, match="left unchanged"):
        f(w, g, s, **OK, rule=rule, weight_decay=0.01, nonfinite="raise")
    assert (w.tobytes(), s.tobytes()) == (w0, s0)
    assert f(w, g, s, **OK, rule=rule, nonfinite="skip") is False
    assert (w.tobytes(), s.tobytes()) == (w0, s0)


@pytest.mark.parametrize("n", [2**16 + 5, 2**20 + 3])
def test_nonfinite_found_anywhere_in_a_threaded_array(threads, n):
    momcore.set_num_threads(2)
    for pos in (0, n // 2 - 1, n // 2 + 7, n - 1):
        w, g, s = _fresh(n)
        g[pos] = np.nan
        w0 = w.tobytes()
        assert momcore.momentum_step(w, g, s, **OK, nonfinite="skip") is False
        assert w.tobytes() == w0


@pytest.mark.parametrize("impl", IMPLS, ids=str)
def test_many_with_one_bad_gradient_updates_nothing(impl):
    ws = [np.ones(100), np.ones(7, np.float32), np.ones(1000)]
    gs = [np.ones(100), np.ones(7, np.float32), np.ones(1000)]
    gs[2][999] = np.inf
    ss = [np.zeros_like(w) for w in ws]
    before = [a.tobytes() for a in ws + ss]
    assert IMPLS[impl].momentum_step_many(ws, gs, ss, **OK, nonfinite="skip") is False
    with pytest.raises(FloatingPointError):
        IMPLS[impl].momentum_step_many(ws, gs, ss, **OK, nonfinite="raise")
    assert [a.tobytes() for a in ws + ss] == before


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("rule", RULES)
def test_propagate_lets_nan_and_inf_flow_like_the_reference(rule, dtype):
    w, g, s = _fresh(1001, dtype)
    g[[3, 500, 1000]] = [np.nan, np.inf, -np.inf]
    w_ref, s_ref = w.copy(), s.copy()
    assert momcore.momentum_step(w, g, s, **OK, rule=rule) is True
    with np.errstate(invalid="ignore", over="ignore"):
        ref.momentum_step(w_ref, g, s_ref, **OK, rule=rule)
    np.testing.assert_array_equal(w, w_ref, strict=True)
    np.testing.assert_array_equal(s, s_ref, strict=True)
    assert not np.isfinite(w[[3, 500, 1000]]).any()
    assert np.isfinite(np.delete(w, [3, 500, 1000])).all()


# ---- a hyperparameter given to a rule that ignores it ------------------------------

IGNORING_DAMPENING = [r for r in RULES if r not in registry.rules_taking("dampening")]


def _dampening_message(rule):
    return (f"dampening is taken only by rule 'velocity'; rule {rule!r} ignores it "
            f"(leave it at 0)")


def test_only_velocity_takes_dampening():
    # the message below names 'velocity' alone; a second rule taking dampening would
    # change its words
    assert registry.rules_taking("dampening") == ("velocity",)
    assert set(IGNORING_DAMPENING) == set(RULES) - {"velocity"}


@pytest.mark.parametrize("impl", IMPLS, ids=str)
@pytest.mark.parametrize("dampening", [0.5, 5e-324])
@pytest.mark.parametrize("rule", IGNORING_DAMPENING)
def test_dampening_for_a_rule_that_ignores_it_is_refused(impl, rule, dampening):
    w, g, s = _fresh()
    w0, s0 = w.copy(), s.copy()
    for call in (lambda: IMPLS[impl].momentum_step(w, g, s, rule=rule, dampening=dampening,
                                                   **OK),
                 lambda: IMPLS[impl].momentum_step_many([w], [g], [s], rule=rule,
                                                        dampening=dampening, **OK)):
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == _dampening_message(rule)
    np.testing.assert_array_equal(w, w0, strict=True)
    np.testing.assert_array_equal(s, s0, strict=True)


@pytest.mark.parametrize("rule", IGNORING_DAMPENING)
def test_dampening_refused_by_every_compiled_entry_point(rule):
    sizes = [2, 3, 1]
    n = 2 * 3 + 3 + 3 + 1
    params, state, grad = np.zeros(n), np.zeros(n), np.zeros(n)
    core = _core.NetCore(params, state, grad, sizes, "sigmoid", "sigmoid", 4)
    X, T = np.zeros((2, 2)), np.zeros((2, 1))
    w, g, s = _fresh()
    calls = {
        "check_hyperparameters": lambda: _core.check_hyperparameters(
            rule=rule, dampening=0.25, **OK),
        "step_groups": lambda: _core.step_groups(
            [([w], [g], [s], dict(rule=rule, dampening=0.25, weight_decay=0.0, **OK))]),
        "NetCore.step": lambda: core.step(rule=rule, dampening=0.25, **OK),
        "NetCore.train_epoch": lambda: core.train_epoch(
            X, T, np.arange(2, dtype=np.int64), 2, rule=rule, dampening=0.25, **OK),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == _dampening_message(rule), name
    assert not params.any() and not state.any()


@pytest.mark.parametrize("impl", IMPLS, ids=str)
@pytest.mark.parametrize("rule", RULES)
def test_zero_dampening_is_accepted_by_every_rule(impl, rule):
    w, g, s = _fresh()
    for zero in (0.0, -0.0, 0):
        assert IMPLS[impl].momentum_step(w, g, s, rule=rule, dampening=zero, **OK) is True


@pytest.mark.parametrize("impl", IMPLS, ids=str)
def test_velocity_takes_dampening(impl):
    w, g, s = np.ones(3), np.ones(3), np.zeros(3)
    IMPLS[impl].momentum_step(w, g, s, rule="velocity", dampening=0.75, lr=1.0, momentum=0.5)
    np.testing.assert_array_equal(s, np.full(3, 0.25))  # (1 - 0.75) * g
    np.testing.assert_array_equal(w, np.full(3, 0.75))


# ---- one rule per class of input (Reliability II) -------------------------------------


@pytest.mark.parametrize("flag", [True, np.True_, np.array(True)], ids=["bool", "np.bool_", "0-d bool"])
def test_booleans_are_not_numbers_for_any_hyperparameter(flag):
    w, g, s = np.zeros(3), np.ones(3), np.zeros(3)
    for name in ("lr", "momentum", "dampening", "weight_decay"):
        kwargs = {"lr": 0.1, "momentum": 0.5, "rule": "classical" if name != "dampening" else "dampened"}
        kwargs[name] = flag
        with pytest.raises(TypeError, match=f"^{name} must be a real number"):
            momcore.momentum_step(w, g, s, **kwargs)


@pytest.mark.parametrize("value", [np.timedelta64(1, "s"), np.datetime64("2020-01-01"),
                                   np.array(np.timedelta64(1, "s"))])
def test_times_are_not_numbers_and_the_error_names_the_argument(value):
    with pytest.raises(TypeError, match="^lr must be a real number"):
        momcore.momentum_step(np.zeros(3), np.ones(3), np.zeros(3), lr=value, momentum=0.5)


def test_timedelta_and_masked_inputs_are_refused():
    net = momcore.MLP([2, 3, 2], seed=0)
    with pytest.raises(TypeError, match="X must hold real numbers, got dtype timedelta64"):
        net.fit(np.ones((4, 2), "m8[s]"), [0, 1, 0, 1], epochs=1)
    masked = np.ma.masked_array(np.ones((4, 2)), mask=[[0, 1], [0, 0], [0, 0], [0, 0]])
    for call in (lambda: net.fit(masked, [0, 1, 0, 1], epochs=1), lambda: net.predict(masked)):
        with pytest.raises(ValueError, match="masked array with masked values"):
            call()
    assert net.predict(np.ma.masked_array(np.ones((4, 2)))).shape == (4,)  # nothing masked


def test_seed_must_be_a_non_negative_integer():
    with pytest.raises(ValueError, match="^seed must be >= 0, got -1"):
        momcore.MLP([2, 2], seed=-1)
    with pytest.raises(TypeError, match="^seed must be an integer"):
        momcore.MLP([2, 2], seed=np.True_)


@pytest.mark.parametrize("n", [2.5, 2.0, True, "2", np.float64(2)])
def test_set_num_threads_takes_integers_only(n):
    before = momcore.get_num_threads()
    with pytest.raises(TypeError, match="^n must be an integer"):
        momcore.set_num_threads(n)
    assert momcore.get_num_threads() == before


def test_fit_called_again_from_its_own_callback_says_so():
    net = momcore.MLP([2, 3, 2], seed=0)
    X, y = np.ones((4, 2)), [0, 1, 0, 1]
    seen = []

    def callback(epoch, logs):
        try:
            net.fit(X, y, epochs=1)
        except RuntimeError as exc:
            seen.append(str(exc))

    net.fit(X, y, epochs=1, callback=callback)
    assert seen and "called again from inside this model's own fit" in seen[0]
    net.fit(X, y, epochs=1)  # and the lock was released


@pytest.mark.parametrize("fraction", ["0.2", True, None])
def test_test_fraction_is_a_number_never_parsed_from_a_string(fraction):
    with pytest.raises(TypeError, match="^test_fraction must be a number"):
        momcore.datasets.train_test_split(np.ones((10, 2)), np.arange(10), test_fraction=fraction)

"""_core.step_groups: parameter groups, each with its own hyperparameters, in one C call."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import DTYPES

from momcore import _core
from momcore import reference as ref

IMPLS = {"compiled": _core, "reference": ref}

GROUP_HYPERS = [
    dict(lr=0.05, momentum=0.9, rule="classical", dampening=0.0, weight_decay=0.0),
    dict(lr=0.2, momentum=0.5, rule="velocity", dampening=0.25, weight_decay=1e-2),
    dict(lr=0.01, momentum=-0.3, rule="nesterov_velocity", dampening=0.0, weight_decay=0.0),
    dict(lr=0.1, momentum=0.75, rule="one_step", dampening=0.0, weight_decay=0.5),
]


def _groups(sizes_per_group, dtypes, seed=0):
    """Per group: (ws, gs, states) of the given sizes, dtypes cycling."""
    rng = np.random.default_rng(seed)
    out, k = [], 0
    for sizes in sizes_per_group:
        ws, gs, ss = [], [], []
        for n in sizes:
            dt = dtypes[k % len(dtypes)]
            k += 1
            ws.append(rng.standard_normal(n).astype(dt))
            gs.append(rng.standard_normal(n).astype(dt))
            ss.append(rng.standard_normal(n).astype(dt))
        out.append((ws, gs, ss))
    return out


def _copy(groups):
    return [tuple([a.copy() for a in arrays] for arrays in group) for group in groups]


@pytest.mark.parametrize("nonfinite", ["propagate", "raise", "skip"])
def test_each_group_takes_its_own_hyperparameters(simd, threads, nonfinite):
    _core.set_num_threads(2)
    sizes = [[3, 17], [1, _core.OMP_MIN_ELEMENTS + 5], [33, 0, 65], [1000]]
    groups = _groups(sizes, DTYPES)
    want = _copy(groups)
    for _ in range(3):
        assert _core.step_groups([g + (h,) for g, h in zip(groups, GROUP_HYPERS)],
                                 nonfinite=nonfinite) is True
        for (ws, gs, ss), h in zip(want, GROUP_HYPERS):
            for w, g, s in zip(ws, gs, ss):
                assert ref.momentum_step(w, g, s, **h) is True
    for got_group, want_group in zip(groups, want):
        for got, exp in zip(got_group, want_group):
            for a, b in zip(got, exp):
                np.testing.assert_array_equal(a, b, strict=True)


def test_compiled_and_reference_step_groups_agree():
    groups = _groups([[5, 2], [9], [0, 4], [300]], DTYPES, seed=7)
    want = _copy(groups)
    for _ in range(2):
        _core.step_groups([g + (h,) for g, h in zip(groups, GROUP_HYPERS)])
        ref.step_groups([g + (h,) for g, h in zip(want, GROUP_HYPERS)])
    for got_group, want_group in zip(groups, want):
        for got, exp in zip(got_group, want_group):
            for a, b in zip(got, exp):
                np.testing.assert_array_equal(a, b, strict=True)


def test_groups_differ_from_one_shared_hyper():
    # Not vacuous: the same arrays stepped with group 0's hyper everywhere end elsewhere.
    groups = _groups([[8], [8]], [np.float64])
    shared = _copy(groups)
    _core.step_groups([groups[0] + (GROUP_HYPERS[0],), groups[1] + (GROUP_HYPERS[1],)])
    _core.step_groups([shared[0] + (GROUP_HYPERS[0],), shared[1] + (GROUP_HYPERS[0],)])
    np.testing.assert_array_equal(groups[0][0][0], shared[0][0][0])
    assert not np.array_equal(groups[1][0][0], shared[1][0][0])


def test_many_is_one_group():
    groups = _groups([[5, 40]], DTYPES)
    many = _copy(groups)
    h = GROUP_HYPERS[1]
    _core.step_groups([groups[0] + (h,)])
    _core.momentum_step_many(*many[0], **h)
    for a, b in zip(groups[0][0] + groups[0][2], many[0][0] + many[0][2]):
        np.testing.assert_array_equal(a, b, strict=True)


@pytest.mark.parametrize("impl", IMPLS, ids=str)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_a_nonfinite_gradient_in_any_group_writes_nothing(impl, mode, bad):
    groups = _groups([[10, 3], [7], [_core.OMP_MIN_ELEMENTS + 1]], DTYPES)
    groups[2][1][0][-1] = bad  # the last element of the last gradient of the last group
    before = _copy(groups)
    args = [g + (h,) for g, h in zip(groups, GROUP_HYPERS)]
    if mode == "raise":
        with pytest.raises(FloatingPointError, match="NaN or inf"):
            IMPLS[impl].step_groups(args, nonfinite=mode)
    else:
        assert IMPLS[impl].step_groups(args, nonfinite=mode) is False
    for got_group, want_group in zip(groups, before):
        for got, exp in zip(got_group, want_group):
            for a, b in zip(got, exp):
                assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("impl", IMPLS, ids=str)
def test_errors_number_arrays_across_groups_in_the_callers_words(impl):
    groups = _groups([[4, 4, 4], [4, 4]], [np.float64])
    groups[1][0][0].flags.writeable = False  # the fourth w of all
    args = [g + (h,) for g, h in zip(groups, GROUP_HYPERS)]
    with pytest.raises(ValueError) as info:
        IMPLS[impl].step_groups(args, names=("params", "grads", "state"))
    assert str(info.value) == "params[3] is read-only; it is updated in place"
    with pytest.raises(ValueError, match=r"^ws\[3\] is read-only"):
        IMPLS[impl].step_groups(args)
    groups[1][0][0].flags.writeable = True
    groups[1][1][1] = groups[1][1][1].astype(np.float32)
    with pytest.raises(TypeError, match=r"^params\[4\], grads\[4\] and state\[4\] must share "
                                        r"one dtype"):
        IMPLS[impl].step_groups(args, names=("params", "grads", "state"))


@pytest.mark.parametrize("impl", IMPLS, ids=str)
def test_aliasing_across_groups_is_refused(impl):
    groups = _groups([[6], [6]], [np.float64])
    w0 = groups[0][0][0]
    before = w0.copy()
    args = [groups[0] + (GROUP_HYPERS[0],),
            ([np.zeros(6)], [np.zeros(6)], [w0], GROUP_HYPERS[1])]  # state 1 is w 0
    with pytest.raises(ValueError, match=r"p\[0\] and s\[1\] share memory"):
        IMPLS[impl].step_groups(args, names=("p", "g", "s"))
    np.testing.assert_array_equal(w0, before)
    # a gradient read by two groups is fine
    g = np.ones(6)
    assert IMPLS[impl].step_groups([([np.zeros(6)], [g], [np.zeros(6)], GROUP_HYPERS[0]),
                              ([np.zeros(6)], [g], [np.zeros(6)], GROUP_HYPERS[1])])


@pytest.mark.parametrize("impl", IMPLS, ids=str)
def test_empty_groups_and_empty_arrays(impl):
    assert IMPLS[impl].step_groups([]) is True
    assert IMPLS[impl].step_groups((), nonfinite="raise") is True
    assert IMPLS[impl].step_groups([([], [], [], GROUP_HYPERS[0])] * 2, nonfinite="skip") is True
    e = np.empty((0, 3))
    w = np.ones(4)
    groups = [([e], [np.empty((0, 3))], [np.empty((0, 3))], GROUP_HYPERS[0]),
              ([], [], [], GROUP_HYPERS[1]),
              ([w], [np.ones(4)], [np.zeros(4)], GROUP_HYPERS[2])]
    assert IMPLS[impl].step_groups(groups, nonfinite="raise") is True
    assert (w < 1).all()


@pytest.mark.parametrize("impl", IMPLS, ids=str)
@pytest.mark.parametrize("hyper, exc, match", [
    (dict(lr=0.1, momentum=0.5, rule="classical", weight_decay=0.0), ValueError,
     r"groups\[1\] hyper must have exactly the keys .*missing 'dampening'"),
    ({**GROUP_HYPERS[0], "nesterov": True}, ValueError, r"groups\[1\] .*unknown 'nesterov'"),
    ([0.1, 0.5], TypeError, r"groups\[1\] hyper must be a dict"),
    ({**GROUP_HYPERS[0], "lr": -1.0}, ValueError, "lr must be a finite number >= 0"),
    ({**GROUP_HYPERS[0], "dampening": 0.5}, ValueError,
     "dampening is taken only by rule 'velocity'; rule 'classical' ignores it"),
    ({**GROUP_HYPERS[0], "rule": "adam"}, ValueError, "rule must be one of"),
])
def test_bad_group_hyperparameters(impl, hyper, exc, match):
    groups = _groups([[3], [3]], [np.float64])
    before = _copy(groups)
    with pytest.raises(exc, match=match):
        IMPLS[impl].step_groups([groups[0] + (GROUP_HYPERS[0],), groups[1] + (hyper,)])
    assert groups[0][0][0].tobytes() == before[0][0][0].tobytes()


@pytest.mark.parametrize("impl", IMPLS, ids=str)
def test_bad_group_structure(impl):
    w = np.zeros(3)
    with pytest.raises(TypeError, match="groups must be a list or tuple"):
        IMPLS[impl].step_groups(x for x in [])
    with pytest.raises(TypeError, match=r"groups\[0\] must be a tuple \(ws, gs, states, hyper\)"):
        IMPLS[impl].step_groups([([w], [w], [w])])
    with pytest.raises(ValueError, match=r"ws, gs and states of groups\[0\] must have one "
                                         r"length; got 1, 0 and 1"):
        IMPLS[impl].step_groups([([w], [], [np.zeros(3)], GROUP_HYPERS[0])])
    with pytest.raises(TypeError, match=r"gs of groups\[0\] must be a list or tuple"):
        IMPLS[impl].step_groups([([w], np.zeros((1, 3)), [np.zeros(3)], GROUP_HYPERS[0])])
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        IMPLS[impl].step_groups([], nonfinite="ignore")
    with pytest.raises(TypeError, match="names must be a tuple of three strings"):
        IMPLS[impl].step_groups([], names=("a", "b"))

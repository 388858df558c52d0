"""Tests of the learning-rate and momentum schedules, against hand-computed values
and, for the one-cycle policy, against its formula written out here and PyTorch's
OneCycleLR (when torch is installed)."""

import dataclasses
import functools
import math

import numpy as np
import pytest

import momcore.schedules
from momcore.schedules import (
    Constant,
    Cosine,
    Linear,
    OneCycle,
    Stages,
    Step,
    Warmup,
    as_schedule,
    momentum_annealing,
    per_epoch,
    per_step,
    unit_of,
    value_at,
)

NO_TORCH = "torch is not installed (pip install torch); the comparison with PyTorch needs it"


def test_constant():
    schedule = Constant(0.25)
    assert [schedule(e) for e in (0, 1, 1000)] == [0.25, 0.25, 0.25]
    assert isinstance(schedule(0), float)
    assert repr(schedule) == "Constant(value=0.25)"


def test_linear_ramp_then_hold():
    schedule = Linear(start=0.5, end=0.9, epochs=4)
    expected = [0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9]
    np.testing.assert_allclose([schedule(e) for e in range(7)], expected, rtol=0, atol=1e-15)
    assert schedule(4) == 0.9 and schedule(10**6) == 0.9
    assert repr(schedule) == "Linear(start=0.5, end=0.9, epochs=4)"


def test_linear_decreasing():
    schedule = Linear(1.0, 0.0, 2)
    assert [schedule(e) for e in range(4)] == [1.0, 0.5, 0.0, 0.0]


def test_step():
    schedule = Step(initial=0.1, factor=0.5, every=3)
    expected = [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]
    np.testing.assert_allclose([schedule(e) for e in range(7)], expected, rtol=1e-15)
    assert repr(schedule) == "Step(initial=0.1, factor=0.5, every=3)"


def test_momentum_annealing_defaults():
    schedule = momentum_annealing(epochs=2)
    assert schedule == Linear(0.5, 0.9, 2)
    np.testing.assert_allclose([schedule(e) for e in range(4)], [0.5, 0.7, 0.9, 0.9], atol=1e-15)


def test_momentum_annealing_custom():
    schedule = momentum_annealing(0.0, 0.99, epochs=3)
    np.testing.assert_allclose([schedule(e) for e in range(5)], [0.0, 0.33, 0.66, 0.99, 0.99])


@pytest.mark.parametrize("name, kwargs", [("start", {"start": 1.0}), ("end", {"end": -1.0})])
def test_momentum_annealing_bounds(name, kwargs):
    with pytest.raises(ValueError, match=name):
        momentum_annealing(epochs=5, **kwargs)


def test_stages():
    stages = Stages([(0.5, 0.0), (0.1, 0.5), (0.01, 0.9)], epochs_per_stage=2)
    lrs = [stages.lr(e) for e in range(8)]
    momenta = [stages.momentum(e) for e in range(8)]
    assert lrs == [0.5, 0.5, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01]
    assert momenta == [0.0, 0.0, 0.5, 0.5, 0.9, 0.9, 0.9, 0.9]
    assert stages(3) == (0.1, 0.5)
    assert [stages.stage(e) for e in (0, 1, 2, 5, 100)] == [0, 0, 1, 2, 2]
    assert repr(stages.lr).endswith(".lr") and repr(stages.momentum).startswith("Stages(")


def test_stages_with_lengths_per_stage():
    stages = Stages(((0.2, 0.1), (0.05, 0.8)), epochs_per_stage=[1, 3])
    assert [stages.lr(e) for e in range(6)] == [0.2, 0.05, 0.05, 0.05, 0.05, 0.05]
    assert [stages.momentum(e) for e in range(3)] == [0.1, 0.8, 0.8]
    three = Stages(((0.3, 0.0), (0.2, 0.5), (0.1, 0.9)), epochs_per_stage=(2, 1, 5))
    assert [three.stage(e) for e in range(10)] == [0, 0, 1, 2, 2, 2, 2, 2, 2, 2]


@pytest.mark.parametrize(
    "pairs, epochs_per_stage, name",
    [
        ([], 2, "pairs"),
        ([(0.1,)], 2, "pairs"),
        ([(-0.1, 0.5)], 2, "lr"),
        ([(0.1, 1.0)], 2, "momentum"),
        ([(0.1, float("nan"))], 2, "momentum"),
        ([(0.1, 0.5)], 0, "epochs_per_stage"),
        ([(0.1, 0.5), (0.01, 0.9)], [3], "epochs_per_stage"),
        (None, 2, "pairs"),
    ],
)
def test_stages_rejects(pairs, epochs_per_stage, name):
    with pytest.raises(ValueError, match=name):
        Stages(pairs, epochs_per_stage)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: Constant(float("inf")), "value"),
        (lambda: Constant("0.1"), "value"),
        (lambda: Linear(float("nan"), 0.9, 10), "start"),
        (lambda: Linear(0.5, None, 10), "end"),
        (lambda: Linear(0.5, 0.9, 0), "epochs"),
        (lambda: Linear(0.5, 0.9, 2.5), "epochs"),
        (lambda: Step(float("inf"), 0.5, 2), "initial"),
        (lambda: Step(0.1, 0.0, 2), "factor"),
        (lambda: Step(0.1, 0.5, 0), "every"),
        (lambda: Step(0.1, 0.5, True), "every"),
    ],
)
def test_constructors_reject(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize(
    "schedule",
    [Constant(0.1), Linear(0.5, 0.9, 3), Step(0.1, 0.5, 2), Stages([(0.1, 0.5)], 2).lr],
    ids=["constant", "linear", "step", "stages"],
)
def test_negative_epoch_rejected(schedule):
    with pytest.raises(ValueError, match="epoch"):
        schedule(-1)
    with pytest.raises(TypeError, match="epoch"):
        schedule(1.5)


def test_numpy_integer_epoch():
    assert Step(1.0, 0.5, 1)(np.int64(2)) == 0.25


def test_frozen():
    schedule = Linear(0.5, 0.9, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.end = 0.99


def test_as_schedule():
    constant = as_schedule(0.3)
    assert constant == Constant(0.3) and constant(7) == 0.3
    assert as_schedule(2)(0) == 2.0
    assert as_schedule(np.float32(0.5))(0) == 0.5
    ramp = Linear(0.5, 0.9, 4)
    assert as_schedule(ramp) is ramp

    def halve(epoch):
        return 1.0 / 2**epoch

    assert as_schedule(halve) is halve
    for bad in (None, "0.1", [0.1], True):
        with pytest.raises(TypeError):
            as_schedule(bad)
    with pytest.raises(ValueError, match="value"):
        as_schedule(float("nan"))


def test_as_schedule_accepts_any_callable():
    class Halving:
        def __call__(self, t):
            return 0.5**t

    instance = Halving()
    partial = functools.partial(pow, 0.5)
    for fn in (instance, partial, abs, Halving):
        assert as_schedule(fn) is fn
    assert as_schedule(partial)(3) == 0.125


# ---- units: per="epoch" / per="step" ----------------------------------------------------

EVERY_CLASS = {
    "constant": lambda **kw: Constant(0.1, **kw),
    "linear": lambda **kw: Linear(0.5, 0.9, 3, **kw),
    "step": lambda **kw: Step(0.1, 0.5, 2, **kw),
    "cosine": lambda **kw: Cosine(0.1, 0.0, 5, **kw),
    "warmup": lambda **kw: Warmup(0.1, 3, **kw),
    "momentum_annealing": lambda **kw: momentum_annealing(epochs=4, **kw),
    "stages": lambda **kw: Stages([(0.1, 0.5), (0.01, 0.9)], 2, **kw),
    "stages.lr": lambda **kw: Stages([(0.1, 0.5), (0.01, 0.9)], 2, **kw).lr,
    "stages.momentum": lambda **kw: Stages([(0.1, 0.5), (0.01, 0.9)], 2, **kw).momentum,
    "onecycle": lambda **kw: OneCycle(0.1, 10, **kw),
    "onecycle.lr": lambda **kw: OneCycle(0.1, 10, **kw).lr,
    "onecycle.momentum": lambda **kw: OneCycle(0.1, 10, **kw).momentum,
}


@pytest.mark.parametrize("make", EVERY_CLASS.values(), ids=EVERY_CLASS.keys())
@pytest.mark.parametrize("per", ["epoch", "step"])
def test_every_schedule_takes_per(make, per):
    schedule = make(per=per)
    assert schedule.per == per
    assert unit_of(schedule) == per


@pytest.mark.parametrize("make", EVERY_CLASS.values(), ids=EVERY_CLASS.keys())
def test_default_unit(make):
    # one-cycle is a per-step policy, as in PyTorch; everything else counts epochs
    expected = "step" if "onecycle" in repr(make()).lower() else "epoch"
    assert make().per == expected


@pytest.mark.parametrize("name", EVERY_CLASS.keys())
@pytest.mark.parametrize("bad", ["batch", "Epoch", None, 1])
def test_per_rejects_unknown_units(name, bad):
    make = EVERY_CLASS[name]
    if name == "warmup" and bad is None:  # None: the unit of the schedule after it
        assert make(per=None).per == "epoch"
        return
    with pytest.raises(ValueError, match="per"):
        make(per=bad)


def test_per_in_repr_and_equality():
    assert repr(Linear(0.5, 0.9, 4, per="step")) == "Linear(start=0.5, end=0.9, epochs=4, per='step')"
    assert repr(OneCycle(0.1, 10)).endswith("anneal='cos')")
    assert "per='epoch'" in repr(OneCycle(0.1, 10, per="epoch"))
    assert Constant(0.1, per="step") != Constant(0.1)
    assert Constant(0.1, per="step") == Constant(0.1, per="step")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Constant(0.1).per = "step"


def test_unit_of_plain_callables_and_numbers():
    def halve(t):
        return 0.5**t

    assert unit_of(halve) == "epoch"
    assert unit_of(lambda t: 0.1) == "epoch"
    assert unit_of(0.1) == "epoch"
    halve.per = "step"  # a function may carry the attribute itself
    assert unit_of(halve) == "step"
    halve.per = "minute"
    with pytest.raises(ValueError, match="per"):
        unit_of(halve)
    for bad in (None, "0.1", [0.1]):
        with pytest.raises(TypeError):
            unit_of(bad)


def test_per_step_and_per_epoch_mark_any_callable():
    def halve(t):
        return 0.5**t

    stepped = per_step(halve)
    assert unit_of(stepped) == "step" and stepped.per == "step"
    assert [stepped(t) for t in range(4)] == [1.0, 0.5, 0.25, 0.125]
    assert unit_of(halve) == "epoch"  # the original is not modified
    back = per_epoch(stepped)
    assert unit_of(back) == "epoch" and back(2) == 0.25
    assert per_epoch(halve) is halve  # already per epoch
    ramp = Linear(0.0, 1.0, 4, per="step")
    assert per_step(ramp) is ramp
    relabelled = per_epoch(ramp)
    assert unit_of(relabelled) == "epoch" and relabelled(2) == 0.5
    assert "halve" in repr(stepped) and repr(stepped).startswith("per_step(")
    assert per_step(0.3) == Constant(0.3, per="step")
    assert per_epoch(0.3) == Constant(0.3)
    for bad in (None, "0.1"):
        with pytest.raises(TypeError, match="fn"):
            per_step(bad)


def test_exports():
    names = {"Cosine", "Warmup", "OneCycle", "value_at", "unit_of", "per_step", "per_epoch"}
    assert names <= set(momcore.schedules.__all__)
    for name in momcore.schedules.__all__:
        assert hasattr(momcore.schedules, name)
    for name in names:
        assert name in momcore.schedules.__doc__


# ---- value_at -----------------------------------------------------------------------------

class _Floatable:
    """Not a number, but float() accepts it."""

    def __init__(self, value):
        self.value = value

    def __float__(self):
        return self.value


@pytest.mark.parametrize(
    "value, expected",
    [
        (0.25, 0.25),
        (3, 3.0),
        (np.float64(0.1), 0.1),
        (np.float32(0.1), 0.10000000149011612),  # the float32 nearest 0.1, widened exactly
        (np.float16(0.5), 0.5),
        (np.int64(2), 2.0),
        (np.uint8(7), 7.0),
        (np.array(0.75), 0.75),
        (np.array(0.5, dtype=np.float32), 0.5),
        (_Floatable(0.125), 0.125),
    ],
    ids=["float", "int", "np.float64", "np.float32", "np.float16", "np.int64", "np.uint8",
         "0-d float64", "0-d float32", "__float__"],
)
def test_value_at_accepts(value, expected):
    result = value_at(lambda t: value, 3, "lr")
    assert type(result) is float and result == expected


def test_value_at_passes_t():
    seen = []

    def record(t):
        seen.append(t)
        return 0.5**t

    assert value_at(record, np.int64(3), "lr") == 0.125
    assert seen == [3] and type(seen[0]) is int
    assert value_at(Linear(0.5, 0.9, 4), 2, "momentum") == pytest.approx(0.7, abs=1e-15)
    with pytest.raises(ValueError, match="epoch or step"):
        value_at(record, -1, "lr")
    with pytest.raises(TypeError, match="epoch or step"):
        value_at(record, 1.0, "lr")


class _Refuses:
    def __float__(self):
        raise TypeError("no float for you")


@pytest.mark.parametrize(
    "value",
    [None, "0.1", b"0.1", True, np.bool_(False), 1 + 2j, np.complex128(1.0),
     np.array([0.1]), np.array([0.1, 0.2]), np.zeros((1, 1)), np.array("0.1"), object(),
     _Refuses(), (0.1, 0.9)],
    ids=["None", "str", "bytes", "bool", "np.bool_", "complex", "np.complex128",
         "1-element array", "array", "2-d array", "0-d str array", "object", "refuses",
         "tuple"],
)
def test_value_at_rejects_non_numbers(value):
    with pytest.raises(TypeError, match=r"momentum_schedule.*t=5"):
        value_at(lambda t: value, 5, "momentum_schedule")


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, np.float32("nan"), np.array(np.inf), _Floatable(math.nan),
     10**400],
    ids=["nan", "inf", "-inf", "np.float32 nan", "0-d inf", "__float__ nan", "huge int"],
)
def test_value_at_rejects_non_finite(value):
    with pytest.raises(ValueError, match=r"lr_schedule.*t=2"):
        value_at(lambda t: value, 2, "lr_schedule")


def test_value_at_torch_scalar():
    torch = pytest.importorskip("torch", reason=NO_TORCH)
    assert value_at(lambda t: torch.tensor(0.5 ** t, dtype=torch.float64), 3, "lr") == 0.125
    assert value_at(lambda t: torch.tensor(0.25, dtype=torch.float32), 0, "lr") == 0.25
    with pytest.raises(ValueError, match="lr"):
        value_at(lambda t: torch.tensor(float("nan")), 0, "lr")
    for bad in (torch.tensor([0.1, 0.2]), torch.tensor([0.1]), torch.tensor(True),
                torch.tensor(1 + 1j)):
        with pytest.raises(TypeError, match="lr.*t=0"):
            value_at(lambda t: bad, 0, "lr")


# ---- Cosine -------------------------------------------------------------------------------

def test_cosine_hand_values():
    # end + (start - end) (1 + cos(pi t / 4)) / 2 with start 1, end 0:
    # cos(pi/4) = sqrt(2)/2, cos(pi/2) = 0, cos(3 pi/4) = -sqrt(2)/2
    schedule = Cosine(1.0, 0.0, 4)
    expected = [1.0, (1 + math.sqrt(2) / 2) / 2, 0.5, (1 - math.sqrt(2) / 2) / 2, 0.0, 0.0, 0.0]
    np.testing.assert_allclose([schedule(t) for t in range(7)], expected, rtol=0, atol=1e-15)
    assert schedule(10**6) == 0.0
    assert repr(schedule) == "Cosine(start=1.0, end=0.0, length=4)"


def test_cosine_with_floor_and_rising():
    # start 0.1, end 0.001, length 3: cos(pi/3) = 1/2, cos(2 pi/3) = -1/2
    schedule = Cosine(0.1, 0.001, 3)
    expected = [0.1, 0.001 + 0.099 * 0.75, 0.001 + 0.099 * 0.25, 0.001, 0.001]
    np.testing.assert_allclose([schedule(t) for t in range(5)], expected, rtol=1e-15)
    rising = Cosine(0.5, 0.9, 2)
    assert [rising(t) for t in range(4)] == pytest.approx([0.5, 0.7, 0.9, 0.9], abs=1e-15)
    values = [Cosine(1.0, 0.0, 50)(t) for t in range(51)]
    assert all(a > b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: Cosine(float("nan"), 0.0, 3), "start"),
        (lambda: Cosine(0.1, float("inf"), 3), "end"),
        (lambda: Cosine(0.1, 0.0, 0), "length"),
        (lambda: Cosine(0.1, 0.0, 2.0), "length"),
        (lambda: Cosine(0.1, 0.0, True), "length"),
    ],
)
def test_cosine_rejects(make, name):
    with pytest.raises(ValueError, match=name):
        make()


# ---- Warmup -------------------------------------------------------------------------------

def test_warmup_to_a_constant():
    schedule = Warmup(0.1, 4)
    expected = [0.0, 0.025, 0.05, 0.075, 0.1, 0.1, 0.1]
    np.testing.assert_allclose([schedule(t) for t in range(7)], expected, rtol=0, atol=1e-16)
    assert schedule.after == Constant(0.1) and schedule.per == "epoch"


def test_warmup_then_schedule_from_its_own_zero():
    # rises 0.02 -> after(0) = 0.1 over 2 units, then after(t - 2) = 0.1 * 0.5 ** ((t-2) // 2)
    schedule = Warmup(Step(0.1, 0.5, 2), 2, start=0.02)
    expected = [0.02, 0.06, 0.1, 0.1, 0.05, 0.05, 0.025]
    np.testing.assert_allclose([schedule(t) for t in range(7)], expected, rtol=1e-15)
    # after a cosine: the hand-computed cosine values, shifted by the warm-up length
    cosine = Warmup(Cosine(1.0, 0.0, 4), 1)
    np.testing.assert_allclose([cosine(t) for t in range(4)],
                               [0.0, 1.0, (1 + math.sqrt(2) / 2) / 2, 0.5], atol=1e-15)


def test_warmup_after_a_plain_callable_returning_numpy():
    schedule = Warmup(lambda t: np.float32(0.5) ** (t + 1), 2)
    assert [schedule(t) for t in range(4)] == [0.0, 0.25, 0.5, 0.25]
    assert all(type(schedule(t)) is float for t in range(4))


def test_warmup_unit_follows_after():
    assert Warmup(Linear(0.1, 0.0, 100, per="step"), 10).per == "step"
    assert Warmup(per_step(lambda t: 0.1), 10).per == "step"
    assert Warmup(lambda t: 0.1, 10).per == "epoch"
    constant = Warmup(0.1, 10, per="step")
    assert constant.per == "step" and constant.after == Constant(0.1, per="step")
    # a constant does not depend on t, so its unit may be changed
    assert Warmup(Constant(0.1), 10, per="step").after == Constant(0.1, per="step")
    with pytest.raises(ValueError, match="per"):
        Warmup(Linear(0.1, 0.0, 100), 10, per="step")
    with pytest.raises(ValueError, match="per"):
        Warmup(per_step(lambda t: 0.1), 10, per="epoch")


@pytest.mark.parametrize(
    "make, error, name",
    [
        (lambda: Warmup(0.1, 0), ValueError, "length"),
        (lambda: Warmup(0.1, 1.5), ValueError, "length"),
        (lambda: Warmup(0.1, 3, start=float("nan")), ValueError, "start"),
        (lambda: Warmup(float("inf"), 3), ValueError, "after"),
        (lambda: Warmup("0.1", 3), TypeError, "after"),
        (lambda: Warmup(None, 3), TypeError, "after"),
        (lambda: Warmup(0.1, 3, per="batch"), ValueError, "per"),
    ],
)
def test_warmup_rejects(make, error, name):
    with pytest.raises(error, match=name):
        make()


def test_warmup_reports_a_bad_after_value():
    schedule = Warmup(lambda t: float("nan"), 2)
    with pytest.raises(ValueError, match="after"):
        schedule(1)


# ---- OneCycle -----------------------------------------------------------------------------

def one_cycle_formula(t, max_lr, total, pct_start=0.3, div_factor=25.0, final_div_factor=1e4,
                      base_momentum=0.85, max_momentum=0.95, anneal="cos"):
    """Smith's 1cycle policy as PyTorch's OneCycleLR writes it (two phases), held after
    the last step: the formula of the docstring, written out independently."""
    t = min(t, total - 1)
    initial_lr = max_lr / div_factor
    min_lr = initial_lr / final_div_factor
    if anneal == "cos":
        def interpolate(a, b, pct):
            return b + (a - b) / 2 * (1 + math.cos(math.pi * pct))
    else:
        def interpolate(a, b, pct):
            return a + (b - a) * pct
    e1, e2 = pct_start * total - 1, total - 1
    if t <= e1:
        pct = t / e1
        return (interpolate(initial_lr, max_lr, pct),
                interpolate(max_momentum, base_momentum, pct))
    pct = (t - e1) / (e2 - e1)
    return interpolate(max_lr, min_lr, pct), interpolate(base_momentum, max_momentum, pct)


def test_one_cycle_hand_values_cos():
    # max_lr 1: initial 1/25 = 0.04, min 0.04/1e4 = 4e-6; phase 1 ends at 0.5*6 - 1 = 2,
    # phase 2 at 5. t=1: pct 1/2, cos = 0; t=3: pct 1/3, cos = 1/2; t=4: pct 2/3, cos = -1/2
    oc = OneCycle(1.0, 6, pct_start=0.5)
    lr = [0.04, 0.52, 1.0, 4e-6 + 0.75 * (1 - 4e-6), 4e-6 + 0.25 * (1 - 4e-6), 4e-6]
    momentum = [0.95, 0.9, 0.85, 0.875, 0.925, 0.95]
    ts = range(6)
    np.testing.assert_allclose([oc.lr(t) for t in ts], lr, rtol=1e-14)
    np.testing.assert_allclose([oc.momentum(t) for t in ts], momentum, rtol=1e-14)
    assert oc(2) == (oc.lr(2), oc.momentum(2))
    assert oc.initial_lr == 0.04 and oc.min_lr == pytest.approx(4e-6, rel=1e-15)
    # past the cycle the final values hold (PyTorch would raise)
    for t in (6, 7, 10**6):
        assert oc.lr(t) == oc.lr(5) and oc.momentum(t) == 0.95


def test_one_cycle_hand_values_linear():
    oc = OneCycle(1.0, 6, pct_start=0.5, anneal="linear")
    lr = [0.04, 0.52, 1.0, 1 - (1 - 4e-6) / 3, 1 - 2 * (1 - 4e-6) / 3, 4e-6]
    momentum = [0.95, 0.9, 0.85, 0.85 + 0.1 / 3, 0.85 + 0.2 / 3, 0.95]
    # PyTorch's linear form (b - a) * pct + a keeps only ~1e-16 absolute accuracy at
    # pct = 1 when b << a (4e-6 comes out as 4.000000000004e-06), hence the atol
    np.testing.assert_allclose([oc.lr(t) for t in range(6)], lr, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose([oc.momentum(t) for t in range(6)], momentum, rtol=1e-14)


ONE_CYCLE_CASES = {
    "defaults": dict(max_lr=0.1, total=100),
    "linear": dict(max_lr=0.5, total=37, anneal="linear"),
    "fractional-phase-end": dict(max_lr=0.2, total=10, pct_start=0.25),
    "short": dict(max_lr=1.0, total=3, pct_start=0.5),
    "rise-only": dict(max_lr=0.3, total=8, pct_start=1.0),
    "no-rise": dict(max_lr=0.3, total=8, pct_start=0.0),
    "one-step": dict(max_lr=0.3, total=1),
    "custom": dict(max_lr=2.0, total=50, pct_start=0.4, div_factor=10.0,
                   final_div_factor=100.0, base_momentum=0.5, max_momentum=0.99),
    "momentum-range-reversed": dict(max_lr=0.1, total=20, base_momentum=0.9,
                                    max_momentum=0.0),
}


@pytest.mark.parametrize("kwargs", ONE_CYCLE_CASES.values(), ids=ONE_CYCLE_CASES.keys())
def test_one_cycle_against_formula(kwargs):
    oc = OneCycle(**kwargs)
    total = kwargs["total"]
    e1 = int(kwargs.get("pct_start", 0.3) * total - 1)
    # every step, the phase boundaries and their neighbours, and past the end
    ts = sorted({*range(total), max(e1, 0), min(e1 + 1, total - 1), total, total + 5})
    for t in ts:
        lr, momentum = one_cycle_formula(t, **kwargs)
        assert oc.lr(t) == pytest.approx(lr, rel=1e-14, abs=0)
        assert oc.momentum(t) == pytest.approx(momentum, rel=1e-14, abs=0)


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("total, pct_start", [(100, 0.3), (10, 0.25), (7, 0.5)])
def test_one_cycle_lr_and_momentum_move_in_opposite_directions(anneal, total, pct_start):
    oc = OneCycle(0.1, total, pct_start=pct_start, anneal=anneal)
    e1 = pct_start * total - 1
    lrs = [oc.lr(t) for t in range(total)]
    momenta = [oc.momentum(t) for t in range(total)]
    rising = [t for t in range(total - 1) if t + 1 <= e1]
    falling = [t for t in range(total - 1) if t > e1]
    assert rising and falling
    for t in rising:
        assert lrs[t + 1] > lrs[t] and momenta[t + 1] < momenta[t], t
    for t in falling:
        assert lrs[t + 1] < lrs[t] and momenta[t + 1] > momenta[t], t
    assert max(lrs) <= 0.1 and min(momenta) >= 0.85 - 1e-15 and max(momenta) <= 0.95
    assert lrs[0] == pytest.approx(0.1 / 25, rel=1e-15)
    assert lrs[-1] == pytest.approx(0.1 / 25 / 1e4, rel=1e-12)


@pytest.mark.parametrize("kwargs", ONE_CYCLE_CASES.values(), ids=ONE_CYCLE_CASES.keys())
def test_one_cycle_matches_torch(kwargs):
    torch = pytest.importorskip("torch", reason=NO_TORCH)
    total = kwargs["total"]
    param = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=kwargs["max_lr"], total_steps=total,
        pct_start=float(kwargs.get("pct_start", 0.3)),
        anneal_strategy=kwargs.get("anneal", "cos"), cycle_momentum=True,
        base_momentum=kwargs.get("base_momentum", 0.85),
        max_momentum=kwargs.get("max_momentum", 0.95),
        div_factor=kwargs.get("div_factor", 25.0),
        final_div_factor=kwargs.get("final_div_factor", 1e4), three_phase=False)
    torch_lr, torch_momentum = [], []
    for t in range(total):
        group = optimizer.param_groups[0]
        torch_lr.append(float(group["lr"]))
        torch_momentum.append(float(group["momentum"]))
        param.grad = torch.ones_like(param)
        optimizer.step()
        if t < total - 1:  # one more would ask for step `total` (0/0 when pct_start = 1)
            scheduler.step()
    oc = OneCycle(**kwargs)
    np.testing.assert_allclose([oc.lr(t) for t in range(total)], torch_lr, rtol=1e-12, atol=0)
    np.testing.assert_allclose([oc.momentum(t) for t in range(total)], torch_momentum,
                               rtol=1e-12, atol=0)


def test_one_cycle_columns():
    oc = OneCycle(0.1, 10, per="epoch")
    assert oc.lr.per == oc.momentum.per == "epoch"
    assert repr(oc.lr).endswith(".lr") and repr(oc.momentum).startswith("OneCycle(")
    assert value_at(oc.lr, 0, "lr_schedule") == pytest.approx(0.004, rel=1e-15)
    assert value_at(oc.momentum, 0, "momentum_schedule") == 0.95


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(max_lr=-0.1), "max_lr"),
        (dict(max_lr=float("nan")), "max_lr"),
        (dict(max_lr="0.1"), "max_lr"),
        (dict(total=0), "total"),
        (dict(total=2.5), "total"),
        (dict(pct_start=1.5), "pct_start"),
        (dict(pct_start=-0.1), "pct_start"),
        (dict(total=10, pct_start=0.1), "pct_start"),  # the rise would be 0/0
        (dict(div_factor=0.0), "div_factor"),
        (dict(final_div_factor=-1.0), "final_div_factor"),
        (dict(final_div_factor=float("inf")), "final_div_factor"),
        (dict(base_momentum=1.0), "base_momentum"),
        (dict(max_momentum=-1.0), "max_momentum"),
        (dict(anneal="exp"), "anneal"),
        (dict(per="batch"), "per"),
    ],
)
def test_one_cycle_rejects(kwargs, name):
    arguments = dict(max_lr=0.1, total=20) | kwargs
    with pytest.raises(ValueError, match=name):
        OneCycle(**arguments)

"""Tests of the learning-rate and momentum schedules, against hand-computed values."""

import dataclasses

import numpy as np
import pytest

from momcore.schedules import (
    Constant,
    Linear,
    Stages,
    Step,
    as_schedule,
    momentum_annealing,
)


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

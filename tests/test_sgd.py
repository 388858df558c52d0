"""momcore.SGD: steps, schedules between steps, state_dict round trip."""
from __future__ import annotations

import numpy as np
import pytest

import momcore
from momcore import reference as ref


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((4, 3)), rng.standard_normal(3).astype(np.float32),
            rng.standard_normal((2, 2, 5))]


def _grads(params, rng):
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


@pytest.mark.parametrize("rule", ["classical", "nesterov", "velocity", "ema", "one_step"])
def test_steps_with_a_schedule_match_the_reference(rule):
    params, params_ref = _params(), _params()
    states_ref = [np.zeros_like(p) for p in params_ref]
    dampening = 0.2 if rule == "velocity" else 0.0  # the only rule that takes it
    opt = momcore.SGD(params, lr=0.1, momentum=0.5, rule=rule, dampening=dampening,
                      weight_decay=1e-3)
    rng = np.random.default_rng(1)
    for t in range(5):
        opt.lr, opt.momentum = 0.1 / (t + 1), min(0.5 + 0.1 * t, 0.9)
        grads = _grads(params, rng)
        assert opt.step(grads) is True
        ref.momentum_step_many(params_ref, grads, states_ref, lr=0.1 / (t + 1),
                               momentum=min(0.5 + 0.1 * t, 0.9), rule=rule, dampening=dampening,
                               weight_decay=1e-3)
    for a, b in zip(params + opt.state, params_ref + states_ref):
        np.testing.assert_array_equal(a, b, strict=True)
    assert opt.steps == 5


def test_state_dict_round_trip_continues_exactly():
    rng = np.random.default_rng(2)
    params = _params()
    opt = momcore.SGD(params, lr=0.05, momentum=0.9, rule="nesterov")
    for _ in range(3):
        opt.step(_grads(params, rng))
    saved = opt.state_dict()
    params_copy = [p.copy() for p in params]
    resumed = momcore.SGD(params_copy, lr=1.0, momentum=0.0)
    resumed.load_state_dict(saved)
    assert (resumed.lr, resumed.momentum, resumed.rule, resumed.steps) == \
        (0.05, 0.9, "nesterov", 3)
    for _ in range(3):
        grads = _grads(params, rng)
        opt.step(grads)
        resumed.step(grads)
    for a, b in zip(params + opt.state, params_copy + resumed.state):
        assert a.tobytes() == b.tobytes()


def test_state_dict_is_a_copy():
    params = _params()
    opt = momcore.SGD(params, lr=0.1, momentum=0.9)
    opt.step([np.ones_like(p) for p in params])
    sd = opt.state_dict()
    sd["state"][0][...] = 123.0
    assert not np.any(opt.state[0] == 123.0)


def test_load_state_dict_refuses_mismatches():
    opt = momcore.SGD(_params(), lr=0.1, momentum=0.9)
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="lacks"):
        opt.load_state_dict({k: v for k, v in sd.items() if k != "state"})
    with pytest.raises(ValueError, match=r"state\[1\] is float64"):
        opt.load_state_dict({**sd, "state": [sd["state"][0], sd["state"][1].astype(float),
                                             sd["state"][2]]})
    with pytest.raises(ValueError, match="holds 2 state arrays"):
        opt.load_state_dict({**sd, "state": sd["state"][:2]})
    with pytest.raises(ValueError, match="momentum must lie"):
        opt.load_state_dict({**sd, "momentum": 1.0})


def test_bad_construction_and_bad_schedule_values():
    with pytest.raises(TypeError, match="params must be a list"):
        momcore.SGD(np.zeros(3), lr=0.1)
    with pytest.raises(ValueError, match=r"params\[0\] is read-only"):
        p = np.zeros(3)
        p.flags.writeable = False
        momcore.SGD([p], lr=0.1)
    with pytest.raises(TypeError, match=r"params\[1\] has dtype int64"):
        momcore.SGD([np.zeros(3), np.zeros(3, np.int64)], lr=0.1)
    opt = momcore.SGD([np.zeros(3)], lr=0.1, momentum=0.5)
    with pytest.raises(ValueError, match="momentum must lie"):
        opt.momentum = 1.0
    with pytest.raises(ValueError, match="lr must be"):
        opt.lr = -1.0
    assert (opt.lr, opt.momentum) == (0.1, 0.5)


def test_skip_does_not_count_a_step():
    opt = momcore.SGD([np.zeros(3)], lr=0.1, momentum=0.5, nonfinite="skip")
    assert opt.step([np.array([0.0, np.nan, 0.0])]) is False
    assert opt.steps == 0


def test_a_value_in_force_is_kept_and_minus_zero_is_set_as_itself():
    opt = momcore.SGD([np.ones(3)], lr=0.1, momentum=0.0)
    opt.momentum = 0.0
    opt.param_groups[0]["lr"] = 0.1
    assert opt.param_groups[0]["lr"] == 0.1 and opt.steps == 0
    opt.momentum = -0.0  # equal to 0.0, but a different float
    assert str(opt.param_groups[0]["momentum"]) == "-0.0"
    assert str(opt.defaults["momentum"]) == "-0.0"
    opt.param_groups[0]["momentum"] = 0.0
    assert str(opt.param_groups[0]["momentum"]) == "0.0"
    with pytest.raises(ValueError, match="momentum"):
        opt.momentum = 1.5  # a new value is checked


def test_fit_keeps_the_sign_of_a_zero_lr_or_momentum():
    X, y = np.ones((4, 2)), np.array([0, 1, 0, 1])
    net = momcore.MLP([2, 3, 2])
    for momentum in (0.0, -0.0, 0.0):
        history = net.fit(X, y, epochs=1, momentum=momentum)
        assert str(history.momentum[0]) == str(momentum)
        assert str(net.optimizer.momentum) == str(momentum)

"""momcore.SGD with parameter groups: each group's hyperparameters, settable between
steps, one C call for all groups, all or none, state_dict round trips."""
from __future__ import annotations

import numpy as np
import pytest

import momcore
from momcore import reference as ref

GROUPS = [dict(lr=0.1, momentum=0.5, weight_decay=0.0),
          dict(lr=0.02, momentum=0.9, weight_decay=1e-3),
          dict(lr=0.3, momentum=0.0, weight_decay=0.0)]


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((4, 3)), rng.standard_normal(3).astype(np.float32),
            rng.standard_normal((2, 5)), rng.standard_normal(7).astype(np.float32)]


def _grouped(arrays, rule="classical"):
    return momcore.SGD([{"params": arrays[:2], **GROUPS[0]},
                        {"params": arrays[2:3], **GROUPS[1]},
                        {"params": arrays[3:], **GROUPS[2]}], lr=1.0, rule=rule)


def _reference_step(arrays, grads, states, groups, rule):
    index = [(0, 2), (2, 3), (3, 4)]
    for (a, b), hyper in zip(index, groups):
        ref.momentum_step_many(arrays[a:b], grads[a:b], states[a:b], rule=rule, **hyper)


@pytest.mark.parametrize("rule", list(momcore.registry.RULES))
def test_each_group_steps_with_its_own_hyperparameters(rule):
    mine, theirs = _arrays(), _arrays()
    states = [np.zeros_like(p) for p in theirs]
    opt = _grouped(mine, rule)
    rng = np.random.default_rng(1)
    groups = [dict(g) for g in GROUPS]
    for t in range(4):
        grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in mine]
        assert opt.step(grads) is True
        _reference_step(theirs, grads, states, groups, rule)
        # a schedule per group, between steps
        opt.param_groups[1]["lr"] = groups[1]["lr"] = 0.02 / (t + 2)
        opt.param_groups[0]["momentum"] = groups[0]["momentum"] = 0.5 + 0.1 * t
    for a, b in zip(mine + opt.state, theirs + states):
        assert a.tobytes() == b.tobytes()
    assert opt.steps == 4


def test_setting_a_group_value_checks_it_and_changes_nothing_when_bad():
    opt = _grouped(_arrays())
    with pytest.raises(ValueError, match="momentum must lie"):
        opt.param_groups[0]["momentum"] = 1.0
    with pytest.raises(ValueError, match="lr must be"):
        opt.param_groups[2]["lr"] = float("nan")
    with pytest.raises(ValueError, match="dampening is taken only by rule 'velocity'"):
        opt.param_groups[1]["dampening"] = 0.5
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.02, 0.3]
    assert opt.param_groups[0]["momentum"] == 0.5
    with pytest.raises(ValueError, match="fixed"):
        opt.param_groups[0]["rule"] = "nesterov"
    with pytest.raises(ValueError, match="fixed"):
        opt.param_groups[0]["params"] = []
    opt.param_groups[0]["name"] = "encoder"  # the caller's own keys are kept
    assert opt.param_groups[0]["name"] == "encoder"


def test_shared_values_read_and_set_across_groups():
    opt = _grouped(_arrays())
    with pytest.raises(ValueError, match="different lr"):
        opt.lr
    opt.lr = 0.05
    assert opt.lr == 0.05 and [g["lr"] for g in opt.param_groups] == [0.05] * 3
    with pytest.raises(ValueError, match="momentum must lie"):
        opt.momentum = -1.0
    assert [g["momentum"] for g in opt.param_groups] == [0.5, 0.9, 0.0]


def test_group_errors_name_the_group_and_the_array():
    a = _arrays()
    with pytest.raises(ValueError, match=r"param_groups\[1\]: momentum must lie"):
        momcore.SGD([{"params": a[:1]}, {"params": a[1:], "momentum": 2.0}], lr=0.1)
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[2\] is read-only"):
        momcore.SGD([{"params": a[:2]}, {"params": [ro]}], lr=0.1)
    with pytest.raises(ValueError, match="'params'"):
        momcore.SGD([{"lr": 0.1}], lr=0.1)
    with pytest.raises(TypeError, match="not both"):
        momcore.SGD([a[0], {"params": a[1:]}], lr=0.1)
    opt = momcore.SGD([{"params": a[:2]}, {"params": a[2:]}], lr=0.1)
    grads = [np.zeros_like(p) for p in a]
    grads[3] = grads[3].astype(np.float64)
    with pytest.raises(TypeError, match=r"params\[3\], grads\[3\] and state\[3\]"):
        opt.step(grads)


def test_add_param_group_steps_the_new_arrays_from_zero_state():
    a, b = _arrays(), _arrays()
    opt = momcore.SGD([{"params": a[:2], **GROUPS[0]}], lr=1.0)
    opt.add_param_group({"params": a[2:], "lr": 0.02, "momentum": 0.9})
    with pytest.raises(ValueError, match=r"param_groups\[2\]: lr must be"):
        opt.add_param_group({"params": [np.zeros(2)], "lr": -1.0})
    assert len(opt.params) == len(opt.state) == 4 and len(opt.param_groups) == 2
    states = [np.zeros_like(p) for p in b]
    grads = [np.full(p.shape, 0.5, p.dtype) for p in a]
    opt.step(grads)
    ref.momentum_step_many(b[:2], grads[:2], states[:2], rule="classical", **GROUPS[0])
    ref.momentum_step_many(b[2:], grads[2:], states[2:], lr=0.02, momentum=0.9)
    for x, y in zip(a + opt.state, b + states):
        assert x.tobytes() == y.tobytes()


def test_an_array_given_twice_is_refused_when_the_optimizer_is_made():
    w = np.zeros(4)
    with pytest.raises(ValueError, match=r"params\[0\] and params\[1\] share memory"):
        momcore.SGD([{"params": [w]}, {"params": [w[1:3]]}], lr=0.1)
    with pytest.raises(ValueError, match=r"params\[0\] and params\[2\] share memory"):
        momcore.SGD([w, np.zeros(3), w], lr=0.1)
    opt = momcore.SGD([w], lr=0.1)
    with pytest.raises(ValueError, match="share memory"):
        opt.add_param_group({"params": [w[:2]]})
    assert len(opt.params) == len(opt.state) == 1 and len(opt.param_groups) == 1
    momcore.SGD([w[:2], w[2:]], lr=0.1)  # neighbours that do not overlap are fine


@pytest.mark.parametrize("nonfinite", ["skip", "raise"])
def test_a_nonfinite_gradient_in_any_group_leaves_every_group_untouched(nonfinite):
    arrays = _arrays()
    opt = _grouped(arrays)
    opt.nonfinite = nonfinite
    opt.step([np.ones_like(p) for p in arrays])
    before = [a.tobytes() for a in arrays + opt.state]
    grads = [np.ones_like(p) for p in arrays]
    grads[3][5] = np.inf
    if nonfinite == "raise":
        with pytest.raises(FloatingPointError):
            opt.step(grads)
    else:
        assert opt.step(grads) is False
    assert [a.tobytes() for a in arrays + opt.state] == before
    assert opt.steps == 1


def test_grouped_state_dict_round_trips_and_continues_exactly():
    rng = np.random.default_rng(3)
    a, b = _arrays(), _arrays()
    opt = _grouped(a, "nesterov_velocity")
    for _ in range(2):
        opt.step([rng.standard_normal(p.shape).astype(p.dtype) for p in a])
    opt.param_groups[2]["lr"] = 0.125
    saved = opt.state_dict()
    assert [g["params"] for g in saved["param_groups"]] == [[0, 1], [2], [3]]
    for p, q in zip(a, b):
        q[...] = p
    resumed = momcore.SGD([{"params": b[:2]}, {"params": b[2:3]}, {"params": b[3:]}],
                          lr=1.0, rule="nesterov_velocity")
    resumed.load_state_dict(saved)
    assert [g["lr"] for g in resumed.param_groups] == [0.1, 0.02, 0.125]
    assert resumed.steps == 2
    for _ in range(2):
        grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in a]
        opt.step(grads)
        resumed.step(grads)
    for x, y in zip(a + opt.state, b + resumed.state):
        assert x.tobytes() == y.tobytes()


def test_grouped_state_dict_refuses_another_grouping():
    a = _arrays()
    saved = _grouped(a).state_dict()
    other = momcore.SGD([{"params": a[:1]}, {"params": a[1:3]}, {"params": a[3:]}], lr=0.1)
    before = other.state_dict()
    with pytest.raises(ValueError, match=r"param_groups'\]\[0\] does not hold"):
        other.load_state_dict(saved)
    two = momcore.SGD([{"params": a[:2]}, {"params": a[2:]}], lr=0.1)
    with pytest.raises(ValueError, match="must list 2 groups"):
        two.load_state_dict(saved)
    bad = {**saved, "param_groups": [dict(g) for g in saved["param_groups"]]}
    bad["param_groups"][2]["momentum"] = 5.0
    with pytest.raises(ValueError, match=r"\[2\]: momentum must lie"):
        _grouped(_arrays()).load_state_dict(bad)
    assert repr(other.state_dict()) == repr(before)


def test_a_state_dict_without_groups_sets_every_group():
    a = _arrays()
    opt = _grouped(a)
    flat = {"lr": 0.25, "momentum": 0.75, "rule": "classical", "dampening": 0.0,
            "weight_decay": 0.0, "nonfinite": "skip", "steps": 9,
            "state": [np.full(p.shape, 2.0, p.dtype) for p in a]}
    opt.load_state_dict(flat)
    assert [(g["lr"], g["momentum"]) for g in opt.param_groups] == [(0.25, 0.75)] * 3
    assert (opt.lr, opt.momentum, opt.nonfinite, opt.steps) == (0.25, 0.75, "skip", 9)


def test_pickle_and_copy_keep_groups_checked():
    import copy
    import pickle

    opt = _grouped(_arrays())
    for clone in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert [g["lr"] for g in clone.param_groups] == [0.1, 0.02, 0.3]
        assert clone.param_groups[0]["params"][0] is clone.params[0]
        with pytest.raises(ValueError, match="lr must be"):
            clone.param_groups[0]["lr"] = -1.0


def test_the_numpy_backend_equals_the_compiled_one_with_groups():
    a, b = _arrays(), _arrays()
    c_opt = _grouped(a, "velocity")
    n_opt = momcore.SGD([{"params": b[:2], **GROUPS[0]}, {"params": b[2:3], **GROUPS[1]},
                         {"params": b[3:], **GROUPS[2]}], lr=1.0, rule="velocity",
                        backend="numpy")
    rng = np.random.default_rng(4)
    for _ in range(3):
        grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in a]
        c_opt.step(grads)
        n_opt.step(grads)
    for x, y in zip(a + c_opt.state, b + n_opt.state):
        assert x.tobytes() == y.tobytes()


# ---- nesterov_velocity: PyTorch's and optax's Nesterov -------------------------------

def _torch_nesterov_by_hand(w, grads, lrs, momentum, weight_decay):
    """torch.optim.SGD(nesterov=True, dampening=0) written out: d = g + wd*w;
    buf = d on the first step, momentum*buf + d after; w -= lr*(d + momentum*buf)."""
    w = w.copy()
    buf = None
    for g, lr in zip(grads, lrs):
        d = g + weight_decay * w
        buf = d.copy() if buf is None else momentum * buf + d
        w = w - lr * (d + momentum * buf)
    return w


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_nesterov_velocity_equals_pytorchs_nesterov_under_a_changing_lr(weight_decay):
    rng = np.random.default_rng(5)
    w0 = rng.standard_normal(50)
    grads = [rng.standard_normal(50) for _ in range(20)]
    lrs = [0.1 * 0.8 ** t for t in range(20)]
    expected = _torch_nesterov_by_hand(w0, grads, lrs, 0.9, weight_decay)
    w = w0.copy()
    opt = momcore.SGD([w], lr=lrs[0], momentum=0.9, rule="nesterov_velocity",
                      weight_decay=weight_decay)
    for g, lr in zip(grads, lrs):
        opt.lr = lr
        opt.step([g])
    np.testing.assert_allclose(w, expected, rtol=1e-13, atol=1e-15)


def test_nesterov_velocity_equals_torch_sgd_step_for_step():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    rng = np.random.default_rng(6)
    w = rng.standard_normal((8, 3))
    p = torch.nn.Parameter(torch.tensor(w.copy()))
    peer = torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    opt = momcore.SGD([w], lr=0.1, momentum=0.9, rule="nesterov_velocity",
                      weight_decay=1e-3)
    for t in range(15):
        g = rng.standard_normal(w.shape)
        lr = 0.1 / (1 + t)
        for group in peer.param_groups:
            group["lr"] = lr
        opt.lr = lr
        p.grad = torch.tensor(g)
        peer.step()
        opt.step([g])
        np.testing.assert_allclose(w, p.detach().numpy(), rtol=1e-12, atol=1e-14)

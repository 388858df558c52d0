"""momcore.torch.SGD against torch.optim.SGD: the SGD cases of PyTorch's own optimizer
tests (torch/testing/_internal/common_optimizers.py, test/optim/test_optim.py), run on
both optimizers with the same gradients; plus what momcore adds (rules, the non-finite
guard) and what the view cache must notice."""
from __future__ import annotations

import copy
import gc
import os
import pathlib
import pickle
import subprocess
import sys
import weakref

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="momcore.torch needs PyTorch (momcore[torch])")

import momcore  # noqa: E402
import momcore
import momcore.torch as mt  # noqa: E402
from momcore import registry  # noqa: E402

RTOL = {torch.float32: 1e-6, torch.float64: 1e-14}
"""Per step, relative to the tensor's largest element (a momentum buffer that nearly
cancels has elements far below its rounding): torch rounds a + alpha*b with FMA,
momcore's kernel without."""
SIZES = (1, 15, 17, 1000, 65537)  # one element, SIMD tails on both sides, a large tail

# torch.testing._internal.common_optimizers.optim_inputs_func_sgd, plus maximize and
# dampening with momentum and weight decay together.
CASES = {
    "default": {},
    "non-default lr": {"lr": 1e-2},
    "tensor lr": {"lr": "tensor"},
    "weight_decay": {"weight_decay": 0.5},
    "momentum": {"momentum": 0.9},
    "maximize": {"weight_decay": 0.1, "maximize": True},
    "dampening": {"momentum": 0.9, "dampening": 0.5},
    "weight_decay with momentum": {"momentum": 0.9, "weight_decay": 0.1},
    "nesterov": {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
    "maximize with momentum, dampening": {"momentum": 0.8, "dampening": 0.3,
                                          "weight_decay": 0.05, "maximize": True},
    "maximize nesterov": {"momentum": 0.7, "nesterov": True, "maximize": True},
}
IMPLEMENTATIONS = {"forloop": {"foreach": False}, "foreach": {"foreach": True},
                   "fused": {"fused": True}}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _kwargs(case: dict, dtype: torch.dtype) -> dict:
    kwargs = dict(case)
    if kwargs.get("lr") == "tensor":
        kwargs["lr"] = torch.tensor(0.01, dtype=torch.float64)
    return kwargs


def _pair(sizes, dtype, seed=0):
    """Two lists of parameters with equal values."""
    gen = torch.Generator().manual_seed(seed)
    values = [torch.randn(n, generator=gen, dtype=dtype) for n in sizes]
    return ([torch.nn.Parameter(v.clone()) for v in values],
            [torch.nn.Parameter(v.clone()) for v in values])


def _set_grads(a, b, gen, scale=1.0):
    for p, q in zip(a, b):
        g = torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale
        p.grad = g.clone()
        q.grad = g


def _assert_close(mine, theirs, dtype, steps=1):
    assert len(mine) == len(theirs)
    for x, y in zip(mine, theirs):
        tol = RTOL[dtype] * steps
        torch.testing.assert_close(x.detach(), y.detach(), rtol=tol,
                                   atol=tol * float(y.detach().abs().max()))


def _buffers(opt, params):
    return [opt.state[p]["momentum_buffer"] for p in params if "momentum_buffer" in opt.state[p]]


# ---- trajectories -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("impl", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_trajectory_equals_torch(case, impl, dtype):
    """Steps equal torch.optim.SGD's within rounding, for every size with a SIMD tail,
    with the lr changed by a scheduler every step."""
    theirs, mine = _pair(SIZES, dtype)
    kwargs = _kwargs(case, dtype)
    reference = torch.optim.SGD(theirs, **kwargs, **impl)
    opt = mt.SGD(mine, **_kwargs(case, dtype))
    schedules = [torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9) for o in (reference, opt)]
    gen = torch.Generator().manual_seed(1)
    for t in range(1, 6):
        _set_grads(theirs, mine, gen)
        reference.step()
        opt.step()
        for s in schedules:
            s.step()
        _assert_close(mine, theirs, dtype, t)
        _assert_close(_buffers(opt, mine), _buffers(reference, theirs), dtype, t)
    assert opt.param_groups[0]["lr"] == pytest.approx(reference.param_groups[0]["lr"])


def test_lr_tensor_is_read_every_step():
    """A 0-d tensor lr changed in place (as schedulers do with tensor lrs) is seen."""
    theirs, mine = _pair([17], torch.float64)
    lr = torch.tensor(0.1, dtype=torch.float64)
    reference = torch.optim.SGD(theirs, lr=lr.clone(), momentum=0.9)
    opt = mt.SGD(mine, lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(2)
    for t in range(1, 4):
        _set_grads(theirs, mine, gen)
        reference.step()
        opt.step()
        for o in (reference, opt):
            o.param_groups[0]["lr"].mul_(0.5)
        _assert_close(mine, theirs, torch.float64, t)


def test_param_groups_each_with_its_hyperparameters():
    dtype = torch.float64
    theirs, mine = _pair([15, 17, 1000, 1], dtype)
    spec = lambda ps: [  # noqa: E731
        {"params": ps[:2]},
        {"params": ps[2:3], "lr": 0.05, "momentum": 0.5, "dampening": 0.2},
        {"params": ps[3:], "nesterov": True, "weight_decay": 0.1},
    ]
    reference = torch.optim.SGD(spec(theirs), lr=0.01, momentum=0.9)
    opt = mt.SGD(spec(mine), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(3)
    for t in range(1, 5):
        _set_grads(theirs, mine, gen)
        reference.step()
        opt.step()
        _assert_close(mine, theirs, dtype, t)
        if t == 2:
            for o in (reference, opt):
                o.param_groups[1]["momentum"] = 0.7
                o.param_groups[0]["lr"] = 0.02


def test_add_param_group_and_late_gradients():
    """A parameter without a gradient is skipped (no state); when its first gradient
    comes later it starts its buffer then, with torch's first-step convention."""
    dtype = torch.float64
    theirs, mine = _pair([17, 15, 33], dtype)
    reference = torch.optim.SGD(theirs[:2], lr=0.1, momentum=0.9, dampening=0.5)
    opt = mt.SGD(mine[:2], lr=0.1, momentum=0.9, dampening=0.5)
    gen = torch.Generator().manual_seed(4)
    _set_grads(theirs[:1], mine[:1], gen)
    before = mine[1].detach().clone()
    reference.step()
    opt.step()
    assert torch.equal(mine[1].detach(), before) and not opt.state[mine[1]]
    reference.add_param_group({"params": theirs[2:], "lr": 0.2})
    opt.add_param_group({"params": mine[2:], "lr": 0.2})
    for t in range(2, 5):
        _set_grads(theirs, mine, gen)
        reference.step()
        opt.step()
        _assert_close(mine, theirs, dtype, t)
        _assert_close(_buffers(opt, mine), _buffers(reference, theirs), dtype, t)


def test_step_without_gradients_is_a_no_op():
    theirs, mine = _pair([5], torch.float32)
    opt = mt.SGD(mine, lr=0.1, momentum=0.9)
    opt.step()
    assert torch.equal(mine[0], theirs[0]) and len(opt.state) == 0


@pytest.mark.parametrize("rule", [name for name, r in registry.RULES.items()
                                  if name != "velocity" and not getattr(r, "takes_momenta", False)])
def test_other_rules_step_as_momcore(rule):
    """rule= steps as momcore's own optimizer does: the same kernel, bit for bit."""
    dtype = torch.float64
    _, mine = _pair(SIZES, dtype)
    arrays = [p.detach().numpy().copy() for p in mine]
    opt = mt.SGD(mine, lr=0.05, momentum=0.8, weight_decay=0.01, rule=rule)
    ours = momcore.SGD(arrays, lr=0.05, momentum=0.8, weight_decay=0.01, rule=rule,
                       backend="numpy")
    gen = torch.Generator().manual_seed(5)
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=gen, dtype=dtype) for p in mine]
        for p, g in zip(mine, grads):
            p.grad = g
        opt.step()
        ours.step([g.numpy() for g in grads])
        for p, a in zip(mine, arrays):
            np.testing.assert_array_equal(p.detach().numpy(), a)


def test_a_rule_that_ignores_dampening_refuses_it():
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="dampening is taken only by"):
        mt.SGD([p], lr=0.1, momentum=0.9, dampening=0.1, rule="classical")
    with pytest.raises(ValueError, match="nesterov_velocity"):
        mt.SGD([p], lr=0.1, momentum=0.9, nesterov=True, rule="classical")
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        mt.SGD([p], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        mt.SGD([p], lr=-0.1)
    with pytest.raises(ValueError, match="rule must be one of"):
        mt.SGD([p], lr=0.1, rule="adam")
    with pytest.raises(ValueError, match=r"param_groups\[1\]: momentum must lie"):
        mt.SGD([{"params": [p]}, {"params": [torch.nn.Parameter(torch.zeros(2))],
                                  "momentum": 1.5}], lr=0.1)


# ---- schedulers ---------------------------------------------------------------------


SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=12),
    "CyclicLR": lambda o: torch.optim.lr_scheduler.CyclicLR(
        o, base_lr=0.01, max_lr=0.1, step_size_up=3, cycle_momentum=True,
        base_momentum=0.8, max_momentum=0.95),
    "CosineAnnealingWarmRestarts": lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=4),
    "ReduceLROnPlateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=0),
}


@pytest.mark.parametrize("make", SCHEDULERS.values(), ids=SCHEDULERS.keys())
def test_schedulers_drive_it_as_torch_sgd(make):
    """Every step of the schedule (lr, and momentum for the cyclic ones) lands in the
    groups and in the trajectory as with torch.optim.SGD."""
    dtype = torch.float64
    theirs, mine = _pair([17, 1000], dtype)
    reference = torch.optim.SGD(theirs, lr=0.05, momentum=0.9, dampening=0.1)
    opt = mt.SGD(mine, lr=0.05, momentum=0.9, dampening=0.1)
    schedules = [make(reference), make(opt)]
    gen = torch.Generator().manual_seed(6)
    for t in range(1, 11):
        _set_grads(theirs, mine, gen)
        reference.step()
        opt.step()
        for s in schedules:
            s.step(float(t % 3)) if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau) \
                else s.step()
        assert opt.param_groups[0]["lr"] == reference.param_groups[0]["lr"]
        assert opt.param_groups[0]["momentum"] == reference.param_groups[0]["momentum"]
        _assert_close(mine, theirs, dtype, t)


def _every_scheduler():
    lrs = torch.optim.lr_scheduler
    return {
        "LambdaLR": lambda o: lrs.LambdaLR(o, lambda t: 1 / (1 + t)),
        "MultiplicativeLR": lambda o: lrs.MultiplicativeLR(o, lambda t: 0.9),
        "MultiStepLR": lambda o: lrs.MultiStepLR(o, milestones=[1, 3]),
        "ConstantLR": lambda o: lrs.ConstantLR(o, factor=0.5, total_iters=2),
        "LinearLR": lambda o: lrs.LinearLR(o, start_factor=0.2, total_iters=3),
        "PolynomialLR": lambda o: lrs.PolynomialLR(o, total_iters=4, power=2.0),
        "CosineAnnealingLR": lambda o: lrs.CosineAnnealingLR(o, T_max=3),
        "SequentialLR": lambda o: lrs.SequentialLR(
            o, [lrs.ConstantLR(o, factor=0.5, total_iters=2), lrs.ExponentialLR(o, 0.9)],
            milestones=[2]),
        "ChainedScheduler": lambda o: lrs.ChainedScheduler(
            [lrs.ConstantLR(o, factor=0.5, total_iters=2), lrs.ExponentialLR(o, 0.9)]),
        "SWALR": lambda o: torch.optim.swa_utils.SWALR(o, swa_lr=0.01, anneal_epochs=2),
    }


@pytest.mark.parametrize("name", list(_every_scheduler()))
def test_every_lr_scheduler_sets_the_lr_torch_would(name):
    make = _every_scheduler()[name]
    theirs, mine = _pair([15], torch.float64)
    reference = torch.optim.SGD(theirs, lr=0.1, momentum=0.9)
    opt = mt.SGD(mine, lr=0.1, momentum=0.9)
    schedules = [make(reference), make(opt)]
    gen = torch.Generator().manual_seed(12)
    for t in range(1, 6):
        _set_grads(theirs, mine, gen)
        reference.step()
        opt.step()
        for s in schedules:
            s.step()
        assert opt.param_groups[0]["lr"] == reference.param_groups[0]["lr"]
        _assert_close(mine, theirs, torch.float64, t)


def test_grad_scaler_steps_it_as_torch_sgd():
    """torch.amp.GradScaler unscales the gradients in place, then calls step()."""
    theirs, mine = _pair([17], torch.float32)
    target = torch.randn(17)
    results = []
    for params, make in ((theirs, torch.optim.SGD), (mine, mt.SGD)):
        opt = make(params, lr=0.1, momentum=0.9)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        for _ in range(3):
            opt.zero_grad()
            scaler.scale(((params[0] - target) ** 2).sum()).backward()
            scaler.step(opt)
            scaler.update()
        results.append(params[0].detach())
    _assert_close(results[:1], results[1:], torch.float32, 3)


@pytest.mark.parametrize("rule", ["classical", "one_step", "ema"])
def test_one_cycle_cycles_momentum_of_any_rule(rule):
    p = torch.nn.Parameter(torch.ones(9))
    opt = mt.SGD([p], lr=0.01, momentum=0.9, rule=rule)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=8)
    momenta = []
    for _ in range(8):
        p.grad = torch.full_like(p, 0.1)
        opt.step()
        schedule.step() if schedule.last_epoch < 8 else None
        momenta.append(opt.param_groups[0]["momentum"])
    assert len(set(momenta)) > 3 and torch.isfinite(p).all() and (p < 1).all()


# ---- state_dict, closures, hooks, copies --------------------------------------------


def test_state_dict_has_torch_format_and_round_trips_both_ways():
    dtype = torch.float64
    theirs, mine = _pair([17, 15], dtype)
    gen = torch.Generator().manual_seed(7)
    reference = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)
    for _ in range(2):
        _set_grads(theirs, mine, gen)
        reference.step()
    with torch.no_grad():
        for p, q in zip(mine, theirs):
            p.copy_(q)
    # torch -> momcore, through a file format round trip (torch.save/load).
    opt = mt.SGD(mine, lr=1.0)
    opt.load_state_dict(pickle.loads(pickle.dumps(reference.state_dict())))
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["rule"] is None
    for t in range(1, 4):
        _set_grads(theirs, mine, gen)
        reference.step()
        opt.step()
        _assert_close(mine, theirs, dtype, t)
    saved = opt.state_dict()
    assert set(saved) == {"state", "param_groups"}
    assert set(saved["state"]) == {0, 1} and set(saved["state"][0]) == {"momentum_buffer"}
    assert set(reference.state_dict()["param_groups"][0]) - set(saved["param_groups"][0]) \
        <= {"foreach", "fused", "differentiable"}
    # momcore -> torch.
    back = torch.optim.SGD(theirs, lr=1.0)
    back.load_state_dict(copy.deepcopy(saved))
    with torch.no_grad():
        for p, q in zip(theirs, mine):
            p.copy_(q)
    for t in range(1, 4):
        _set_grads(theirs, mine, gen)
        back.step()
        opt.step()
        _assert_close(mine, theirs, dtype, t)


def test_load_state_dict_replaces_the_buffers_in_use():
    """After load_state_dict the steps use the loaded buffers, not the cached ones."""
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = mt.SGD([p], lr=1.0, momentum=0.5)
    p.grad = torch.ones_like(p)
    opt.step()
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    saved["state"][0]["momentum_buffer"].fill_(10.0)
    opt.load_state_dict(saved)
    before = p.detach().clone()
    opt.step()
    torch.testing.assert_close(p.detach(), before - (0.5 * 10 + 1))


def test_closure_is_run_with_grad_and_its_loss_returned():
    dtype = torch.float64
    theirs, mine = _pair([6], dtype)
    target = torch.arange(6, dtype=dtype)

    def closure_for(params, opt):
        def closure():
            opt.zero_grad()
            loss = ((params[0] - target) ** 2).sum()
            loss.backward()
            return loss
        return closure

    reference = torch.optim.SGD(theirs, lr=0.1, momentum=0.9)
    opt = mt.SGD(mine, lr=0.1, momentum=0.9)
    with torch.no_grad():  # step() must turn gradients on for the closure
        for t in range(1, 6):
            expected = reference.step(closure_for(theirs, reference))
            loss = opt.step(closure_for(mine, opt))
            torch.testing.assert_close(loss, expected)
            _assert_close(mine, theirs, dtype, t)


def test_step_hooks_and_the_profiler_see_every_step():
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    p = torch.nn.Parameter(torch.zeros(3))
    opt = mt.SGD([p], lr=0.1, momentum=0.9)
    calls = []
    handles = [opt.register_step_pre_hook(lambda o, a, k: calls.append("pre")),
               opt.register_step_post_hook(lambda o, a, k: calls.append("post")),
               register_optimizer_step_pre_hook(lambda o, a, k: calls.append("global pre"))]
    p.grad = torch.ones_like(p)
    try:
        opt.step()
    finally:
        for h in handles:
            h.remove()
    assert calls == ["global pre", "pre", "post"]
    opt.step()
    assert len(calls) == 3  # removed hooks cost nothing and run no more
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    assert any(e.name == "Optimizer.step#SGD.step" for e in prof.events())


def test_step_hooks_see_and_may_replace_the_arguments_as_with_torch_sgd():
    seen = {}
    for make in (torch.optim.SGD, mt.SGD):
        p = torch.nn.Parameter(torch.zeros(3))
        opt = make([p], lr=0.1)

        def closure():
            p.grad = torch.ones_like(p)
            return 7.0

        def pre(o, args, kwargs):
            seen[make, "pre"] = (args[0] is o, len(args), dict(kwargs))
            return args, {"closure": closure}  # a hook may replace the arguments

        def post(o, args, kwargs):
            seen[make, "post"] = (args[0] is o, len(args), sorted(kwargs))

        opt.register_step_pre_hook(pre)
        opt.register_step_post_hook(post)
        assert opt.step() == 7.0
        torch.testing.assert_close(p.detach(), torch.full((3,), -0.1))
    assert seen[mt.SGD, "pre"] == seen[torch.optim.SGD, "pre"]
    assert seen[mt.SGD, "post"] == seen[torch.optim.SGD, "post"]
    bad = mt.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    bad.register_step_pre_hook(lambda o, a, k: "not a tuple")
    with pytest.raises(RuntimeError, match="must return None or a tuple"):
        bad.step()


def test_deepcopy_and_pickle_keep_state_and_policy():
    p = torch.nn.Parameter(torch.ones(5))
    opt = mt.SGD([p], lr=0.1, momentum=0.9, nonfinite="skip")
    p.grad = torch.ones_like(p)
    opt.step()
    twin = copy.deepcopy(opt)
    assert twin.nonfinite == "skip" and twin.skipped_steps == 0
    twin_p = twin.param_groups[0]["params"][0]
    assert twin_p is not p
    twin_p.grad = torch.ones_like(twin_p)
    twin.step()
    opt.step()
    assert torch.equal(twin_p, p)
    assert "SGD (" in repr(opt) and "rule: None" in repr(opt)


def test_version_counter_is_bumped_like_an_in_place_op():
    """Autograd sees the in-place update: a graph that saved the old weights refuses
    to backpropagate, as with torch's optimizers."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = mt.SGD([p], lr=0.1)
    loss = (p * p).sum()
    p.grad = torch.ones_like(p)
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# ---- what momcore adds: the non-finite guard -----------------------------------------


@pytest.mark.parametrize("policy", ["skip", "raise"])
def test_nonfinite_leaves_every_group_bit_for_bit(policy):
    dtype = torch.float32
    _, mine = _pair([17, 1000, 15], dtype)
    opt = mt.SGD([{"params": mine[:2]}, {"params": mine[2:], "lr": 0.5}], lr=0.1,
                 momentum=0.9, nonfinite=policy)
    gen = torch.Generator().manual_seed(8)
    for p in mine:
        p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
    opt.step()
    before = [p.detach().clone() for p in mine]
    buffers = [b.clone() for b in _buffers(opt, mine)]
    mine[2].grad[3] = float("nan")  # in the second group only
    if policy == "raise":
        with pytest.raises(FloatingPointError):
            opt.step()
    else:
        opt.step()
        assert opt.skipped_steps == 1
    for x, y in zip([p.detach() for p in mine] + _buffers(opt, mine), before + buffers):
        assert torch.equal(x.view(torch.int32), y.view(torch.int32))
    mine[2].grad[3] = 0.0
    opt.step()
    assert not torch.equal(mine[0].detach(), before[0])


def test_skipped_first_step_starts_no_buffer():
    p = torch.nn.Parameter(torch.ones(3))
    opt = mt.SGD([p], lr=0.1, momentum=0.9, dampening=0.5, nonfinite="skip")
    p.grad = torch.tensor([1.0, float("inf"), 1.0])
    opt.step()
    assert "momentum_buffer" not in opt.state[p]
    p.grad = torch.ones(3)
    opt.step()  # torch's first step: buffer = g, no dampening
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], torch.ones(3))


def test_maximize_leaves_the_gradient_alone():
    p = torch.nn.Parameter(torch.ones(17))
    opt = mt.SGD([p], lr=0.1, momentum=0.9, maximize=True)
    g = torch.linspace(-1, 1, 17)
    p.grad = g.clone()
    opt.step()
    opt.step()
    assert torch.equal(p.grad, g)


# ---- the view cache notices every change --------------------------------------------


def _velocity_pair():
    theirs, mine = _pair([17, 15], torch.float64)
    return theirs, mine, torch.optim.SGD(theirs, lr=0.1, momentum=0.9), mt.SGD(
        mine, lr=0.1, momentum=0.9)


def test_new_gradient_tensors_and_zero_grad_are_seen():
    theirs, mine, reference, opt = _velocity_pair()
    target = torch.randn(17, dtype=torch.float64)
    for t in range(1, 5):
        for params, o in ((theirs, reference), (mine, opt)):
            o.zero_grad(set_to_none=(t % 2 == 0))
            ((params[0] - target) ** 2).sum().backward()
            params[1].grad = torch.full_like(params[1], float(t))  # replaced each step
            o.step()
        _assert_close(mine, theirs, torch.float64, t)


def test_gradients_are_not_kept_alive():
    p = torch.nn.Parameter(torch.ones(1000))
    opt = mt.SGD([p], lr=0.1, momentum=0.9)
    for _ in range(2):
        p.grad = torch.ones_like(p)
        opt.step()
    ref = weakref.ref(p.grad)
    p.grad = None  # as model.zero_grad() does, behind the optimizer's back
    gc.collect()
    assert ref() is None
    opt.step()  # no gradient: nothing moves
    assert "momentum_buffer" in opt.state[p]


def test_parameter_storage_replaced_is_seen():
    theirs, mine, reference, opt = _velocity_pair()
    gen = torch.Generator().manual_seed(9)
    for t in range(1, 5):
        if t == 3:  # as model.to(...) and friends do
            for params in (theirs, mine):
                params[0].data = params[0].data.clone() + 1.0
        _set_grads(theirs, mine, gen)
        reference.step()
        opt.step()
        _assert_close(mine, theirs, torch.float64, t)


def test_state_cleared_or_buffer_replaced_is_seen():
    theirs, mine, reference, opt = _velocity_pair()
    gen = torch.Generator().manual_seed(10)
    for t in range(1, 7):
        _set_grads(theirs, mine, gen)
        if t == 3:
            for o in (reference, opt):
                o.state.clear()
        if t == 5:
            for o, params in ((reference, theirs), (opt, mine)):
                o.state[params[1]]["momentum_buffer"] = torch.ones(15, dtype=torch.float64)
        reference.step()
        opt.step()
        _assert_close(mine, theirs, torch.float64, t)


def test_group_params_replaced_is_seen():
    theirs, mine, reference, opt = _velocity_pair()
    gen = torch.Generator().manual_seed(11)
    _set_grads(theirs, mine, gen)
    reference.step()
    opt.step()
    for o in (reference, opt):
        o.param_groups[0]["params"] = o.param_groups[0]["params"][1:]
    before = mine[0].detach().clone()
    _set_grads(theirs, mine, gen)
    reference.step()
    opt.step()
    assert torch.equal(mine[0].detach(), before)
    _assert_close(mine, theirs, torch.float64, 2)


def test_views_are_made_once_and_kept_while_nothing_changes():
    """The plan of views survives steps with the same tensors (new gradient tensors
    only renew their views) and is remade when a parameter's memory moves."""
    p = torch.nn.Parameter(torch.ones(17))
    opt = mt.SGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.ones_like(p)
    opt.step()
    opt.step()  # the first step's plan held a new buffer: remade once
    plan = opt._plan
    opt.step()
    p.grad = torch.full_like(p, 2.0)
    opt.step()
    assert opt._plan is plan
    p.data = p.data.clone()
    opt.step()
    assert opt._plan is not plan


def test_momentum_set_to_zero_leaves_the_buffers_as_torch_does():
    theirs, mine, reference, opt = _velocity_pair()
    gen = torch.Generator().manual_seed(13)
    for t in range(1, 7):
        if t in (3, 5):
            for o in (reference, opt):
                o.param_groups[0]["momentum"] = 0.0 if t == 3 else 0.9
        _set_grads(theirs, mine, gen)
        reference.step()
        opt.step()
        _assert_close(mine, theirs, torch.float64, t)
        _assert_close(_buffers(opt, mine), _buffers(reference, theirs), torch.float64, t)


# ---- errors ----------------------------------------------------------------------------


def test_non_cpu_parameters_are_refused_naming_them():
    cpu = torch.nn.Parameter(torch.zeros(2))
    meta = torch.nn.Parameter(torch.zeros(3, device="meta"))
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[1\] is on device "
                                        r"'meta'.*torch\.optim\.SGD"):
        mt.SGD([cpu, meta], lr=0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_parameters_are_refused():
    with pytest.raises(TypeError, match="fused=True"):
        mt.SGD([torch.nn.Parameter(torch.zeros(2, device="cuda"))], lr=0.1)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_steps_as_the_kernel_does(dtype, nesterov):
    """float16/bfloat16 parameters: float32 arithmetic, one rounding at each store,
    bit for bit the steps of momcore.SGD on numpy arrays of the same dtype (the
    first step's buffer is the gradient, as torch's)."""
    if dtype == torch.bfloat16:
        ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed")
        np_dtype = ml_dtypes.bfloat16
    else:
        np_dtype = np.float16
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal(1000).astype(np.float32)
    p = torch.nn.Parameter(torch.tensor(w0).to(dtype))
    opt = mt.SGD([p], lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=1e-3)
    w = w0.astype(np_dtype)
    ref = momcore.SGD([w], lr=0.05, momentum=0.9, weight_decay=1e-3,
                      rule="nesterov_velocity" if nesterov else "velocity")
    for _ in range(4):
        g = rng.standard_normal(1000).astype(np.float32)
        p.grad = torch.tensor(g).to(dtype)
        opt.step()
        ref.step([g.astype(np_dtype)])
        got = p.detach().view(torch.int16).numpy()
        assert got.tobytes() == w.view(np.int16).tobytes()


def test_a_parameter_changed_to_half_after_the_optimizer_was_made_is_refused():
    q = torch.nn.Parameter(torch.zeros(4))
    opt = mt.SGD([q], lr=0.1, momentum=0.9)
    q.grad = torch.ones_like(q)
    opt.step()
    q.data = q.data.to(torch.float16)  # as model.half() does; the buffer stays float32
    q.grad = torch.ones_like(q)
    with pytest.raises(ValueError, match=r"momentum_buffer is torch\.float32\[4\]"):
        opt.step()
    assert q.dtype == torch.float16


def test_complex_and_sparse_are_refused():
    with pytest.raises(TypeError, match="complex"):
        mt.SGD([torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))], lr=0.1)
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    opt = mt.SGD(embedding.parameters(), lr=0.1, momentum=0.9)
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(TypeError, match=r"\['params'\]\[0\]\.grad is sparse.*SparseAdam"):
        opt.step()
    assert not opt.state[embedding.weight]  # no buffer left behind


def test_named_parameters_are_named_in_errors():
    model = torch.nn.Linear(2, 2)
    opt = mt.SGD(model.named_parameters(), lr=0.1)
    model.bias.grad = torch.ones(2)
    model.bias.data = model.bias.data.to(torch.complex64)
    with pytest.raises(TypeError, match=r"\['params'\]\[1\] \('bias'\)"):
        opt.step()


def test_non_contiguous_parameters_are_refused():
    p = torch.nn.Parameter(torch.zeros(3, 4).t())
    with pytest.raises(ValueError, match="not contiguous"):
        mt.SGD([p], lr=0.1)


def test_a_bad_hyperparameter_set_between_steps_names_its_group():
    p, q = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = mt.SGD([{"params": [p]}, {"params": [q]}], lr=0.1, momentum=0.5)
    p.grad, q.grad = torch.ones(2), torch.ones(2)
    opt.param_groups[1]["momentum"] = 1.0
    with pytest.raises(ValueError, match=r"param_groups\[1\]: momentum must lie"):
        opt.step()
    assert torch.equal(p, torch.zeros(2))


def test_import_without_torch_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import momcore.torch\n"
            "except ImportError as e:\n    print(e)\n")
    # the momcore this test imported, from any working directory
    parent = str(pathlib.Path(momcore.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [parent, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path, env=env).stdout
    assert "pip install 'momcore[torch]'" in out


# ---- a real training loop --------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_mlp_on_digits_trains_as_with_torch_sgd(dtype):
    """A torch nn.Sequential MLP on digits, minibatches, OneCycleLR: equal losses step
    for step with torch.optim.SGD and with momcore.torch.SGD."""
    data = momcore.datasets.load_digits()
    X = torch.tensor(data.X / 16.0, dtype=dtype)
    y = torch.tensor(data.y)
    losses = {}
    for name, make in (("torch", torch.optim.SGD), ("momcore", mt.SGD)):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(),
                                    torch.nn.Linear(32, 10)).to(dtype)
        opt = make(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                   weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=60)
        run = []
        for step in range(60):
            rows = slice((step * 32) % 1760, (step * 32) % 1760 + 32)
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X[rows]), y[rows])
            loss.backward()
            opt.step()
            schedule.step()
            run.append(loss.item())
        losses[name] = np.array(run)
    rtol = {torch.float32: 1e-4, torch.float64: 1e-11}[dtype]  # 60 steps of rounding
    np.testing.assert_allclose(losses["momcore"], losses["torch"], rtol=rtol)
    assert losses["momcore"][-10:].mean() < 0.5 * losses["momcore"][:10].mean()

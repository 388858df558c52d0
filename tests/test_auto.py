"""momentum="auto" through every surface: MLP.fit, the scikit-learn estimators and the
torch optimizer pass it to momcore.SGD, whose Tuner decides what it means."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import momcore


def _digits():
    X, y = momcore.datasets.load_digits()[:2]
    return (X - X.mean(0)) / (X.std(0) + 1e-9), y


def test_fit_auto_learns_digits_with_mini_batches():
    """Regression: without the noise correction of the secant pairs the estimate of
    k_max grew with every step, lr fell to 1e-7 within 20 epochs and the loss stayed
    above 1. Measured with it: loss 0.01 to 0.04, lr about 1e-2."""
    X, y = _digits()
    net = momcore.MLP([64, 64, 10], seed=0)
    history = net.fit(X, y, epochs=20, batch_size=64, momentum="auto")
    assert history.loss[-1] < 0.1
    assert net.optimizer.tuner is not None
    assert history.lr[-1] > 1e-4
    assert history.lr[0] == 0.1  # fit's lr: the first step's rate
    assert len(set(history.momentum)) > 1  # the tuner moved it


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_fit_auto_hands_every_gradient_to_the_tuner(backend):
    X, y = _digits()
    net = momcore.MLP([64, 16, 10], seed=1, backend=backend)
    net.fit(X[:300], y[:300], epochs=2, batch_size=50, momentum="auto")
    assert net.optimizer.tuner.t == net.steps == 12
    assert net.optimizer.tuner.stochastic
    # a full batch has no gradient noise: the tuner is told so
    net.fit(X[:300], y[:300], epochs=1, batch_size=300, momentum="auto")
    assert net.optimizer.tuner.t == 13 and not net.optimizer.tuner.stochastic


def test_fit_auto_backends_agree():
    X, y = _digits()
    nets = [momcore.MLP([64, 16, 10], seed=2, backend=b) for b in ("c", "numpy")]
    for net in nets:
        net.fit(X[:400], y[:400], epochs=3, batch_size=40, momentum="auto", lr=0.05)
    np.testing.assert_allclose(nets[0].params, nets[1].params, rtol=1e-6, atol=1e-9)


def test_fit_switches_between_auto_and_fixed_momentum():
    X, y = _digits()
    net = momcore.MLP([64, 16, 10], seed=3)
    net.fit(X[:200], y[:200], epochs=1, batch_size=50, momentum="auto")
    tuner = net.optimizer.tuner
    net.fit(X[:200], y[:200], epochs=1, batch_size=50, momentum="auto")
    assert net.optimizer.tuner is tuner and tuner.t == 8  # tuning continues
    net.fit(X[:200], y[:200], epochs=1, batch_size=50, lr=0.1, momentum=0.9)
    assert net.optimizer.tuner is None and net.optimizer.momentum == 0.9
    assert net.steps == 12


def test_fit_auto_refuses_what_conflicts_with_it():
    X, y = _digits()
    net = momcore.MLP([64, 16, 10], seed=3)
    before = net.params.copy()
    with pytest.raises(ValueError, match="lr_schedule"):
        net.fit(X, y, epochs=1, momentum="auto", lr_schedule=lambda e: 0.1)
    with pytest.raises(ValueError, match="momentum_schedule"):
        net.fit(X, y, epochs=1, momentum="auto", momentum_schedule=lambda e: 0.9)
    with pytest.raises(ValueError, match="auto"):
        net.fit(X, y, epochs=1, momentum="auto", rule="nesterov")
    with pytest.raises(TypeError, match="momentum"):
        net.fit(X, y, epochs=1, momentum="automatic")
    with pytest.raises(ValueError, match="lr"):
        net.fit(X, y, epochs=1, momentum="auto", lr=-1.0)
    np.testing.assert_array_equal(net.params, before)
    assert net.steps == 0


# ---- scikit-learn -------------------------------------------------------------------


def test_estimators_take_momentum_auto():
    pytest.importorskip("sklearn")
    from sklearn.base import clone

    from momcore.sklearn import MLPClassifier, MLPRegressor
    X, y = _digits()
    est = MLPClassifier(hidden_layer_sizes=(32,), momentum="auto", max_iter=30,
                        random_state=0, batch_size=64, learning_rate_init=0.05)
    assert est.get_params()["momentum"] == "auto"
    assert clone(est).get_params()["momentum"] == "auto"
    with pytest.warns(Warning):  # scikit-learn's ConvergenceWarning at max_iter
        est.fit(X, y)
    assert est._net.optimizer.tuner is not None
    assert est._net.optimizer.rule == "classical"  # not the nesterov default
    assert est.score(X, y) > 0.95
    reg = MLPRegressor(hidden_layer_sizes=(8,), momentum="auto", max_iter=5, random_state=0)
    rng = np.random.default_rng(0)
    Xr = rng.standard_normal((200, 3))
    with pytest.warns(Warning):
        reg.fit(Xr, Xr @ [1.0, -2.0, 0.5])
    assert reg._net.optimizer.tuner is not None


@pytest.mark.parametrize("bad", ["Auto", "adaptive", -0.1, 1.5, None, True])
def test_estimators_still_refuse_bad_momentum(bad):
    pytest.importorskip("sklearn")
    from momcore.sklearn import MLPClassifier
    X, y = _digits()
    with pytest.raises((ValueError, TypeError)):
        MLPClassifier(hidden_layer_sizes=(4,), momentum=bad, max_iter=1).fit(X[:50], y[:50])


def test_estimators_refuse_auto_with_a_learning_rate_schedule_or_another_rule():
    pytest.importorskip("sklearn")
    from momcore.sklearn import MLPClassifier
    X, y = _digits()
    with pytest.raises(ValueError, match="constant"):
        MLPClassifier(momentum="auto", learning_rate="adaptive", max_iter=1).fit(X, y)
    with pytest.raises(ValueError, match="auto"):
        MLPClassifier(momentum="auto", rule="nesterov", max_iter=1).fit(X, y)


# ---- torch ------------------------------------------------------------------------


def test_torch_sgd_auto_matches_momcore_sgd_auto():
    torch = pytest.importorskip("torch")
    import momcore.torch as mt
    rng = np.random.default_rng(0)
    k = np.geomspace(0.01, 1.0, 12)
    w0 = rng.standard_normal(12)
    w = w0.copy()
    ref = momcore.SGD([w], momentum="auto")
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = mt.SGD([p], momentum="auto")
    assert opt.param_groups[0]["rule"] == "classical"
    for _ in range(60):
        ref.step([k * w])
        opt.zero_grad()
        (0.5 * (torch.tensor(k) * p * p).sum()).backward()
        opt.step()
    np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-12, atol=1e-15)
    assert opt.param_groups[0]["momentum"] == ref.momentum > 0


def test_torch_sgd_auto_state_dict_round_trip_and_refusals():
    torch = pytest.importorskip("torch")
    import momcore.torch as mt
    k = torch.linspace(0.05, 1.0, 6, dtype=torch.float64)

    def run(opt, p, steps):
        for _ in range(steps):
            opt.zero_grad()
            (0.5 * (k * p * p).sum()).backward()
            opt.step()
    p1 = torch.nn.Parameter(torch.ones(6, dtype=torch.float64))
    first = mt.SGD([p1], momentum="auto", lr=0.01)
    run(first, p1, 10)
    saved = copy.deepcopy(first.state_dict())  # torch's state_dict holds the live buffers
    assert saved["tuner"]["pairs"] == 9
    p2 = torch.nn.Parameter(p1.detach().clone())
    second = mt.SGD([p2], momentum="auto")
    second.load_state_dict(saved)
    run(first, p1, 15)
    run(second, p2, 15)
    assert torch.equal(p1, p2)
    for bad in (dict(nesterov=True), dict(rule="velocity"), dict(rule="nesterov")):
        with pytest.raises(ValueError, match="auto"):
            mt.SGD([torch.nn.Parameter(torch.ones(2))], momentum="auto", **bad)
    with pytest.raises((TypeError, ValueError)):
        mt.SGD([torch.nn.Parameter(torch.ones(2))], momentum="automatic")


def test_torch_sgd_auto_survives_deepcopy():
    torch = pytest.importorskip("torch")
    import momcore.torch as mt
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = mt.SGD([p], momentum="auto")
    for _ in range(5):
        opt.zero_grad()
        (p * p).sum().backward()
        opt.step()
    twin = copy.deepcopy(opt)
    assert twin.tuner is not opt.tuner and twin.tuner.t == opt.tuner.t == 5
    assert twin.tuner.optimizer.optimizer is twin


def test_estimator_with_auto_pickles_and_continues_with_partial_fit():
    pytest.importorskip("sklearn")
    import pickle

    from momcore.sklearn import MLPClassifier
    X, y = _digits()
    est = MLPClassifier(hidden_layer_sizes=(16,), momentum="auto", random_state=0)
    for _ in range(2):
        est.partial_fit(X, y, classes=np.arange(10))
    twin = pickle.loads(pickle.dumps(est))
    mine, theirs = est._net.optimizer.tuner, twin._net.optimizer.tuner
    assert theirs.optimizer is twin._net.optimizer
    assert theirs.t == mine.t == 18
    assert (theirs.k_min, theirs.k_max) == (mine.k_min, mine.k_max)
    twin.partial_fit(X, y)
    assert theirs.t == 27


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_estimator_with_sample_weights_tunes_on_both_backends(backend):
    """Sample weights take the per-batch gradient path: the tuner must see every
    gradient there too, and the two backends must agree."""
    pytest.importorskip("sklearn")
    from momcore.sklearn import MLPClassifier
    X, y = _digits()
    X, y = X[:300], y[:300]
    w = np.random.default_rng(0).uniform(0.5, 2.0, y.shape[0])
    est = MLPClassifier(hidden_layer_sizes=(16,), momentum="auto", max_iter=3,
                        random_state=0, batch_size=50, learning_rate_init=0.05,
                        backend=backend)
    with pytest.warns(Warning):
        est.fit(X, y, sample_weight=w)
    tuner = est._net.optimizer.tuner
    assert tuner.t == est._net.steps == 18
    assert est._net.optimizer.momentum != 0.0


def test_added_groups_are_checked_and_restart_the_tuner():
    rng = np.random.default_rng(0)
    opt = momcore.SGD([rng.standard_normal(5)], momentum="auto")
    with pytest.raises(ValueError, match="param_groups\\[1\\].*nesterov"):
        opt.add_param_group({"params": [rng.standard_normal(3)], "rule": "nesterov"})
    assert len(opt.param_groups) == 1 and len(opt.params) == 1
    opt.add_param_group({"params": [rng.standard_normal(3)]})
    grads = [rng.standard_normal(5), rng.standard_normal(3)]
    opt.step(grads)  # the tuner spans both groups now
    assert opt.tuner.t == 1


def test_torch_added_groups_are_checked_and_restart_the_tuner():
    torch = pytest.importorskip("torch")
    from momcore.torch import SGD
    a, b = torch.zeros(4, requires_grad=True), torch.zeros(3, requires_grad=True)
    opt = SGD([a], lr=0.01, momentum="auto")
    with pytest.raises(ValueError, match="param_groups\\[1\\]"):
        opt.add_param_group({"params": [b], "rule": "nesterov"})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [b]})
    (a.sum() + 2 * b.sum()).backward()
    opt.step()
    assert opt.tuner.t == 1


def test_snapshot_restores_the_tuner_and_its_pair():
    """The non-finite replay and restore_best start again from a snapshot: under
    momentum="auto" it must hold the tuner's estimates and the lr/momentum it set."""
    from momcore.training import _Snapshot
    X, y = _digits()
    net = momcore.MLP([64, 16, 10], seed=4)
    net.fit(X[:200], y[:200], epochs=1, batch_size=20, momentum="auto", lr=0.05)
    snap = _Snapshot(net)
    snap.take()
    opt = net.optimizer
    saved = opt.tuner.state_dict(), opt.lr, opt.momentum, net.params.copy()
    net.fit(X[:200], y[:200], epochs=1, batch_size=20, momentum="auto", lr=0.05)
    assert opt.tuner.t != saved[0]["t"]
    snap.restore()
    assert opt.tuner.t == saved[0]["t"] and (opt.lr, opt.momentum) == saved[1:3]
    np.testing.assert_array_equal(net.params, saved[3])
    for key, value in saved[0].items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(opt.tuner.state_dict()[key], value)


def test_regressor_auto_reports_the_loss_as_with_a_fixed_momentum():
    """Several outputs and alpha > 0: the data part of the loss is averaged over the
    outputs, the l2 part is not, whichever runner trained the epoch. The loss an epoch
    reports is measured at the weights each batch saw, so one full batch compares the
    two exactly: the loss of the auto fit equals the fixed fit's at the same start."""
    pytest.importorskip("sklearn")
    from momcore.sklearn import MLPRegressor
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 4))
    Y = np.column_stack([X @ [1.0, -2.0, 0.5, 0.0], X[:, 0] * X[:, 1], X[:, 2]])
    losses = []
    for momentum in ("auto", 0.5):
        est = MLPRegressor(hidden_layer_sizes=(8,), momentum=momentum, alpha=0.3,
                           batch_size=120, max_iter=1, random_state=0, shuffle=False,
                           nesterovs_momentum=False, learning_rate_init=0.01)
        with pytest.warns(Warning):
            est.fit(X, Y)
        losses.append(est.loss_)
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-12)


def _tuner_state(opt):
    state = opt.tuner.state_dict()
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    rest = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    pairs = [(g["lr"], g["momentum"]) for g in (opt.defaults, *opt.param_groups)]
    return arrays, rest, pairs


def _assert_same_tuner(a, b):
    (arrays_a, rest_a, pairs_a), (arrays_b, rest_b, pairs_b) = a, b
    assert arrays_a.keys() == arrays_b.keys()
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key], err_msg=key)
    assert repr(rest_a) == repr(rest_b)  # NaN estimates compare equal as text
    assert pairs_a == pairs_b


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("refused_after", [0, 1, 3, 12])
def test_a_refused_step_leaves_the_tuner_and_its_pair_as_they_were(backend, refused_after):
    """nonfinite="raise" refuses a step whose new weights overflow after the tuner has
    seen its (finite) gradient, and a gradient of another dtype is refused by the step
    alone: neither may move the tuner, whose window, averages and pair stay as they were,
    so that the steps after it are those of a run that never tried it."""
    rng = np.random.default_rng(refused_after)
    grads = [rng.standard_normal(5) for _ in range(refused_after + 3)]
    big = np.finfo(np.float64).max
    tried, clean = np.zeros(5), np.zeros(5)
    opt = momcore.SGD([tried], momentum="auto", nonfinite="raise", backend=backend)
    ref = momcore.SGD([clean], momentum="auto", nonfinite="raise", backend=backend)
    for g in grads[:refused_after]:
        opt.step([g])
        ref.step([g])
    before = _tuner_state(opt)
    saved = tried.copy()
    tried[:] = big  # a step of -lr g with g = -big/2 overflows for any lr above 1e-15
    # (the tuner's own sums over such numbers overflow too: quietly, for this test)
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(FloatingPointError):
        opt.step([np.full(5, -big / 2)])
    tried[:] = saved
    _assert_same_tuner(_tuner_state(opt), before)
    with pytest.raises(TypeError):
        opt.step([grads[0].astype(np.float32)])
    _assert_same_tuner(_tuner_state(opt), before)
    assert opt.steps == ref.steps == refused_after
    for g in grads[refused_after:]:
        opt.step([g])
        ref.step([g])
    np.testing.assert_array_equal(tried, clean)
    _assert_same_tuner(_tuner_state(opt), _tuner_state(ref))


@pytest.mark.parametrize("refused_after", [0, 4, 12])
def test_torch_sgd_auto_refused_step_leaves_the_tuner_as_it_was(refused_after):
    torch = pytest.importorskip("torch")
    import momcore.torch as mt
    rng = np.random.default_rng(refused_after)
    grads = [rng.standard_normal(5) for _ in range(refused_after + 3)]
    big = np.finfo(np.float64).max
    tried, clean = (torch.nn.Parameter(torch.zeros(5, dtype=torch.float64)) for _ in range(2))
    opt = mt.SGD([tried], momentum="auto", nonfinite="raise")
    ref = mt.SGD([clean], momentum="auto", nonfinite="raise")

    def step(o, p, g):
        p.grad = torch.tensor(g)
        o.step()

    for g in grads[:refused_after]:
        step(opt, tried, g)
        step(ref, clean, g)
    before = (opt.tuner.state_dict(), [(g["lr"], g["momentum"]) for g in opt.param_groups])
    with torch.no_grad():
        saved = tried.detach().clone()
        tried.fill_(big)  # a step of -lr g with g = -big/2 overflows for any lr above 1e-15
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(FloatingPointError):
        step(opt, tried, np.full(5, -big / 2))
    with torch.no_grad():
        tried.copy_(saved)
    after = (opt.tuner.state_dict(), [(g["lr"], g["momentum"]) for g in opt.param_groups])
    assert repr(after) == repr(before)
    for g in grads[refused_after:]:
        step(opt, tried, g)
        step(ref, clean, g)
    np.testing.assert_array_equal(tried.detach().numpy(), clean.detach().numpy())
    assert repr(opt.tuner.state_dict()) == repr(ref.tuner.state_dict())

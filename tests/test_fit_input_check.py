"""A fit call on X holding NaN or inf raises ValueError("X holds NaN or inf") before
training and leaves the model as it was, bit for bit: whether X is checked up front
(the numpy backend, momentum="auto", rule "qian", inputs that need a conversion) or by
the compiled epoch as it gathers the rows (the rows checked while they are in cache,
and the steps before a bad batch undone)."""
from __future__ import annotations

import copy
import os
import dataclasses
import pickle

import numpy as np
import pytest

from momcore import MLP, _core
from momcore import mlp as mlp_module
from momcore.training import NONFINITE_X

N_ROWS, SIZES = 40, [4, 6, 3]


@pytest.fixture(autouse=True, params=["in the epoch", "up front"])
def checked(request, monkeypatch):
    """Where fit checks a ready X of these tests: in the compiled epoch (as it does for
    a large X) or up front (as for a small one); both must look the same."""
    monkeypatch.setattr(mlp_module, "_ROWS_CHECKED_IN_EPOCH",
                        0 if request.param == "in the epoch" else 2**62)
    return request.param


def _data(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N_ROWS, SIZES[0])).astype(dtype), rng.integers(0, 3, N_ROWS)


def _model_state(net: MLP) -> bytes:
    """Everything a model holds, as bytes: weights, optimizer (state, hyperparameters,
    steps, tuner), epochs, generator, l2, and the history without its wall times. The
    compiled workspaces (_grad, the fit core and the accuracy it was made for) are left
    out: they hold no state (a fit overwrites them before reading them)."""
    state = net.__getstate__()
    for workspace in ("_grad", "_fit_core_accuracy"):
        state.pop(workspace)
    history = state.pop("history_")
    state["history_"] = None if history is None else dataclasses.replace(history, seconds=[])
    return pickle.dumps(state)


def _trained_pair(dtype, backend="c", **fit):
    """Two identical models, each trained by the same first call (a momentum state,
    a history and a generator that has drawn)."""
    X, y = _data(dtype, seed=1)
    nets = [MLP(SIZES, dtype=dtype, seed=3, backend=backend) for _ in range(2)]
    for net in nets:
        net.fit(X, y, **(dict(epochs=2, batch_size=5, lr=0.05, momentum=0.9) | fit))
    assert _model_state(nets[0]) == _model_state(nets[1])
    return nets


def _first_epoch_order(net: MLP, shuffle: bool) -> np.ndarray:
    return copy.deepcopy(net.rng).permutation(N_ROWS) if shuffle else np.arange(N_ROWS)


def _bad_row(net: MLP, shuffle: bool, batch: int, where: str) -> int:
    """The row of X that the first epoch reads in its first batch, or in its last."""
    order = _first_epoch_order(net, shuffle)
    return int(order[0] if where == "first" else order[-1 - (batch > 1)])


def _refused_and_unchanged(net, twin, X, y, **fit) -> int:
    """Asserts that net.fit(X, y, **fit) raises the ValueError of a non-finite X and
    changes nothing (and that net and twin train alike afterwards); returns the steps
    that the compiled epochs of the call applied (then undid)."""
    before = _model_state(net)
    history, optimizer = net.history_, net.optimizer
    core = net._fit_core
    applied = -1 if core is None else core.steps_applied
    with pytest.raises(ValueError) as info:
        net.fit(X, y, **fit)
    assert type(info.value) is ValueError and str(info.value) == NONFINITE_X
    assert net.history_ is history and net.optimizer is optimizer
    assert _model_state(net) == before == _model_state(twin)
    if net._fit_core is not None:
        applied = net._fit_core.steps_applied - (applied if net._fit_core is core else 0)
    # and both go on alike
    Xg, yg = _data(net.dtype.type, seed=2)
    for model in (net, twin):
        model.fit(Xg, yg, epochs=1, batch_size=3, lr=0.05, momentum=0.9)
    assert _model_state(net) == _model_state(twin)
    return applied


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("where", ["first", "later"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_compiled_epoch_refuses_a_bad_row_and_undoes_its_steps(dtype, shuffle, batch, where,
                                                                bad, checked):
    net, twin = _trained_pair(dtype)
    X, y = _data(dtype)
    X[_bad_row(net, shuffle, batch, where), 2] = bad
    applied = _refused_and_unchanged(net, twin, X, y, epochs=3, batch_size=batch, lr=0.05,
                                     momentum=0.9, shuffle=shuffle)
    # checked by the epoch itself: with the bad row in a later batch, the batches before
    # it were trained on, then undone
    if checked == "in the epoch":
        assert applied == (0 if where == "first" else -(-N_ROWS // batch) - 1)
    else:
        assert applied == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where", ["first", "later"])
def test_early_stopping_with_validation_data(dtype, where):
    net, twin = _trained_pair(dtype)
    X, y = _data(dtype)
    X[_bad_row(net, True, 4, where), 0] = np.nan
    X_val, y_val = _data(dtype, seed=5)
    _refused_and_unchanged(net, twin, X, y, epochs=4, batch_size=4, lr=0.05, momentum=0.9,
                           validation_data=(X_val, y_val), patience=1)


@pytest.mark.parametrize("case", [
    dict(rule="nesterov"),  # a gradient buffer and the step after the pass
    dict(rule="velocity", dampening=0.1),  # a new optimizer for the call
    dict(weight_decay=1e-3),
    dict(lr_schedule=type("PerStep", (), {"per": "step",
                                          "__call__": lambda self, t: 0.05 / (1 + t)})()),
    dict(momentum_schedule=lambda epoch: 0.5),
    dict(target_loss=10.0),
    dict(callback=lambda epoch, logs: False),
])
def test_every_compiled_path_refuses_and_restores(case):
    net, twin = _trained_pair(np.float64)
    X, y = _data()
    X[_bad_row(net, True, 5, "later"), 1] = np.inf
    fit = dict(epochs=2, batch_size=5, lr=0.05, momentum=0.9) | case
    _refused_and_unchanged(net, twin, X, y, **fit)


@pytest.mark.parametrize("backend, fit", [
    ("numpy", {}),
    ("c", dict(momentum="auto")),
    ("c", dict(rule="qian")),
])
def test_paths_that_check_up_front_still_do(backend, fit):
    net, twin = _trained_pair(np.float64, backend=backend, **fit)
    X, y = _data()
    X[_bad_row(net, True, 5, "later"), 1] = np.nan
    _refused_and_unchanged(net, twin, X, y, **(dict(epochs=2, batch_size=5, lr=0.05,
                                                    momentum=0.9) | fit))


def test_inputs_that_need_a_conversion_are_checked_up_front():
    net, twin = _trained_pair(np.float32)
    X, y = _data(np.float64)  # float64 for a float32 network
    X[3, 0] = np.nan
    _refused_and_unchanged(net, twin, X, y, epochs=1, batch_size=5, lr=0.05, momentum=0.9)
    X[3, 0] = 1e39  # finite, beyond float32
    with pytest.raises(ValueError, match="beyond the range of float32"):
        net.fit(X, y, epochs=1)


def test_no_epoch_still_refuses():
    net, twin = _trained_pair(np.float64)
    X, y = _data()
    X[-1, -1] = np.nan
    _refused_and_unchanged(net, twin, X, y, epochs=0)


def test_a_nonfinite_loss_before_the_bad_row_still_refuses_x_first():
    # A huge lr makes the loss non-finite within the first batches; X's bad row comes
    # later: X is refused as it was before training, not FloatingPointError.
    net, twin = _trained_pair(np.float64)
    X, y = _data()
    X = X * 1e3
    X[_bad_row(net, False, 1, "later"), 0] = np.nan
    with pytest.raises(FloatingPointError):  # without the bad row: the loss diverges
        copy.deepcopy(net).fit(np.nan_to_num(X), y, epochs=1, lr=1e300, momentum=0.9,
                               shuffle=False)
    _refused_and_unchanged(net, twin, X, y, epochs=1, lr=1e300, momentum=0.9, shuffle=False)


def test_other_errors_of_the_call_come_after_x():
    net, twin = _trained_pair(np.float64)
    X, y = _data()
    X[0, 0] = np.nan
    _refused_and_unchanged(net, twin, X, y[:-1], epochs=1)  # y's rows do not match either


def test_only_the_first_epoch_of_a_call_checks(checked):
    net = MLP(SIZES, seed=0)
    X, y = _data()
    net.fit(X, y, epochs=1, batch_size=4)
    calls = []

    class Recording(_core.NetCore):
        def train_epoch(self, *args, **kwargs):
            calls.append(kwargs["check_rows"])
            return super().train_epoch(*args, **kwargs)

    net._fit_core = Recording(net.params, net.optimizer_state, None, net.sizes, net.hidden,
                              net.output, 4, loss=net.loss_name,
                              accuracy=net._fit_core_accuracy)
    for _ in range(2):
        net.fit(X, y, epochs=3, batch_size=4)
    assert calls == [checked == "in the epoch", False, False] * 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["gathered", "in place"])
def test_train_epoch_check_rows(dtype, order):
    X, y = _data(dtype)
    T = np.eye(3, dtype=dtype)[y]
    rows = np.arange(N_ROWS) if order == "in place" else np.arange(N_ROWS)[::-1].copy()
    params = np.zeros(sum(a * b + b for a, b in zip(SIZES, SIZES[1:])), dtype)
    core = _core.NetCore(params, np.zeros_like(params), None, SIZES, "sigmoid", "softmax", 8)
    assert core.train_epoch(X, T, rows, 8, lr=0.1, momentum=0.5, check_rows=True)[2] == 5
    X[rows[19], 3] = np.nan  # in the third batch of 8
    with pytest.raises(_core.NonFiniteRows, match="order\\[16\\]; the 2 steps"):
        core.train_epoch(X, T, rows, 8, lr=0.1, momentum=0.5, check_rows=True)
    assert core.steps_applied == 5 + 2
    # without the check, the row is trained on (and the loss turns NaN)
    assert core.train_epoch(X, T, rows, 8, lr=0.1, momentum=0.5)[3]


@pytest.mark.skipif(
    _core.BLAS_THREADS_CONTROL is None or not _core.have_openmp() or os.cpu_count() < 2,
    reason="teams need OpenMP, two processors and an OpenBLAS whose thread count can be "
           "set")
@pytest.mark.parametrize("order", ["gathered", "in place"])
@pytest.mark.parametrize("bad_row", [130, 191])  # in the third batch, in either thread's half
def test_a_team_epoch_stops_where_one_thread_does(threads, order, bad_row):
    sizes, batch, n_rows = [64, 256, 64], 64, 256
    rng = np.random.default_rng(3)
    X = rng.standard_normal((n_rows, sizes[0]))
    T = np.eye(sizes[-1])[rng.integers(0, sizes[-1], n_rows)]
    rows = np.arange(n_rows) if order == "in place" else np.arange(n_rows)[::-1].copy()
    X[rows[bad_row], 5] = np.inf
    params = {}
    for count in (2, 1):
        _core.set_num_threads(count)
        n = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
        core = _core.NetCore(np.full(n, 0.01), np.zeros(n), None, sizes, "tanh", "softmax",
                             batch)
        assert core.team_threads(batch) == count
        with pytest.raises(_core.NonFiniteRows, match="order\\[128\\]; the 2 steps"):
            core.train_epoch(X, T, rows, batch, lr=0.05, momentum=0.9, check_rows=True)
        assert core.steps_applied == 2
        params[count] = core.params.copy()
    np.testing.assert_allclose(params[2], params[1], rtol=1e-11, atol=1e-14)

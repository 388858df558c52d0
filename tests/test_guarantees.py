"""What fit promises when it fails (issue "Reliability II", numerics and guarantees):
after FloatingPointError the weights are finite and those of the last finite step; a
fit that fails its checks changes nothing, even after a change of rule; hyperparameters
are checked in the network's dtype before anything changes."""
from __future__ import annotations

import numpy as np
import pytest

import momcore
from momcore import MLP

BACKENDS = ["c", "numpy"]


class LrAt:
    """A per-step lr schedule: ``small`` for the first ``k`` steps, then ``huge``."""

    per = "step"

    def __init__(self, k: int, small: float, huge: float) -> None:
        self.k, self.small, self.huge = k, small, huge

    def __call__(self, t: int) -> float:
        return self.small if t < self.k else self.huge


def _regression_data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(24, 3)) * 100, rng.normal(size=(24, 2)) * 100


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("schedule", ["per-step", "per-epoch"])
def test_after_floatingpointerror_the_weights_are_the_last_finite_steps(backend, batch_size,
                                                                         schedule):
    # A step whose loss is finite but whose update overflows the weights to inf: before,
    # fit raised FloatingPointError ("the weights of the last finite step were kept")
    # with those infinite weights in place.
    X, Y = _regression_data()
    k = 5  # steps with a sane lr, all in the first epoch
    if schedule == "per-step":
        kwargs = dict(lr_schedule=LrAt(k, 1e-7, 1.7e308))
    else:  # the second epoch's lr overflows: k = the steps of the first epoch
        k = -(-len(X) // batch_size)
        kwargs = dict(lr_schedule=lambda epoch: 1e-7 if epoch < 1 else 1.7e308)
    net = MLP([3, 4, 2], hidden="identity", output="identity", seed=1, backend=backend)
    with pytest.raises(FloatingPointError, match="last finite step"):
        net.fit(X, Y, epochs=3, batch_size=batch_size, momentum=0.5, shuffle=False, **kwargs)
    assert np.isfinite(net.params).all() and np.isfinite(net.optimizer_state).all()
    assert net.history_.stopped == "nonfinite"
    # the same k steps, taken by a run that never overflows
    twin = MLP([3, 4, 2], hidden="identity", output="identity", seed=1, backend=backend)
    rows = k * batch_size
    epochs, rest = divmod(rows, len(X))
    if epochs:
        twin.fit(X, Y, epochs=epochs, batch_size=batch_size, lr=1e-7, momentum=0.5,
                 shuffle=False)
    if rest:
        twin.fit(X[:rest], Y[:rest], epochs=1, batch_size=batch_size, lr=1e-7,
                 momentum=0.5, shuffle=False)
    assert net.steps == twin.steps == k
    assert net.params.tobytes() == twin.params.tobytes()
    assert net.optimizer_state.tobytes() == twin.optimizer_state.tobytes()
    # and training goes on from there with a sane lr
    net.fit(X, Y, epochs=1, lr=1e-7, momentum=0.5)
    assert np.isfinite(net.params).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_lr_beyond_float32_is_refused_before_anything_changes(backend):
    # before: lr=1e39 passed the float64 check; with a rule change the state was
    # already replaced when the float32 step refused (or wrote inf)
    X, y = momcore.datasets.load_iris().X[:30], momcore.datasets.load_iris().y[:30]
    net = MLP([4, 5, 3], dtype=np.float32, backend=backend)
    net.fit(X, y, epochs=1, lr=0.05, momentum=0.9)
    before = (net.params.tobytes(), net.optimizer_state.tobytes(), net.optimizer,
              net.steps, net.epochs, net.history_, net.optimizer.lr)
    for kwargs in (dict(lr=1e39), dict(lr=1e39, rule="nesterov"),
                   dict(momentum=1 - 1e-9, rule="velocity"),
                   dict(weight_decay=1e39, rule="velocity")):
        with pytest.raises(ValueError, match="float32"):
            net.fit(X, y, epochs=1, **kwargs)
        after = (net.params.tobytes(), net.optimizer_state.tobytes(), net.optimizer,
                 net.steps, net.epochs, net.history_, net.optimizer.lr)
        assert after == before, kwargs


@pytest.mark.parametrize("backend", BACKENDS)
def test_failure_before_the_first_step_after_a_rule_change_changes_nothing(backend,
                                                                           monkeypatch):
    # A check that runs after the arguments' own (the runner's) fails: the optimizer,
    # its state, hyperparameters and the history stay as they were.
    X, y = momcore.datasets.load_iris().X[:30], momcore.datasets.load_iris().y[:30]
    net = MLP([4, 5, 3], backend=backend)
    net.fit(X, y, epochs=1, lr=0.05, momentum=0.9)
    optimizer, state = net.optimizer, net.optimizer_state.copy()
    history = net.history_

    def runner_that_refuses(*args, **kwargs):
        raise ValueError("the runner refuses")

    monkeypatch.setattr(net, "make_runner", runner_that_refuses)
    with pytest.raises(ValueError, match="refuses"):
        net.fit(X, y, epochs=1, lr=0.01, momentum=0.5, rule="velocity")
    assert net.optimizer is optimizer and net.optimizer.rule == "classical"
    assert net.optimizer_state.tobytes() == state.tobytes()
    assert (net.optimizer.lr, net.optimizer.momentum) == (0.05, 0.9)
    assert net.history_ is history

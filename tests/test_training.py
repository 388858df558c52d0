"""The training loop (momcore.training): per-step schedules, validation and early
stopping, the binary cross-entropy loss, rules that say what they take."""
from __future__ import annotations

import numpy as np
import pytest

from momcore import MLP, reference, schedules
from momcore.datasets import load_iris
from momcore.training import History

BACKENDS = ["c", "numpy"]


@pytest.fixture(scope="module")
def iris():
    data = load_iris()
    X = (data.X - data.X.mean(axis=0)) / data.X.std(axis=0)
    return X, data.y


def _flat(dW, db):
    return np.concatenate([a.ravel() for pair in zip(dW, db) for a in pair])


def _by_hand(net, X, y, batch, epochs, lrs, momentums, rule):
    """Training written out without the loop: consecutive batches (no shuffling),
    net.gradients and the reference kernel, step t with lrs[t] and momentums[t].
    Returns the state."""
    state = np.zeros_like(net.params)
    t = 0
    for _ in range(epochs):
        for start in range(0, X.shape[0], batch):
            g = _flat(*net.gradients(X[start:start + batch], y[start:start + batch]))
            reference.momentum_step(net.params, g, state, lr=lrs[t], momentum=momentums[t],
                                    rule=rule)
            t += 1
    return state


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", ["classical", "nesterov_velocity"])
def test_per_step_schedules_change_the_value_before_every_step(iris, backend, rule):
    X, y = iris
    batch, epochs = 16, 2
    per_epoch = -(-X.shape[0] // batch)
    steps = epochs * per_epoch
    lr = schedules.per_step(lambda t: 0.2 / (1 + t))
    momentum = schedules.Linear(0.5, 0.9, steps, per="step")
    net = MLP([4, 6, 3], seed=3, backend=backend)
    history = net.fit(X, y, epochs=epochs, batch_size=batch, lr_schedule=lr,
                      momentum_schedule=momentum, rule=rule, shuffle=False)
    twin = MLP([4, 6, 3], seed=3, backend="numpy")
    lrs = [0.2 / (1 + t) for t in range(steps)]
    momentums = [0.5 + 0.4 * t / steps for t in range(steps)]
    state = _by_hand(twin, X, y, batch, epochs, lrs, momentums, rule)
    np.testing.assert_allclose(net.params, twin.params, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(net.optimizer_state, state, rtol=1e-9, atol=1e-12)
    assert net.steps == steps
    # the History records the values at each epoch's first step
    assert history.lr == pytest.approx([lrs[0], lrs[per_epoch]], rel=1e-15)
    assert history.momentum == pytest.approx([momentums[0], momentums[per_epoch]],
                                             rel=1e-15)


def test_a_per_epoch_schedule_beside_a_per_step_one_counts_epochs(iris):
    X, y = iris
    batch, epochs = 25, 3
    per_epoch = X.shape[0] // batch
    net = MLP([4, 6, 3], seed=7, backend="numpy")
    net.fit(X, y, epochs=epochs, batch_size=batch, shuffle=False,
            lr_schedule=schedules.per_step(lambda t: 0.1 / (1 + 0.1 * t)),
            momentum_schedule=lambda e: (0.3, 0.6, 0.9)[e])
    twin = MLP([4, 6, 3], seed=7, backend="numpy")
    lrs = [0.1 / (1 + 0.1 * t) for t in range(epochs * per_epoch)]
    momentums = [m for m in (0.3, 0.6, 0.9) for _ in range(per_epoch)]
    _by_hand(twin, X, y, batch, epochs, lrs, momentums, "classical")
    np.testing.assert_allclose(net.params, twin.params, rtol=1e-12, atol=1e-15)
    assert net.history_.momentum == [0.3, 0.6, 0.9]


@pytest.mark.parametrize("value", [np.float32(0.05), np.array(0.05), np.float64(0.05)],
                         ids=["float32", "0-d", "float64"])
def test_schedules_may_return_anything_float_accepts(iris, value):
    X, y = iris
    a = MLP([4, 5, 3], seed=1)
    a.fit(X, y, epochs=2, batch_size=8, lr_schedule=lambda e: value, momentum=0.5)
    b = MLP([4, 5, 3], seed=1)
    b.fit(X, y, epochs=2, batch_size=8, lr=float(value), momentum=0.5)
    assert a.params.tobytes() == b.params.tobytes()


def test_a_torch_scalar_schedule_value(iris):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    X, y = iris
    a = MLP([4, 5, 3], seed=1)
    a.fit(X, y, epochs=1, batch_size=8, lr_schedule=lambda e: torch.tensor(0.125))
    b = MLP([4, 5, 3], seed=1)
    b.fit(X, y, epochs=1, batch_size=8, lr=0.125)
    assert a.params.tobytes() == b.params.tobytes()


def test_a_bad_schedule_value_names_the_schedule(iris):
    X, y = iris
    net = MLP([4, 5, 3])
    with pytest.raises(ValueError, match="lr_schedule"):
        net.fit(X, y, epochs=3, lr_schedule=lambda e: [0.1, -1.0, 0.1][e])
    assert net.epochs == 1
    with pytest.raises(TypeError, match="momentum_schedule"):
        net.fit(X, y, epochs=1, momentum_schedule=lambda e: "0.5")


@pytest.mark.parametrize("backend", BACKENDS)
def test_validation_loss_and_accuracy_after_each_epoch(iris, backend):
    X, y = iris
    Xv, yv = X[::3], y[::3]
    net = MLP([4, 6, 3], seed=2, backend=backend)
    losses = []
    for _ in range(3):
        net.fit(X, y, epochs=1, batch_size=10, lr=0.1, validation_data=(Xv, yv))
        losses.append((net.history_.val_loss[-1], net.history_.val_accuracy[-1]))
        assert net.history_.val_loss[-1] == net.loss(Xv, yv)
        assert net.history_.val_accuracy[-1] == net.score(Xv, yv)
    assert losses[-1][0] < losses[0][0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_early_stopping_on_a_flat_training_loss(iris, backend):
    X, y = iris
    net = MLP([4, 5, 3], backend=backend)
    history = net.fit(X, y, epochs=50, lr=0.0, momentum=0.0, patience=3, shuffle=False)
    assert (history.stopped, history.epochs, history.best_epoch) == ("early_stopping", 4, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_early_stopping_restores_the_best_epoch(iris, backend):
    """Validation labels that disagree with the training labels: the better the
    network fits, the worse the validation loss, so the first epoch is the best."""
    X, y = iris
    wrong = (y + 1) % 3
    net = MLP([4, 8, 3], seed=4, backend=backend)
    history = net.fit(X, y, epochs=40, batch_size=4, lr=0.1, momentum=0.9,
                      validation_data=(X, wrong), patience=2)
    assert history.stopped == "early_stopping" and history.best_epoch == 0
    assert history.epochs == 3
    assert np.argmin(history.val_loss) == 0
    twin = MLP([4, 8, 3], seed=4, backend=backend)
    twin.fit(X, y, epochs=1, batch_size=4, lr=0.1, momentum=0.9)
    assert net.params.tobytes() == twin.params.tobytes()
    assert net.optimizer_state.tobytes() == twin.optimizer_state.tobytes()
    kept = MLP([4, 8, 3], seed=4, backend=backend)
    kept.fit(X, y, epochs=40, batch_size=4, lr=0.1, momentum=0.9,
             validation_data=(X, wrong), patience=2, restore_best=False)
    assert kept.params.tobytes() != twin.params.tobytes()


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(validation_data=np.zeros((3, 4))), TypeError, "validation_data"),
    (dict(validation_data=(np.zeros((3, 5)), np.zeros(3, int))), ValueError, "shape"),
    (dict(validation_data=(np.zeros((3, 4)), np.zeros(2, int))), ValueError, "rows"),
    (dict(patience=0), ValueError, "patience"),
    (dict(min_delta=-1.0), ValueError, "min_delta"),
    (dict(rule="classical", dampening=0.5), ValueError, "taken only by rule 'velocity'"),
    (dict(rule="nesterov_velocity", dampening=0.1), ValueError, "velocity"),
], ids=["val-not-pair", "val-shape", "val-rows", "patience", "min-delta", "dampening",
        "dampening-nesterov-velocity"])
def test_loop_arguments_are_checked_before_training(iris, kwargs, exc, match):
    X, y = iris
    net = MLP([4, 5, 3])
    before = net.params.copy()
    with pytest.raises(exc, match=match):
        net.fit(X, y, epochs=2, **kwargs)
    assert net.params.tobytes() == before.tobytes() and net.epochs == 0


# ---- binary cross-entropy: binary and multilabel classification ---------------------


def _multilabel(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    Y = np.stack([X[:, 0] + X[:, 1] > 0, X[:, 2] > 0.3, X[:, 3] - X[:, 4] > 0.5], axis=1)
    return X, Y.astype(np.int64)


def _bce(out, T):
    return float(np.mean(-(T * np.log(out) + (1 - T) * np.log(1 - out)).sum(axis=1)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_multilabel_training_with_binary_cross_entropy(backend):
    X, Y = _multilabel()
    net = MLP([5, 16, 3], output="sigmoid", loss="binary_cross_entropy", seed=1,
              backend=backend)
    start = _bce(net.predict_proba(X), Y)
    history = net.fit(X, Y, epochs=30, batch_size=8, lr=0.1, momentum=0.9)
    out = net.predict_proba(X)
    assert net.loss(X, Y) == pytest.approx(_bce(out, Y), rel=1e-12)
    assert net.loss(X, Y) < 0.5 * start
    predicted = net.predict(X)
    assert predicted.shape == Y.shape and set(np.unique(predicted)) <= {0, 1}
    np.testing.assert_array_equal(predicted, (out >= 0.5).astype(predicted.dtype))
    assert net.score(X, Y) == np.mean((predicted == Y).all(axis=1))
    assert net.score(X, Y) > 0.8
    assert len(history.accuracy) == 30 and history.accuracy[-1] > 0.7


def test_binary_cross_entropy_backends_agree_after_epochs():
    X, Y = _multilabel(seed=2)
    nets = [MLP([5, 7, 3], output="sigmoid", loss="binary_cross_entropy", seed=5,
                backend=b) for b in BACKENDS]
    for net in nets:
        net.fit(X, Y, epochs=4, batch_size=5, lr=0.05, momentum=0.9, rule="nesterov")
    assert nets[0].history_.accuracy == nets[1].history_.accuracy
    scale = np.abs(nets[1].params).max()
    assert np.abs(nets[0].params - nets[1].params).max() / scale < 1e-9


def test_binary_cross_entropy_gradient_is_y_minus_t():
    """One sigmoid unit, no hidden layer: dE/dz = y - t, so dE/dW = x (y - t)."""
    net = MLP([3, 1], output="sigmoid", loss="binary_cross_entropy", seed=0)
    x = np.array([[0.5, -1.0, 2.0]])
    for label in (0, 1):
        y = net.predict_proba(x)[0, 0]
        dW, db = net.gradients(x, np.array([label]))
        np.testing.assert_allclose(dW[0][:, 0], x[0] * (y - label), rtol=1e-12)
        np.testing.assert_allclose(db[0], [y - label], rtol=1e-12)


def test_binary_labels_with_one_unit_predict_classes():
    X, Y = _multilabel()
    y = Y[:, 0]
    net = MLP([5, 8, 1], output="sigmoid", loss="binary_cross_entropy", seed=0)
    net.fit(X, y, epochs=20, batch_size=8, lr=0.1)
    assert net.predict(X).shape == y.shape
    assert net.score(X, y) > 0.9


@pytest.mark.parametrize("output, loss", [("softmax", "squared_error"),
                                          ("identity", "binary_cross_entropy"),
                                          ("sigmoid", "cross_entropy"),
                                          ("softmax", "hinge")])
def test_unpaired_losses_are_refused(output, loss):
    with pytest.raises(ValueError, match="loss"):
        MLP([2, 3], output=output, loss=loss)


def test_binary_cross_entropy_targets_must_lie_in_zero_one():
    net = MLP([2, 2], output="sigmoid", loss="binary_cross_entropy")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        net.fit(np.zeros((2, 2)), np.array([[0.0, 2.0], [1.0, 0.0]]), epochs=1)


def test_history_defaults():
    h = History()
    assert (h.epochs, h.stopped, h.best_epoch, h.val_loss) == (0, "", None, [])


def test_masked_targets_with_masked_values_are_refused(iris):
    X, y = iris
    net = MLP([4, 5, 3])
    with pytest.raises(ValueError, match="y is a masked array with masked values"):
        net.fit(X, np.ma.array(y, mask=np.arange(len(y)) == 3), epochs=1)
    assert net.epochs == 0
    net.fit(X, np.ma.array(y), epochs=1)  # nothing masked: used as it is
    assert net.epochs == 1


def test_pandas_nullable_columns_get_a_hint():
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    X = pd.DataFrame({"a": pd.array([1, 2, None], dtype="Int64"), "b": [0.5, 1.0, 2.0]})
    with pytest.raises(TypeError, match=r"Int64.*to_numpy\(dtype=float\)"):
        MLP([2, 2]).predict(X)

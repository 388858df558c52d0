"""The two small changes to the core that the scikit-learn estimators use, tested
without scikit-learn: prediction from read-only parameters, and a trainer that
chooses each epoch's row order."""
import pickle

import numpy as np
import pytest

import momcore
from momcore import training

X = np.random.default_rng(0).normal(size=(40, 5))
y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predict_from_read_only_parameters(backend, dtype):
    net = momcore.MLP([5, 7, 3], hidden="tanh", dtype=dtype, backend=backend)
    net.fit(X, y, epochs=3, batch_size=8)
    expected = net.predict_proba(X)
    frozen = pickle.loads(pickle.dumps(net))
    frozen.params.flags.writeable = False
    frozen.optimizer_state.flags.writeable = False
    np.testing.assert_array_equal(frozen.predict_proba(X), expected)
    np.testing.assert_array_equal(frozen.predict(X), net.predict(X))
    # one private copy, made once and reused
    if backend == "c":
        copy = frozen._readonly_copy[1]
        frozen.predict_proba(X[:3])
        assert frozen._readonly_copy[1] is copy
        assert not np.shares_memory(copy, frozen.params)


def test_read_only_copy_is_not_pickled():
    net = momcore.MLP([5, 3])
    net.params.flags.writeable = False
    net.predict_proba(X)
    assert "_readonly_copy" not in net.__getstate__()


class _Reversed(training.Trainer):
    def __init__(self):
        self.calls = []

    def epoch_order(self, net, n, shuffle):
        self.calls.append((n, shuffle))
        return np.arange(n - 1, -1, -1, dtype=np.int64)


def test_trainer_chooses_the_epoch_order():
    a = momcore.MLP([5, 4, 3], seed=1)
    b = momcore.MLP([5, 4, 3], seed=1)
    trainer = _Reversed()
    a.train(X, y, trainer=trainer, epochs=2, batch_size=4, shuffle=True)
    b.fit(X[::-1], y[::-1], epochs=2, batch_size=4, shuffle=False)
    assert trainer.calls == [(40, True), (40, True)]
    np.testing.assert_allclose(a.params, b.params, rtol=1e-12, atol=1e-15)


def test_default_epoch_order_is_the_generators_permutation():
    net = momcore.MLP([5, 3], seed=4)
    state = net.rng.bit_generator.state
    order = training.Trainer().epoch_order(net, 10, True)
    net.rng.bit_generator.state = state
    np.testing.assert_array_equal(order, net.rng.permutation(10))
    np.testing.assert_array_equal(training.Trainer().epoch_order(net, 6, False), np.arange(6))

"""Tests of momcore.MLP: the compiled backend against finite differences, the lecture-note
formulas and the numpy reference backend; learning on real data; persistence; errors."""
from __future__ import annotations

import gc
import copy
import json
import math
import os
import pickle
import re
import warnings

import numpy as np
import pytest

from momcore import MLP, _core
from momcore.datasets import load_digits, load_iris, train_test_split
from momcore.schedules import Step, momentum_annealing

BACKENDS = ["c", "numpy"]
HIDDEN = ["sigmoid", "tanh", "relu", "identity"]
OUTPUTS = ["softmax", "sigmoid", "identity"]
RULES = list(_core.RULES)

FD_EPS = 1e-6  # central-difference step, float64
FD_RTOL = 1e-6  # |analytic - fd| / |fd| over the whole gradient vector
# Smallest |pre-activation| of a relu unit in a gradient check: a parameter step of FD_EPS
# moves a pre-activation by ~1e-5 at most here, so the kink at 0 is never crossed.
RELU_MARGIN = 1e-4
# C against numpy backend after several epochs, relative to the largest weight.
# float64: 1e-9, the agreement momcore promises. float32: eps = 1.19e-7; the backends sum in different orders
# (C loops / gemm against numpy's matmul), so each step differs by a few eps, and these
# differences add up over the ~hundreds of steps of 3 epochs (measured: ~4e-7, ~4 eps).
# 1e-5 (~80 eps) leaves headroom yet is far below what a wrong formula gives (~lr = 1e-2).
BACKEND_RTOL = {np.float32: 1e-5, np.float64: 1e-9}
GRAD_BACKEND_RTOL = 1e-12


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|."""
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def iris():
    data = load_iris()
    X = (data.X - data.X.mean(axis=0)) / data.X.std(axis=0)
    return X, data.y


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return train_test_split(data.X / 16, data.y, test_fraction=0.2, seed=0)


# --------------------------------------------------------------------------- gradients

# (batch, sizes, which side of the gemm threshold each layer's B*I*O lies on)
GRAD_CASES = [
    pytest.param(2, [3, 4, 2], ["loops", "loops"], id="B2-3-4-2-loops"),
    pytest.param(64, [40, 30, 20], ["gemm", "gemm"], id="B64-40-30-20-gemm"),
    pytest.param(64, [40, 30, 3], ["gemm", "loops"], id="B64-40-30-3-gemm+loops"),
    pytest.param(3, [5, 7, 6, 3], ["loops", "loops", "loops"], id="B3-5-7-6-3-loops"),
]


def _assert_gemm_sides(batch, sizes, sides):
    """Documents, against the compiled threshold, which path each layer product takes."""
    for i, side in enumerate(sides):
        macs = batch * sizes[i] * sizes[i + 1]
        assert (macs >= _core.GEMM_MIN_MACS) == (side == "gemm"), (
            f"layer {i}: B*I*O = {macs}, GEMM_MIN_MACS = {_core.GEMM_MIN_MACS}")


def _gradient_problem(batch, sizes, hidden, output, backend="c", seed=0):
    """A network with random biases and data X, y; relu nets are kept off their kinks."""
    for attempt in range(100):
        rng = np.random.default_rng([seed, attempt])
        net = MLP(sizes, hidden=hidden, output=output, seed=attempt, backend=backend)
        for b in net.biases:
            b[...] = rng.normal(scale=0.3, size=b.shape)
        X = rng.normal(size=(batch, sizes[0]))
        if output == "identity":
            y = rng.normal(size=(batch, sizes[-1]))
        else:
            y = rng.integers(0, sizes[-1], size=batch)
        if hidden != "relu" or _min_hidden_preactivation(net, X) > RELU_MARGIN:
            return net, X, y
    raise AssertionError("no kink-free relu problem found")


def _min_hidden_preactivation(net, X):
    a, smallest = X, np.inf
    for W, b in zip(net.weights[:-1], net.biases[:-1]):
        z = a @ W + b
        smallest = min(smallest, np.abs(z).min())
        a = np.maximum(z, 0)
    return smallest


def _central_differences(net, X, y, eps=FD_EPS):
    """dE/dparams by perturbing net.params in place and evaluating net.loss."""
    flat = net.params
    approx = np.empty_like(flat)
    for k in range(flat.size):
        saved = flat[k]
        flat[k] = saved + eps
        plus = net.loss(X, y)
        flat[k] = saved - eps
        minus = net.loss(X, y)
        flat[k] = saved
        approx[k] = (plus - minus) / (2 * eps)
    return approx


def _flat_gradient(net, X, y):
    dW, db = net.gradients(X, y)
    assert [g.shape for g in dW] == [W.shape for W in net.weights]
    assert [g.shape for g in db] == [b.shape for b in net.biases]
    return np.concatenate([part.ravel() for pair in zip(dW, db) for part in pair])


@pytest.mark.parametrize("batch, sizes, sides", GRAD_CASES)
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_c_gradients_match_central_differences(hidden, output, batch, sizes, sides):
    _assert_gemm_sides(batch, sizes, sides)
    net, X, y = _gradient_problem(batch, sizes, hidden, output)
    before = net.params.copy()
    analytic = _flat_gradient(net, X, y)
    approx = _central_differences(net, X, y)
    assert net.params.tobytes() == before.tobytes()
    assert np.linalg.norm(approx) > 1e-8  # a vanishing gradient would make this vacuous
    error = np.linalg.norm(analytic - approx) / np.linalg.norm(approx)
    assert error < FD_RTOL, f"relative error {error:.2e}"


@pytest.mark.parametrize("batch, sizes, sides", GRAD_CASES)
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_c_gradients_equal_numpy_gradients(hidden, output, batch, sizes, sides):
    _assert_gemm_sides(batch, sizes, sides)
    c_net, X, y = _gradient_problem(batch, sizes, hidden, output, backend="c")
    np_net, _, _ = _gradient_problem(batch, sizes, hidden, output, backend="numpy")
    assert c_net.params.tobytes() == np_net.params.tobytes()
    c_grad = _flat_gradient(c_net, X, y)
    np_grad = _flat_gradient(np_net, X, y)
    # Elements that cancel to near 0 (sums over the batch) carry an absolute, not a
    # relative, rounding error: hence the atol scaled by the gradient's size.
    np.testing.assert_allclose(c_grad, np_grad, rtol=GRAD_BACKEND_RTOL,
                               atol=GRAD_BACKEND_RTOL * np.abs(np_grad).max())


# --------------------------------------------------------------------------- lecture notes


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _lecture_step(weights, biases, x, t, lr):
    """lr * delta_j * y_k for every weight (y_k = 1 for a bias), by the lecture notes'
    formulas for a 2-layer sigmoid net with squared error, in flat-buffer order."""
    (W0, W1), (b0, b1) = weights, biases
    n_in, n_hidden, n_out = len(x), len(b0), len(b1)
    y_h = [_sigmoid(sum(x[k] * W0[k][j] for k in range(n_in)) + b0[j])
           for j in range(n_hidden)]
    y_o = [_sigmoid(sum(y_h[j] * W1[j][i] for j in range(n_hidden)) + b1[i])
           for i in range(n_out)]
    delta_o = [(t[i] - y_o[i]) * y_o[i] * (1 - y_o[i]) for i in range(n_out)]
    delta_h = [y_h[j] * (1 - y_h[j]) * sum(delta_o[i] * W1[j][i] for i in range(n_out))
               for j in range(n_hidden)]
    step = [lr * delta_h[j] * x[k] for k in range(n_in) for j in range(n_hidden)]
    step += [lr * delta_h[j] for j in range(n_hidden)]
    step += [lr * delta_o[i] * y_h[j] for j in range(n_hidden) for i in range(n_out)]
    step += [lr * delta_o[i] for i in range(n_out)]
    return np.array(step)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sizes, x, t", [
    pytest.param([2, 2, 1], [0.35, 0.9], [0.5], id="2-2-1"),
    pytest.param([3, 2, 2], [0.5, -1.0, 2.0], [0.9, 0.1], id="3-2-2"),
])
def test_lecture_note_rule_with_momentum(sizes, x, t, backend):
    lr, momentum = 0.5, 0.9
    net = MLP(sizes, hidden="sigmoid", output="sigmoid", seed=3, backend=backend)
    X, T = np.array([x]), np.array([t])

    def as_lists(net):
        return ([W.tolist() for W in net.weights], [b.tolist() for b in net.biases])

    w0 = net.params.copy()
    # dE/dw_kj = -delta_j y_k: with lr = 1 the lecture step is minus the gradient.
    np.testing.assert_allclose(_flat_gradient(net, X, T), -_lecture_step(*as_lists(net), x, t, 1.0),
                               rtol=1e-12, atol=1e-16)
    delta_prev = _lecture_step(*as_lists(net), x, t, lr)  # momentum * 0 on the first step
    net.fit(X, T, epochs=1, batch_size=1, lr=lr, momentum=momentum, shuffle=False)
    w1 = net.params.copy()
    np.testing.assert_allclose(w1 - w0, delta_prev, rtol=1e-10, atol=1e-15)

    delta = _lecture_step(*as_lists(net), x, t, lr) + momentum * delta_prev
    net.fit(X, T, epochs=1, batch_size=1, lr=lr, momentum=momentum, shuffle=False)
    assert np.abs(momentum * delta_prev).max() > 0.1 * np.abs(delta).max()  # momentum matters
    np.testing.assert_allclose(net.params - w1, delta, rtol=1e-10, atol=1e-15)
    # classical keeps the previous weight change as its state
    np.testing.assert_allclose(net.optimizer_state, delta, rtol=1e-12, atol=1e-16)


# --------------------------------------------------------------------------- backends agree

RULE_CASES = [
    pytest.param("classical", {}, id="classical"),
    pytest.param("nesterov", {}, id="nesterov"),
    pytest.param("velocity", {"dampening": 0.5}, id="velocity-dampening"),
    pytest.param("ema", {}, id="ema"),
    pytest.param("one_step", {}, id="one_step"),
    pytest.param("classical", {"weight_decay": 1e-3}, id="classical-weight_decay"),
    pytest.param("nesterov", {"weight_decay": 1e-3}, id="nesterov-weight_decay"),
]
BATCHES = [pytest.param(1, id="online"), pytest.param(16, id="batch16"),
           pytest.param(None, id="full")]


@pytest.mark.parametrize("batch_size", BATCHES)
@pytest.mark.parametrize("rule, extra", RULE_CASES)
def test_backends_agree_after_epochs_float64(digits, rule, extra, batch_size):
    X, y = digits[0][:300], digits[2][:300]
    sizes = [64, 40, 10]
    # batch 16: the first layer goes to gemm, the second to loops
    assert 16 * 64 * 40 >= _core.GEMM_MIN_MACS > 16 * 40 * 10
    nets = {}
    for backend in BACKENDS:
        net = MLP(sizes, seed=1, backend=backend)
        # lr 0.01: with lr 0.1 and momentum 0.9 online learning is chaotic enough to
        # amplify rounding differences exponentially (1e-14 -> 1e-6 in three epochs)
        net.fit(X, y, epochs=3, batch_size=batch_size or len(X), lr=0.01, momentum=0.9,
                rule=rule, **extra)
        nets[backend] = net
    c_net, np_net = nets["c"], nets["numpy"]
    assert c_net.steps == np_net.steps
    assert _rel_diff(c_net.params, np_net.params) < BACKEND_RTOL[np.float64]
    assert _rel_diff(c_net.optimizer_state, np_net.optimizer_state) < BACKEND_RTOL[np.float64]
    assert np.abs(c_net.optimizer_state).max() > 0


@pytest.mark.parametrize("batch_size", BATCHES)
@pytest.mark.parametrize("rule, extra", [RULE_CASES[0], RULE_CASES[2], RULE_CASES[5]])
def test_backends_agree_after_epochs_float32(digits, rule, extra, batch_size):
    X, y = digits[0][:300], digits[2][:300]
    nets = {}
    for backend in BACKENDS:
        net = MLP([64, 40, 10], seed=1, dtype=np.float32, backend=backend)
        net.fit(X, y, epochs=3, batch_size=batch_size or len(X), lr=0.01, momentum=0.9,
                rule=rule, **extra)
        assert net.params.dtype == np.float32 and net.optimizer_state.dtype == np.float32
        nets[backend] = net
    assert _rel_diff(nets["c"].params, nets["numpy"].params) < BACKEND_RTOL[np.float32]


def test_backends_share_initial_weights():
    for hidden in HIDDEN:
        c_net = MLP([5, 7, 3], hidden=hidden, seed=11)
        np_net = MLP([5, 7, 3], hidden=hidden, seed=11, backend="numpy")
        assert c_net.params.tobytes() == np_net.params.tobytes()
    assert MLP([5, 7, 3], seed=12).params.tobytes() != c_net.params.tobytes()


# --------------------------------------------------------------------------- learning


@pytest.mark.parametrize("backend", BACKENDS)
def test_online_learning_iris(iris, backend):
    X, y = iris
    net = MLP([4, 8, 3], seed=0, backend=backend)
    history = net.fit(X, y, epochs=50, batch_size=1, lr=0.05, momentum=0.9)
    assert history.epochs == 50 and history.stopped == "epochs"
    assert history.loss[-1] < history.loss[0]
    assert net.score(X, y) >= 0.95


def test_digits_test_accuracy(digits):
    X_train, X_test, y_train, y_test = digits
    net = MLP([64, 128, 10], seed=0)
    history = net.fit(X_train, y_train, epochs=5, batch_size=1, lr=0.05, momentum=0.9)
    assert history.accuracy[-1] > history.accuracy[0]
    assert net.score(X_test, y_test) >= 0.93


def test_momentum_reaches_target_loss_in_fewer_epochs(iris):
    X, y = iris
    histories = {}
    for momentum in (0.0, 0.9):
        net = MLP([4, 8, 3], seed=0)
        histories[momentum] = net.fit(X, y, epochs=500, lr=0.01, momentum=momentum,
                                      target_loss=0.1)
        assert histories[momentum].stopped == "target_loss"
        assert histories[momentum].loss[-1] <= 0.1 < histories[momentum].loss[-2]
    # measured: 12 epochs with momentum 0.9, 95 without
    assert 2 * histories[0.9].epochs < histories[0.0].epochs


# --------------------------------------------------------------------------- persistence


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", ["classical", "velocity"])
def test_save_load_continues_bit_identically(tmp_path, iris, backend, rule):
    X, y = iris
    kwargs = dict(batch_size=4, lr=0.05, momentum=0.9, rule=rule, shuffle=True,
                  lr_schedule=Step(0.05, 0.5, 3))
    straight = MLP([4, 6, 3], hidden="tanh", seed=5, backend=backend)
    straight.fit(X, y, epochs=2, **kwargs)
    path = tmp_path / "model.npz"
    straight.save(path)
    straight.fit(X, y, epochs=3, **kwargs)

    loaded = MLP.load(path)
    assert (loaded.sizes, loaded.hidden, loaded.output, loaded.dtype, loaded.backend) == (
        [4, 6, 3], "tanh", "softmax", np.dtype(np.float64), backend)
    assert loaded.epochs == 2 and loaded.steps == 2 * math.ceil(len(X) / 4)
    assert np.abs(loaded.optimizer_state).max() > 0
    loaded.fit(X, y, epochs=3, **kwargs)
    assert loaded.params.tobytes() == straight.params.tobytes()
    assert loaded.optimizer_state.tobytes() == straight.optimizer_state.tobytes()
    assert (loaded.epochs, loaded.steps) == (straight.epochs, straight.steps)
    assert loaded.history_.lr == straight.history_.lr


def test_loaded_views_and_predictions(tmp_path, iris):
    X, y = iris
    net = MLP([4, 5, 3], seed=2)
    net.fit(X, y, epochs=1)
    net.save(tmp_path / "m.npz")
    loaded = MLP.load(tmp_path / "m.npz")
    assert loaded.predict_proba(X).tobytes() == net.predict_proba(X).tobytes()
    assert all(np.shares_memory(W, loaded.params) for W in loaded.weights)
    assert all(np.shares_memory(b, loaded.params) for b in loaded.biases)


def _saved_arrays(tmp_path):
    """The arrays of a real saved model and its metadata dict."""
    net = MLP([3, 4, 2], seed=0)
    net.save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as data:
        arrays = {name: data[name] for name in data.files}
    return arrays, json.loads(str(arrays["metadata"][()]))


def _write_npz(path, arrays, meta=None):
    if meta is not None:
        arrays = dict(arrays, metadata=np.array(json.dumps(meta)))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


MISMATCHES = [
    pytest.param(lambda a, m: (dict(a, params=a["params"][:-1]), m), "params", id="short-params"),
    pytest.param(lambda a, m: (dict(a, state=a["state"].astype(np.float32)), m), "state",
                 id="float32-state"),
    pytest.param(lambda a, m: (a, dict(m, version=2)), "version 2", id="version-2"),
    pytest.param(lambda a, m: (a, dict(m, format="other.Model")), "not a momcore",
                 id="other-format"),
    pytest.param(lambda a, m: (a, dict(m, sizes=[3, 5, 2])), "params", id="sizes-disagree"),
    pytest.param(lambda a, m: (a, {k: v for k, v in m.items() if k != "rng"}), "rng",
                 id="missing-rng"),
    pytest.param(lambda a, m: (a, dict(m, hidden="softplus")), "hidden", id="bad-hidden"),
    pytest.param(lambda a, m: ({k: v for k, v in a.items() if k != "state"}, m), "missing",
                 id="missing-state"),
    pytest.param(lambda a, m: (dict(a, metadata=np.array("{not json")), None), "corrupt",
                 id="metadata-not-json"),
]


@pytest.mark.parametrize("mutate, match", MISMATCHES)
def test_load_mismatched_file(tmp_path, mutate, match):
    arrays, meta = _saved_arrays(tmp_path)
    arrays, meta = mutate(arrays, meta)
    path = tmp_path / "bad.npz"
    _write_npz(path, arrays, meta)
    with pytest.raises(ValueError, match=match):
        MLP.load(path)


def _load_error(path) -> str:
    """The message of the ValueError that MLP.load(path) raises (a file handle left
    open would show as a ResourceWarning, an error under this suite's filters)."""
    try:
        MLP.load(path)
    except ValueError as exc:
        message = str(exc)
    else:
        raise AssertionError(f"MLP.load({path}) did not raise ValueError")
    gc.collect()
    return message


def test_load_truncated_file(tmp_path):
    _saved_arrays(tmp_path)
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "half.npz").write_bytes(raw[: len(raw) // 2])
    assert re.search("corrupt or truncated", _load_error(tmp_path / "half.npz"))
    (tmp_path / "empty.npz").write_bytes(b"")
    assert re.search("corrupt or truncated", _load_error(tmp_path / "empty.npz"))
    np.save(tmp_path / "array.npy", np.zeros(3))  # a .npy file, not an .npz archive
    assert re.search("corrupt or truncated", _load_error(tmp_path / "array.npy"))


@pytest.mark.parametrize("prefix", [b"", b"PK\x03\x04"], ids=["random", "zip-magic+random"])
def test_load_random_bytes_raises_value_error(tmp_path, prefix):
    path = tmp_path / "noise.npz"
    path.write_bytes(prefix + np.random.default_rng(0).bytes(4096))
    assert _load_error(path)


def test_failed_load_closes_the_file(tmp_path):
    _saved_arrays(tmp_path)
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "half.npz").write_bytes(raw[: len(raw) // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            MLP.load(tmp_path / "half.npz")
        except ValueError:
            pass
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked


def test_load_random_bytes_names_the_problem(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="corrupt|not a momcore"):
        MLP.load(path)


class _Exploit:
    """Unpickling this creates a directory: evidence that code from the file ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_load_never_unpickles(tmp_path):
    arrays, meta = _saved_arrays(tmp_path)
    marker = str(tmp_path / "code-ran")
    payload = np.array([_Exploit(marker)], dtype=object)
    for name in ("params", "metadata"):
        _write_npz(tmp_path / f"{name}.npz", dict(arrays, **{name: payload}),
                   meta if name != "metadata" else None)
        with pytest.raises(ValueError, match=r"npz: holds object arrays \(pickled data\)"):
            MLP.load(tmp_path / f"{name}.npz")
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(ValueError):
        MLP.load(tmp_path / "raw.pkl")
    assert not os.path.exists(marker)


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch, iris):
    X, y = iris
    net = MLP([4, 5, 3], seed=0)
    path = tmp_path / "model.npz"
    net.save(path)
    saved = net.params.copy()
    net.fit(X, y, epochs=1)

    def savez_that_fails_midway(file, *args, **kwargs):
        file.write(b"PK\x03\x04" + b"\0" * 1000)
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", savez_that_fails_midway)
    with pytest.raises(OSError, match="disk full"):
        net.save(path)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    assert MLP.load(path).params.tobytes() == saved.tobytes()


# --------------------------------------------------------------------------- non-finite loss


def test_nonfinite_loss_stops_fit_with_last_finite_weights():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 3))
    Y = rng.normal(size=(32, 2)) * 10

    def lr_schedule(epoch):  # three sane epochs, then a step size that diverges
        return 1e-3 if epoch < 3 else 5.0

    nets = {}
    for backend in BACKENDS:
        net = MLP([3, 8, 2], hidden="identity", output="identity", seed=0, backend=backend)
        # The numpy backend warns on the overflow that makes the loss inf; the C one
        # does not. Silenced here: this test is about the error and the kept weights.
        with np.errstate(over="ignore", invalid="ignore"), \
                pytest.raises(FloatingPointError, match="non-finite"):
            net.fit(X, Y, epochs=10, batch_size=4, lr_schedule=lr_schedule, momentum=0.9)
        assert np.isfinite(net.params).all() and np.isfinite(net.optimizer_state).all()
        assert net.history_.epochs == 3 and net.epochs == 3
        assert all(np.isfinite(net.history_.loss))
        assert np.abs(net.params).max() > 1e10  # it did diverge before stopping
        nets[backend] = net
    c_net, np_net = nets["c"], nets["numpy"]
    assert c_net.steps == np_net.steps
    assert _rel_diff(c_net.params, np_net.params) < BACKEND_RTOL[np.float64]


# --------------------------------------------------------------------------- bad input


def _call(method, X=None, y=None, **kwargs):
    """fit/predict/... of an iris-shaped net on a bad argument."""
    def run(net, X_ok, y_ok):
        args = [X_ok if X is None else X]
        if method != "predict":
            args.append(y_ok if y is None else y)
        if method == "fit":
            kwargs.setdefault("epochs", 1)
        return getattr(net, method)(*args, **kwargs)
    return run


BAD_CALLS = [
    pytest.param(_call("fit", X=np.zeros((150, 5))), ValueError, r"shape \(n, 4\)",
                 id="fit-feature-count"),
    pytest.param(_call("predict", X=np.zeros((3, 3))), ValueError, r"shape \(n, 4\)",
                 id="predict-feature-count"),
    pytest.param(_call("predict", X=np.zeros(4)), ValueError, r"shape \(n, 4\)",
                 id="predict-1d-X"),
    pytest.param(_call("fit", y=np.full(150, 3)), ValueError, r"class labels must lie in \[0, 3\)",
                 id="label-too-big"),
    pytest.param(_call("score", y=np.full(150, -1)), ValueError, "class labels",
                 id="label-negative"),
    pytest.param(_call("fit", X=np.where(np.eye(150, 4) > 0, np.nan, 0.0)), ValueError, "NaN",
                 id="nan-in-X"),
    pytest.param(_call("predict", X=np.full((2, 4), np.inf)), ValueError, "NaN or inf",
                 id="inf-in-X"),
    pytest.param(_call("fit", X=np.zeros((0, 4)), y=np.zeros(0, int)), ValueError, "empty",
                 id="empty-X"),
    pytest.param(_call("predict", X=np.full((2, 4), "a")), TypeError, "real numbers",
                 id="string-X"),
    pytest.param(_call("fit", X=np.zeros((150, 4), complex)), TypeError, "real numbers",
                 id="complex-X"),
    pytest.param(_call("fit", y=np.zeros(149, int)), ValueError, "150 rows", id="short-y"),
    pytest.param(_call("loss", y=np.zeros(151, int)), ValueError, "150 rows", id="long-y"),
    pytest.param(_call("fit", y=np.zeros(150)), ValueError, "integer class labels",
                 id="float-labels"),
    pytest.param(_call("fit", y=np.full((150, 3), np.nan)), ValueError, "finite", id="nan-target"),
    pytest.param(_call("fit", epochs=-1), ValueError, "epochs", id="epochs-negative"),
    pytest.param(_call("fit", epochs=2.0), ValueError, "epochs", id="epochs-float"),
    pytest.param(_call("fit", batch_size=0), ValueError, "batch_size", id="batch_size-0"),
    pytest.param(_call("fit", momentum=1.0), ValueError, r"momentum must lie in \(-1, 1\)",
                 id="momentum-1"),
    pytest.param(_call("fit", lr=-0.1), ValueError, "lr must be a finite number >= 0",
                 id="lr-negative"),
    pytest.param(_call("fit", lr=float("nan")), ValueError, "lr: .*must be finite",
                 id="lr-nan"),
    pytest.param(_call("fit", rule="adam"), ValueError, "rule must be one of", id="rule-unknown"),
    pytest.param(_call("fit", rule="velocity", dampening=1.0), ValueError, "dampening",
                 id="dampening-1"),
    pytest.param(_call("fit", weight_decay=-1e-3), ValueError, "weight_decay",
                 id="weight_decay-negative"),
    pytest.param(_call("fit", lr="0.1"), TypeError, "lr: .*a number or a schedule",
                 id="lr-string"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("call, exc, match", BAD_CALLS)
def test_bad_input_raises_and_leaves_model_untouched(iris, backend, call, exc, match):
    X, y = iris
    net = MLP([4, 5, 3], seed=0, backend=backend)
    net.fit(X, y, epochs=1)
    params, state = net.params.copy(), net.optimizer_state.copy()
    with pytest.raises(exc, match=match):
        call(net, X, y)
    assert net.params.tobytes() == params.tobytes()
    assert net.optimizer_state.tobytes() == state.tobytes()
    assert net.epochs == 1


@pytest.mark.parametrize("kwargs, exc, match", [
    pytest.param(dict(sizes=[4]), ValueError, "sizes", id="one-size"),
    pytest.param(dict(sizes=[]), ValueError, "sizes", id="no-sizes"),
    pytest.param(dict(sizes=[4, 0, 3]), ValueError, "sizes", id="zero-width"),
    pytest.param(dict(sizes=[4, 2.5, 3]), ValueError, "sizes", id="float-width"),
    pytest.param(dict(sizes=[4, True, 3]), ValueError, "sizes", id="bool-width"),
    pytest.param(dict(sizes="abc"), ValueError, "sizes", id="string-sizes"),
    pytest.param(dict(hidden="softplus"), ValueError, "hidden must be one of", id="hidden"),
    pytest.param(dict(output="tanh"), ValueError, "output must be one of", id="output"),
    pytest.param(dict(backend="cuda"), ValueError, "backend must be one of", id="backend"),
    pytest.param(dict(dtype=np.float16), TypeError, "float32 or float64", id="dtype-float16"),
    pytest.param(dict(dtype=np.int64), TypeError, "float32 or float64", id="dtype-int64"),
    pytest.param(dict(seed=1.5), TypeError, "seed", id="seed-float"),
])
def test_bad_construction(kwargs, exc, match):
    kwargs = dict({"sizes": [4, 5, 3]}, **kwargs)
    with pytest.raises(exc, match=match):
        MLP(kwargs.pop("sizes"), **kwargs)


@pytest.mark.parametrize("kwargs", [pytest.param({"target_loss": "0.1"}, id="target_loss-str"),
                                    pytest.param({"callback": 5}, id="callback-int")])
def test_bad_stop_arguments_rejected_before_training(iris, kwargs):
    X, y = iris
    net = MLP([4, 5, 3], seed=0)
    params = net.params.copy()
    with pytest.raises((TypeError, ValueError), match="target_loss|callback"):
        net.fit(X, y, epochs=2, **kwargs)
    assert net.params.tobytes() == params.tobytes()


# --------------------------------------------------------------------------- fit semantics


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_size", [1, 7])
def test_consecutive_fits_continue(iris, backend, batch_size):
    X, y = iris
    kwargs = dict(batch_size=batch_size, lr=0.02, momentum=0.9, shuffle=True)
    once = MLP([4, 6, 3], seed=4, backend=backend)
    once.fit(X, y, epochs=5, **kwargs)
    split = MLP([4, 6, 3], seed=4, backend=backend)
    split.fit(X, y, epochs=2, **kwargs)
    split.fit(X, y, epochs=3, **kwargs)
    assert split.params.tobytes() == once.params.tobytes()
    assert split.optimizer_state.tobytes() == once.optimizer_state.tobytes()
    assert (split.epochs, split.steps) == (once.epochs, once.steps) == (
        5, 5 * math.ceil(len(X) / batch_size))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("new_rule", [r for r in RULES if r != "classical"] + ["classical"])
def test_changed_rule_starts_fresh_state(iris, backend, new_rule):
    X, y = iris
    kwargs = dict(batch_size=10, lr=0.02, momentum=0.9, shuffle=False)
    first = MLP([4, 6, 3], seed=4, backend=backend)
    first.fit(X, y, epochs=2, rule="classical", **kwargs)
    assert np.abs(first.optimizer_state).max() > 0
    # the reference: the same weights with a state that has never been used
    fresh = MLP([4, 6, 3], seed=4, backend=backend)
    np.copyto(fresh.params, first.params)
    first.fit(X, y, epochs=2, rule=new_rule, **kwargs)
    fresh.fit(X, y, epochs=2, rule=new_rule, **kwargs)
    same = first.params.tobytes() == fresh.params.tobytes()
    # a changed rule forgets the state; the same rule carries it over
    assert same == (new_rule != "classical")


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_restores_initial_weights(iris, backend):
    X, y = iris
    net = MLP([4, 6, 3], seed=9, backend=backend)
    initial = net.params.copy()
    views = net.weights + net.biases
    first = net.fit(X, y, epochs=2, rule="velocity")
    after_first = net.params.copy()
    assert not np.array_equal(after_first, initial)
    net.reset()
    assert net.params.tobytes() == initial.tobytes()
    assert not net.optimizer_state.any()
    assert (net.epochs, net.steps) == (0, 0)
    assert all(np.shares_memory(v, net.params) for v in views)
    # the generator is reset too: training again repeats the first run exactly
    second = net.fit(X, y, epochs=2, rule="velocity")
    assert net.params.tobytes() == after_first.tobytes()
    assert second.loss == first.loss


def test_lr_schedule_per_epoch(iris):
    X, y = iris
    schedule = Step(0.1, 0.5, 2)
    momentum = momentum_annealing(0.5, 0.9, epochs=4)
    net = MLP([4, 6, 3], seed=1)
    history = net.fit(X, y, epochs=5, lr_schedule=schedule, momentum_schedule=momentum)
    assert history.lr == [0.1, 0.1, 0.05, 0.05, 0.025]
    assert history.momentum == [momentum(e) for e in range(5)]
    # the epoch count carries over between fit calls
    history = net.fit(X, y, epochs=2, lr_schedule=schedule, momentum_schedule=momentum)
    assert history.lr == [0.025, 0.0125] and history.momentum == [0.9, 0.9]
    # ... and the scheduled values are the ones applied
    by_hand = MLP([4, 6, 3], seed=1)
    for epoch in range(7):
        by_hand.fit(X, y, epochs=1, lr=schedule(epoch), momentum=momentum(epoch))
    assert by_hand.params.tobytes() == net.params.tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
def test_callback_can_stop(iris, backend):
    X, y = iris
    seen = []

    def callback(epoch, logs):
        seen.append((epoch, sorted(logs)))
        return None if epoch < 2 else False

    net = MLP([4, 6, 3], seed=1, backend=backend)
    history = net.fit(X, y, epochs=10, callback=callback)
    assert history.stopped == "callback" and history.epochs == 3 and net.epochs == 3
    assert [e for e, _ in seen] == [0, 1, 2]
    assert seen[0][1] == ["accuracy", "loss", "lr", "momentum", "seconds"]
    assert len(history.accuracy) == len(history.seconds) == 3


def test_history_without_stop(iris):
    X, y = iris
    history = MLP([4, 6, 3]).fit(X, y, epochs=0)
    assert history.epochs == 0 and history.stopped == "epochs"
    Y = np.eye(3)[y] * 0.8 + 0.1
    history = MLP([4, 6, 3], output="sigmoid").fit(X, Y, epochs=2)
    assert history.epochs == 2 and history.accuracy == []  # regression targets: no accuracy


def test_verbose_prints_one_line_per_epoch(iris, capsys):
    X, y = iris
    net = MLP([4, 6, 3], seed=1)
    net.fit(X, y, epochs=2)
    assert capsys.readouterr().out == ""
    history = net.fit(X, y, epochs=3, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for number, (line, loss) in enumerate(zip(lines, history.loss), start=3):
        assert line.split()[:2] == ["epoch", str(number)]
        assert f"{loss:.6f}" in line


# --------------------------------------------------------------------------- memory


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="Linux only")
def test_compiled_fit_does_not_grow_memory(digits):
    X, y = digits[0], digits[2]
    rss = {}

    def callback(epoch, logs):
        if epoch in (4, 199):
            gc.collect()
            rss[epoch] = _rss_bytes()

    net = MLP([64, 64, 10], seed=0)
    history = net.fit(X, y, epochs=200, batch_size=1, lr=0.01, momentum=0.9,
                      callback=callback)
    assert history.epochs == 200
    grown = rss[199] - rss[4]
    # 195 epochs x 1437 steps: a leak of even 4 bytes per step would be ~1.1 MiB
    assert grown < 2**20, f"RSS grew by {grown / 2**20:.2f} MiB"


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="Linux only")
def test_predict_on_varying_row_counts_does_not_grow_memory(digits):
    X = digits[1]
    net = MLP([64, 128, 10], seed=0)
    net.predict(X[:256])
    gc.collect()
    before = _rss_bytes()
    for n in range(1, 257):
        net.predict(X[:n])
    gc.collect()
    grown = _rss_bytes() - before
    # one 256-row workspace set of this net is ~1.2 MiB
    assert grown < 4 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB"


# --------------------------------------------------------------------------- layout, predict


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("sizes", [[3, 4, 2], [5, 7, 6, 3], [2, 1]],
                         ids=lambda s: "-".join(map(str, s)))
def test_weights_and_biases_are_views(sizes, dtype):
    net = MLP(sizes, dtype=dtype)
    assert net.params.dtype == dtype and net.params.shape == (net.n_params,)
    assert net.n_params == sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))
    assert len(net.weights) == len(net.biases) == len(sizes) - 1
    for i, (W, b) in enumerate(zip(net.weights, net.biases)):
        assert W.shape == (sizes[i], sizes[i + 1]) and b.shape == (sizes[i + 1],)
        assert np.shares_memory(W, net.params) and np.shares_memory(b, net.params)
    net.biases[-1][0] = 7.0
    assert 7.0 in net.params
    assert net.optimizer_state.shape == net.params.shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_shapes_and_probabilities(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 5))  # more rows than one compiled predict sweep (256)
    net = MLP([5, 7, 4], seed=0, backend=backend)
    proba = net.predict_proba(X)
    assert proba.shape == (600, 4) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-14)
    labels = net.predict(X)
    assert labels.shape == (600,) and np.issubdtype(labels.dtype, np.integer)
    np.testing.assert_array_equal(labels, proba.argmax(axis=1))
    # a row predicted alone gives the same answer as within the batch
    np.testing.assert_allclose(net.predict_proba(X[599:600]), proba[599:600], rtol=1e-14)
    reference = MLP([5, 7, 4], seed=0, backend="numpy").predict_proba(X)
    np.testing.assert_allclose(proba, reference, rtol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_identity_output_predicts_outputs(backend):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 3))
    net = MLP([3, 4, 2], hidden="tanh", output="identity", backend=backend)
    out = net.predict(X)
    assert out.shape == (10, 2)
    np.testing.assert_array_equal(out, net.predict_proba(X))
    W0, W1 = net.weights
    b0, b1 = net.biases
    np.testing.assert_allclose(out, np.tanh(X @ W0 + b0) @ W1 + b1, rtol=1e-13)
    # R^2 of the network's own outputs as targets is exactly 1
    assert net.score(X, out) == pytest.approx(1.0, abs=1e-12)


def test_sigmoid_output_predicts_labels():
    X = np.random.default_rng(2).normal(size=(9, 3))
    net = MLP([3, 4, 3], output="sigmoid")
    proba = net.predict_proba(X)
    assert ((proba > 0) & (proba < 1)).all()
    np.testing.assert_array_equal(net.predict(X), proba.argmax(axis=1))


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_any_memory_order_of_targets_is_accepted(backend):
    # A Fortran-ordered 2-D target gives the same result as a C-ordered one.
    net = MLP([3, 4, 2], output="identity", backend=backend, seed=2)
    X = np.random.default_rng(0).standard_normal((5, 3))
    Y = np.random.default_rng(1).standard_normal((5, 2))
    dW_c, db_c = net.gradients(X, Y)
    dW_f, db_f = net.gradients(X, np.asfortranarray(Y))
    for a, b in zip(dW_c + db_c, dW_f + db_f):
        np.testing.assert_array_equal(a, b)
    assert net.loss(X, np.asfortranarray(Y)) == net.loss(X, Y)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_binary_classification_with_one_sigmoid_unit(backend):
    # Labels 0/1 with a single sigmoid output: the unit says "class 1".
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 2))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    net = MLP([2, 4, 1], output="sigmoid", seed=0, backend=backend)
    history = net.fit(X, y, epochs=20, lr=0.1, momentum=0.9)
    predicted = net.predict(X)
    assert set(np.unique(predicted)) <= {0, 1}
    np.testing.assert_array_equal(predicted, (net.predict_proba(X)[:, 0] >= 0.5).astype(int))
    assert net.score(X, y) == np.mean(predicted == y) > 0.95
    assert history.accuracy[-1] > 0.9
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 2\)"):
        net.fit(X, y + 1, epochs=1)


def test_very_wide_layers_predict_and_score():
    """The compiled predict workspace is sized from the layer widths: 256 rows of a
    2**23-wide layer would pass the workspace limit (and take 8 GiB)."""
    net = MLP([1, 2**23, 1], output="identity", dtype=np.float32, seed=0)
    X = np.array([[0.5], [-1.0], [2.0]], np.float32)
    out = net.predict(X)
    assert out.shape == (3, 1) and np.isfinite(out).all()
    ref = MLP([1, 2**23, 1], output="identity", dtype=np.float32, seed=0,
                      backend="numpy")
    np.testing.assert_allclose(out, ref.predict(X), rtol=1e-3, atol=1e-3)
    assert np.isfinite(net.score(X, np.array([[1.0], [2.0], [3.0]])))
    cW, _ = net.curvature(X, np.ones((3, 1)))
    assert cW[0].shape == (1, 2**23)


def test_the_buffers_cannot_be_rebound():
    net = MLP([4, 5, 3], seed=1)
    before = net.params
    for name in ("params", "weights", "biases"):
        with pytest.raises(AttributeError, match="cannot be rebound"):
            setattr(net, name, np.zeros(net.n_params))
    assert net.params is before and net.optimizer.param_groups[0]["params"][0] is before
    net.params[:] = 0.5  # writing into the buffer is the way
    assert (net.weights[0] == 0.5).all() and net.optimizer.param_groups[0]["params"][0] is before


@pytest.mark.parametrize("make", [copy.copy, copy.deepcopy, lambda n: pickle.loads(pickle.dumps(n))],
                         ids=["copy", "deepcopy", "pickle"])
def test_copies_are_deep_and_train_on_their_own(make):
    X, y = np.random.default_rng(0).standard_normal((30, 4)), np.arange(30) % 3
    net = MLP([4, 5, 3], seed=1)
    net.fit(X, y, epochs=1)
    twin = make(net)
    assert not np.shares_memory(twin.params, net.params)
    assert twin.optimizer.param_groups[0]["params"][0] is twin.params
    assert twin.weights[0].base is twin.params or np.shares_memory(twin.weights[0], twin.params)
    assert twin._training is not net._training
    saved = net.params.copy()
    twin.fit(X, y, epochs=1)
    assert np.array_equal(net.params, saved)  # the original did not move
    net.fit(X, y, epochs=1)
    assert np.array_equal(net.params, twin.params) and net.steps == twin.steps

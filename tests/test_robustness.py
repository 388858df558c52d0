"""Numerical robustness at the extremes, in float32 and float64.

- MLP outputs and losses stay finite for extreme pre-activations (|z| up to 1e4): softmax
  rows are probabilities summing to 1, cross-entropy is finite (log clamped at the
  smallest normal number), sigmoid outputs lie in [0, 1] and keep their relative precision
  in the far tail, tanh/relu/identity hidden layers feed such values on; ``predict_proba``,
  ``loss``, ``gradients`` and a zero-lr ``fit`` agree with closed forms and between the
  compiled and the numpy backend. The pre-activations are built by writing W and b into
  ``net.params`` (through the ``weights``/``biases`` views) for fixed inputs.
- float32 training reaches the float64 accuracy targets (iris online, digits 64-128-10)
  and ends close to the float64 run.
- The momentum kernel on subnormal and huge (near the float maximum) values equals the
  reference bit for bit, on every SIMD path and with threads, including overflow to inf.
- NaN is never hidden (tests at the end): the cross-entropy clamp lets a NaN output
  through, so fit stops when the weights become NaN, and relu keeps NaN, in both backends.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import RULES

import momcore
from momcore import _core
from momcore import reference as ref
from momcore import registry
from momcore.datasets import load_digits, load_iris, train_test_split

BACKENDS = ["c", "numpy"]
DTYPES = [np.float32, np.float64]
HIDDEN = ["sigmoid", "tanh", "relu", "identity"]
OUTPUTS = ["softmax", "sigmoid", "identity"]
# |z| scales: far beyond exp's range (1e4, 1e3), just past exp overflow in float64 (710)
# and float32 (89), and moderate (30).
SCALES = [1e4, 1e3, 710.0, 89.0, 30.0]
EPS = {np.float32: float(np.finfo(np.float32).eps), np.float64: float(np.finfo(np.float64).eps)}


def _ids(x):
    return getattr(x, "__name__", None) or str(x)


# ---- extreme pre-activations -------------------------------------------------------------

X_EXTREME = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, -1.0], [0.5, -0.5],
                      [0.0, 0.0]])
LABELS = np.array([0, 0, 1, 2, 1, 2])  # the class favoured by z, and others


def _layer(scale: float) -> tuple[np.ndarray, np.ndarray]:
    """W (2, 3), b (3,) giving z = X_EXTREME @ W + b with entries in {0, +-s/2, +-s}:
    rows [s, -s, s/2], [-s, s, s/2], [0, 0, s], [0, 0, -s], [s, -s, 0], b."""
    W = scale * np.array([[1.0, -1.0, 0.5], [-1.0, 1.0, 0.5]])
    b = np.array([0.0, 0.0, 0.0])
    return W, b


def _single_layer_net(output: str, dtype, backend: str, scale: float) -> momcore.MLP:
    net = momcore.MLP([2, 3], output=output, dtype=dtype, backend=backend)
    W, b = _layer(scale)
    net.weights[0][...] = W
    net.biases[0][...] = b
    return net


def _z(scale: float) -> np.ndarray:
    W, b = _layer(scale)
    z = X_EXTREME @ W + b
    assert np.abs(z).max() == scale  # exact: the values are scale times small dyadics
    return z


def _softmax64(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid64(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


def _expected_output(output: str, z: np.ndarray) -> np.ndarray:
    return {"softmax": _softmax64, "sigmoid": _sigmoid64, "identity": lambda v: v}[output](z)


def _targets(output: str) -> np.ndarray:
    """Labels for classification outputs, a 2-D target array for identity."""
    if output == "identity":
        return np.eye(3)[LABELS] * 2.0 - 1.0
    return LABELS


def _expected_loss(output: str, out: np.ndarray, T: np.ndarray, dtype) -> float:
    if output == "softmax":
        tiny = float(np.finfo(dtype).tiny)
        return float(np.mean(-(T * np.log(np.maximum(out, tiny))).sum(axis=1)))
    return float(np.mean(0.5 * ((T - out) ** 2).sum(axis=1)))


def _expected_single_layer_grads(output: str, out: np.ndarray, T: np.ndarray):
    delta = (out - T) / out.shape[0]
    if output == "sigmoid":
        delta = delta * out * (1 - out)
    return X_EXTREME.T @ delta, delta.sum(axis=0)


def _assert_output_is_well_formed(out: np.ndarray, output: str, dtype) -> None:
    assert out.dtype == dtype and out.shape == (X_EXTREME.shape[0], 3)
    assert np.isfinite(out).all(), out
    if output in ("softmax", "sigmoid"):
        assert (out >= 0).all() and (out <= 1).all(), out
    if output == "softmax":
        np.testing.assert_allclose(out.sum(axis=1, dtype=np.float64), 1.0,
                                   rtol=0, atol=4 * EPS[dtype])


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_output_layer_at_extreme_preactivations(backend, output, dtype, scale):
    net = _single_layer_net(output, dtype, backend, scale)
    z = _z(scale)
    T_enc = np.eye(3)[LABELS] if output != "identity" else _targets(output)
    exact = _expected_output(output, z)

    out = net.predict_proba(X_EXTREME)
    _assert_output_is_well_formed(out, output, dtype)
    tiny = float(np.finfo(dtype).tiny)
    # relative precision everywhere, down to the smallest normal number (so the sigmoid
    # tail 1/(1 + e^|z|) keeps its digits, not just its absolute error)
    np.testing.assert_allclose(out, exact, rtol=8 * EPS[dtype], atol=tiny)
    if output != "identity":
        np.testing.assert_array_equal(net.predict(X_EXTREME), exact.argmax(axis=1))

    loss = net.loss(X_EXTREME, _targets(output))
    assert np.isfinite(loss) and loss >= 0
    assert loss == pytest.approx(_expected_loss(output, exact, T_enc, dtype),
                                 rel=16 * EPS[dtype])
    if output == "softmax":  # each sample's loss is capped by the clamp at -log(tiny)
        assert loss <= -np.log(tiny) * (1 + 1e-6)

    dW, db = net.gradients(X_EXTREME, _targets(output))
    assert np.isfinite(dW[0]).all() and np.isfinite(db[0]).all()
    gW, gb = _expected_single_layer_grads(output, exact, T_enc)
    atol = 8 * EPS[dtype] * max(1.0, float(np.abs(gW).max()))
    np.testing.assert_allclose(dW[0], gW, rtol=8 * EPS[dtype], atol=atol)
    np.testing.assert_allclose(db[0], gb, rtol=8 * EPS[dtype], atol=atol)


@pytest.mark.parametrize("scale", [1e4, 89.0])
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_training_loss_at_extreme_preactivations(backend, output, dtype, scale):
    """A fit with lr = 0 reports, as its epoch loss, the loss of the (unchanged) weights:
    this exercises the training-side loss (C: computed inside the epoch loop)."""
    net = _single_layer_net(output, dtype, backend, scale)
    before = net.params.copy()
    history = net.fit(X_EXTREME, _targets(output), epochs=1, batch_size=2, lr=0.0,
                      momentum=0.0, shuffle=False)
    assert net.params.tobytes() == before.tobytes()
    assert np.isfinite(history.loss[0])
    assert history.loss[0] == pytest.approx(net.loss(X_EXTREME, _targets(output)),
                                            rel=16 * EPS[dtype], abs=16 * EPS[dtype])
    if output != "identity":
        expected = np.mean(_z(scale).argmax(axis=1) == LABELS)
        assert history.accuracy[0] == pytest.approx(expected)


def _two_layer_net(hidden: str, output: str, dtype, backend: str, scale: float):
    """[2, 3, 3]: the hidden pre-activations are _z(scale); the second layer maps the
    hidden outputs (up to `scale` for relu/identity) with O(1) weights."""
    net = momcore.MLP([2, 3, 3], hidden=hidden, output=output, dtype=dtype, backend=backend)
    W0, b0 = _layer(scale)
    net.weights[0][...] = W0
    net.biases[0][...] = b0
    net.weights[1][...] = np.array([[0.5, -1.0, 0.25], [-0.75, 0.5, 1.0], [1.0, 0.25, -0.5]])
    net.biases[1][...] = [0.1, -0.2, 0.3]
    return net


def _expected_two_layer(hidden: str, output: str, scale: float) -> np.ndarray:
    z = _z(scale)
    a = {"sigmoid": _sigmoid64, "tanh": np.tanh, "relu": lambda v: np.maximum(v, 0),
         "identity": lambda v: v}[hidden](z)
    W1 = np.array([[0.5, -1.0, 0.25], [-0.75, 0.5, 1.0], [1.0, 0.25, -0.5]])
    return _expected_output(output, a @ W1 + np.array([0.1, -0.2, 0.3]))


@pytest.mark.parametrize("scale", [1e4, 89.0])
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_hidden_layer_at_extreme_preactivations(hidden, output, dtype, scale):
    y = _targets(output)
    exact = _expected_two_layer(hidden, output, scale)
    results = {}
    for backend in BACKENDS:
        net = _two_layer_net(hidden, output, dtype, backend, scale)
        out = net.predict_proba(X_EXTREME)
        _assert_output_is_well_formed(out, output, dtype)
        big = max(1.0, float(np.abs(exact).max()))
        np.testing.assert_allclose(out, exact, rtol=64 * EPS[dtype],
                                   atol=64 * EPS[dtype] * big)
        loss = net.loss(X_EXTREME, y)
        dW, db = net.gradients(X_EXTREME, y)
        grads = np.concatenate([g.ravel() for g in dW + db])
        assert np.isfinite(loss) and np.isfinite(grads).all()
        if hidden in ("sigmoid", "tanh"):
            # every hidden unit is saturated (|z| >= s/2, or z = 0 where a' is 1/4 or 1):
            # the first layer's gradient flows only through the rows with z = 0
            assert np.isfinite(dW[0]).all()
        history = net.fit(X_EXTREME, y, epochs=1, batch_size=3, lr=0.0, momentum=0.0,
                          shuffle=False)
        assert np.isfinite(history.loss[0])
        assert history.loss[0] == pytest.approx(loss, rel=64 * EPS[dtype], abs=1e-6)
        results[backend] = (out, loss, grads)
    (c_out, c_loss, c_grads), (n_out, n_loss, n_grads) = results["c"], results["numpy"]
    scale_out = max(1.0, float(np.abs(n_out).max()))
    np.testing.assert_allclose(c_out, n_out, rtol=64 * EPS[dtype],
                               atol=64 * EPS[dtype] * scale_out)
    assert c_loss == pytest.approx(n_loss, rel=64 * EPS[dtype], abs=1e-6)
    np.testing.assert_allclose(c_grads, n_grads, rtol=64 * EPS[dtype],
                               atol=64 * EPS[dtype] * max(1.0, float(np.abs(n_grads).max())))


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_gemm_layers_at_extreme_preactivations(hidden, output, dtype):
    """The same on the BLAS side of the threshold: 64 rows through 64-128-10, hidden
    pre-activations of magnitude up to 1e4, both layers above GEMM_MIN_MACS."""
    X = load_digits().X[:64] / 16
    assert 64 * 64 * 128 >= _core.GEMM_MIN_MACS and 64 * 128 * 10 >= _core.GEMM_MIN_MACS
    rng = np.random.default_rng(5)
    W0 = rng.choice([-1.0, 1.0], size=(64, 128)) * (1e4 / np.abs(X).sum(axis=1).max())
    W1 = rng.uniform(-1, 1, size=(128, 10)) / (128.0 if hidden in ("relu", "identity") else 1.0)
    y = load_digits().y[:64] if output != "identity" else np.eye(10)[load_digits().y[:64]]
    results = {}
    for backend in BACKENDS:
        net = momcore.MLP([64, 128, 10], hidden=hidden, output=output, dtype=dtype,
                          backend=backend)
        net.weights[0][...] = W0
        net.weights[1][...] = W1
        z = X.astype(dtype) @ net.weights[0]
        assert 1e3 < np.abs(z).max() <= 1.01e4
        out = net.predict_proba(X)
        assert np.isfinite(out).all()
        if output != "identity":
            assert (out >= 0).all() and (out <= 1).all()
        if output == "softmax":
            np.testing.assert_allclose(out.sum(axis=1, dtype=np.float64), 1.0,
                                       atol=8 * EPS[dtype])
        loss = net.loss(X, y)
        dW, db = net.gradients(X, y)
        grads = np.concatenate([g.ravel() for g in dW + db])
        assert np.isfinite(loss) and np.isfinite(grads).all()
        results[backend] = out, loss, grads
    (c_out, c_loss, c_grads), (n_out, n_loss, n_grads) = results["c"], results["numpy"]
    # gemm and numpy's matmul sum in different orders (measured: <= 2 eps apart)
    tol = 64 * EPS[dtype]
    np.testing.assert_allclose(c_out, n_out, rtol=tol, atol=tol * max(1.0, np.abs(n_out).max()))
    assert c_loss == pytest.approx(n_loss, rel=tol, abs=tol)
    np.testing.assert_allclose(c_grads, n_grads, rtol=tol,
                               atol=tol * max(1.0, float(np.abs(n_grads).max())))


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigmoid_tail_keeps_relative_precision(backend, dtype):
    """1 - sigmoid(z) for large z is tiny but not 0: sigmoid(-z) = e/(1+e), e = exp(-z),
    keeps every digit down to the smallest normal number of the dtype."""
    top = 80.0 if dtype == np.float32 else 700.0
    zs = np.linspace(-top, top, 41)
    net = momcore.MLP([1, len(zs)], output="sigmoid", dtype=dtype, backend=backend)
    net.weights[0][...] = zs
    net.biases[0][...] = 0.0
    out = net.predict_proba(np.ones((1, 1)))[0]
    expected = _sigmoid64(zs.astype(dtype).astype(np.float64))
    np.testing.assert_allclose(out, expected, rtol=8 * EPS[dtype], atol=0)
    assert (out[zs < 0] > 0).all()


# ---- float32 training matches float64 ------------------------------------------------------


@pytest.fixture(scope="module")
def iris():
    data = load_iris()
    return (data.X - data.X.mean(axis=0)) / data.X.std(axis=0), data.y


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return train_test_split(data.X / 16, data.y, test_fraction=0.2, seed=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_iris_online_float32_matches_float64(iris, backend):
    X, y = iris
    accuracy = {}
    for dtype in DTYPES:
        net = momcore.MLP([4, 8, 3], dtype=dtype, seed=0, backend=backend)
        history = net.fit(X, y, epochs=50, batch_size=1, lr=0.05, momentum=0.9)
        assert all(np.isfinite(history.loss)) and net.params.dtype == dtype
        accuracy[dtype] = net.score(X, y)
        assert accuracy[dtype] >= 0.95, (dtype, accuracy[dtype])
    assert abs(accuracy[np.float32] - accuracy[np.float64]) <= 2 / len(y), accuracy


# lr = 0.02: with lr = 0.05 and momentum 0.9 (an effective step lr / (1 - momentum) of
# 0.5) online training is chaotic -- rounding alone moves the test accuracy by a few
# points (seed 0: float32 0.914 (C) / 0.936 (numpy), float64 0.950; other seeds favour
# float32), so it cannot show whether float32 loses anything. At 0.02 every seed tried
# (0-5) gives >= 0.95 and the same accuracy in both dtypes.
@pytest.mark.parametrize("seed", [0, 3])
def test_digits_online_float32_matches_float64(digits, seed):
    X_train, X_test, y_train, y_test = digits
    accuracy, params = {}, {}
    for dtype in DTYPES:
        net = momcore.MLP([64, 128, 10], dtype=dtype, seed=seed)
        history = net.fit(X_train, y_train, epochs=5, batch_size=1, lr=0.02, momentum=0.9)
        assert all(np.isfinite(history.loss)) and net.params.dtype == dtype
        accuracy[dtype] = net.score(X_test, y_test)
        assert accuracy[dtype] >= 0.93, (dtype, accuracy[dtype])
        params[dtype] = net.params.astype(np.float64)
    assert abs(accuracy[np.float32] - accuracy[np.float64]) <= 2 / len(y_test), accuracy
    # the float32 weights track the float64 ones (measured: ~1e-5 apart, weights ~2.5)
    drift = np.abs(params[np.float32] - params[np.float64]).max()
    assert drift < 1e-3 * np.abs(params[np.float64]).max(), drift


@pytest.mark.parametrize("batch_size, lr", [(16, 0.1), (32, 0.5)])
def test_digits_minibatch_float32_matches_float64(digits, batch_size, lr):
    X_train, X_test, y_train, y_test = digits
    accuracy = {}
    for dtype in DTYPES:
        net = momcore.MLP([64, 128, 10], dtype=dtype, seed=1)
        net.fit(X_train, y_train, epochs=8, batch_size=batch_size, lr=lr, momentum=0.9)
        accuracy[dtype] = net.score(X_test, y_test)
    assert min(accuracy.values()) >= 0.93, accuracy
    assert abs(accuracy[np.float32] - accuracy[np.float64]) <= 2 / len(y_test), accuracy


# ---- the kernel at the extremes of the float range -------------------------------------------


def _extreme_values(dtype) -> np.ndarray:
    info = np.finfo(dtype)
    sub = float(info.smallest_subnormal)
    tiny = float(info.tiny)
    big = float(info.max)
    values = [0.0, -0.0, sub, -sub, 3 * sub, 1000 * sub, tiny / 2, tiny, -tiny, 2 * tiny,
              1.0, -1.5, big, -big, big / 2, big / 3, -big * 0.75, 1e30]
    with np.errstate(over="ignore"):
        return np.array(values, dtype=dtype)


def _extreme_operands(dtype, repeat: int = 1):
    """w, g, state that pair every extreme value of w with every one of g (w and g on a
    grid), with state cycling; length chosen so that SIMD bodies and tails both occur."""
    v = _extreme_values(dtype)
    w = np.tile(v, len(v))
    g = np.repeat(v, len(v))
    s = np.roll(w, 7)[::-1].copy()
    if repeat > 1:
        w, g, s = (np.tile(a, repeat) for a in (w, g, s))
    extra = 13  # a ragged tail
    return (np.concatenate([w, v[:extra]]), np.concatenate([g, v[-extra:]]),
            np.concatenate([s, v[3:3 + extra]]))


def _hypers(dtype):
    sub = float(np.finfo(dtype).smallest_subnormal)
    return [
        dict(lr=1.0, momentum=0.9),
        dict(lr=0.5, momentum=-0.5, dampening=0.25),
        dict(lr=1e-3, momentum=0.99, weight_decay=1e-4),
        dict(lr=2.0, momentum=0.999, dampening=0.5, weight_decay=1.0),
        dict(lr=sub, momentum=0.5),  # a subnormal learning rate
        dict(lr=float(np.finfo(dtype).max), momentum=0.0),
        dict(lr=1e300, momentum=1 - 2**-52),  # beyond float32: refused there (ValueError)
        dict(lr=0.0, momentum=5e-324),
    ]


def _assert_same_bits(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """Bit for bit, NaNs included (here every NaN comes from inf - inf or 0 * inf, the
    default NaN; with NaN inputs the sign of a NaN result may differ, see test_fuzz.py)."""
    if a.tobytes() != b.tobytes():
        bits = {4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
        bad = np.flatnonzero(a.view(bits) != b.view(bits))
        raise AssertionError(f"{what}: {len(bad)} elements differ from the reference, e.g. "
                             f"at {bad[:5]}: {a[bad[:5]]} vs {b[bad[:5]]}")


def _step_both(w, g, s, **kwargs):
    w_ref, s_ref = w.copy(), s.copy()
    w0 = w.copy()
    if w.dtype == np.float32 and kwargs["lr"] > float(np.finfo(np.float32).max):
        # lr overflows the arrays' dtype: both refuse before writing
        with pytest.raises(ValueError, match="beyond the range of float32"):
            momcore.momentum_step(w, g, s, **kwargs)
        with pytest.raises(ValueError, match="beyond the range of float32"):
            ref.momentum_step(w_ref, g, s_ref, **kwargs)
        assert w.tobytes() == w0.tobytes()
        return
    applied = momcore.momentum_step(w, g, s, **kwargs)
    with np.errstate(all="ignore"):
        applied_ref = ref.momentum_step(w_ref, g, s_ref, **kwargs)
    assert applied is applied_ref
    _assert_same_bits(w, w_ref, "w")
    _assert_same_bits(s, s_ref, "state")


@pytest.mark.parametrize("hyper", range(8))
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_kernel_on_subnormal_and_huge_values_equals_reference(simd, dtype, rule, hyper):
    w, g, s = _extreme_operands(dtype)
    kwargs = _hypers(dtype)[hyper]
    if rule not in registry.rules_taking("dampening"):  # the others refuse a dampening
        kwargs.pop("dampening", None)
    for _ in range(3):  # state carries the extremes into the next steps
        _step_both(w, g, s, rule=rule, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_kernel_extremes_with_threads_equal_reference(threads, dtype):
    repeat = _core.OMP_MIN_ELEMENTS // len(_extreme_values(dtype)) ** 2 + 2
    momcore.set_num_threads(2)
    for rule in RULES:
        w, g, s = _extreme_operands(dtype, repeat)
        assert w.size > _core.OMP_MIN_ELEMENTS
        _step_both(w, g, s, rule=rule, lr=0.75, momentum=0.5, weight_decay=0.5)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_subnormal_results_are_not_flushed_to_zero(simd, dtype):
    """No flush-to-zero / denormals-are-zero on any SIMD path: subnormal in, subnormal out."""
    sub = np.finfo(dtype).smallest_subnormal
    n = 67
    w = np.full(n, 6 * sub, dtype)
    g = np.full(n, 2 * sub, dtype)
    s = np.zeros(n, dtype)
    momcore.momentum_step(w, g, s, lr=1.0, momentum=0.5)
    assert (s == -2 * sub).all() and (w == 4 * sub).all()
    momcore.momentum_step(w, g, s, lr=1.0, momentum=0.5)  # s = -sub - 2 sub; w = 4 sub - 3 sub
    assert (s == -3 * sub).all() and (w == sub).all()


def _overflowing_operands(rule, dtype):
    big = np.finfo(dtype).max
    n = 37
    w = np.full(n, big, dtype)
    w[::2] = -big
    g = -w.copy()  # descent pushes w further out
    # and so does the state: a previous step (w + s) or a velocity (w - lr s)
    s = -w if rule in ("velocity", "ema") else w.copy()
    return w, g, s


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("rule", RULES)
def test_overflow_to_inf_propagates(simd, rule, dtype):
    """Huge but finite gradients that make w overflow: with "propagate" the step is
    applied and w becomes +-inf exactly as in the reference."""
    w, g, s = _overflowing_operands(rule, dtype)
    kwargs = dict(rule=rule, lr=1.0, momentum=0.9, nonfinite="propagate")
    w_ref, s_ref = w.copy(), s.copy()
    assert momcore.momentum_step(w, g, s, **kwargs) is True
    with np.errstate(all="ignore"):
        assert ref.momentum_step(w_ref, g, s_ref, **kwargs) is True
    _assert_same_bits(w, w_ref, "w")
    _assert_same_bits(s, s_ref, "state")
    assert np.isinf(w).all()
    np.testing.assert_array_equal(np.sign(w), np.sign(-g))
    # the next step sees an infinite w but a finite g: still applied, like the reference
    with np.errstate(all="ignore"):
        _step_both(w, g, s, **kwargs)


@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("many", [False, True], ids=["one", "many"])
def test_overflow_with_a_finite_gradient_is_refused_before_writing(simd, rule, dtype,
                                                                   nonfinite, many):
    """With "raise" and "skip" a step whose finite inputs would overflow w or the state
    writes nothing: FloatingPointError or False, every operand bit for bit as it was
    (before: applied, w became inf, and "raise" returned True)."""
    w, g, s = _overflowing_operands(rule, dtype)
    w2, g2, s2 = (np.ones(5, dtype) for _ in range(3))  # a harmless second array
    kwargs = dict(rule=rule, lr=1.0, momentum=0.9, nonfinite=nonfinite)
    for impl in (momcore, ref):
        ws, ss = [w.copy(), w2.copy()], [s.copy(), s2.copy()]
        before = [a.tobytes() for a in ws + ss]
        if many:
            call = lambda: impl.momentum_step_many(ws[::-1], [g2, g], ss[::-1], **kwargs)  # noqa: E731
        else:
            call = lambda: impl.momentum_step(ws[0], g, ss[0], **kwargs)  # noqa: E731
        if nonfinite == "raise":
            with pytest.raises(FloatingPointError, match="overflow"):
                call()
        else:
            assert call() is False
        assert [a.tobytes() for a in ws + ss] == before, impl.__name__


@pytest.mark.parametrize("rule", RULES)
def test_lr_beyond_float32_is_refused_for_float32_arrays(rule):
    """lr=1e39 is a finite float64 but inf in float32, the dtype the step computes in:
    refused with a ValueError before anything is written (before: accepted, and with
    "raise" it wrote inf/NaN into w and returned True)."""
    for impl in (momcore, ref):
        for nonfinite in ("propagate", "raise", "skip"):
            w, g, s = (np.ones(4, np.float32) for _ in range(3))
            for key, value in (("lr", 1e39), ("weight_decay", 1e39), ("momentum", 1 - 1e-9)):
                kwargs = {**dict(lr=0.1, momentum=0.5, rule=rule, nonfinite=nonfinite),
                          key: value}
                with pytest.raises(ValueError, match=key):
                    impl.momentum_step(w, g, s, **kwargs)
                assert (w == 1).all() and (s == 1).all()
            # the same values are fine for float64 arrays
            w64, g64, s64 = (np.ones(4) for _ in range(3))
            assert impl.momentum_step(w64, g64, s64, lr=1e39, momentum=0.5, rule=rule,
                                      nonfinite="propagate") is True
    opt = momcore.SGD([np.ones(3, np.float32)], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        opt.lr = 1e39
        opt.step([np.ones(3, np.float32)])


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_many_with_extremes_equals_reference(dtype):
    ws, gs, ss = zip(*[_extreme_operands(dtype) for _ in range(3)])
    ws, gs, ss = [list(a) for a in (ws, gs, ss)]
    gs[1] = gs[1][::-1].copy()
    ws_ref, ss_ref = [w.copy() for w in ws], [s.copy() for s in ss]
    kwargs = dict(lr=1.5, momentum=0.75, rule="nesterov", weight_decay=0.125)
    assert momcore.momentum_step_many(ws, gs, ss, **kwargs) is True
    with np.errstate(all="ignore"):
        assert ref.momentum_step_many(ws_ref, gs, ss_ref, **kwargs) is True
    for a, b in zip(ws + ss, ws_ref + ss_ref):
        _assert_same_bits(a, b, "many")


# ---- known bugs: the compiled backend hides NaN ---------------------------------------------


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_fit_stops_when_the_weights_become_nan(backend):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 3))
    y = np.array([0, 1, 2, 0, 1, 2])
    net = momcore.MLP([3, 4, 3], backend=backend)
    # The numpy backend's overflow warnings are silenced: this is about the error raised.
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="non-finite"):
        net.fit(X, y, epochs=3, lr=1e308, momentum=0.9)
    assert np.isfinite(net.params).all()


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_training_loss_of_nan_weights_is_not_finite(backend):
    net = momcore.MLP([2, 3], backend=backend)
    net.params[0] = np.nan
    with np.errstate(all="ignore"):
        assert np.isnan(net.loss(X_EXTREME, LABELS))  # numpy-side loss: NaN in both
        with pytest.raises(FloatingPointError, match="non-finite"):
            net.fit(X_EXTREME, LABELS, epochs=1, lr=0.0, momentum=0.0)


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("output", OUTPUTS)
def test_relu_propagates_nan(backend, output):
    net = momcore.MLP([2, 2, 3], hidden="relu", output=output, backend=backend)
    net.weights[0][0, 0] = np.nan  # hidden unit 0 is NaN for every row with x0 != 0
    with np.errstate(all="ignore"):
        out = net.predict_proba(X_EXTREME)
    rows = X_EXTREME[:, 0] != 0
    assert np.isnan(out[rows]).all(), out


def test_relu_backward_keeps_a_nan_delta_at_a_dead_unit():
    # A dead relu unit (a = 0) multiplies its delta by 0; a NaN delta stays NaN, as in
    # the numpy backend, instead of being selected away.
    grads = []
    for backend in ("c", "numpy"):
        net = momcore.MLP([2, 3, 2], hidden="relu", output="identity", seed=0, backend=backend)
        net.weights[0][:, 0] = -1.0  # unit 0 is dead for positive inputs
        net.biases[1][0] = np.nan
        dW, _ = net.gradients(np.ones((2, 2)), np.zeros((2, 2)))
        grads.append(dW[0])
    assert np.isnan(grads[0][:, 0]).all()
    np.testing.assert_array_equal(np.isnan(grads[0]), np.isnan(grads[1]))

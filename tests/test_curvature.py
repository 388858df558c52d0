"""The diagonal Gauss-Newton curvature (MLP.curvature, NetCore.curvature): the compiled
pass against the numpy reference, and the reference against the exact Hessian diagonal
from finite differences of the gradient."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import DTYPES

import momcore
from momcore import _core
from momcore import _mlp_numpy as ref
from momcore import _network as layout
from momcore import registry

CURV_RTOL = {np.float32: 2e-4, np.float64: 1e-11}

PAIRS = [(o, loss) for loss, x in registry.LOSSES.items() for o in x.outputs]

# (sizes, rows): the loop path, gemm for both layers, and one layer on each side
# of the threshold.
SHAPES = {
    "loops": ([4, 6, 3], 20),
    "gemm": ([64, 96, 10], 64),
    "mixed": ([20, 40, 5], 50),
}


def _data(sizes, rows, output, loss, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, sizes[0])).astype(dtype)
    if output == "identity":
        y = rng.standard_normal((rows, sizes[-1]))
    elif loss == "binary_cross_entropy":
        y = (rng.random((rows, sizes[-1])) > 0.5).astype(float)
    else:
        y = rng.integers(0, sizes[-1], rows)
    return X, y


def test_the_shapes_cover_both_sides_of_the_gemm_threshold():
    macs = {name: [rows * a * b for a, b in zip(s, s[1:])] for name, (s, rows) in
            SHAPES.items()}
    assert all(m < _core.GEMM_MIN_MACS for m in macs["loops"])
    assert all(m >= _core.GEMM_MIN_MACS for m in macs["gemm"])
    assert min(macs["mixed"]) < _core.GEMM_MIN_MACS <= max(macs["mixed"])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("hidden", registry.HIDDEN)
@pytest.mark.parametrize("output, loss", PAIRS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_compiled_matches_reference(shape, hidden, output, loss, dtype):
    sizes, rows = SHAPES[shape]
    net = momcore.MLP(sizes, hidden=hidden, output=output, loss=loss, dtype=dtype, seed=3)
    X, y = _data(sizes, rows, output, loss, dtype)
    T = net.encode_targets(y, rows)
    want = np.empty_like(net.params)
    e_ref = ref.curvature(net.params, sizes, X, T, hidden, output, want, loss=loss)
    got, grad = np.empty_like(net.params), np.zeros_like(net.params)
    core = _core.NetCore(net.params, np.zeros_like(net.params), grad, sizes, hidden, output,
                         rows, loss=loss)
    e, _ = core.curvature(X, T, got)
    scale = np.abs(want).max()
    assert scale > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=CURV_RTOL[dtype] * scale)
    assert (got >= 0).all()
    assert e == pytest.approx(e_ref, rel=CURV_RTOL[dtype] * 10)
    # the same forward pass gave the gradient too
    grad_want = np.empty_like(net.params)
    ref.gradients(net.params, sizes, X, T, hidden, output, grad_want, loss=loss)
    np.testing.assert_allclose(grad, grad_want, rtol=0,
                               atol=CURV_RTOL[dtype] * np.abs(grad_want).max() * 10)


def test_every_simd_path_gives_the_curvature(simd):
    sizes, rows = SHAPES["mixed"]
    net = momcore.MLP(sizes, hidden="tanh", seed=1)
    X, y = _data(sizes, rows, "softmax", "cross_entropy", np.float64)
    T = net.encode_targets(y, rows)
    want = np.empty_like(net.params)
    ref.curvature(net.params, sizes, X, T, "tanh", "softmax", want)
    got = np.empty_like(net.params)
    _core.NetCore(net.params, np.zeros_like(net.params), None, sizes, "tanh", "softmax",
                  rows).curvature(X, T, got)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_mlp_curvature_is_shaped_like_gradients_and_means_over_rows(backend):
    net = momcore.MLP([5, 7, 3], seed=2, backend=backend)
    X, y = _data([5, 7, 3], 600, "softmax", "cross_entropy", np.float64)
    cW, cb = net.curvature(X, y)
    dW, db = net.gradients(X, y)
    assert [a.shape for a in cW] == [a.shape for a in dW]
    assert [a.shape for a in cb] == [a.shape for a in db]
    # the mean over rows: the curvature of the two halves averages to the whole
    halves = [net.curvature(X[s], y[s]) for s in (slice(0, 300), slice(300, 600))]
    for i in range(2):
        np.testing.assert_allclose(cW[i], (halves[0][0][i] + halves[1][0][i]) / 2,
                                   rtol=1e-12)


def test_curvature_checks_its_arguments():
    net = momcore.MLP([3, 4, 2], seed=0)
    core = _core.NetCore(net.params, np.zeros_like(net.params), None, [3, 4, 2], "sigmoid",
                         "softmax", 4)
    X, T = np.zeros((4, 3)), np.zeros((4, 2))
    with pytest.raises(ValueError, match="out must be"):
        core.curvature(X, T, np.empty(5))
    with pytest.raises(ValueError, match="shares memory"):
        core.curvature(X, T, net.params)
    with pytest.raises(ValueError, match="rows"):
        core.curvature(np.zeros((5, 3)), np.zeros((5, 2)), np.empty_like(net.params))


# ---- against the exact Hessian diagonal ------------------------------------------


def _exact_diagonal(net, X, y, eps=1e-5):
    """d^2E/dp_i^2 by central differences of the analytic gradient (float64)."""
    T = net.encode_targets(y, X.shape[0])
    kernel = net.gradient_kernel(grad := np.empty_like(net.params), X.shape[0])
    p, out = net.params, np.empty_like(net.params)
    for i in range(p.size):
        old = p[i]
        p[i] = old + eps
        kernel.gradients(X, T)
        plus = grad[i]
        p[i] = old - eps
        kernel.gradients(X, T)
        out[i] = (plus - grad[i]) / (2 * eps)
        p[i] = old
    return out


def _flat(pair, sizes):
    flat = np.empty(layout.n_params(sizes))
    W, b = layout.views(flat, sizes)
    for mine, theirs in zip(W + b, pair[0] + pair[1]):
        mine[...] = theirs
    return flat


def test_equals_the_exact_hessian_diagonal_for_a_linear_network():
    sizes = [3, 4, 2]
    net = momcore.MLP(sizes, hidden="identity", output="identity", seed=4)
    X, y = _data(sizes, 30, "identity", "squared_error", np.float64, seed=1)
    got = _flat(net.curvature(X, y), sizes)
    exact = _exact_diagonal(net, X, y)
    np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-9)


def test_a_deeper_linear_network_drops_the_cross_terms_of_its_paths():
    # Two hidden layers: dy/dz of a first-layer unit sums over several paths, and the
    # diagonal back-propagation keeps the squares of the paths, not of their sum. The
    # last two layers stay exact; the first does not.
    sizes = [3, 4, 4, 2]
    net = momcore.MLP(sizes, hidden="identity", output="identity", seed=4)
    X, y = _data(sizes, 30, "identity", "squared_error", np.float64, seed=1)
    got, exact = _flat(net.curvature(X, y), sizes), _exact_diagonal(net, X, y)
    first = slice(0, 3 * 4 + 4)
    np.testing.assert_allclose(got[first.stop:], exact[first.stop:], rtol=1e-6, atol=1e-9)
    assert np.abs(got[first] - exact[first]).max() > 0.05 * np.abs(exact[first]).max()


@pytest.mark.parametrize("output, loss", [("softmax", "cross_entropy"),
                                          ("sigmoid", "binary_cross_entropy"),
                                          ("identity", "squared_error")])
@pytest.mark.parametrize("hidden", registry.HIDDEN)
def test_the_output_layer_is_exact_for_matching_losses(hidden, output, loss):
    # With its canonical link (or identity + squared error) the loss's second derivative
    # in one output weight is a_k^2 d^2E/dz_j^2, and d^2E/dz_j^2 is the diagonal used.
    sizes = [4, 6, 3]
    net = momcore.MLP(sizes, hidden=hidden, output=output, loss=loss, seed=5)
    X, y = _data(sizes, 25, output, loss, np.float64, seed=2)
    got, exact = _flat(net.curvature(X, y), sizes), _exact_diagonal(net, X, y)
    last = slice(4 * 6 + 6, None)
    np.testing.assert_allclose(got[last], exact[last], rtol=1e-5,
                               atol=1e-7 * np.abs(exact[last]).max())


def _hidden_agreement(hidden, seeds=range(4)):
    """Correlation of the Gauss-Newton and exact diagonals over the first layer of
    [4, 6, 3] softmax networks, pooled over seeds."""
    got, exact = [], []
    for seed in seeds:
        net = momcore.MLP([4, 6, 3], hidden=hidden, seed=seed)
        X, y = _data([4, 6, 3], 25, "softmax", "cross_entropy", np.float64, seed=seed)
        first = slice(0, 4 * 6 + 6)
        got.append(_flat(net.curvature(X, y), [4, 6, 3])[first])
        exact.append(_exact_diagonal(net, X, y)[first])
    got, exact = np.concatenate(got), np.concatenate(exact)
    return np.corrcoef(got, exact)[0, 1], got, exact


@pytest.mark.parametrize("hidden", ["relu", "identity"])
def test_hidden_layers_of_piecewise_linear_units_approximate_the_exact_diagonal(hidden):
    # Measured (8 seeds, [4, 6, 3], softmax, first layer): correlation 0.76 (relu) and
    # 0.84 (identity), layer sums within 7 % and 12 % of the exact ones. The gap is the
    # cross terms between units that the diagonal back-propagation drops.
    corr, got, exact = _hidden_agreement(hidden, range(8))
    assert corr >= 0.7
    assert 0.8 <= got.sum() / exact.sum() <= 1.25


@pytest.mark.parametrize("hidden", ["sigmoid", "tanh"])
def test_hidden_layers_of_curved_units_can_only_bound_the_sign(hidden):
    # Measured (8 seeds, first layer at the initial weights): the exact diagonal is
    # negative for 26 % (sigmoid) and 33 % (tanh) of the weights (the f'' term, which
    # Gauss-Newton drops, dominates away from a minimum); correlation 0.23 and 0.38.
    # The Gauss-Newton diagonal stays >= 0, which is what a step size needs.
    corr, got, exact = _hidden_agreement(hidden, range(8))
    assert (got >= 0).all()
    assert (exact < 0).mean() > 0.1


# ---- the l2 term ------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_l2_adds_its_exact_curvature_to_the_weights_only(backend):
    # E = mean loss + l2/(2N) sum ||W||^2: its curvature l2/N on every weight entry,
    # nothing on the biases; for a linear network with squared error the whole diagonal
    # stays exact, which finite differences of the l2-including gradient check.
    sizes = [3, 4, 2]
    net = momcore.MLP(sizes, hidden="identity", output="identity", seed=4, backend=backend,
                      l2=0.7)
    X, y = _data(sizes, 30, "identity", "squared_error", np.float64, seed=1)
    got = _flat(net.curvature(X, y), sizes)
    np.testing.assert_allclose(got, _exact_diagonal(net, X, y), rtol=1e-6, atol=1e-9)
    net.l2 = 0.0
    plain = _flat(net.curvature(X, y), sizes)
    W, b = layout.views(got - plain, sizes)
    for block in W:
        np.testing.assert_allclose(block, 0.7 / 30, rtol=1e-12)
    for block in b:
        np.testing.assert_array_equal(block, 0.0)


def test_l2_curvature_of_a_curved_network_matches_finite_differences_at_the_output():
    # The l2 term is exact whatever the network: on the output layer (exact for
    # softmax + cross-entropy) the diagonal with l2 matches the finite differences.
    sizes = [4, 6, 3]
    net = momcore.MLP(sizes, hidden="tanh", seed=5, l2=0.3)
    X, y = _data(sizes, 25, "softmax", "cross_entropy", np.float64, seed=2)
    got, exact = _flat(net.curvature(X, y), sizes), _exact_diagonal(net, X, y)
    last = slice(4 * 6 + 6, None)
    np.testing.assert_allclose(got[last], exact[last], rtol=1e-5,
                               atol=1e-7 * np.abs(exact[last]).max())


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_compiled_l2_curvature_and_loss_match_the_reference(dtype):
    sizes, rows = SHAPES["mixed"]
    net = momcore.MLP(sizes, hidden="relu", dtype=dtype, seed=3)
    X, y = _data(sizes, rows, "softmax", "cross_entropy", dtype)
    T = net.encode_targets(y, rows)
    want = np.empty_like(net.params)
    e_ref = ref.curvature(net.params, sizes, X, T, "relu", "softmax", want, l2=0.4)
    for grad in (None, np.zeros_like(net.params)):
        core = _core.NetCore(net.params, np.zeros_like(net.params), grad, sizes, "relu",
                             "softmax", rows, l2=0.4)
        got = np.empty_like(net.params)
        e, _ = core.curvature(X, T, got)
        np.testing.assert_allclose(got, want, rtol=0,
                                   atol=CURV_RTOL[dtype] * np.abs(want).max())
        assert e == pytest.approx(e_ref, rel=CURV_RTOL[dtype] * 10)
        if grad is not None:  # the same E as the gradient pass
            assert e == pytest.approx(core.gradients(X, T)[0], rel=CURV_RTOL[dtype] * 10)


def test_fit_with_per_weight_momentum_applies_l2_in_both_backends():
    X, y = momcore.datasets.load_iris()[:2]
    X = (X - X.mean(0)) / X.std(0)
    nets = {}
    for backend in ("c", "numpy"):
        for l2 in (0.0, 2.0):
            net = momcore.MLP([4, 8, 3], seed=0, backend=backend, l2=l2)
            net.fit(X, y, epochs=5, batch_size=30, lr=0.5, rule="qian")
            nets[backend, l2] = net
    np.testing.assert_allclose(nets["c", 2.0].params, nets["numpy", 2.0].params,
                               rtol=1e-8, atol=1e-10)
    # the penalty shrinks the weights (not a no-op in this path)
    W = [layout.views(nets["c", l2].params, [4, 8, 3])[0] for l2 in (0.0, 2.0)]
    assert sum(np.sum(w * w) for w in W[1]) < 0.9 * sum(np.sum(w * w) for w in W[0])

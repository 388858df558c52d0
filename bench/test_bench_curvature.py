"""pytest-benchmark: the cost of the curvature pass. One training step of rule "qian"
(the forward pass, the gradient and the diagonal Gauss-Newton curvature from it, then
the step with per-weight momenta) against one plain classical training step (one batch
of the compiled epoch), 784-256-128-10, batch 128. The target: under 1.5x.
The ratio is printed in the summary ("mlp curvature ..."); measure it on a quiet
machine (`uptime`), the contenders in one run."""
from __future__ import annotations

import numpy as np
import pytest

from momcore import _bench, _core, _network

SIZES, ROWS = _bench.MINIBATCH_SIZES, _bench.MINIBATCH_ROWS


def _contenders(dtype):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((ROWS, SIZES[0])).astype(dtype)
    T = _network.encode_targets(rng.integers(0, SIZES[-1], ROWS), SIZES[-1], "softmax", dtype)
    order = np.arange(ROWS)
    params = np.empty(_network.n_params(SIZES), dtype)
    _network.init_params(params, SIZES, "relu", np.random.default_rng(0))
    plain_params = params.copy()
    # no gradient buffer: the classical step folded into the backward pass, as fit runs it
    plain = _core.NetCore(plain_params, np.zeros_like(params), None, SIZES, "relu",
                          "softmax", ROWS)
    grad = np.zeros_like(params)
    curved = _core.NetCore(params, np.zeros_like(params), grad, SIZES, "relu", "softmax", ROWS)
    curv = np.empty_like(params)
    momenta = np.full_like(params, 0.9)
    hyper = dict(lr=1e-3, momentum=0.9)

    def plain_step():  # one batch of the compiled epoch: what fit takes per batch
        plain.train_epoch(X, T, order, ROWS, **hyper)

    def curvature_step():
        curved.curvature(X, T, curv)
        curved.step(**hyper, rule="qian", momenta=momenta)

    return {"plain": plain_step, "curvature": curvature_step}


@pytest.mark.parametrize("contender", ["plain", "curvature"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
def test_curvature_step(benchmark, record, dtype, contender):
    fn = _contenders(dtype)[contender]
    benchmark.group = f"mlp curvature 784-256-128-10 b128 {np.dtype(dtype).name}"
    benchmark(fn)
    record(benchmark, benchmark.group, contender)

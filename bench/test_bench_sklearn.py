"""pytest-benchmark: momcore.MLPClassifier against scikit-learn's MLPClassifier, same
data, same settings (solver="sgd", tol=0 so that both run every epoch), same epochs.

Groups "sklearn fit ..." hold the contenders "sklearn" and "momcore"; their ratio
sklearn / momcore is the speed-up against momcore's targets: >= 3x at batch 200 on digits,
>= 1.3x on 784-256-128-10 at batch 200, >= 30x online (batch_size=1). Both alpha=0 and
scikit-learn's default alpha=1e-4 are measured; either way the whole epoch is one compiled
call, the L2 term in the backward pass.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

sk_nn = pytest.importorskip("sklearn.neural_network",
                            reason="the scikit-learn benchmarks need scikit-learn")
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402

import momcore  # noqa: E402
from momcore.sklearn import MLPClassifier  # noqa: E402

_digits = momcore.datasets.load_digits()
X_DIGITS, y_DIGITS = _digits.X / 16, _digits.y
_rng = np.random.default_rng(0)
X_MNIST = _rng.random((6000, 784))  # random data of MNIST's shape
y_MNIST = _rng.integers(0, 10, 6000)

CASES = {
    "digits 64-100-10 b200 20 epochs": (X_DIGITS, y_DIGITS, dict(
        hidden_layer_sizes=(100,), batch_size=200, max_iter=20, learning_rate_init=0.1)),
    "784-256-128-10 b200 2 epochs": (X_MNIST, y_MNIST, dict(
        hidden_layer_sizes=(256, 128), batch_size=200, max_iter=2, learning_rate_init=0.01)),
    "digits online 1 epoch": (X_DIGITS, y_DIGITS, dict(
        hidden_layer_sizes=(100,), batch_size=1, max_iter=1, learning_rate_init=0.01)),
}


def _fit(cls, X, y, params):
    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cls(**params).fit(X, y)
    return run


@pytest.mark.parametrize("contender", ["sklearn", "momcore"])
@pytest.mark.parametrize("alpha", [0.0, 1e-4], ids=["alpha0", "alpha1e-4"])
@pytest.mark.parametrize("case", list(CASES))
def test_fit(benchmark, record, case, alpha, contender):
    X, y, params = CASES[case]
    params = dict(params, alpha=alpha, tol=0.0, random_state=0)
    if contender == "sklearn":
        fn = _fit(sk_nn.MLPClassifier, X, y, dict(params, solver="sgd"))
    else:
        fn = _fit(MLPClassifier, X, y, params)
    benchmark.group = f"sklearn fit {case} alpha={alpha:g}"
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    record(benchmark, benchmark.group, contender)


@pytest.mark.parametrize("contender", ["sklearn", "momcore"])
@pytest.mark.parametrize("what", ["cross_val_score cv=5", "GridSearchCV 8 x cv=3"])
def test_end_to_end(benchmark, record, what, contender):
    params = dict(hidden_layer_sizes=(50,), max_iter=30, learning_rate_init=0.1,
                  random_state=0)
    est = sk_nn.MLPClassifier(solver="sgd", **params) if contender == "sklearn" \
        else MLPClassifier(**params)
    grid = {"alpha": [1e-4, 1e-3], "momentum": [0.5, 0.9],
            "hidden_layer_sizes": [(30,), (60,)]}

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if what.startswith("cross"):
                cross_val_score(est, X_DIGITS, y_DIGITS, cv=5)
            else:
                GridSearchCV(est, grid, cv=3).fit(X_DIGITS, y_DIGITS)

    benchmark.group = f"sklearn {what} digits"
    benchmark.pedantic(run, rounds=2, iterations=1)
    record(benchmark, benchmark.group, contender)

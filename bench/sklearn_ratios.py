"""Fit time of scikit-learn's MLPClassifier(solver="sgd") against momcore.MLPClassifier
on the same data, settings and epochs: the ratios of the README's scikit-learn table.

    python bench/sklearn_ratios.py [case ...]      # cases: digits b200, 784, online

Both sides run every epoch (tol=0, n_iter_no_change huge); contenders take turns, each
fit after SETTLE seconds idle (an OpenBLAS pool still spinning from the other library
slows the next fit); each round keeps the best of a few fits; three rounds per case.
"""
from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np

import momcore
from momcore.sklearn import MLPClassifier

from sklearn import neural_network as sk_nn

SETTLE = float(os.environ.get("SETTLE", "0.3"))


def _cases() -> dict[str, tuple]:
    digits = momcore.datasets.load_digits()
    X_digits, y_digits = digits.X / 16, digits.y
    rng = np.random.default_rng(0)
    X_big, y_big = rng.random((6000, 784)), rng.integers(0, 10, 6000)
    return {
        "digits b200 20 epochs": (X_digits, y_digits, dict(
            hidden_layer_sizes=(100,), batch_size=200, max_iter=20, learning_rate_init=0.1), 5),
        "784-256-128-10 b200 2 epochs": (X_big, y_big, dict(
            hidden_layer_sizes=(256, 128), batch_size=200, max_iter=2,
            learning_rate_init=0.01), 3),
        "digits online 1 epoch": (X_digits, y_digits, dict(
            hidden_layer_sizes=(100,), batch_size=1, max_iter=1, learning_rate_init=0.01), 5),
    }


def _fit_seconds(cls: type, X: np.ndarray, y: np.ndarray, params: dict) -> float:
    time.sleep(SETTLE)
    start = time.perf_counter()
    cls(**params).fit(X, y)
    return time.perf_counter() - start


def main(which: list[str]) -> None:
    warnings.simplefilter("ignore")  # ConvergenceWarning: the epochs are fixed on purpose
    for name, (X, y, params, repeats) in _cases().items():
        if which and not any(w in name for w in which):
            continue
        for alpha in (1e-4, 0.0):
            p = dict(params, alpha=alpha, tol=0.0, n_iter_no_change=10**6, random_state=0)
            theirs = dict(p, solver="sgd")
            _fit_seconds(MLPClassifier, X, y, p)  # warm both up
            _fit_seconds(sk_nn.MLPClassifier, X, y, theirs)
            rounds = []
            for _ in range(3):
                sk, mc = [], []
                for _ in range(repeats):
                    sk.append(_fit_seconds(sk_nn.MLPClassifier, X, y, theirs))
                    mc.append(_fit_seconds(MLPClassifier, X, y, p))
                rounds.append(f"{min(sk) / min(mc):.2f}x ({min(sk) * 1e3:.1f}/"
                              f"{min(mc) * 1e3:.2f} ms)")
            print(f"{name:30s} alpha={alpha:g}: {'  '.join(rounds)}  | load "
                  f"{os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

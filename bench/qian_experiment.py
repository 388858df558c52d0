"""Qian's open question, measured: can per-weight curvatures (the Hessian diagonal)
choose the momentum?  Steps to a target loss on ill-conditioned quadratics (axis-
aligned: the diagonal is exact; rotated: it is not) and epochs/accuracy on digits.

    python bench/qian_experiment.py --quick     # well under a minute
    python bench/qian_experiment.py             # more seeds and the digits network
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import momcore
from momcore import theory
from momcore.curvature import Tuner

GRID_LR = np.geomspace(0.05, 20, 16)
GRID_MOMENTUM = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)


def quadratic(n, cond, rotated, seed):
    rng = np.random.default_rng(seed)
    k = np.geomspace(1.0 / cond, 1.0, n)
    if not rotated:
        return np.diag(k), k
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return Q @ np.diag(k) @ Q.T, k


def steps_to(H, run, tol=1e-8, limit=5000):
    """Steps until E = 1/2 w^T H w falls below tol * E(w0); run(w, step) makes one."""
    w = np.ones(H.shape[0])
    e0 = 0.5 * w @ H @ w
    for t in range(1, limit + 1):
        run(w, H @ w)
        e = 0.5 * w @ H @ w
        if not np.isfinite(e) or e > 1e6 * e0:
            return limit
        if e < tol * e0:
            return t
    return limit


def contenders(H):
    diag = np.diag(H).copy()
    kmax = float(np.linalg.eigvalsh(H).max())

    def sgd(lr, momentum, rule="classical"):
        def make():
            state = {}

            def run(w, g):
                if "opt" not in state:
                    state["opt"] = momcore.SGD([w], lr=lr, momentum=momentum, rule=rule)
                state["opt"].step([g])
            return run
        return make

    def per_weight(lr):
        def make():
            state = {}

            def run(w, g):
                if "opt" not in state:
                    state["opt"] = momcore.SGD([w], lr=lr, rule="qian")
                state["opt"].observe_curvature([diag])
                state["opt"].step([g])
            return run
        return make

    def tuner():
        state = {}

        def run(w, g):
            if "opt" not in state:
                state["opt"] = momcore.SGD([w], lr=0.1)
                state["tuner"] = Tuner(state["opt"], stochastic=False)
            state["tuner"].observe([g])
            state["opt"].step([g])
        return run

    k_lo = max(diag.min(), 1e-3 * diag.max())
    return {
        "plain (best lr)": [sgd(lr, 0.0) for lr in GRID_LR],
        "classical (grid lr x momentum)": [sgd(lr, m) for lr in GRID_LR for m in GRID_MOMENTUM],
        "per-weight, lr = 1/max h_ii": [per_weight(1.0 / diag.max())],
        "per-weight, lr = Polyak from diag": [per_weight(float(theory.tune(k_lo, diag.max()).lr))],
        "tuner (secant, no hyperparameter)": [tuner],
        "theory: Polyak (eigenvalues known)": [sgd(*theory.tune(1.0 / COND, kmax)[:2])],
    }


COND = 1000.0


def quadratic_table(seeds, n=50):
    rows = []
    for rotated in (False, True):
        results: dict[str, list[tuple[int, int]]] = {}
        for seed in seeds:
            H, _ = quadratic(n, COND, rotated, seed)
            for name, makers in contenders(H).items():
                best = min(steps_to(H, make()) for make in makers)
                results.setdefault(name, []).append((best, len(makers)))
        for name, values in results.items():
            steps = np.array([v[0] for v in values])
            rows.append(("rotated" if rotated else "axis-aligned", name,
                         f"{np.median(steps):.0f}", f"{steps.min()}-{steps.max()}",
                         values[0][1]))
    return rows


def digits_table(seeds, epochs):
    data = momcore.datasets.load_digits()
    X = (data.X - data.X.mean(0)) / (data.X.std(0) + 1e-9)
    y = data.y
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    train, test = idx[:1400], idx[1400:]
    cases = {
        "classical lr=0.1 p=0.9": dict(lr=0.1, momentum=0.9),
        "annealed 0.5->0.9": dict(lr=0.1, momentum_schedule=momcore.schedules.momentum_annealing(
            epochs=epochs)),
        "per-weight (qian) lr=0.5": dict(lr=0.5, rule="qian"),
        "per-weight (qian) lr=1.0": dict(lr=1.0, rule="qian"),
    }
    rows = []
    for name, kw in cases.items():
        kw = {k: v for k, v in kw.items() if v is not None}
        losses, accs, secs = [], [], []
        for seed in seeds:
            net = momcore.MLP([64, 64, 10], seed=seed)
            t0 = time.perf_counter()
            h = net.fit(X[train], y[train], epochs=epochs, batch_size=64, **kw)
            secs.append(time.perf_counter() - t0)
            losses.append(h.loss[-1])
            accs.append(net.score(X[test], y[test]))
        rows.append(("digits 64-64-10", name, f"{np.median(losses):.4f}",
                     f"{min(accs):.3f}-{max(accs):.3f}", f"{np.median(secs):.2f}s"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seeds = range(2) if args.quick else range(5)
    start = time.perf_counter()
    print(f"quadratics: n=50, condition {COND:g}, steps to E < 1e-8 E0 (median, range over "
          f"{len(seeds)} seeds); grid: lr {GRID_LR[0]:.2g}..{GRID_LR[-1]:.2g} ({len(GRID_LR)}), "
          f"momentum {GRID_MOMENTUM}")
    print(f"{'problem':<13} {'contender':<36} {'steps':>6} {'range':>12} {'runs searched':>14}")
    for row in quadratic_table(seeds):
        print(f"{row[0]:<13} {row[1]:<36} {row[2]:>6} {row[3]:>12} {row[4]:>14}")
    epochs = 5 if args.quick else 20
    print(f"\ndigits: 1400 train / 397 test, batch 64, {epochs} epochs, {len(seeds)} seeds")
    print(f"{'problem':<16} {'contender':<28} {'train loss':>10} {'test acc':>12} {'time':>7}")
    for row in digits_table(seeds, epochs):
        print(f"{row[0]:<16} {row[1]:<28} {row[2]:>10} {row[3]:>12} {row[4]:>7}")
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

"""Qian's open question, measured: can per-weight curvatures (the Hessian diagonal)
choose the momentum, and how does that compare with a searched constant pair, the
usual schedules, an automatic tuner and the common defaults?

Problems (several seeds each): ill-conditioned quadratics, axis-aligned (the diagonal
is exact) and rotated (it is not); iris; digits; a 784-256-128-10 network on a
synthetic data set of that shape (labels from a fixed random teacher network).
Contenders: plain descent at its best lr and classical momentum at its best
(lr, momentum) from a grid searched on the first seed (fewest steps to the target,
then the lowest final loss; the grid and the cost of the search are printed); the annealed 0.5 -> 0.9 momentum; Qian's staged (lr, momentum)
schedule (momcore.schedules.Stages); the per-weight rule (rule="qian", lr searched on
the same grid); the automatic tuner (momentum="auto", no hyperparameter); and, for
scale, Adam (torch.optim.Adam at its defaults) and scikit-learn's default solver
(MLPClassifier at its defaults, adam), each skipped when its package is absent.
Measured per seed: steps and seconds to a target loss, the final test accuracy; the
table gives the median and the range over seeds.

    python bench/qian_experiment.py --quick     # well under a minute (CI)
    python bench/qian_experiment.py             # about 5 minutes on 2 cores
    python bench/qian_experiment.py --figure docs/qian_experiment.png --markdown out.md
"""
from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import momcore
from momcore import schedules, theory

try:
    import torch
except ImportError:  # the Adam rows are skipped
    torch = None
try:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as SkMLP
except ImportError:  # the scikit-learn row is skipped
    SkMLP = None

CONTENDERS = ("plain (best lr)", "classical (best lr, momentum)", "annealed 0.5->0.9",
              "Qian staged (lr, p)", "per-weight (rule qian)", "auto (tuner)",
              "Adam (torch defaults)", "scikit-learn default (adam)")
"""Every row of the table, in order (a row without its package reads 'skipped')."""

GRID_MOMENTUM = (0.0, 0.5, 0.9, 0.95, 0.99)


@dataclass
class Run:
    """One contender on one seed."""
    steps: float  # to the target (inf: not reached)
    seconds: float  # to the target (inf: not reached)
    accuracy: float = float("nan")  # final test accuracy (nan: not a classifier)


@dataclass
class Row:
    problem: str
    contender: str
    runs: list[Run] = field(default_factory=list)
    setting: str = ""
    search: str = ""  # "runs / seconds" of the grid search, if any
    skipped: str = ""


# ---- quadratics ------------------------------------------------------------------

COND = 1000.0
N_QUAD = 50
QUAD_TOL = 1e-8  # energy reduction that counts as reached
QUAD_LIMIT = 3000
QUAD_GRID_LR = tuple(np.geomspace(0.05, 4.0, 12))


def quadratic(rotated: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """H with eigenvalues geomspace(1/COND, 1, N_QUAD) (rotated by a random orthogonal
    Q when asked) and a random start."""
    rng = np.random.default_rng(seed)
    k = np.geomspace(1.0 / COND, 1.0, N_QUAD)
    H = np.diag(k)
    if rotated:
        Q, _ = np.linalg.qr(rng.standard_normal((N_QUAD, N_QUAD)))
        H = Q @ H @ Q.T
    return H, rng.standard_normal(N_QUAD)


def quadratic_run(H: np.ndarray, w0: np.ndarray,
                  make: Callable[[np.ndarray], Callable[[np.ndarray, int], None]]) -> Run:
    """Steps until E = w^T H w / 2 < QUAD_TOL E(w0); make(w) returns step(g, t)."""
    w = w0.copy()
    step = make(w)
    e0 = 0.5 * w @ H @ w
    start = time.perf_counter()
    for t in range(QUAD_LIMIT):
        step(H @ w, t)
        e = 0.5 * w @ H @ w
        if not np.isfinite(e) or e > 1e8 * e0:
            break
        if e < QUAD_TOL * e0:
            return Run(t + 1, time.perf_counter() - start)
    return Run(math.inf, math.inf)


def _sgd(lr: float, momentum: float):
    def make(w):
        opt = momcore.SGD([w], lr=lr, momentum=momentum)
        return lambda g, t: opt.step([g])
    return make


def _scheduled(lr_of, momentum_of):
    def make(w):
        opt = momcore.SGD([w], lr=lr_of(0), momentum=momentum_of(0))

        def step(g, t):
            opt.lr, opt.momentum = lr_of(t), momentum_of(t)
            opt.step([g])
        return step
    return make


def _per_weight(lr: float, diag: np.ndarray):
    def make(w):
        opt = momcore.SGD([w], lr=lr, rule="qian")
        opt.observe_curvature([diag])  # exact curvature: observed once, kept

        def step(g, t):
            opt.step([g])
        return step
    return make


def _auto(w):
    opt = momcore.SGD([w], momentum="auto")
    opt.tuner.stochastic = False  # full gradients
    return lambda g, t: opt.step([g])


def _adam(w):
    p = torch.nn.Parameter(torch.from_numpy(w))  # shares w's memory
    opt = torch.optim.Adam([p])

    def step(g, t):
        p.grad = torch.from_numpy(g)
        opt.step()
    return step


def _search(fn, candidates):
    """The best candidate by fn (smaller is better) and the search's (runs, seconds)."""
    start = time.perf_counter()
    scored = [(fn(c), i) for i, c in enumerate(candidates)]
    best = min(scored)[1]
    return candidates[best], (len(candidates), time.perf_counter() - start)


def quadratic_rows(rotated: bool, seeds: list[int]) -> list[Row]:
    name = f"quadratic {'rotated' if rotated else 'axis-aligned'}"
    H0, w00 = quadratic(rotated, seeds[0])
    steps_of = lambda make: quadratic_run(H0, w00, make).steps  # noqa: E731
    plain_lr, plain_cost = _search(lambda lr: steps_of(_sgd(lr, 0.0)), QUAD_GRID_LR)
    grid = [(lr, m) for lr in QUAD_GRID_LR for m in GRID_MOMENTUM]
    (lr, m), grid_cost = _search(lambda c: steps_of(_sgd(*c)), grid)
    diag0 = np.diag(H0).copy()
    pw_lr, pw_cost = _search(lambda lr: steps_of(_per_weight(lr, diag0)), QUAD_GRID_LR)
    stage = QUAD_LIMIT // 10
    stages = _qian_stages(plain_lr, stage, per="step")
    annealed = schedules.momentum_annealing(epochs=stage, per="step")
    rows = [Row(name, c) for c in CONTENDERS]
    rows[0].setting, rows[0].search = f"lr {plain_lr:.3g}", _cost(plain_cost)
    rows[1].setting, rows[1].search = f"lr {lr:.3g}, p {m:g}", _cost(grid_cost)
    rows[2].setting = f"lr {lr:.3g}, p 0.5->0.9 over {stage} steps"
    rows[3].setting = _describe_stages(stages)
    rows[4].setting, rows[4].search = f"lr {pw_lr:.3g}", _cost(pw_cost)
    rows[5].setting = "none"
    rows[6].setting = "lr 1e-3"
    rows[7].skipped = "not a network"
    if torch is None:
        rows[6].skipped = "torch not installed"
    for seed in seeds:
        H, w0 = quadratic(rotated, seed)
        diag = np.diag(H).copy()
        makers = [_sgd(plain_lr, 0.0), _sgd(lr, m),
                  _scheduled(lambda t: lr, annealed), _scheduled(stages.lr, stages.momentum),
                  _per_weight(pw_lr, diag), _auto, _adam]
        for row, make in zip(rows, makers):
            if not row.skipped:
                row.runs.append(quadratic_run(H, w0, make))
    return rows


def _qian_stages(lr0: float, length: int, per: str = "epoch") -> schedules.Stages:
    """Qian's staged pairs: the effective step lr/(1 - p) held at lr0 (the best plain
    rate) while p rises 0 -> 0.5 -> 0.9, so that each stage damps flatter directions
    than the last at the same stiff-direction stability."""
    pairs = tuple((lr0 * (1 - p), p) for p in (0.0, 0.5, 0.9))
    return schedules.Stages(pairs, max(length, 1), per=per)


def _describe_stages(stages: schedules.Stages) -> str:
    return ", ".join(f"({lr:.3g}, {p:g})" for lr, p in stages.pairs) + \
        f" per {stages.epochs_per_stage} {stages.per}s"


def _cost(cost: tuple[int, float]) -> str:
    return f"{cost[0]} runs / {cost[1]:.1f} s"


# ---- networks --------------------------------------------------------------------


@dataclass
class Problem:
    name: str
    sizes: list[int]
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    epochs: int
    batch: int
    target: float  # training loss that counts as reached
    grid_lr: tuple[float, ...]


def _standardize(X: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = X.mean(0), X.std(0) + 1e-9
    return (X - mean) / std, (X_test - mean) / std


def _split(X, y, n_train, seed=0):
    idx = np.random.default_rng(seed).permutation(len(y))
    a, b = idx[:n_train], idx[n_train:]
    Xa, Xb = _standardize(X[a], X[b])
    return Xa, y[a], Xb, y[b]


def teacher_data(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """n rows of MNIST's shape: 784 features that are a fixed random linear image of
    16 latent Gaussian factors plus noise, labelled by the argmax of a fixed random
    16-32-10 ReLU teacher on the factors (learnable, as images are, from few rows)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((16, 784))
    W1 = rng.standard_normal((16, 32)) / 4.0
    W2 = rng.standard_normal((32, 10)) / np.sqrt(32)
    data = np.random.default_rng(seed + 1)
    Z = data.standard_normal((n, 16))
    X = Z @ A / 4.0 + 0.5 * data.standard_normal((n, 784))
    return X, np.argmax(np.maximum(Z @ W1, 0) @ W2, axis=1)


def problems(quick: bool) -> list[Problem]:
    grid = (0.01, 0.03, 0.1, 0.3)
    iris = momcore.datasets.load_iris()
    digits = momcore.datasets.load_digits()
    n_teacher = 400 if quick else 1500
    Xt, yt = teacher_data(n_teacher + (200 if quick else 500))
    out = [
        Problem("iris 4-16-3", [4, 16, 3], *_split(iris.X, iris.y, 100), epochs=40 if quick
                else 100, batch=10, target=0.1, grid_lr=grid),
        Problem("digits 64-64-10", [64, 64, 10], *_split(digits.X, digits.y, 1400),
                epochs=6 if quick else 20, batch=64, target=0.05, grid_lr=grid),
        Problem("synthetic 784-256-128-10", [784, 256, 128, 10],
                *_split(Xt, yt, n_teacher), epochs=2 if quick else 4, batch=64,
                target=1.0 if quick else 0.3,
                grid_lr=(0.03, 0.1) if quick else (0.01, 0.03, 0.1)),
    ]
    return out


def _net_run(problem: Problem, seed: int, **fit) -> Run:
    net = momcore.MLP(problem.sizes, hidden="relu", seed=seed)
    h = net.fit(problem.X, problem.y, epochs=problem.epochs, batch_size=problem.batch,
                shuffle=True, **fit)
    return _from_curve(h.loss, np.cumsum(h.seconds), problem,
                       net.score(problem.X_test, problem.y_test))


def _from_curve(losses, seconds, problem: Problem, accuracy: float,
                batch: int | None = None) -> Run:
    per_epoch = math.ceil(len(problem.y) / (batch or problem.batch))
    for e, loss in enumerate(losses):
        if loss <= problem.target:
            return Run((e + 1) * per_epoch, float(seconds[e]), accuracy)
    return Run(math.inf, math.inf, accuracy)


def _score(problem: Problem, **fit) -> tuple[float, float]:
    """The searched score on the first seed, smaller is better: the epochs to the target
    loss (inf if not reached), then the final training loss (inf if it diverged)."""
    net = momcore.MLP(problem.sizes, hidden="relu", seed=0)
    try:
        h = net.fit(problem.X, problem.y, epochs=problem.epochs, batch_size=problem.batch,
                    **fit)
    except FloatingPointError:
        return math.inf, math.inf
    reached = [e for e, loss in enumerate(h.loss) if loss <= problem.target]
    final = h.loss[-1] if np.isfinite(h.loss[-1]) else math.inf
    return (reached[0] if reached else math.inf), final


def _adam_run(problem: Problem, seed: int) -> Run:
    """torch.optim.Adam at its defaults on the same network, initial weights and
    batches as momcore's (mean cross-entropy)."""
    net = momcore.MLP(problem.sizes, hidden="relu", seed=seed)
    layers: list = []
    for i, (W, b) in enumerate(zip(net.weights, net.biases)):
        lin = torch.nn.Linear(*W.shape, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T))
            lin.bias.copy_(torch.from_numpy(b))
        layers += [lin] + ([torch.nn.ReLU()] if i < len(net.weights) - 1 else [])
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters())
    X, y = torch.from_numpy(problem.X), torch.from_numpy(problem.y.astype(np.int64))
    rng = np.random.default_rng(seed)
    losses, seconds, elapsed = [], [], 0.0
    for _ in range(problem.epochs):
        start, total = time.perf_counter(), 0.0
        order = torch.from_numpy(rng.permutation(len(y)))
        for b0 in range(0, len(y), problem.batch):
            idx = order[b0:b0 + problem.batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        elapsed += time.perf_counter() - start
        losses.append(total / len(y))
        seconds.append(elapsed)
    with torch.no_grad():
        pred = model(torch.from_numpy(problem.X_test)).argmax(1).numpy()
    return _from_curve(losses, seconds, problem, float(np.mean(pred == problem.y_test)))


def _sklearn_run(problem: Problem, seed: int) -> Run:
    """scikit-learn's MLPClassifier at its defaults (adam, batch min(200, n), its own
    initialisation, alpha 1e-4) with the same hidden layers and epochs; the seconds to
    the target are the fit's time prorated by epochs (it reports no per-epoch times)."""
    import warnings
    est = SkMLP(hidden_layer_sizes=tuple(problem.sizes[1:-1]), max_iter=problem.epochs,
                random_state=seed, n_iter_no_change=problem.epochs + 1)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(problem.X, problem.y)
    total = time.perf_counter() - start
    curve = est.loss_curve_
    seconds = [total * (e + 1) / len(curve) for e in range(len(curve))]
    return _from_curve(curve, seconds, problem, est.score(problem.X_test, problem.y_test),
                       batch=min(200, len(problem.y)))


def network_rows(problem: Problem, seeds: list[int]) -> list[Row]:
    grid = problem.grid_lr
    plain_lr, plain_cost = _search(lambda lr: _score(problem, lr=lr, momentum=0.0), grid)
    pairs = [(lr, m) for lr in grid for m in GRID_MOMENTUM]
    (lr, m), grid_cost = _search(lambda c: _score(problem, lr=c[0], momentum=c[1]), pairs)
    pw_lr, pw_cost = _search(lambda x: _score(problem, lr=x, rule="qian"), grid)
    stages = _qian_stages(plain_lr, max(problem.epochs // 3, 1))
    rows = [Row(problem.name, c) for c in CONTENDERS]
    rows[0].setting, rows[0].search = f"lr {plain_lr:g}", _cost(plain_cost)
    rows[1].setting, rows[1].search = f"lr {lr:g}, p {m:g}", _cost(grid_cost)
    rows[2].setting = f"lr {lr:g}, p 0.5->0.9 over {problem.epochs} epochs"
    rows[3].setting = _describe_stages(stages)
    rows[4].setting, rows[4].search = f"lr {pw_lr:g}", _cost(pw_cost)
    rows[5].setting = "none (first step lr 0.1)"
    rows[6].setting = "lr 1e-3, same init and batches"
    rows[7].setting = "adam, batch 200, own init"
    if torch is None:
        rows[6].skipped = "torch not installed"
    if SkMLP is None:
        rows[7].skipped = "scikit-learn not installed"
    annealed = schedules.momentum_annealing(epochs=problem.epochs)
    runs = [lambda s: _net_run(problem, s, lr=plain_lr, momentum=0.0),
            lambda s: _net_run(problem, s, lr=lr, momentum=m),
            lambda s: _net_run(problem, s, lr=lr, momentum_schedule=annealed),
            lambda s: _net_run(problem, s, lr_schedule=stages.lr,
                               momentum_schedule=stages.momentum),
            lambda s: _net_run(problem, s, lr=pw_lr, rule="qian"),
            lambda s: _net_run(problem, s, momentum="auto"),
            lambda s: _adam_run(problem, s),
            lambda s: _sklearn_run(problem, s)]
    for seed in seeds:
        for row, run in zip(rows, runs):  # contenders interleaved within each seed
            if not row.skipped:
                try:
                    row.runs.append(run(seed))
                except FloatingPointError:
                    row.runs.append(Run(math.inf, math.inf))
    return rows


# ---- report ----------------------------------------------------------------------


def _spread(values: list[float], fmt: str) -> tuple[str, str]:
    finite = [v for v in values if np.isfinite(v)]
    if not values or all(np.isnan(v) for v in values):
        return "", ""
    if len(finite) < len(values):
        reached = f"{len(finite)}/{len(values)} reached"
        if not finite:
            return "not reached", ""
        return format(float(np.median(values)), fmt) if len(finite) * 2 > len(values) \
            else "not reached", f"{format(min(finite), fmt)}-..., {reached}"
    return format(float(np.median(finite)), fmt), \
        f"{format(min(finite), fmt)}-{format(max(finite), fmt)}"


def table(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        if r.skipped:
            out.append([r.problem, r.contender, "skipped", "", "", "", "", r.skipped, ""])
            continue
        steps = _spread([x.steps for x in r.runs], ".0f")
        secs = _spread([x.seconds for x in r.runs], ".3f")
        acc = _spread([x.accuracy for x in r.runs], ".3f")
        out.append([r.problem, r.contender, *steps, *secs, acc[0] or "-", r.setting,
                    r.search])
    return out


HEADER = ["problem", "contender", "steps to target", "range", "seconds", "range",
          "test acc", "setting", "search (runs / time)"]


def markdown(lines: list[list[str]]) -> str:
    text = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    text += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(text)


def figure(rows: list[Row], path: str) -> bool:
    """Median steps to target (dot) and range over seeds (line) per contender and
    problem, log scale; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        return False
    names = list(dict.fromkeys(r.problem for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.8), sharey=True)
    y = np.arange(len(CONTENDERS))
    for ax, name in zip(np.atleast_1d(axes), names):
        mine = {r.contender: r for r in rows if r.problem == name}
        finite_all = [x.steps for r in mine.values() for x in r.runs if np.isfinite(x.steps)]
        right = max(finite_all) * 1.5 if finite_all else 10.0
        for i, contender in enumerate(CONTENDERS):
            r = mine[contender]
            steps = np.array([x.steps for x in r.runs], float)
            finite = steps[np.isfinite(steps)]
            if r.skipped or finite.size * 2 <= steps.size:
                label = "skipped" if r.skipped else "not reached"
                ax.text(0.03, i, label, va="center", fontsize=8, color="0.4",
                        transform=ax.get_yaxis_transform())
                continue
            ax.plot([finite.min(), finite.max() if finite.size == steps.size else right],
                    [i, i], color="tab:blue", lw=2)
            ax.plot(np.median(steps), i, "o", color="tab:blue")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("steps to target", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    first = np.atleast_1d(axes)[0]
    first.set_yticks(y, CONTENDERS, fontsize=8)
    first.set_ylim(len(CONTENDERS) - 0.5, -0.5)  # the first contender on top
    fig.suptitle("Steps to the target loss: median (dot) and range over seeds (line)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run(quick: bool) -> tuple[list[Row], float]:
    start = time.perf_counter()
    seeds = [0, 1] if quick else [0, 1, 2]
    quad_seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    rows = quadratic_rows(False, quad_seeds) + quadratic_rows(True, quad_seeds)
    for problem in problems(quick):
        rows += network_rows(problem, seeds)
    return rows, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer seeds, rows, epochs")
    parser.add_argument("--figure", help="write the figure here (needs matplotlib)")
    parser.add_argument("--markdown", help="write the table here as markdown")
    args = parser.parse_args()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    rows, seconds = run(args.quick)
    lines = table(rows)
    widths = [max(len(HEADER[i]), *(len(c[i]) for c in lines)) for i in range(len(HEADER))]
    print(f"quadratics: n={N_QUAD}, condition {COND:g}, target E < {QUAD_TOL:g} E0 within "
          f"{QUAD_LIMIT} steps; networks: target training loss per problem; grid momenta "
          f"{GRID_MOMENTUM}, searched on the first seed")
    print("  ".join(h.ljust(w) for h, w in zip(HEADER, widths)))
    for cells in lines:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    print(f"\ntotal {seconds:.1f} s; load average at start {load:.2f}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(lines) + "\n")
    if args.figure and not figure(rows, args.figure):
        print("matplotlib not installed: no figure")


if __name__ == "__main__":
    main()

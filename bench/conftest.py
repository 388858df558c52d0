"""Prints momcore's target ratios after a pytest-benchmark run: each group's contenders
against its baseline, measured in the same run on the same buffers."""
from __future__ import annotations

import time

import pytest

from momcore import _bench

# group -> contender -> best time (s); filled by the benchmarks as they finish.
RESULTS: dict[str, dict[str, float]] = {}

# (group prefix, numerator, denominator, label, target): momcore's performance targets.
RATIOS = [
    ("step ", "reference", "momcore", "speed-up over the numpy reference", ">= 5x (n >= 1e6), >= 3x (1e3)"),
    ("step ", "roofline", "momcore", "fraction of the 5-stream roofline", ">= 90 % (n >= 1e6)"),
    ("step ", "momcore_raise", "momcore", "nonfinite='raise' / 'propagate'", "1.6x floor (n = 1e7): a dry run reads w, g, state"),
    ("step ", "torch_fused", "momcore", "torch.optim.SGD(fused=True) / momcore",
     ">= 3x small, >= 1.0x large"),
    ("step torch optimizer", "torch_foreach", "momcore",
     "torch.optim.SGD(foreach=True) / momcore.torch.SGD", ">= 5x small"),
    ("many ", "reference_loop", "momcore_many", "speed-up over a loop of the reference", ">= 10x"),
    ("mlp online", "numpy", "c", "online epoch: numpy backend / compiled", ">= 100x iris, >= 20x digits"),
    ("mlp online", "sklearn", "c", "online epoch: scikit-learn MLPClassifier / compiled", "peer"),
    ("mlp step", "numpy", "c", "minibatch step: numpy backend / compiled", ">= 1.5x"),
    ("mlp step", "c", "gemm_floor", "minibatch step: compiled / its GEMMs alone", "<= 1.25x"),
    ("mlp step", "torch", "c", "minibatch step: PyTorch / compiled", "peer"),
    ("mlp curvature", "curvature", "plain", "step with the curvature pass (rule qian) / plain step",
     "< 1.5x"),
    ("sklearn fit", "sklearn", "momcore", "fit: scikit-learn MLPClassifier / momcore.MLPClassifier",
     ">= 3x digits b200, >= 1.3x 784-256-128-10 b200, >= 30x online"),
    ("sklearn cross", "sklearn", "momcore", "cross_val_score on digits", "figure"),
    ("sklearn Grid", "sklearn", "momcore", "GridSearchCV on digits", "figure"),
]


def _record(benchmark, group: str, name: str) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        RESULTS.setdefault(group, {})[name] = stats.stats.min


@pytest.fixture(autouse=True)
def settle():
    """Idles before each benchmark, so that an OpenBLAS pool still spinning after the
    previous one (numpy's and scipy's each keep one) does not slow this one."""
    time.sleep(_bench.SETTLE)


@pytest.fixture
def record():
    """record(benchmark, group, name): keeps a finished benchmark's best time for the
    ratio summary (nothing is kept when benchmarks are disabled)."""
    return _record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("momcore ratios (best times, same run)")
    for prefix, num, den, label, target in RATIOS:
        rows = [(g, r[num] / r[den]) for g, r in sorted(RESULTS.items())
                if g.startswith(prefix) and num in r and den in r]
        if rows:
            tr.write_line(f"{label}   [target {target}]")
            for group, ratio in rows:
                tr.write_line(f"  {group:<32} {ratio:8.2f}")

"""Soak: a long loop of updates and training epochs keeps resident memory flat.

The default run soaks for a few seconds; ``pytest -m slow`` runs the long version,
whose length MOMCORE_SOAK_SECONDS sets (default 120)."""
from __future__ import annotations

import gc
import os
import time

import numpy as np
import pytest

import momcore
from momcore.datasets import load_digits

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="Linux only")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _soak(seconds: float, min_epochs: int = 0) -> tuple[int, int, int]:
    """Steps, epochs, and the RSS growth between the first quarter and the end; runs
    for ``seconds`` and at least ``min_epochs`` epochs (a loaded machine is slower)."""
    digits = load_digits()
    X, y = digits.X / 16, digits.y
    net = momcore.MLP([64, 32, 10], seed=0)
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(n).astype(dt) for n, dt in
              ((100, np.float32), (70_000, np.float64), (5, np.float64))]
    opt = momcore.SGD(params, lr=1e-4, momentum=0.9, rule="nesterov", nonfinite="skip")
    grads = [np.ones_like(p) for p in params]
    steps = epochs = 0
    baseline = None
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or epochs < min_epochs:
        for _ in range(50):
            opt.step(grads)
            momcore.momentum_step(params[1], grads[1], opt.state[1], lr=1e-4, momentum=0.5)
            steps += 2
        net.fit(X, y, epochs=1, lr=1e-3, batch_size=1 + epochs % 3 * 15)
        net.predict(X[: 1 + epochs % 300])
        epochs += 1
        if baseline is None and elapsed > seconds / 4 and epochs >= min_epochs // 4:
            gc.collect()
            baseline = _rss()
    gc.collect()
    return steps, epochs, _rss() - (baseline if baseline is not None else _rss())


def test_short_soak_keeps_memory_flat():
    steps, epochs, grown = _soak(3.0, min_epochs=8)
    assert epochs >= 5
    assert grown < 2 * 2**20, f"RSS grew by {grown / 2**20:.2f} MiB over {epochs} epochs"


@pytest.mark.slow
def test_long_soak_keeps_memory_flat():
    seconds = float(os.environ.get("MOMCORE_SOAK_SECONDS", "120"))
    steps, epochs, grown = _soak(seconds)
    print(f"soak: {seconds:.0f} s, {steps} steps, {epochs} epochs, RSS growth "
          f"{grown / 2**20:.2f} MiB")
    assert grown < 4 * 2**20, f"RSS grew by {grown / 2**20:.2f} MiB over {epochs} epochs"

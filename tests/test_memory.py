"""Long loops of calls, including failing ones, do not grow the process's memory."""
from __future__ import annotations

import gc

import numpy as np
import pytest

import momcore


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="Linux only")
def test_repeated_calls_do_not_leak():
    ws = [np.zeros(100) for _ in range(20)]
    gs = [np.ones(100) for _ in range(20)]
    ss = [np.zeros(100) for _ in range(20)]
    bad = [np.ones(100) for _ in range(20)]
    bad[-1][0] = np.nan

    def burst(k):
        for _ in range(k):
            momcore.momentum_step(ws[0], gs[0], ss[0], lr=1e-3, momentum=0.9)
            momcore.momentum_step_many(ws, gs, ss, lr=1e-3, momentum=0.9)
            momcore.momentum_step_many(ws, bad, ss, lr=1e-3, momentum=0.9, nonfinite="skip")
            for args in ((ws[0], gs[0], ws[0]), (ws[0], [1.0], ss[0])):
                try:
                    momcore.momentum_step(*args, lr=1e-3, momentum=0.9)
                except (TypeError, ValueError):
                    pass
            try:
                momcore.momentum_step_many(ws, gs[:-1] + [np.ones(3)], ss, lr=1e-3,
                                           momentum=0.9)
            except ValueError:
                pass

    burst(2000)  # warm up allocator pools and interned strings
    gc.collect()
    before = _rss_bytes()
    burst(20000)
    gc.collect()
    grown = _rss_bytes() - before
    # A leak of even one 20-entry buffer table (~800 bytes) per call would be 16 MB.
    assert grown < 2 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB"

"""
A small speed table: the fused kernel against the numpy reference
=================================================================

:func:`momcore.momentum_step` performs the whole update in one pass over memory;
:func:`momcore.reference.momentum_step` is the same math in plain numpy (several passes
and a temporary), the ground truth of the tests. Both run here on the same arrays, taking
turns, and each keeps its best time: the ratio is what is measured, since absolute times
vary from machine to machine and minute to minute. This is a quick illustration at sizes
below 65,536 elements, which run on one thread (larger arrays are split across threads,
and their timing depends on what else the machine runs); ``momcore bench`` measures
properly (see the Performance page).
"""
import timeit

import numpy as np

import momcore
from momcore import reference

rng = np.random.default_rng(0)
print(f"{'n':>9} {'dtype':>8} {'momcore us':>11} {'numpy us':>9} {'speed-up':>9}")
for n in (1_000, 30_000):
    for dtype in (np.float32, np.float64):
        w, g = rng.standard_normal((2, n)).astype(dtype)
        s = np.zeros(n, dtype)
        contenders = {
            "momcore": lambda: momcore.momentum_step(w, g, s, lr=1e-3, momentum=0.9),
            "numpy": lambda: reference.momentum_step(w, g, s, lr=1e-3, momentum=0.9),
        }
        best = {name: float("inf") for name in contenders}
        for _ in range(5):                      # rounds; the contenders take turns
            for name, step in contenders.items():
                number = 200 if n <= 1_000 else 20
                best[name] = min(best[name], timeit.timeit(step, number=number) / number)
        print(f"{n:>9} {np.dtype(dtype).name:>8} {best['momcore'] * 1e6:>11.2f} "
              f"{best['numpy'] * 1e6:>9.2f} {best['numpy'] / best['momcore']:>8.1f}x")

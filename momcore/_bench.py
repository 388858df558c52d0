"""Benchmark cases shared by ``python -m momcore bench`` and the pytest-benchmark suite.

Every case times both sides on the same preallocated buffers, warm, with the
same thread count; results are reported as ratios measured within one run.
"""
from __future__ import annotations

import timeit
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from momcore import _core

KERNEL_SIZES = (10**3, 10**5, 10**6, 10**7)
HYPER = dict(lr=0.01, momentum=0.9)


@dataclass
class Operands:
    """w, g, state of n elements: the buffers every contender of a case shares."""

    w: np.ndarray
    g: np.ndarray
    s: np.ndarray


def operands(n: int, dtype: type, seed: int = 0) -> Operands:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(n).astype(dtype)
    g = (rng.standard_normal(n) * 1e-3).astype(dtype)
    return Operands(w, g, np.zeros(n, dtype))


def kernel_contenders(ops: Operands) -> dict[str, Callable[[], object]]:
    """The step on ops by each contender, by name; 'roofline' is the 5-stream loop."""
    from momcore import reference

    w, g, s = ops.w, ops.g, ops.s
    return {
        "reference": lambda: reference.momentum_step(w, g, s, **HYPER),
        "momcore": lambda: _core.momentum_step(w, g, s, **HYPER),
        "momcore_raise": lambda: _core.momentum_step(w, g, s, **HYPER, nonfinite="raise"),
        "roofline": lambda: _core._stream5(w, g, s),
    }


def many_contenders(count: int = 100, n: int = 1000,
                    dtype: type = np.float64) -> dict[str, Callable[[], object]]:
    """count arrays of n: a Python loop over the reference vs one momentum_step_many."""
    from momcore import reference

    sets = [operands(n, dtype, seed) for seed in range(count)]
    ws, gs, ss = [o.w for o in sets], [o.g for o in sets], [o.s for o in sets]

    def loop() -> None:
        for w, g, s in zip(ws, gs, ss):
            reference.momentum_step(w, g, s, **HYPER)

    return {"reference_loop": loop,
            "momcore_many": lambda: _core.momentum_step_many(ws, gs, ss, **HYPER)}


def best_times(contenders: dict[str, Callable[[], object]], budget: float = 0.2,
               rounds: int = 7) -> dict[str, float]:
    """Best per-call time in seconds of each contender.

    The contenders take turns, round after round, so that drift of the machine
    (frequency, neighbours) touches all of them alike; each round gives each
    contender about budget/rounds seconds, and the best round counts."""
    numbers = {}
    for name, fn in contenders.items():
        fn()
        number = 1
        while (t := timeit.timeit(fn, number=number)) < 2e-3 and number < 1 << 20:
            number *= 4
        numbers[name] = max(1, int(number * (budget / rounds) / max(t, 1e-9)))
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(rounds):
        for name, fn in contenders.items():
            t = timeit.timeit(fn, number=numbers[name]) / numbers[name]
            best[name] = min(best[name], t)
    return best


def kernel_table(sizes=KERNEL_SIZES, dtypes=(np.float32, np.float64),
                 budget: float = 0.2) -> list[dict[str, object]]:
    """Rows of ratios: speed-up over the reference, fraction of the roofline's
    bandwidth, and the cost of nonfinite='raise'."""
    rows = []
    for dtype in dtypes:
        for n in sizes:
            times = best_times(kernel_contenders(operands(n, dtype)), budget)
            rows.append({
                "case": f"momentum_step n={n:.0e} {np.dtype(dtype).name}",
                "momcore_us": times["momcore"] * 1e6,
                "speedup": times["reference"] / times["momcore"],
                "roofline_fraction": times["roofline"] / times["momcore"],
                "raise_cost": times["momcore_raise"] / times["momcore"],
            })
    many = best_times(many_contenders(), budget)
    rows.append({"case": "momentum_step_many 100 x 1e3 float64",
                 "momcore_us": many["momcore_many"] * 1e6,
                 "speedup": many["reference_loop"] / many["momcore_many"],
                 "roofline_fraction": float("nan"), "raise_cost": float("nan")})
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    head = (f"{'case':<40} {'momcore us':>11} {'speed-up':>9} {'of roofline':>12} "
            f"{'raise/propagate':>16}")
    lines = [head, "-" * len(head)]
    for r in rows:
        frac = r["roofline_fraction"]
        cost = r["raise_cost"]
        lines.append(
            f"{r['case']:<40} {r['momcore_us']:>11.2f} {r['speedup']:>8.1f}x "
            f"{'' if frac != frac else f'{frac:>11.0%}':>12} "
            f"{'' if cost != cost else f'{cost:>15.2f}x':>16}")
    return "\n".join(lines)

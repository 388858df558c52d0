"""Benchmark cases shared by ``python -m momcore bench`` and the pytest-benchmark suite.

Every case times both sides on the same preallocated buffers, warm, with the
same thread count; results are reported as ratios measured within one run.
"""
from __future__ import annotations

import time
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from momcore import _core

KERNEL_SIZES = (10**3, 10**5, 10**6, 10**7)
SETTLE = 0.2  # seconds idle before each timed turn (see best_times)
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


HALF_SIZE = 2 * 10**7


def half_dtypes() -> list:
    """The 16-bit storage dtypes this environment has: float16, and bfloat16 when the
    optional ml_dtypes is installed."""
    try:
        from ml_dtypes import bfloat16
    except ImportError:
        return [np.float16]
    return [np.float16, bfloat16]


def torch_fused_step(dtype: type, n: int = HALF_SIZE) -> Callable[[], object] | None:
    """One step of ``torch.optim.SGD(fused=True)`` (momentum 0.9) on n parameters of
    dtype, on momcore's thread count; None without torch or its fused CPU SGD for dtype.

    Its parameter, gradient and momentum buffer are numpy buffers of their own made as
    every momcore contender's are (``operands``): the same allocator, alignment and
    pages, and no first step that allocates. See ``torch_fused_skips_parameters``."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(_core.get_num_threads())
    ops = operands(n, dtype)

    def tensor(a: np.ndarray):
        if np.dtype(dtype).name == "bfloat16":  # ml_dtypes' type, which torch cannot read
            return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(a)

    param = tensor(ops.w)
    param.grad = tensor(ops.g)
    try:
        opt = torch.optim.SGD([param], **HYPER, fused=True)
        opt.state[param]["momentum_buffer"] = tensor(ops.s)
        opt.step()
    except (RuntimeError, TypeError):  # no fused CPU SGD for dtype in this build
        return None
    return opt.step


def torch_fused_skips_parameters(dtype: type) -> bool:
    """Whether torch's fused CPU SGD leaves parameters of dtype unwritten: torch 2.12
    and 2.13 update the momentum buffer of every full vector of float16 or bfloat16
    elements but store only the scalar remainder of the parameters (pytorch issue
    191763): their step leaves out one of the 5 streams, the parameters' store (and
    computes the momentum from misread buffers). False without torch."""
    try:
        import torch
    except ImportError:
        return False
    tdtype = {"float16": torch.float16, "bfloat16": torch.bfloat16,
              "float32": torch.float32, "float64": torch.float64}[np.dtype(dtype).name]
    param = torch.ones(256, dtype=tdtype)
    param.grad = torch.ones(256, dtype=tdtype)
    try:
        torch.optim.SGD([param], lr=0.5, momentum=0.9, fused=True).step()
    except (RuntimeError, TypeError):
        return False
    return bool((param != 0.5).any())  # the first step: buffer = g, w = 1 - 0.5 * 1


def half_contenders(n: int = HALF_SIZE,
                    with_torch: bool = True) -> dict[str, Callable[[], object]]:
    """The float32 step and, per 16-bit dtype, its step, its step with
    nonfinite='raise', its 5-stream roofline and (with_torch, when torch is installed)
    torch's fused SGD ('torch_fused_' + the dtype's name), each on buffers of its own."""
    contenders: dict[str, Callable[[], object]] = {}
    for dtype in [np.float32] + half_dtypes():
        name = np.dtype(dtype).name
        ops = operands(n, dtype)
        contenders[name] = lambda o=ops: _core.momentum_step(o.w, o.g, o.s, **HYPER)
        if dtype != np.float32:
            contenders[f"{name}_raise"] = lambda o=ops: _core.momentum_step(
                o.w, o.g, o.s, **HYPER, nonfinite="raise")
            contenders[f"{name}_roofline"] = lambda o=ops: _core._stream5(o.w, o.g, o.s)
            torch_step = torch_fused_step(dtype, n) if with_torch else None
            if torch_step is not None:
                contenders[f"torch_fused_{name}"] = torch_step
    return contenders


def half_table(n: int = HALF_SIZE, budget: float = 0.2,
               settle: float | None = None) -> list[dict[str, object]]:
    """Rows per 16-bit dtype: the float32 step's time over its (target: >= 1.8x, half
    the bytes), the fraction of its own roofline, the cost of nonfinite='raise' and,
    with torch, torch's fused SGD's time over its (target: >= 1.0x) and whether that
    SGD skips the parameters' store (see torch_fused_skips_parameters)."""
    times = best_times(half_contenders(n), budget, settle=settle)
    rows = []
    for dt in half_dtypes():
        name = np.dtype(dt).name
        row = {"case": f"momentum_step n={n:.0e} {name} vs f32",
               "momcore_us": times[name] * 1e6,
               "speedup": times["float32"] / times[name],
               "roofline_fraction": times[f"{name}_roofline"] / times[name],
               "raise_cost": times[f"{name}_raise"] / times[name]}
        if f"torch_fused_{name}" in times:
            row["over_torch_fused"] = times[f"torch_fused_{name}"] / times[name]
            row["torch_fused_skips_parameters"] = torch_fused_skips_parameters(dt)
        rows.append(row)
    return rows


def best_times(contenders: dict[str, Callable[[], object]], budget: float = 0.2,
               rounds: int = 7, settle: float | None = None) -> dict[str, float]:
    """Best per-call time in seconds of each contender.

    The contenders take turns, round after round, so that drift of the machine
    (frequency, neighbours) touches all of them alike; each round gives each
    contender about budget/rounds seconds, and the best round counts. Before each
    turn the process idles for ``settle`` seconds (default SETTLE): an OpenBLAS
    thread pool keeps spinning for a while after its last call (numpy and scipy each
    have one), and on a 2-core machine a spinning pool would slow whichever
    contender comes next."""
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
            time.sleep(SETTLE if settle is None else settle)
            t = timeit.timeit(fn, number=numbers[name]) / numbers[name]
            best[name] = min(best[name], t)
    return best


def kernel_table(sizes=KERNEL_SIZES, dtypes=(np.float32, np.float64),
                 budget: float = 0.2, settle: float | None = None,
                 half: bool = True) -> list[dict[str, object]]:
    """Rows of ratios: speed-up over the reference, fraction of the roofline's
    bandwidth, and the cost of nonfinite='raise'; with half (and sizes up to 1e7),
    the 16-bit rows of half_table, whose speed-up is over the float32 step."""
    rows = []
    for dtype in dtypes:
        for n in sizes:
            times = best_times(kernel_contenders(operands(n, dtype)), budget, settle=settle)
            rows.append({
                "case": f"momentum_step n={n:.0e} {np.dtype(dtype).name}",
                "momcore_us": times["momcore"] * 1e6,
                "speedup": times["reference"] / times["momcore"],
                "roofline_fraction": times["roofline"] / times["momcore"],
                "raise_cost": times["momcore_raise"] / times["momcore"],
            })
    if half and max(sizes) >= 10**7:
        rows += half_table(budget=budget, settle=settle)
    many = best_times(many_contenders(), budget, settle=settle)
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
            f"{'' if cost != cost else f'{cost:>15.2f}x':>16}"
            + (f"  torch fused time / momcore's: {r['over_torch_fused']:.2f}x"
               + ("*" if r["torch_fused_skips_parameters"] else "")
               if "over_torch_fused" in r else ""))
    if any(r.get("torch_fused_skips_parameters") for r in rows):
        lines.append("* this torch's fused CPU SGD leaves the parameters of full vectors "
                     "unwritten in float16/bfloat16 (pytorch issue 191763): it leaves out "
                     "one of the step's 5 streams, the parameters' store")
    return "\n".join(lines)


# ---- MLP ------------------------------------------------------------------------------

MINIBATCH_SIZES = [784, 256, 128, 10]
MINIBATCH_ROWS = 128


def _standardised(X: np.ndarray) -> np.ndarray:
    return (X - X.mean(axis=0)) / np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)


def mlp_online_contenders(dataset: str) -> dict[str, Callable[[], object]]:
    """One online epoch (batch 1, classical momentum, shuffled) of the compiled backend
    and of the numpy backend, each through its epoch function on the same data and
    the same network (iris 4-8-3 or digits 64-128-10)."""
    from momcore import _mlp_numpy, _network, datasets

    data = datasets.load_iris() if dataset == "iris" else datasets.load_digits()
    sizes = [4, 8, 3] if dataset == "iris" else [64, 128, 10]
    X = np.ascontiguousarray(_standardised(data.X))
    T = _network.encode_targets(data.y, sizes[-1], "softmax", np.float64)
    order = np.random.default_rng(0).permutation(X.shape[0])
    nets = {}
    for name in ("c", "numpy"):
        params = np.empty(_network.n_params(sizes))
        _network.init_params(params, sizes, "sigmoid", np.random.default_rng(0))
        nets[name] = (params, np.zeros_like(params), np.zeros_like(params))
    core = _core.NetCore(nets["c"][0], nets["c"][1], None, sizes, "sigmoid", "softmax", 1)
    p, s, g = nets["numpy"]
    # A small lr keeps repeated epochs from changing the work done per epoch.
    hyper = dict(lr=0.01, momentum=0.9)
    return {
        "c": lambda: core.train_epoch(X, T, order, 1, **hyper),
        "numpy": lambda: _mlp_numpy.train_epoch(p, s, sizes, X, T, order, 1, "sigmoid",
                                                "softmax", rule="classical", dampening=0.0,
                                                weight_decay=0.0, grad_buf=g, **hyper),
    }


def mlp_minibatch_contenders(dtype: type, sizes: Sequence[int] = MINIBATCH_SIZES,
                             batch: int = MINIBATCH_ROWS,
                             hidden: str = "sigmoid") -> dict[str, Callable[[], object]]:
    """One minibatch step (by default 784-256-128-10, batch 128, sigmoid hidden units;
    softmax/cross-entropy, classical) of each backend, and 'gemm_floor': the same matrix
    products alone (three per layer, less the first layer's delta), on the BLAS the
    compiled backend calls (scipy's), into preallocated outputs."""
    from scipy.linalg import blas

    from momcore import _mlp_numpy, _network

    sizes, B = list(sizes), batch
    rng = np.random.default_rng(0)
    X = rng.standard_normal((B, sizes[0])).astype(dtype)
    T = _network.encode_targets(rng.integers(0, sizes[-1], B), sizes[-1], "softmax", dtype)
    order = np.arange(B)
    nets = {}
    for name in ("c", "numpy"):
        params = np.empty(_network.n_params(sizes), dtype)
        _network.init_params(params, sizes, hidden, np.random.default_rng(0))
        nets[name] = (params, np.zeros_like(params), np.zeros_like(params))
    core = _core.NetCore(nets["c"][0], nets["c"][1], None, sizes, hidden, "softmax", B)
    p, s, g = nets["numpy"]
    hyper = dict(lr=1e-3, momentum=0.9)

    gemm = blas.sgemm if dtype == np.float32 else blas.dgemm
    W = [rng.standard_normal((i, o)).astype(dtype) for i, o in zip(sizes[:-1], sizes[1:])]
    acts = [X] + [np.empty((B, o), dtype) for o in sizes[1:]]
    deltas = [rng.standard_normal((B, o)).astype(dtype) for o in sizes[1:]]
    grads = [np.empty_like(w) for w in W]

    def gemm_rm(a, b, c, trans_a=False, trans_b=False):
        # row-major c = op(a) @ op(b) as the column-major product c^T = op(b)^T op(a)^T,
        # on transposed views: no copies
        gemm(1.0, b.T, a.T, 0.0, c.T, overwrite_c=True, trans_a=trans_b, trans_b=trans_a)

    def floor():
        for i, w in enumerate(W):  # forward
            gemm_rm(acts[i], w, acts[i + 1])
        for i in range(len(W) - 1, -1, -1):  # backward: weight gradients and deltas
            gemm_rm(acts[i], deltas[i], grads[i], trans_a=True)
            if i > 0:
                gemm_rm(deltas[i], W[i], deltas[i - 1], trans_b=True)

    return {
        "c": lambda: core.train_epoch(X, T, order, B, **hyper),
        "numpy": lambda: _mlp_numpy.train_epoch(p, s, sizes, X, T, order, B, hidden,
                                                "softmax", rule="classical", dampening=0.0,
                                                weight_decay=0.0, grad_buf=g, **hyper),
        "gemm_floor": floor,
    }


def mlp_table(budget: float = 0.2, settle: float | None = None) -> list[dict[str, object]]:
    """Rows: compiled vs numpy backend speed-up, and (minibatch) the step's time over
    the time of its GEMMs alone."""
    rows = []
    for dataset, sizes in (("iris", "4-8-3"), ("digits", "64-128-10")):
        t = best_times(mlp_online_contenders(dataset), budget, settle=settle)
        rows.append({"case": f"online epoch {dataset} {sizes}", "c_ms": t["c"] * 1e3,
                     "speedup": t["numpy"] / t["c"], "over_gemm": float("nan")})
    for dtype in (np.float32, np.float64):
        t = best_times(mlp_minibatch_contenders(dtype), budget, settle=settle)
        rows.append({"case": f"step 784-256-128-10 b128 {np.dtype(dtype).name}",
                     "c_ms": t["c"] * 1e3, "speedup": t["numpy"] / t["c"],
                     "over_gemm": t["c"] / t["gemm_floor"]})
    return rows


FLOOR_CASES = (  # (sizes, batch, hidden, dtype): the step against its GEMMs alone
    *((MINIBATCH_SIZES, 128, h, d) for h in ("tanh", "relu") for d in (np.float32, np.float64)),
    *((MINIBATCH_SIZES, 32, "tanh", d) for d in (np.float32, np.float64)),
    ([64, 1024, 10], 128, "tanh", np.float64),
    ([64, 4096, 10], 128, "tanh", np.float64),
)


def floor_table(budget: float = 0.2, settle: float | None = None) -> list[dict[str, object]]:
    """Rows: one compiled minibatch step over the time of its matrix products alone, on
    the same BLAS and threads, for each of FLOOR_CASES."""
    rows = []
    for sizes, batch, hidden, dtype in FLOOR_CASES:
        contenders = mlp_minibatch_contenders(dtype, sizes, batch, hidden)
        del contenders["numpy"]
        t = best_times(contenders, budget, settle=settle)
        name = "-".join(map(str, sizes))
        rows.append({"case": f"step {name} b{batch} {hidden} {np.dtype(dtype).name}",
                     "c_ms": t["c"] * 1e3, "over_gemm": t["c"] / t["gemm_floor"]})
    return rows


def format_floor_table(rows: list[dict[str, object]]) -> str:
    head = f"{'case':<44} {'momcore ms':>11} {'time / GEMMs alone':>19}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['case']:<44} {r['c_ms']:>11.3f} {r['over_gemm']:>18.2f}x")
    return "\n".join(lines)


def format_mlp_table(rows: list[dict[str, object]]) -> str:
    head = f"{'case':<40} {'momcore ms':>11} {'speed-up':>9} {'time / GEMMs alone':>19}"
    lines = [head, "-" * len(head)]
    for r in rows:
        over = r["over_gemm"]
        lines.append(f"{r['case']:<40} {r['c_ms']:>11.3f} {r['speedup']:>8.1f}x "
                     f"{'' if over != over else f'{over:>18.2f}x':>19}")
    return "\n".join(lines)


# ---- the Python layer of MLP.fit ------------------------------------------------------

FIT_ROWS = 2048  # rows of the minibatch fit call: 16 steps of 128


def fit_call_contenders(case: str, dtype: type = np.float64) -> dict[str, Callable[[], object]]:
    """Whole ``MLP.fit`` calls of one epoch, and what they are compared with.

    ``case="iris"``: an online epoch of iris (4-8-3, batch 1, shuffled) through
    ``MLP.fit`` of the compiled backend ('c') and of the numpy backend ('numpy').
    ``case="minibatch"``: an epoch of 784-256-128-10 on FIT_ROWS random rows in batches
    of 128 through ``MLP.fit`` ('fit') and through the compiled epoch alone ('epoch':
    ``train_epoch`` of the same NetCore that fit calls, same rows, batch, lr and
    momentum): the difference is fit's Python layer (checks, schedules, the shuffle,
    the snapshot and finiteness test of the weights, History). A small lr keeps repeated
    calls doing the same work."""
    from momcore import datasets
    from momcore.mlp import MLP

    if case == "iris":
        data = datasets.load_iris()
        X = np.ascontiguousarray(_standardised(data.X))
        nets = {name: MLP([4, 8, 3], seed=0, backend=name) for name in ("c", "numpy")}
        return {name: (lambda net=net: net.fit(X, data.y, epochs=1, lr=0.01, momentum=0.9))
                for name, net in nets.items()}
    if case != "minibatch":
        raise ValueError(f"case must be 'iris' or 'minibatch', got {case!r}")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((FIT_ROWS, MINIBATCH_SIZES[0])).astype(dtype)
    y = rng.integers(0, MINIBATCH_SIZES[-1], FIT_ROWS)
    net = MLP(MINIBATCH_SIZES, dtype=dtype, seed=0)
    hyper = dict(lr=1e-4, momentum=0.9)
    net.fit(X, y, epochs=1, batch_size=MINIBATCH_ROWS, **hyper)
    core, T = net._fit_core, net.encode_targets(y, FIT_ROWS)
    order = rng.permutation(FIT_ROWS)
    return {"fit": lambda: net.fit(X, y, epochs=1, batch_size=MINIBATCH_ROWS, **hyper),
            "epoch": lambda: core.train_epoch(X, T, order, MINIBATCH_ROWS, **hyper)}


def python_layer(dtype: type = np.float64, calls: int = 9,
                 settle: float | None = None) -> tuple[float, float, float]:
    """(best fit call in seconds, median share, median share after idling) of the
    minibatch fit call of fit_call_contenders, where a call's share is (fit call - its
    compiled epoch) / its compiled epoch. The epoch is timed inside the same call,
    around the NetCore's train_epoch (the C entry point fit calls), so that the noise
    between two calls does not enter the difference.

    The first share comes from ``calls`` calls made back to back after one settle, as a
    training loop makes them; the second from as many calls each made after ``settle``
    seconds idle (default SETTLE). On a machine that idles, whatever runs first after
    the idle pays for waking it (cold caches, a sleeping second thread): on the 2-core
    test machine every part of the call, the Python code included, ran 2-3x slower in
    its first few hundred microseconds, and that lands on the Python layer, which runs
    first."""
    from momcore import _core as core_module
    from momcore.mlp import MLP

    class TimedCore(core_module.NetCore):
        seconds = 0.0

        def train_epoch(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return super().train_epoch(*args, **kwargs)
            finally:
                self.seconds = time.perf_counter() - start

    rng = np.random.default_rng(0)
    X = rng.standard_normal((FIT_ROWS, MINIBATCH_SIZES[0])).astype(dtype)
    y = rng.integers(0, MINIBATCH_SIZES[-1], FIT_ROWS)
    net = MLP(MINIBATCH_SIZES, dtype=dtype, seed=0)
    hyper = dict(epochs=1, batch_size=MINIBATCH_ROWS, lr=1e-4, momentum=0.9)
    net.fit(X, y, **hyper)  # the optimizer and the fit workspaces as fit makes them
    core = TimedCore(net.params, net.optimizer_state, None, net.sizes, net.hidden,
                     net.output, MINIBATCH_ROWS, loss=net.loss_name,
                     accuracy=net._fit_core_accuracy)
    net._fit_core = core  # fit keeps a core that fits its batch size and optimizer
    pause = SETTLE if settle is None else settle
    best, shares = float("inf"), {True: [], False: []}
    time.sleep(pause)
    for idle in [False] * calls + [True] * calls:
        if idle:
            time.sleep(pause)
        start = time.perf_counter()
        net.fit(X, y, **hyper)
        seconds = time.perf_counter() - start
        assert net._fit_core is core
        best = min(best, seconds)
        shares[idle].append((seconds - core.seconds) / core.seconds)
    return best, float(np.median(shares[False])), float(np.median(shares[True]))


def fit_table(budget: float = 0.2, settle: float | None = None) -> list[dict[str, object]]:
    """Rows: the iris online fit call and its speed-up over the numpy backend's (calls
    timed in blocks); per dtype, the minibatch fit call and the share of its time spent
    above the compiled epoch, over the epoch (fit's Python layer), for calls back to
    back and for calls after an idle pause (see python_layer)."""
    t = best_times(fit_call_contenders("iris"), budget, settle=settle)
    rows = [{"case": "fit call iris 4-8-3 online", "us": t["c"] * 1e6,
             "speedup": t["numpy"] / t["c"], "python_share": float("nan"),
             "idle_share": float("nan")}]
    for dtype in (np.float64, np.float32):
        seconds, share, idle_share = python_layer(dtype, settle=settle)
        rows.append({"case": f"fit call 784-256-128-10 b128 {FIT_ROWS} rows "
                             f"{np.dtype(dtype).name}",
                     "us": seconds * 1e6, "speedup": float("nan"), "python_share": share,
                     "idle_share": idle_share})
    return rows


def format_fit_table(rows: list[dict[str, object]]) -> str:
    head = (f"{'case':<48} {'momcore us':>11} {'vs numpy backend':>17} "
            f"{'Python layer / epoch':>21} {'after idling':>13}")
    lines = [head, "-" * len(head)]
    for r in rows:
        speedup, share, idle = r["speedup"], r["python_share"], r["idle_share"]
        lines.append(f"{r['case']:<48} {r['us']:>11.1f} "
                     f"{'' if speedup != speedup else f'{speedup:>16.0f}x':>17} "
                     f"{'' if share != share else f'{share:>20.1%}':>21} "
                     f"{'' if idle != idle else f'{idle:>12.1%}':>13}")
    return "\n".join(lines)


# ---- online epoch against the bytes of its updates ----------------------------------------

ONLINE_SIZES = [64, 128, 10]


def online_roofline_contenders(dtype: type = np.float64) -> dict[str, Callable[[], object]]:
    """'c': one online epoch (batch 1, shuffled) of digits 64-128-10, tanh hidden, softmax
    and cross-entropy, classical momentum folded into the backward pass; 'roofline': a
    plain compiled loop that streams the bytes an update must move (read w, g, s; write
    w, s) over all the parameters once per sample of that epoch, in one call."""
    from momcore import _network, datasets

    data = datasets.load_digits()
    sizes = ONLINE_SIZES
    X = np.ascontiguousarray(_standardised(data.X), dtype)
    T = _network.encode_targets(data.y, sizes[-1], "softmax", dtype)
    order = np.random.default_rng(0).permutation(X.shape[0])
    params = np.empty(_network.n_params(sizes), dtype)
    _network.init_params(params, sizes, "tanh", np.random.default_rng(0))
    core = _core.NetCore(params, np.zeros_like(params), None, sizes, "tanh", "softmax", 1)
    stream = operands(params.size, dtype)
    return {
        # a small lr keeps repeated epochs from changing the work done per epoch
        "c": lambda: core.train_epoch(X, T, order, 1, lr=0.01, momentum=0.9),
        "roofline": lambda: _core._stream5(stream.w, stream.g, stream.s, len(order)),
    }


def online_roofline_table(budget: float = 0.2,
                          settle: float | None = None) -> list[dict[str, object]]:
    """Rows per dtype: the online epoch's time per sample and its time over the
    roofline's (target: <= 1.2x in float64)."""
    from momcore import datasets

    n = datasets.load_digits().y.shape[0]
    rows = []
    for dtype in (np.float64, np.float32):
        t = best_times(online_roofline_contenders(dtype), budget, settle=settle)
        rows.append({"case": f"online epoch digits 64-128-10 tanh {np.dtype(dtype).name}",
                     "us_per_sample": t["c"] * 1e6 / n,
                     "roofline_us": t["roofline"] * 1e6 / n,
                     "over_roofline": t["c"] / t["roofline"]})
    return rows


def format_online_roofline_table(rows: list[dict[str, object]]) -> str:
    head = (f"{'case':<44} {'us/sample':>10} {'roofline us':>12} "
            f"{'time / roofline':>16}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['case']:<44} {r['us_per_sample']:>10.2f} "
                     f"{r['roofline_us']:>12.2f} {r['over_roofline']:>15.2f}x")
    return "\n".join(lines)


# ---- PyTorch optimizer ------------------------------------------------------------------

TORCH_CASES = {
    "small": "(a) 10 tensors, 2.4e3 params (MLP 16-32-32-16-8-10)",
    "many": "(b) 100 tensors of 1e4",
    "large": "(c) 1 tensor of 2e7",
}
"""The optimizer-step cases: name -> what it steps (float32 each)."""


def torch_optimizer_contenders(case: str) -> dict[str, Callable[[], object]]:
    """One ``step()`` of momcore.torch.SGD and of torch.optim.SGD (foreach, fused) on the
    same float32 parameters and gradients (momentum 0.9, torch's velocity form), with
    torch on momcore's thread count. Each optimizer keeps its own momentum buffers.

    'momcore_hooked' has a step pre-hook registered (a no-op: the cost of the hook path);
    'momcore_new_grads' and 'torch_foreach_new_grads' see new gradient tensors every
    step, as after zero_grad() + backward() (two sets, swapped in before each step)."""
    import torch

    import momcore.torch as mt

    torch.set_num_threads(_core.get_num_threads())
    gen = torch.Generator().manual_seed(0)
    if case == "small":
        sizes = [16, 32, 32, 16, 8, 10]
        shapes = [s for i, o in zip(sizes[:-1], sizes[1:]) for s in ((o, i), (o,))]
    elif case == "many":
        shapes = [(10_000,)] * 100
    elif case == "large":
        shapes = [(20_000_000,)]
    else:
        raise ValueError(f"case must be one of {list(TORCH_CASES)}, got {case!r}")
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    grad_sets = [[torch.randn(s, generator=gen) * 1e-3 for s in shapes] for _ in range(2)]
    for p, g in zip(params, grad_sets[0]):
        p.grad = g
    hyper = dict(lr=1e-4, momentum=0.9)
    optimizers = {"momcore": mt.SGD(params, **hyper),
                  "momcore_hooked": mt.SGD(params, **hyper),
                  "torch_foreach": torch.optim.SGD(params, **hyper, foreach=True),
                  "torch_fused": torch.optim.SGD(params, **hyper, fused=True)}
    optimizers["momcore_hooked"].register_step_pre_hook(lambda opt, args, kwargs: None)
    for opt in optimizers.values():
        opt.step()
    contenders: dict[str, Callable[[], object]] = {
        name: opt.step for name, opt in optimizers.items()}
    if case == "small":
        turn = [0]

        def new_grads(step: Callable[[], object]) -> Callable[[], object]:
            def run() -> object:
                turn[0] ^= 1
                for p, g in zip(params, grad_sets[turn[0]]):
                    p.grad = g
                return step()
            return run

        contenders["momcore_new_grads"] = new_grads(optimizers["momcore"].step)
        contenders["torch_foreach_new_grads"] = new_grads(optimizers["torch_foreach"].step)
    return contenders


def torch_table(budget: float = 0.2, settle: float | None = None,
                cases=tuple(TORCH_CASES)) -> list[dict[str, object]]:
    """Rows: per-step time of momcore.torch.SGD and its speed-up over torch.optim.SGD
    (foreach and fused), measured within one run."""
    rows = []
    for case in cases:
        t = best_times(torch_optimizer_contenders(case), budget, settle=settle)
        row = {"case": TORCH_CASES[case], "momcore_us": t["momcore"] * 1e6,
               "over_foreach": t["torch_foreach"] / t["momcore"],
               "over_fused": t["torch_fused"] / t["momcore"],
               "hooked_over_fused": t["torch_fused"] / t["momcore_hooked"]}
        if "momcore_new_grads" in t:
            row["new_grads_over_foreach"] = (t["torch_foreach_new_grads"]
                                             / t["momcore_new_grads"])
        rows.append(row)
    return rows


def format_torch_table(rows: list[dict[str, object]]) -> str:
    head = (f"{'momcore.torch.SGD vs torch.optim.SGD, float32':<48} {'momcore us':>11} "
            f"{'/foreach':>9} {'/fused':>8} {'hooked/fused':>13} {'new grads/foreach':>18}")
    lines = [head, "-" * len(head)]
    for r in rows:
        fresh = r.get("new_grads_over_foreach", float("nan"))
        lines.append(f"{r['case']:<48} {r['momcore_us']:>11.2f} {r['over_foreach']:>8.2f}x "
                     f"{r['over_fused']:>7.2f}x {r['hooked_over_fused']:>12.2f}x "
                     f"{'' if fresh != fresh else f'{fresh:>17.2f}x':>18}")
    return "\n".join(lines)

"""pytest-benchmark: momcore's momentum step against the numpy reference, the
5-stream roofline and (when installed) PyTorch's fused SGD, on the same buffers.

    pytest bench --benchmark-group-by=group --benchmark-columns=min,median,ops
"""
from __future__ import annotations

import numpy as np
import pytest

import momcore
from momcore import _bench

SIZES = _bench.KERNEL_SIZES
DTYPES = [np.float32, np.float64]
KERNEL = ["reference", "momcore", "momcore_raise", "roofline"]


def _group(n, dtype):
    return f"step n={n:.0e} {np.dtype(dtype).name}"


@pytest.mark.parametrize("contender", KERNEL)
@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"{n:.0e}")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_step(benchmark, record, dtype, n, contender):
    fn = _bench.kernel_contenders(_bench.operands(n, dtype))[contender]
    benchmark.group = _group(n, dtype)
    benchmark(fn)
    record(benchmark, benchmark.group, contender)


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"{n:.0e}")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_step_torch_fused(benchmark, record, dtype, n):
    torch = pytest.importorskip("torch")
    ops = _bench.operands(n, dtype)
    p = torch.from_numpy(ops.w)
    p.grad = torch.from_numpy(ops.g)
    torch.set_num_threads(momcore.get_num_threads())
    try:
        opt = torch.optim.SGD([p], lr=_bench.HYPER["lr"], momentum=_bench.HYPER["momentum"],
                              fused=True)
        opt.step()
    except (RuntimeError, TypeError) as exc:  # fused CPU SGD missing in this build
        pytest.skip(f"torch fused SGD unavailable: {exc}")
    benchmark.group = _group(n, dtype)
    benchmark(opt.step)
    record(benchmark, benchmark.group, "torch_fused")


@pytest.mark.parametrize("contender", ["reference_loop", "momcore_many"])
def test_many(benchmark, record, contender):
    fn = _bench.many_contenders(100, 1000)[contender]
    benchmark.group = "many 100 x 1e3 float64"
    benchmark(fn)
    record(benchmark, benchmark.group, contender)


HALF = [np.dtype(dt).name for dt in _bench.half_dtypes()]


@pytest.mark.parametrize("contender", ["float32"] + HALF
                         + [f"{h}_{k}" for h in HALF for k in ("raise", "roofline")])
def test_step_half(benchmark, record, contender):
    # one group: the float16/bfloat16 steps against the float32 step (target >= 1.8x)
    fn = _bench.half_contenders(with_torch=False)[contender]
    benchmark.group = f"step n={_bench.HALF_SIZE:.0e} 16-bit storage vs float32"
    benchmark(fn)
    record(benchmark, benchmark.group, contender)


@pytest.mark.parametrize("dtype", HALF)
def test_step_half_torch_fused(benchmark, record, dtype):
    pytest.importorskip("torch")
    step = _bench.torch_fused_step(dict(zip(HALF, _bench.half_dtypes()))[dtype])
    if step is None:
        pytest.skip(f"torch fused SGD unavailable for {dtype}")
    benchmark.group = f"step n={_bench.HALF_SIZE:.0e} 16-bit storage vs float32"
    benchmark(step)
    record(benchmark, benchmark.group, f"torch_fused_{dtype}")

"""pytest-benchmark: momcore.torch.SGD against torch.optim.SGD (foreach, fused), one
step() each on the same float32 parameters and gradients.

    pytest bench/test_bench_torch.py --benchmark-group-by=group --benchmark-columns=min,median,ops

The summary's "torch.optim.SGD(fused=True) / momcore" rows are the fused ratios; the
standalone table, with the foreach ratios too, is momcore._bench.torch_table().
"""
from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the PyTorch optimizer benchmarks need PyTorch")

from momcore import _bench  # noqa: E402

CONTENDERS = ["momcore", "momcore_hooked", "torch_foreach", "torch_fused"]


@pytest.fixture(scope="module", params=list(_bench.TORCH_CASES))
def case(request):
    return request.param, _bench.torch_optimizer_contenders(request.param)


@pytest.mark.parametrize("contender", CONTENDERS)
def test_torch_optimizer_step(benchmark, record, case, contender):
    name, contenders = case
    # "step " groups feed conftest's ratio rows (torch_fused / momcore).
    benchmark.group = f"step torch optimizer {name}"
    benchmark(contenders[contender])
    record(benchmark, benchmark.group, contender)


@pytest.mark.parametrize("contender", ["momcore_new_grads", "torch_foreach_new_grads"])
def test_torch_optimizer_step_new_gradients(benchmark, record, contender):
    benchmark.group = "step torch optimizer small, new gradient tensors"
    benchmark(_bench.torch_optimizer_contenders("small")[contender])
    record(benchmark, benchmark.group, contender)

"""bench/blas_choice.py: its --quick table has a row for every product of every step,
and numpy's and scipy's OpenBLAS compute the same row-major products up to rounding."""
from __future__ import annotations

import importlib.util
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "blas_choice.py"

# The products of one minibatch step as momcore forms them (src_c/mlp_impl.h), M x N x K
# of the row-major C[M,N] = op(A)[M,K] op(B)[K,N], per layer of I inputs, O outputs at
# batch B: forward B x O x I, weights I x O x B, delta B x I x O (not the first layer).
STEPS = {
    "784-256-128-10 b128": ([784, 256, 128, 10], 128),
    "784-256-128-10 b32": ([784, 256, 128, 10], 32),
    "64-1024-10 b128": ([64, 1024, 10], 128),
    "64-4096-10 b128": ([64, 4096, 10], 128),
}


def expected_products(sizes: list[int], batch: int) -> set[tuple[str, str]]:
    products = set()
    for layer, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        products.add((f"forward {i}-{o}", f"{batch} x {o} x {i}"))
        products.add((f"weights {i}-{o}", f"{i} x {o} x {batch}"))
        if layer > 0:
            products.add((f"delta {i}-{o}", f"{batch} x {i} x {o}"))
    return products


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("blas_choice", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def libs(bench):
    try:
        return bench.open_both()
    except bench.BlasNotFound as exc:
        pytest.skip(str(exc))


def test_quick_table_has_every_product_and_the_libraries_agree(bench, libs, capsys):
    before = {name: blas.get_num_threads() for name, blas in libs.items()}
    status = bench.main(["--quick"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert {name: blas.get_num_threads() for name, blas in libs.items()} == before
    for name in ("numpy", "scipy"):
        (config,) = [line for line in out.splitlines() if line.startswith(f"{name}: ")]
        assert "bit integers" in config
    assert out.count("OpenBLAS") >= 2

    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("dtype "))
    header = lines[start].split("  ")
    assert [h.strip() for h in header if h.strip()] == list(bench.HEADER)
    widths = [len(c) for c in lines[start + 1].split("  ")]
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        cells, pos = [], 0
        for w in widths:
            cells.append(line[pos:pos + w].strip())
            pos += w + 2
        rows.append(cells)

    seen = {}
    for dtype, threads, net, product, shape, scipy_us, numpy_us, ratio, agreement in rows:
        seen.setdefault((dtype, threads, net), set()).add((product, shape))
        assert float(scipy_us) > 0 and float(numpy_us) > 0
        n_us, s_us = float(numpy_us), float(scipy_us)  # printed to 0.05 us
        assert abs(float(ratio) - n_us / s_us) <= n_us / s_us * (0.05 / n_us + 0.05 / s_us) + 5e-4
        assert 0 <= float(agreement) <= 1, (net, product, agreement)
    assert set(seen) == {(d, t, net) for d in ("float32", "float64") for t in ("1", "2")
                         for net in STEPS}
    for (_, _, net), products in seen.items():
        assert products == expected_products(*STEPS[net]) | {("step sum", ""), ("step", "")}
    assert "per step, numpy/scipy" in out


SHAPES = [(7, 13, 5), (1, 9, 33), (40, 3, 17)]  # M, N, K: odd and unequal on purpose


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)),
                         ids=["NN", "NT", "TN", "TT"])
@pytest.mark.parametrize("m,n,k", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_both_libraries_give_the_row_major_product(bench, libs, dtype, trans_a, trans_b,
                                                   m, n, k):
    rng = np.random.default_rng(m * n * k)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    out = {name: np.full((m, n), np.nan, dtype) for name in libs}
    product = bench.Product("p", a, b, trans_a, trans_b, out)
    assert product.mnk == (m, n, k)
    op_a = a.T if trans_a else a
    op_b = b.T if trans_b else b
    exact = op_a.astype(np.float64) @ op_b.astype(np.float64)
    bound = bench.rounding_bound(op_a, op_b)
    for name, blas in libs.items():
        bench.gemm_call(blas, product, out[name])()
        assert bench.rounding_ratio(out[name], exact, bound) <= 1, name
    assert bench.rounding_ratio(out["numpy"], out["scipy"], bound) <= 1
    assert bench.check_products(libs, [product], 0.0)[0] <= 1


def test_rounding_ratio_flags_what_rounding_does_not_explain(bench):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 50)).astype(np.float32)
    b = rng.standard_normal((50, 4)).astype(np.float32)
    bound = bench.rounding_bound(a, b)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert bench.rounding_ratio(a @ b, exact, bound) <= 1
    off = (a @ b).astype(np.float64)
    off[2, 3] += 1e-3 * max(1.0, abs(off[2, 3]))
    assert bench.rounding_ratio(off, exact, bound) > 1
    swapped = (a @ b[::-1]).astype(np.float64)  # K in the wrong order
    assert bench.rounding_ratio(swapped, exact, bound) > 1
    unwritten = np.full_like(exact, np.nan)
    assert math.isnan(bench.rounding_ratio(unwritten, exact, bound))


def test_a_missing_library_is_a_clean_skip(bench, monkeypatch, capsys):
    monkeypatch.setattr(bench, "_library_dirs", lambda package: [])
    monkeypatch.setattr(bench, "_mapped_files", lambda: [])
    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(bench.SKIP_PREFIX) and "no BLAS library of numpy" in out
    assert "dtype" not in out

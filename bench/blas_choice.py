"""numpy's bundled OpenBLAS against scipy's, at the matrix products of momcore's
minibatch step: would choosing the faster library at run time pay?

momcore's compiled MLP calls ?gemm through scipy.linalg.cython_blas, that is scipy's
OpenBLAS (32-bit integers, LP64). numpy ships an OpenBLAS of its own (64-bit integers,
ILP64, symbols with a ``64_`` suffix). This script calls the Fortran ``?gemm_`` of both
libraries through ctypes, so that both sides pay the same call overhead, on the same
operands, for float32 and float64, with 1 and with 2 threads (set through each library's
own ``openblas_set_num_threads`` and restored afterwards). The libraries are the shared
objects numpy and scipy loaded, found in their wheels' library directories (numpy.libs,
scipy.libs); the symbol decorations and the integer width are read off each library
(``openblas_get_config``: USE64BITINT).

The products are those of one minibatch step, in row-major terms as momcore forms them
(gemm_rm in src_c/mlp_impl.h: ``C := op(A) op(B)`` as the column-major product
``C^T = op(B)^T op(A)^T``), for each layer of I inputs and O outputs at batch B:

    forward   out[B,O]   = in[B,I] W[I,O]
    delta     below[B,I] = delta[B,O] W[I,O]^T          (not for the first layer)
    weights   gW[I,O]    = in[B,I]^T delta[B,O]

with alpha = 1, beta = 0 (as the GEMM floor of ``momcore bench``; the folded step runs
the weights product with beta = momentum), for 784-256-128-10 at batch 128 and 32,
64-1024-10 and 64-4096-10 at batch 128. Every product of these nets is above momcore's
BLAS threshold (32,768 multiply-adds).

How it is timed: both libraries run in the same process. Round after round they take
turns (the order alternates each round); before each turn the process idles ``--settle``
seconds, because an OpenBLAS pool keeps spinning for a while after its last call and on
a 2-core machine it would slow the other library. In its turn a library times every
product (a few samples of n calls each, n chosen so that a sample lasts about a
millisecond, the same n for both) and then each whole step (all its products in the
order of a step). Each figure is the best per-call time over all rounds. The table gives
per product and per step time(numpy's BLAS) / time(scipy's BLAS): below 1 means numpy's
is faster. "step sum" adds the products' best times; "step" times the sequence. A
summary repeats both per step and adds what a choice per product would reach: the sum
of each product's faster time over scipy's sum.

Each product is also computed once by each library into a NaN-filled output and checked
against the other library and against a float64 product: the differences must stay
within the rounding bound 2 gamma_K |op(A)| |op(B)| (gamma_K = K u / (1 - K u)); the
column "diff/bound" is the largest ratio between the two libraries (at most 1). A
product out of bounds makes the script exit with status 1.

    python bench/blas_choice.py --quick     # 2 s, 2 rounds, no idling: structure and agreement
    python bench/blas_choice.py             # about a minute on 2 cores

If either library cannot be found, or is not OpenBLAS, or both are the same file, the
script says so and exits with status 0 without a table.
"""
from __future__ import annotations

import argparse
import ctypes
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NETS: tuple[tuple[tuple[int, ...], int], ...] = (  # (layer sizes, batch)
    ((784, 256, 128, 10), 128),
    ((784, 256, 128, 10), 32),
    ((64, 1024, 10), 128),
    ((64, 4096, 10), 128),
)
DTYPES = (np.float32, np.float64)
THREADS = (1, 2)
LIBRARIES = ("numpy", "scipy")  # the ratio is numpy / scipy
SKIP_PREFIX = "skipped:"
HEADER = ("dtype", "threads", "net", "product", "M x N x K", "scipy us", "numpy us",
          "numpy/scipy", "diff/bound")


class BlasNotFound(RuntimeError):
    """One of the two libraries is missing, is not OpenBLAS, or is the other one."""


# --------------------------------------------------------------------------- libraries

def _mapped_files() -> list[Path]:
    """Shared objects mapped into this process (Linux); empty where /proc is absent."""
    try:
        with open("/proc/self/maps") as maps:
            fields = (line.split(None, 5) for line in maps)
            paths = {f[5].strip() for f in fields if len(f) == 6}
    except OSError:
        return []
    return [Path(p) for p in sorted(paths) if p.startswith("/")]


def _library_dirs(package: str) -> list[Path]:
    """Where a wheel keeps the package's bundled libraries (auditwheel's ``<pkg>.libs``,
    delocate's ``<pkg>/.dylibs``), then the BLAS directory its build configuration
    names, if that exists here."""
    module = __import__(package)
    root = Path(module.__file__).resolve().parent
    dirs = [root.parent / f"{package}.libs", root / ".dylibs"]
    try:
        blas = module.show_config(mode="dicts")["Build Dependencies"]["blas"]
        dirs.append(Path(blas["lib directory"]))
    except (TypeError, KeyError, AttributeError):
        pass
    return [d.resolve() for d in dirs if d.is_dir()]


def _find_library(package: str) -> Path:
    """The BLAS library the package loaded: a mapped file from one of its library
    directories whose name says BLAS; failing /proc, a file of that name there."""
    dirs = _library_dirs(package)
    mapped = [p for p in _mapped_files() if "blas" in p.name.lower()
              and p.resolve().parent in dirs]
    if mapped:
        return mapped[0]
    for d in dirs:
        found = sorted(p for p in d.iterdir() if "blas" in p.name.lower()
                       and (p.suffix in (".so", ".dylib", ".dll") or ".so." in p.name))
        if found:
            return found[0]
    raise BlasNotFound(f"no BLAS library of {package} found (looked in "
                       f"{', '.join(map(str, dirs)) or 'no library directory'})")


@dataclass
class OpenBlas:
    """One OpenBLAS library opened through ctypes: its Fortran ?gemm_, its thread
    count, its configuration. ``prefix``/``suffix`` are the symbol decorations
    (scipy-openblas builds: ``scipy_`` and, ILP64, ``64_``)."""

    package: str
    path: Path
    dll: ctypes.CDLL
    prefix: str
    suffix: str
    config: str
    corename: str
    integer: type  # ctypes.c_int32 or ctypes.c_int64: BLAS's integer
    gemm: dict[type, Callable[..., None]] = field(default_factory=dict)

    def symbol(self, name: str) -> Callable[..., object]:
        return getattr(self.dll, f"{self.prefix}{name}{self.suffix}")

    def get_num_threads(self) -> int:
        return int(self.symbol("openblas_get_num_threads")())

    def set_num_threads(self, n: int) -> None:
        self.symbol("openblas_set_num_threads")(ctypes.c_int(n))

    @property
    def integer_bits(self) -> int:
        return 8 * ctypes.sizeof(self.integer)


def open_blas(package: str) -> OpenBlas:
    """The OpenBLAS library that ``package`` (numpy or scipy) loaded, opened by path
    (the handle of the already loaded copy: no second pool)."""
    __import__("scipy.linalg.cython_blas" if package == "scipy" else package)
    path = _find_library(package)
    dll = ctypes.CDLL(str(path))
    for prefix in ("scipy_", ""):
        for suffix in ("64_", ""):
            try:
                get_config = getattr(dll, f"{prefix}openblas_get_config{suffix}")
            except AttributeError:
                continue
            get_config.restype = ctypes.c_char_p
            config = get_config().decode(errors="replace").strip()
            blas = OpenBlas(package, path, dll, prefix, suffix, config, "",
                            ctypes.c_int64 if "USE64BITINT" in config else ctypes.c_int32)
            corename = blas.symbol("openblas_get_corename")
            corename.restype = ctypes.c_char_p
            blas.corename = corename().decode(errors="replace")
            blas.symbol("openblas_get_num_threads").restype = ctypes.c_int
            blas.symbol("openblas_set_num_threads").restype = None
            for dtype, letter in ((np.float32, "s"), (np.float64, "d")):
                fn = blas.symbol(f"{letter}gemm_")
                fn.argtypes = [ctypes.c_void_p] * 13
                fn.restype = None
                blas.gemm[dtype] = fn
            return blas
    raise BlasNotFound(f"{package}'s BLAS {path} is not OpenBLAS (no openblas_get_config)")


def open_both() -> dict[str, OpenBlas]:
    """numpy's and scipy's OpenBLAS, keyed by package; BlasNotFound if one is missing,
    is not OpenBLAS, or both are the same library."""
    libs = {name: open_blas(name) for name in LIBRARIES}
    if libs["numpy"].path.resolve() == libs["scipy"].path.resolve():
        raise BlasNotFound(f"numpy and scipy load the same BLAS ({libs['numpy'].path}): "
                           "there is nothing to choose")
    return libs


# ---------------------------------------------------------------------------- products

@dataclass
class Product:
    """Row-major C[M,N] := op(A) op(B), op(A) of M x K, op(B) of K x N, as gemm_rm."""

    label: str
    a: np.ndarray
    b: np.ndarray
    trans_a: bool
    trans_b: bool
    out: dict[str, np.ndarray]  # one output per library

    @property
    def mnk(self) -> tuple[int, int, int]:
        m, k = self.a.shape[::-1] if self.trans_a else self.a.shape
        n = self.b.shape[0] if self.trans_b else self.b.shape[1]
        return m, n, k

    def operands(self) -> tuple[np.ndarray, np.ndarray]:
        """op(A), op(B) as (views of) row-major arrays."""
        return (self.a.T if self.trans_a else self.a), (self.b.T if self.trans_b else self.b)


def gemm_call(blas: OpenBlas, product: Product, out: np.ndarray) -> Callable[[], None]:
    """A call of ``blas``'s ?gemm_ computing ``out := op(A) op(B)`` row-major, with every
    argument converted beforehand: the call itself is all that a timing sees.

    Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the operands and
    their transposition flags swap, M and N swap, and each leading dimension is the
    row length of the row-major array."""
    dtype = product.a.dtype.type
    m, n, k = product.mnk
    a, b = product.a, product.b
    keep = [ctypes.c_char(b"T" if product.trans_b else b"N"),
            ctypes.c_char(b"T" if product.trans_a else b"N"),
            blas.integer(n), blas.integer(m), blas.integer(k),
            np.ctypeslib.as_ctypes_type(dtype)(1), blas.integer(b.shape[1]),
            blas.integer(a.shape[1]), np.ctypeslib.as_ctypes_type(dtype)(0),
            blas.integer(out.shape[1])]
    tb, ta, n_, m_, k_, alpha, ldb, lda, beta, ldc = (ctypes.addressof(x) for x in keep)
    args = (tb, ta, n_, m_, k_, alpha, b.ctypes.data, ldb, a.ctypes.data, lda, beta,
            out.ctypes.data, ldc)
    fn = blas.gemm[dtype]

    def call() -> None:
        fn(*args)

    call.keep = (keep, a, b, out)  # the ctypes scalars and arrays outlive the call
    return call


def step_products(sizes: Sequence[int], batch: int, dtype: type,
                  rng: np.random.Generator) -> list[Product]:
    """The products of one minibatch step of ``sizes`` at ``batch``, in the order the
    step runs them: forward through the layers, then from the last layer down, each
    layer's weight gradient and (all but the first) its delta."""
    layers = list(zip(sizes[:-1], sizes[1:]))
    weights = [rng.standard_normal((i, o)).astype(dtype) for i, o in layers]
    acts = [rng.standard_normal((batch, i)).astype(dtype) for i, _ in layers]
    deltas = [rng.standard_normal((batch, o)).astype(dtype) for _, o in layers]

    def outputs(rows: int, cols: int) -> dict[str, np.ndarray]:
        return {name: np.full((rows, cols), np.nan, dtype) for name in LIBRARIES}

    forward, backward = [], []
    for layer, (i, o) in enumerate(layers):
        name = f"{i}-{o}"
        forward.append(Product(f"forward {name}", acts[layer], weights[layer], False, False,
                               outputs(batch, o)))
    for layer in range(len(layers) - 1, -1, -1):
        i, o = layers[layer]
        name = f"{i}-{o}"
        backward.append(Product(f"weights {name}", acts[layer], deltas[layer], True, False,
                                outputs(i, o)))
        if layer > 0:
            backward.append(Product(f"delta {name}", deltas[layer], weights[layer], False,
                                    True, outputs(batch, i)))
    return forward + backward


# ---------------------------------------------------------------------------- rounding

def rounding_bound(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2 gamma_K |a| |b| (float64) for the row-major product a[M,K] b[K,N] in a's
    precision, gamma_K = K u / (1 - K u) with u its unit roundoff: two computations of
    the product, in any summation order, with or without fused multiply-adds, differ
    by at most this much element by element."""
    k = a.shape[1]
    u = np.finfo(a.dtype).eps / 2
    gamma = k * u / (1 - k * u)
    return 2 * gamma * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)))


def rounding_ratio(c: np.ndarray, other: np.ndarray, bound: np.ndarray) -> float:
    """max |c - other| / bound over the elements: at most 1 when c and other agree up
    to rounding; NaN when either holds a NaN (an output left unwritten)."""
    diff = np.abs(c.astype(np.float64) - other.astype(np.float64))
    if np.isnan(diff).any():
        return float("nan")
    return float(np.max(diff / np.maximum(bound, np.finfo(np.float64).tiny)))


def check_products(libs: dict[str, OpenBlas], products: Sequence[Product],
                   settle: float) -> list[float]:
    """Computes every product once with each library into its NaN-filled output (one
    library after the other, ``settle`` seconds apart: two pools taking turns call
    after call would spin against each other); returns per product the rounding ratio
    between the two libraries, and raises AssertionError when either differs from the
    float64 product by more than the rounding bound."""
    exact, bounds = [], []
    for p in products:
        a, b = p.operands()
        exact.append(a.astype(np.float64) @ b.astype(np.float64))
        bounds.append(rounding_bound(a, b))
    for name, blas in libs.items():
        time.sleep(settle)
        for p in products:
            p.out[name].fill(np.nan)
            gemm_call(blas, p, p.out[name])()
    for p, c, bound in zip(products, exact, bounds):
        for name in libs:
            ratio = rounding_ratio(p.out[name], c, bound)
            if not ratio <= 1:
                raise AssertionError(f"{name}'s {p.label} {p.a.dtype} is off the float64 "
                                     f"product: {ratio:.3g} x the rounding bound")
    return [rounding_ratio(p.out["numpy"], p.out["scipy"], bound)
            for p, bound in zip(products, bounds)]


# ------------------------------------------------------------------------------ timing

@dataclass
class Case:
    """One net at one batch in one dtype: its products and, per library, the call of
    each product and of the whole step."""

    dtype: type
    sizes: tuple[int, ...]
    batch: int
    products: list[Product]
    calls: dict[str, list[Callable[[], None]]]
    numbers: list[int] = field(default_factory=list)  # calls per sample, per product
    step_number: int = 1
    best: dict[str, list[float]] = field(default_factory=dict)  # per product
    best_step: dict[str, float] = field(default_factory=dict)
    agreement: list[float] = field(default_factory=list)

    @property
    def net(self) -> str:
        return f"{'-'.join(map(str, self.sizes))} b{self.batch}"

    def step(self, name: str) -> Callable[[], None]:
        calls = self.calls[name]

        def run() -> None:
            for call in calls:
                call()
        return run


def _per_call(fn: Callable[[], None], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def _calls_for(fn: Callable[[], None], sample: float) -> int:
    fn()
    return max(1, math.ceil(sample / max(_per_call(fn, 1), 1e-9)))


def measure(libs: dict[str, OpenBlas], dtype: type, rounds: int, samples: int,
            sample: float, settle: float, seed: int = 0) -> list[Case]:
    """Best per-call times of every product and step of NETS in ``dtype`` in both
    libraries, at the thread counts they are set to (see the module docstring)."""
    rng = np.random.default_rng(seed)
    cases = []
    for sizes, batch in NETS:
        products = step_products(sizes, batch, dtype, rng)
        calls = {name: [gemm_call(blas, p, p.out[name]) for p in products]
                 for name, blas in libs.items()}
        cases.append(Case(dtype, sizes, batch, products, calls))
    agreement = iter(check_products(libs, [p for c in cases for p in c.products], settle))
    time.sleep(settle)
    for case in cases:
        case.agreement = [next(agreement) for _ in case.products]
        case.numbers = [_calls_for(c, sample) for c in case.calls["scipy"]]
        case.step_number = _calls_for(case.step("scipy"), sample)
        case.best = {name: [math.inf] * len(case.products) for name in libs}
        case.best_step = dict.fromkeys(libs, math.inf)
    for r in range(rounds):
        for name in (LIBRARIES if r % 2 == 0 else LIBRARIES[::-1]):
            time.sleep(settle)
            for case in cases:
                for j, (call, number) in enumerate(zip(case.calls[name], case.numbers)):
                    t = min(_per_call(call, number) for _ in range(samples))
                    case.best[name][j] = min(case.best[name][j], t)
            for case in cases:
                step = case.step(name)
                t = min(_per_call(step, case.step_number) for _ in range(samples))
                case.best_step[name] = min(case.best_step[name], t)
    return cases


def table_rows(cases: list[Case], threads: int) -> list[tuple[str, ...]]:
    """The table's rows (strings, HEADER's columns) for the cases of one thread count."""
    rows = []
    for case in cases:
        dtype = np.dtype(case.dtype).name

        def row(label: str, shape: str, scipy_s: float, numpy_s: float,
                agreement: str) -> tuple[str, ...]:
            return (dtype, str(threads), case.net, label, shape, f"{scipy_s * 1e6:.1f}",
                    f"{numpy_s * 1e6:.1f}", f"{numpy_s / scipy_s:.3f}", agreement)

        for j, p in enumerate(case.products):
            rows.append(row(p.label, " x ".join(map(str, p.mnk)), case.best["scipy"][j],
                            case.best["numpy"][j], f"{case.agreement[j]:.2g}"))
        worst = f"{max(case.agreement):.2g}"
        rows.append(row("step sum", "", sum(case.best["scipy"]), sum(case.best["numpy"]),
                        worst))
        rows.append(row("step", "", case.best_step["scipy"], case.best_step["numpy"], worst))
    return rows


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="2 rounds of short samples, no idling: structure and agreement, "
                             "not figures")
    parser.add_argument("--rounds", type=int, help="rounds of turns (default 9; 2 quick)")
    parser.add_argument("--settle", type=float,
                        help="seconds idle before each turn (default 0.2; 0 quick)")
    parser.add_argument("--threads", type=int, nargs="+", default=list(THREADS),
                        help="thread counts to measure (default 1 2)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 9)
    settle = args.settle if args.settle is not None else (0.0 if args.quick else 0.2)
    samples, sample = (1, 2e-4) if args.quick else (3, 1e-3)
    if rounds < 1 or settle < 0 or min(args.threads) < 1:
        parser.error("--rounds and --threads must be positive, --settle not negative")

    try:
        libs = open_both()
    except BlasNotFound as exc:
        print(f"{SKIP_PREFIX} {exc}")
        return 0
    print(f"numpy {np.__version__}, scipy {__import__('scipy').__version__}; "
          f"load average at start {_load()}; {rounds} rounds, {samples} samples per turn, "
          f"{settle:g} s idle before each turn")
    for name, blas in libs.items():
        print(f"{name}: {blas.path.name}, {blas.integer_bits}-bit integers, symbols "
              f"{blas.prefix}sgemm_{blas.suffix}, core {blas.corename}, "
              f"{blas.get_num_threads()} threads at start\n    {blas.config}")

    rows, summaries = [], []
    previous = {name: blas.get_num_threads() for name, blas in libs.items()}
    try:
        for threads in args.threads:
            for blas in libs.values():
                blas.set_num_threads(threads)
            for dtype in DTYPES:
                cases = measure(libs, dtype, rounds, samples, sample, settle)
                rows += table_rows(cases, threads)
                summaries += [(case, threads) for case in cases]
    finally:
        for name, blas in libs.items():
            blas.set_num_threads(previous[name])

    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(HEADER, widths)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print("\nper step, numpy/scipy: the sum of the products' best times, the step timed "
          "whole;\nand the sum of each product's faster library over scipy's sum (a choice "
          "per product)")
    for case, threads in summaries:
        scipy_sum = sum(case.best["scipy"])
        either = sum(map(min, case.best["numpy"], case.best["scipy"]))
        print(f"  {np.dtype(case.dtype).name:8s} {threads:2d} thread(s)  {case.net:20s} "
              f"{sum(case.best['numpy']) / scipy_sum:7.3f}  "
              f"{case.best_step['numpy'] / case.best_step['scipy']:7.3f}  "
              f"{either / scipy_sum:7.3f}")
    print(f"\nload average at end {_load()}")
    bad = [r for r in rows if not float(r[-1]) <= 1]
    if bad:
        print(f"{len(bad)} rows where the libraries differ beyond rounding")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m momcore {demo,bench,theory}`` (also the ``momcore`` script)."""
from __future__ import annotations

import argparse
import sys


def _bench(args: argparse.Namespace) -> int:
    from momcore import _bench, _core

    if args.threads is not None:
        _core.set_num_threads(args.threads)
    print(f"momcore kernel benchmark: SIMD {_core.simd_path()}, "
          f"{_core.get_num_threads()} thread(s); ratios measured in this run "
          f"(speed-up = numpy reference time / momcore time)\n")
    sizes = _bench.KERNEL_SIZES[:-1] if args.quick else _bench.KERNEL_SIZES
    if args.budget <= 0 or args.settle < 0:
        raise ValueError("--budget must be > 0 and --settle >= 0")
    print(_bench.format_table(_bench.kernel_table(sizes=sizes, budget=args.budget,
                                                  settle=args.settle)))
    print("\nMLP (speed-up = numpy backend time / compiled backend time)\n")
    print(_bench.format_mlp_table(_bench.mlp_table(budget=args.budget, settle=args.settle)))
    try:
        import torch  # noqa: F401
    except ImportError:
        print("\n(PyTorch is not installed: no comparison with torch.optim.SGD)")
    else:
        print("\nmomcore.torch.SGD against torch.optim.SGD on the same tensors\n")
        print(_bench.format_torch_table(_bench.torch_table(budget=args.budget,
                                                           settle=args.settle)))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m momcore",
                                description="momcore: gradient descent with momentum.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="quick table of momcore vs the numpy reference")
    b.add_argument("--threads", type=int, default=None, help="kernel threads (default: all)")
    b.add_argument("--budget", type=float, default=0.2,
                   help="seconds of timing per contender and case (default 0.2)")
    b.add_argument("--quick", action="store_true", help="skip the n = 1e7 cases")
    b.add_argument("--settle", type=float, default=0.2,
                   help="seconds idle before each timed turn, so that a BLAS thread pool "
                        "still spinning from the previous contender goes quiet (default 0.2)")
    b.set_defaults(func=_bench)

    from momcore import _demo, _theory_cli

    _demo.add_parser(sub)
    _theory_cli.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"momcore: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

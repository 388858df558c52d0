"""Command line: ``python -m momcore {demo,bench,theory}`` (also the ``momcore`` script)."""
from __future__ import annotations

import argparse
import math
import os
import sys


def _bench(args: argparse.Namespace) -> int:
    from momcore import _bench, _core

    # every option checked before anything is printed
    if not (math.isfinite(args.budget) and args.budget > 0):
        raise ValueError(f"--budget must be a finite number of seconds > 0, got {args.budget}")
    if not (math.isfinite(args.settle) and args.settle >= 0):
        raise ValueError(f"--settle must be a finite number of seconds >= 0, got {args.settle}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        _core.set_num_threads(args.threads)
    print(f"momcore kernel benchmark: SIMD {_core.simd_path()}, "
          f"{_core.get_num_threads()} thread(s); ratios measured in this run "
          f"(speed-up = numpy reference time / momcore time)\n")
    sizes = _bench.KERNEL_SIZES[:-1] if args.quick else _bench.KERNEL_SIZES
    print(_bench.format_table(_bench.kernel_table(sizes=sizes, budget=args.budget,
                                                  settle=args.settle)))
    print("\nMLP (speed-up = numpy backend time / compiled backend time)\n")
    print(_bench.format_mlp_table(_bench.mlp_table(budget=args.budget, settle=args.settle)))
    if not args.quick:
        print("\nThe minibatch step against its matrix products alone, per network\n")
        print(_bench.format_floor_table(_bench.floor_table(budget=args.budget,
                                                           settle=args.settle)))
    print()
    print(_bench.format_fit_table(_bench.fit_table(budget=args.budget, settle=args.settle)))
    print("\nOnline epoch against a compiled loop streaming its updates' bytes once per "
          "sample\n")
    print(_bench.format_online_roofline_table(
        _bench.online_roofline_table(budget=args.budget, settle=args.settle)))
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
    from momcore import __version__

    # the name the user typed: the installed script, or the module
    prog = "momcore" if os.path.basename(sys.argv[0]) == "momcore" else "python -m momcore"
    p = argparse.ArgumentParser(prog=prog,
                                description="momcore: gradient descent with momentum.")
    p.add_argument("--version", action="version", version=f"momcore {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="quick table of momcore vs the numpy reference")
    b.add_argument("--threads", type=int, default=None, help="kernel threads (default: all)")
    b.add_argument("--budget", type=float, default=0.2,
                   help="seconds of timing per contender and case (default 0.2)")
    b.add_argument("--quick", action="store_true",
                   help="skip the n = 1e7 cases and the per-network GEMM-floor table")
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

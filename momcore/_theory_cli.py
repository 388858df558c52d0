"""``python -m momcore theory``: Qian's (1999) analysis of one (lr, momentum, curvature).

``add_parser(subparsers)`` registers the subcommand on an argparse subparsers object (its
handler is ``run``, set as ``func``); ``run(args)`` prints the analysis and returns the exit
code. Bad values raise a ValueError with one line that says why.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from momcore import theory

DESCRIPTION = """\
The linear theory of the classical momentum rule near a minimum (N. Qian 1999): along a
curvature k (a Hessian eigenvalue) each component follows
x[t+1] = (1 + p - lr k) x[t] - p x[t-1], with p the momentum. Prints whether that
converges, its two roots and rate, the optimal momentum for this lr and k, iteration counts,
Polyak's tuning for a curvature range [k, k-max], and the equivalent particle (mass, friction).
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``theory`` on ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    parser = subparsers.add_parser(
        "theory", help="Qian's analysis of lr, momentum and a curvature k",
        description=DESCRIPTION)
    parser.add_argument("--lr", type=float, required=True, metavar="LR",
                        help="learning rate (>= 0)")
    parser.add_argument("--momentum", type=float, required=True, metavar="P",
                        help="momentum coefficient p (converges only in (-1, 1))")
    parser.add_argument("--k", type=float, required=True, metavar="K",
                        help="curvature: an eigenvalue of the Hessian (> 0)")
    parser.add_argument("--k-max", type=float, default=None, metavar="KMAX",
                        help="largest curvature: with --k as the smallest, print Polyak's "
                             "tuned lr and momentum for the range [k, k-max]")
    parser.add_argument("--tol", type=float, default=1e-6, metavar="TOL",
                        help="contraction for the iteration counts (default 1e-6)")
    parser.add_argument("--plot", metavar="FILE", default=None,
                        help="write Qian's Figure 1 (spectral radius over lr*k and momentum) "
                             "with this setting marked, as PNG; needs momcore[plot]")
    parser.set_defaults(func=run)
    return parser


def _number(value: float) -> str:
    return f"{float(value):.6g}"


def _steps(value: float) -> str:
    return f"{float(value):.0f}" if math.isfinite(value) else "never (does not converge)"


def _roots(lr: float, momentum: float, k: float) -> str:
    """The two roots, and what kind of pair they are."""
    lambda_1, lambda_2 = theory.eigenvalues(lr, momentum, k)
    b = 1.0 + momentum - lr * k
    discriminant = b * b - 4.0 * momentum
    if abs(discriminant) <= 1e-12 * max(b * b, 4.0 * abs(momentum)):
        return f"{_number(lambda_1.real)} (double root: critical damping)"
    if discriminant < 0:
        return (f"{_number(lambda_1.real)} ± {_number(abs(lambda_1.imag))}i "
                f"(complex pair: the component oscillates)")
    return f"{_number(lambda_1.real)}, {_number(lambda_2.real)} (real)"


def analysis(lr: float, momentum: float, k: float, k_max: float | None = None,
             tol: float = 1e-6) -> list[str]:
    """The lines that ``python -m momcore theory`` prints; ValueError for bad values."""
    # The closed forms check lr >= 0, k > 0 and finiteness, with the argument's name.
    converges = bool(theory.converges(lr, momentum, k))
    rate = float(theory.spectral_radius(lr, momentum, k))
    if not 0.0 < tol < 1.0:
        raise ValueError(f"tol must be in (0, 1), got {tol!r}")
    if k_max is not None and not (math.isfinite(k_max) and k_max >= k):
        raise ValueError(f"k-max must be a finite number >= k = {k!r}, got {k_max!r}")
    lr_k = lr * k
    plain_rate = abs(1.0 - lr_k)
    lines = [
        f"momentum iteration with lr = {_number(lr)}, momentum = {_number(momentum)}, "
        f"curvature k = {_number(k)} (lr*k = {_number(lr_k)})",
        f"  converges:          {'yes' if converges else 'no'}  "
        f"(Qian's Result 3: -1 < momentum < 1 and 0 < lr*k < 2 + 2*momentum)",
        f"  eigenvalues:        {_roots(lr, momentum, k)}",
        f"  rate:               {_number(rate)} per step (spectral radius max|lambda|)",
        f"  without momentum:   rate {_number(plain_rate)} per step (|1 - lr*k|)",
    ]
    has_optimum = 0.0 < lr_k < 4.0
    if has_optimum:
        best = float(theory.optimal_momentum(lr, k))
        best_rate = float(theory.optimal_rate(lr, k))
        lines.append(f"  optimal momentum:   {_number(best)} for this lr and k, rate "
                     f"{_number(best_rate)} per step ((1 - sqrt(lr*k))^2: a double root)")
    else:
        lines.append("  optimal momentum:   none: lr*k must be in (0, 4)")
    lines.append(f"  iterations to {tol:g}:")
    counts = [(f"with momentum {_number(momentum)}", momentum)]
    if has_optimum:
        counts.append((f"with the optimal {_number(best)}", best))
    counts.append(("without momentum", 0.0))
    for label, p in counts:
        lines.append(f"    {label + ':':<28} {_steps(theory.iterations_to(tol, lr, p, k))}")
    if k_max is not None:
        tuned_lr, tuned_momentum, tuned_rate = theory.tune(k, k_max)
        condition = k_max / k
        lines += [
            f"  Polyak's heavy ball for k in [{_number(k)}, {_number(k_max)}] "
            f"(condition number {_number(condition)}):",
            f"    lr = {_number(tuned_lr)}, momentum = {_number(tuned_momentum)}, "
            f"rate {_number(tuned_rate)} per step, "
            f"{_steps(theory.iterations_to(tol, tuned_lr, tuned_momentum, k))} iterations",
            f"    best plain descent: lr = {_number(2.0 / (k + k_max))}, rate "
            f"{_number((condition - 1.0) / (condition + 1.0))} per step",
        ]
    if 0.0 < momentum < 1.0 and lr > 0.0:
        mass, friction = theory.to_physics(lr, momentum, 1.0)
        lines.append(f"  physics (dt = 1):   mass {_number(mass)}, friction {_number(friction)} "
                     f"(m = momentum/lr, mu = (1 - momentum)/lr; Qian's Eq. 7-8)")
    else:
        lines.append("  physics (dt = 1):   none: a particle with mass > 0 needs "
                     "0 < momentum < 1 and lr > 0")
    return lines


def run(args: argparse.Namespace) -> int:
    """Print the analysis of ``args``, and write Figure 1 with ``--plot``; the exit code.

    0 on success. Bad values raise ValueError. Without matplotlib, ``--plot`` prints one
    line to stderr and returns 2 (as ``main`` does for bad values), before printing anything.
    """
    lines = analysis(args.lr, args.momentum, args.k, getattr(args, "k_max", None),
                     getattr(args, "tol", 1e-6))
    plot = getattr(args, "plot", None)
    if plot is not None:
        from momcore import plots

        try:
            path = plots.figure1(plot, point=(args.lr * args.k, args.momentum))
        except ImportError as exc:
            print(f"momcore: error: {exc}", file=sys.stderr)
            return 2
        lines.append(f"wrote Figure 1 to {path}")
    print("\n".join(lines))
    return 0


"""``python -m momcore demo``: momentum on real data, in numbers and pictures.

Trains the MLP on the embedded iris and digits data with momentum 0, 0.5, 0.9,
annealed 0.5 -> 0.9 and Nesterov 0.9 (same lr, same seed), prints how many epochs
each needs to reach a target loss, the accuracy, and the time per epoch of the
compiled and the numpy backends; then the ravine experiment in numbers; and, with
matplotlib, writes the figures to ``--out``.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from momcore import datasets, plots, schedules
from momcore.mlp import MLP

SETTINGS: dict[str, dict[str, Any]] = {
    "momentum 0": dict(momentum=0.0),
    "momentum 0.5": dict(momentum=0.5),
    "momentum 0.9": dict(momentum=0.9),
    "annealed 0.5->0.9": dict(momentum_schedule=schedules.momentum_annealing(0.5, 0.9,
                                                                             epochs=10)),
    "nesterov 0.9": dict(momentum=0.9, rule="nesterov"),
}


@dataclass
class Task:
    name: str
    sizes: list[int]
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    lr: float
    target_loss: float
    max_epochs: int


def tasks() -> list[Task]:
    """Iris (standardised; accuracy on the training set, as in the sources) and digits
    (pixels / 16; accuracy on a held-out 20 %)."""
    iris = datasets.load_iris()
    X = (iris.X - iris.X.mean(axis=0)) / iris.X.std(axis=0)
    digits = datasets.load_digits()
    Xtr, Xte, ytr, yte = datasets.train_test_split(digits.X / 16.0, digits.y,
                                                   test_fraction=0.2, seed=0)
    return [Task("iris", [4, 8, 3], X, iris.y, X, iris.y, 0.01, 0.1, 200),
            Task("digits", [64, 128, 10], Xtr, ytr, Xte, yte, 0.01, 0.05, 60)]


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_training(task: Task, setting: str, numpy_epochs: int) -> dict[str, Any]:
    """One row of the table: the compiled backend trained to the target loss, and the
    numpy backend timed over its first ``numpy_epochs`` epochs from the same start."""
    kwargs = SETTINGS[setting]
    net = MLP(task.sizes, seed=0)
    history = net.fit(task.X, task.y, epochs=task.max_epochs, lr=task.lr,
                      target_loss=task.target_loss, **kwargs)
    c_epoch = sum(history.seconds) / history.epochs
    slow = MLP(task.sizes, seed=0, backend="numpy")
    slow_history = slow.fit(task.X, task.y, epochs=numpy_epochs, lr=task.lr, **kwargs)
    numpy_epoch = sum(slow_history.seconds) / slow_history.epochs
    return {
        "task": task.name, "setting": setting,
        "epochs": history.epochs if history.stopped == "target_loss" else math.inf,
        "loss": history.loss[-1], "accuracy": net.score(task.X_test, task.y_test),
        "c_ms": c_epoch * 1e3, "numpy_ms": numpy_epoch * 1e3,
        "losses": history.loss,
    }


def format_rows(rows: list[dict[str, Any]], targets: dict[str, float]) -> str:
    head = (f"{'data':<7} {'setting':<18} {'epochs to target':>16} {'final loss':>10} "
            f"{'accuracy':>8} {'C ms/epoch':>10} {'numpy ms/epoch':>14} {'speed-up':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        epochs = "not reached" if math.isinf(r["epochs"]) else str(r["epochs"])
        lines.append(f"{r['task']:<7} {r['setting']:<18} {epochs:>16} {r['loss']:>10.4f} "
                     f"{r['accuracy']:>8.1%} {r['c_ms']:>10.3f} {r['numpy_ms']:>14.1f} "
                     f"{r['numpy_ms'] / r['c_ms']:>7.0f}x")
    lines.append("targets: " + ", ".join(f"{k} loss {v}" for k, v in targets.items()) +
                 " (cross-entropy, mean per sample); online learning, batch 1, same lr")
    return "\n".join(lines)


def run_distributed(args: argparse.Namespace) -> int:
    """The digits network trained data-parallel over MPI (mpiexec -n P ... demo
    --distributed): minibatches of 64 split across the ranks; rank 0 reports."""
    from mpi4py import MPI

    from momcore import distributed

    comm = MPI.COMM_WORLD
    task = tasks()[1]
    net = MLP(task.sizes, seed=0)
    if comm.rank == 0:
        print(f"momcore demo --distributed: digits {task.sizes} on {comm.size} rank(s), "
              f"global batches of 64, momentum 0.9\n")
    history = distributed.fit(net, task.X, task.y, epochs=20, batch_size=64, lr=0.1,
                              momentum=0.9, verbose=True)
    accuracy = net.score(task.X_test, task.y_test)
    if comm.rank == 0:
        print(f"\n{history.epochs} epochs, final loss {history.loss[-1]:.4f}, test accuracy "
              f"{accuracy:.1%}, {sum(history.seconds):.2f} s of training")
        if args.out is not None:
            out = pathlib.Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            net.save(out / "digits_distributed.npz")
            print(f"checkpoint: {out / 'digits_distributed.npz'} (loads in one process too)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.distributed:
        return run_distributed(args)
    if args.numpy_epochs < 1:
        raise ValueError(f"--numpy-epochs must be >= 1, got {args.numpy_epochs}")
    start = time.perf_counter()
    all_tasks = tasks()
    rows = []
    total = len(all_tasks) * len(SETTINGS)
    for task in all_tasks:
        for setting in SETTINGS:
            _progress(f"[{len(rows) + 1}/{total}] training {task.name} {task.sizes} "
                      f"with {setting} ...")
            rows.append(run_training(task, setting, args.numpy_epochs))
    print("momcore demo: online back-propagation with a momentum term\n")
    print(format_rows(rows, {t.name: t.target_loss for t in all_tasks}))

    _progress("ravine experiment ...")
    r = plots.ravine_numbers()
    print("\nravine (E = 1/2 w^T H w, curvatures 1 and 50, rotated 30 degrees; steps until "
          "E < 1e-6 E(w0))")
    print(f"  plain descent, lr {r['plain_lr']:.4f}: {r['plain_steps']:.0f} steps "
          f"(predicted rate {r['plain_rate']:.3f} per step)")
    print(f"  momentum {r['momentum']:.3f}, lr {r['lr']:.4f}: {r['steps']:.0f} steps "
          f"(predicted rate {r['rate']:.3f} per step)")

    if args.out is not None:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        try:
            written = [
                plots.figure1(out / "figure1.png"),
                plots.ravine(out / "ravine.png"),
                plots.loss_curves(out / "loss_digits.png",
                                  {r["setting"]: r["losses"] for r in rows
                                   if r["task"] == "digits"},
                                  title="digits 64-128-10, online: training loss per epoch"),
            ]
            print("\nfigures: " + ", ".join(str(p) for p in written))
        except ImportError as exc:
            print(f"\nfigures skipped: {exc}")
    print(f"\n({time.perf_counter() - start:.1f} s in all)")
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="train on iris and digits with several momentum settings",
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write figure1.png, ravine.png and loss_digits.png here "
                        "(needs matplotlib: pip install 'momcore[plot]')")
    p.add_argument("--numpy-epochs", type=int, default=2, metavar="N",
                   help="epochs over which the numpy backend is timed (default 2)")
    p.add_argument("--distributed", action="store_true",
                   help="train digits data-parallel over MPI instead; launch with "
                        "mpiexec -n P momcore demo --distributed (needs momcore[mpi])")
    p.set_defaults(func=run)

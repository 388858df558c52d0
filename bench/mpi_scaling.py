"""Data-parallel scaling: time per epoch, the communication share of a step, and one
rank against ``MLP.fit``.

    python bench/mpi_scaling.py              # 1 and 2 ranks in turns, ratios of one run
    mpiexec -n 2 python bench/mpi_scaling.py # one rank count only

Trains a 784-256-128-10 network (float64, 235,146 parameters: 1.9 MB per Allreduce)
on 8,192 random rows with global batches of 256, one BLAS and kernel thread per rank.
Under mpiexec, rank 0 prints the best of 3 epochs and the share of it spent in the
ranks adding their gradients (Allreduce, or the barriers around the sum in
shared memory), waiting for each other included; with one rank also the best epoch of ``MLP.fit`` on the same data,
the two taking turns. Without mpiexec the script launches itself with 1 and 2 ranks in
turns (5 rounds) and prints the best of each and their ratios: 2 ranks over 1, and
1 rank over ``MLP.fit``.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
for _name, _value in ONE_THREAD.items():  # before numpy loads its BLAS
    os.environ.setdefault(_name, _value)

import numpy as np  # noqa: E402

SIZES = [784, 256, 128, 10]
ROWS, BATCH, EPOCHS = 8192, 256, 3


class TimedComm:
    """COMM_WORLD, with the time spent in Allreduce and Barrier (the ranks adding their
    gradients: through MPI, or in shared memory between two barriers) added up."""

    def __init__(self, comm):
        self._comm = comm
        self.allreduce_seconds = 0.0

    def Allreduce(self, *args, **kwargs):
        start = time.perf_counter()
        self._comm.Allreduce(*args, **kwargs)
        self.allreduce_seconds += time.perf_counter() - start

    def Barrier(self):
        start = time.perf_counter()
        self._comm.Barrier()
        self.allreduce_seconds += time.perf_counter() - start

    def __getattr__(self, name):
        return getattr(self._comm, name)


def ranks_run() -> dict:
    """Under mpiexec: the best epoch of distributed.fit (and, with one rank, of
    MLP.fit), on rank 0; None elsewhere."""
    from mpi4py import MPI

    import momcore
    from momcore import distributed

    momcore.set_num_threads(1)
    comm = TimedComm(MPI.COMM_WORLD)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((ROWS, SIZES[0]))
    y = rng.integers(0, SIZES[-1], X.shape[0])
    net = momcore.MLP(SIZES, seed=0)
    alone = momcore.MLP(SIZES, seed=0) if comm.Get_size() == 1 else None
    best, share, fit_best = float("inf"), 0.0, float("inf")
    for _ in range(EPOCHS):
        comm.Barrier()
        comm.allreduce_seconds = 0.0
        history = distributed.fit(net, X, y, comm=comm, epochs=1, batch_size=BATCH, lr=1e-3)
        seconds = comm.allreduce(history.seconds[0], op=MPI.MAX)
        waited = comm.allreduce(comm.allreduce_seconds, op=MPI.MAX)
        if seconds < best:
            best, share = seconds, waited / seconds
        if alone is not None:
            fit = alone.fit(X, y, epochs=1, batch_size=BATCH, lr=1e-3)
            fit_best = min(fit_best, fit.seconds[0])
    if comm.Get_rank() != 0:
        return None
    return {"ranks": comm.Get_size(), "seconds": best, "allreduce_share": share,
            "fit_seconds": fit_best if alone is not None else None,
            "threads": momcore.get_num_threads()}


def report(r: dict) -> str:
    steps = -(-ROWS // BATCH)
    line = (f"ranks {r['ranks']}: {r['seconds'] * 1e3:.1f} ms per epoch ({steps} steps), "
            f"adding the gradients {r['allreduce_share']:.0%} of it (1.9 MB per step); "
            f"threads per rank: {r['threads']}")
    if r["fit_seconds"] is not None:
        line += (f"; MLP.fit {r['fit_seconds'] * 1e3:.1f} ms per epoch (one rank / MLP.fit "
                 f"{r['seconds'] / r['fit_seconds']:.2f}x)")
    return line


def in_turns(rounds: int = 5) -> None:
    """1 and 2 ranks launched in turns; the best of each, and the ratios."""
    mpiexec = (shutil.which("mpiexec", path=str(pathlib.Path(sys.executable).parent))
               or shutil.which("mpiexec"))
    if mpiexec is None:
        sys.exit("no mpiexec found (pip install 'momcore[mpi]')")
    env = dict(os.environ)
    best: dict[int, dict] = {}
    for _ in range(rounds):
        for ranks in (1, 2):
            out = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, __file__, "--json"],
                                 env=env, check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            if ranks not in best or r["seconds"] < best[ranks]["seconds"]:
                best[ranks] = r
    for ranks in (1, 2):
        print(report(best[ranks]))
    print(f"2 ranks / 1 rank: {best[1]['seconds'] / best[2]['seconds']:.2f}x faster; "
          f"1 rank / MLP.fit: {best[1]['seconds'] / best[1]['fit_seconds']:.2f}x the time "
          f"(best of {rounds} launches each, in turns; load {os.getloadavg()[0]:.2f})")


def main() -> None:
    if "--json" in sys.argv or "OMPI_COMM_WORLD_SIZE" in os.environ \
            or "PMI_SIZE" in os.environ:
        r = ranks_run()
        if r is not None:
            print(json.dumps(r) if "--json" in sys.argv else report(r), flush=True)
    else:
        in_turns()


if __name__ == "__main__":
    main()

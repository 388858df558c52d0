"""Data-parallel scaling: time per epoch and the communication share of a step.

    mpiexec -n 1 python bench/mpi_scaling.py
    mpiexec -n 2 python bench/mpi_scaling.py

Trains a 784-256-128-10 network (float64, 235,146 parameters: 1.9 MB per Allreduce)
on 8,192 random rows with global batches of 256 for 3 epochs; rank 0 prints the best
epoch time and the share of it spent in the gradient Allreduce.
"""
from __future__ import annotations

import time

import numpy as np
from mpi4py import MPI

import momcore
from momcore import distributed


class TimedComm:
    """COMM_WORLD, with the time spent in Allreduce added up."""

    def __init__(self, comm):
        self._comm = comm
        self.allreduce_seconds = 0.0

    def Allreduce(self, *args, **kwargs):
        start = time.perf_counter()
        self._comm.Allreduce(*args, **kwargs)
        self.allreduce_seconds += time.perf_counter() - start

    def __getattr__(self, name):
        return getattr(self._comm, name)


def main() -> None:
    comm = TimedComm(MPI.COMM_WORLD)
    rng = np.random.default_rng(0)
    sizes = [784, 256, 128, 10]
    X = rng.standard_normal((8192, sizes[0]))
    y = rng.integers(0, sizes[-1], X.shape[0])
    net = momcore.MLP(sizes, seed=0)
    best, share = float("inf"), 0.0
    for _ in range(3):
        comm.allreduce_seconds = 0.0
        comm.Barrier()
        history = distributed.fit(net, X, y, comm=comm, epochs=1, batch_size=256, lr=1e-3)
        seconds = comm.allreduce(history.seconds[0], op=MPI.MAX)
        waited = comm.allreduce(comm.allreduce_seconds, op=MPI.MAX)
        if seconds < best:
            best, share = seconds, waited / seconds
    if comm.Get_rank() == 0:
        steps = -(-X.shape[0] // 256)
        print(f"ranks {comm.Get_size()}: {best * 1e3:.1f} ms per epoch ({steps} steps), "
              f"Allreduce {share:.0%} of it ({net.n_params * 8 / 1e6:.1f} MB per step); "
              f"BLAS and kernel threads per rank: momcore {momcore.get_num_threads()}")


if __name__ == "__main__":
    main()

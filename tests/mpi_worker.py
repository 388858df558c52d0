"""Run under mpiexec by tests/test_distributed.py: one scenario per invocation.

    mpiexec -n 2 python mpi_worker.py SCENARIO OUT_DIR

Rank 0 writes OUT_DIR/result.json; every rank writes OUT_DIR/params-RANK.bin."""
from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
from mpi4py import MPI

import momcore
from momcore import distributed

comm = MPI.COMM_WORLD
scenario, out = sys.argv[1], pathlib.Path(sys.argv[2])
if scenario.endswith("_allreduce"):  # as ranks on different machines add their gradients
    distributed._SHARED_MEMORY = False
    scenario = scenario.removesuffix("_allreduce")
digits = momcore.datasets.load_digits()
X, y = digits.X[:500] / 16, digits.y[:500]
FIT = dict(epochs=3, lr=0.05, momentum=0.9)


def single(backend="c", l2=0.0, **kwargs):
    net = momcore.MLP([64, 32, 10], seed=3, backend=backend, l2=l2)
    history = net.fit(X, y, **{**FIT, **kwargs})
    return net, history


result: dict = {}
if scenario in ("same", "odd_batch", "numpy", "nesterov_wd", "l2", "l2_numpy"):
    kwargs = {"same": dict(batch_size=30), "odd_batch": dict(batch_size=25),
              "numpy": dict(batch_size=30), "nesterov_wd": dict(batch_size=16, rule="nesterov",
                                                                  weight_decay=1e-3),
              "l2": dict(batch_size=25), "l2_numpy": dict(batch_size=25)}[scenario]
    backend = "numpy" if scenario.endswith("numpy") else "c"
    l2 = 2.0 if scenario.startswith("l2") else 0.0
    net = momcore.MLP([64, 32, 10], seed=3, backend=backend, l2=l2)
    history = distributed.fit(net, X, y, **FIT, **kwargs)
    if comm.rank == 0:
        ref, ref_history = single(backend, l2=l2, **kwargs)
        result = dict(params=net.params.tolist(), ref=ref.params.tolist(),
                      loss=history.loss, ref_loss=ref_history.loss,
                      accuracy=history.accuracy, ref_accuracy=ref_history.accuracy,
                      steps=net.steps, ref_steps=ref.steps)
elif scenario == "sharded":
    cut = 310  # unequal shards
    mine = slice(0, cut) if comm.rank == 0 else slice(cut, 500)
    net = momcore.MLP([64, 32, 10], seed=3)
    history = distributed.fit(net, X[mine], y[mine], sharded=True, batch_size=40, **FIT)
    if comm.rank == 0:
        ref, ref_history = single(batch_size=40)
        result = dict(params=net.params.tolist(), ref=ref.params.tolist(),
                      loss=history.loss, ref_loss=ref_history.loss)
elif scenario == "checkpoint":
    net = momcore.MLP([64, 32, 10], seed=3)
    distributed.fit(net, X, y, batch_size=30, **FIT)
    if comm.rank == 0:
        net.save(out / "distributed.npz")
    comm.Barrier()
    # distributed -> single process, and single process -> distributed
    continued = momcore.MLP.load(out / "distributed.npz")
    distributed.fit(continued, X, y, batch_size=30, **FIT)
    if comm.rank == 0:
        alone = momcore.MLP.load(out / "distributed.npz")
        alone.fit(X, y, batch_size=30, **FIT)
        result = dict(params=continued.params.tolist(), ref=alone.params.tolist())
elif scenario == "bad_input":
    bad = X[:, :63] if comm.rank == 1 else X
    net = momcore.MLP([64, 32, 10], seed=3)
    try:
        distributed.fit(net, bad, y, batch_size=30, **FIT)
        result = dict(raised=None)
    except (ValueError, RuntimeError) as exc:
        result = dict(raised=type(exc).__name__, message=str(exc))
    result = comm.gather(result, root=0)
    result = dict(ranks=result) if comm.rank == 0 else {}
elif scenario == "crash":
    net = momcore.MLP([64, 32, 10], seed=3)
    if comm.rank == 1:  # an unexpected failure inside training on one rank only
        def fail(*args):
            raise MemoryError("simulated")
        distributed._MPIRunner.run = fail
    distributed.fit(net, X, y, batch_size=30, **FIT)
    result = dict(finished=True)
elif scenario.startswith("differ_"):
    # one training argument differs on rank 1: every rank raises before the first step
    key = scenario[len("differ_"):]
    changed = {"epochs": dict(epochs=4), "batch_size": dict(batch_size=20),
               "lr": dict(lr=0.06), "schedule": dict(lr_schedule=lambda t: 0.06 / (1 + t)),
               "labels": {}}[key]
    labels = np.eye(10)[y] if key == "labels" and comm.rank == 1 else y  # targets, not labels
    net = momcore.MLP([64, 32, 10], seed=3)
    kwargs = {**FIT, "batch_size": 30, **(changed if comm.rank == 1 else {})}
    try:
        distributed.fit(net, X, labels, **kwargs)
        result = dict(raised=None)
    except (ValueError, RuntimeError) as exc:
        result = dict(raised=type(exc).__name__, message=str(exc), steps=net.steps)
    result = comm.gather(result, root=0)
    result = dict(ranks=result) if comm.rank == 0 else {}
elif scenario in ("busy", "digest_fails"):
    net = momcore.MLP([64, 32, 10], seed=3)
    if comm.rank == 1:
        if scenario == "busy":  # this rank's model is training in another thread
            net._training.acquire()
        else:  # an unexpected failure while the replicas are compared
            def fail(*args):
                raise MemoryError("simulated")
            distributed.hashlib.sha256 = fail
    try:
        distributed.fit(net, X, y, batch_size=30, **FIT)
        result = dict(raised=None)
    except (RuntimeError, MemoryError) as exc:
        result = dict(raised=type(exc).__name__, message=str(exc), steps=net.steps)
    result = comm.gather(result, root=0)
    result = dict(ranks=result) if comm.rank == 0 else {}
elif scenario in ("schedule_fails", "callback_fpe"):
    # a failure mid-training on one rank only: the job stops, no rank waits forever
    net = momcore.MLP([64, 32, 10], seed=3)

    def schedule(t):
        if comm.rank == 1 and t == 1:
            raise KeyError("simulated schedule bug")
        return 0.05

    def callback(epoch, logs):
        if epoch == 1:
            raise FloatingPointError("simulated callback failure")

    kwargs = ({"lr_schedule": schedule} if scenario == "schedule_fails"
              else {"callback": callback})
    distributed.fit(net, X, y, batch_size=30, **{**FIT, **kwargs})
    result = dict(finished=True)
else:
    raise SystemExit(f"unknown scenario {scenario}")

(out / f"params-{comm.rank}.bin").write_bytes(net.params.tobytes())
if comm.rank == 0:
    (out / "result.json").write_text(json.dumps(result))

"""Data-parallel training of :class:`momcore.MLP` over MPI (``pip install 'momcore[mpi]'``).

Every rank holds a full replica of the network. For each global batch, every rank
computes the gradient of its share of the batch's rows into the flat gradient buffer,
the ranks add their buffers with one ``Allreduce`` (each share weighted by its row
count, so the sum divided by the batch size is the mean over the global batch), and
every rank applies the same fused momentum step. The replicas therefore stay bit
for bit identical, and the result equals single-process training on the same global
batches (up to the order in which the per-row gradients are added).

Launch as usual with MPI::

    mpiexec -n 4 python train.py          # train.py calls momcore.distributed.fit

Global batch order. With ``sharded=False`` (the default) every rank passes the same
``X, y``; the shared, seeded generator of the model shuffles the rows exactly as
``net.fit`` would, and of every global batch of ``batch_size`` rows rank ``r`` of
``P`` takes the ``r``-th of ``P`` nearly equal consecutive slices. With
``sharded=True`` each rank passes its own shard; the global data set is the
concatenation of the shards in rank order, its rows are shuffled with the same
generator, and each rank computes the rows of each global batch that live in its
shard. Either way the batches, the step order and the random state are those of a
single process training on the whole data set.

Rank 0 alone prints progress (``verbose``); write checkpoints from rank 0 only
(``if comm.rank == 0: net.save(path)``): the file is an ordinary model file that a
single process loads, and a model loaded from any file continues in a distributed run.
A rank that fails makes every rank stop: errors the ranks can agree on (bad input,
a non-finite loss) raise on every rank; anything else aborts the job through MPI with
a message naming the rank, instead of leaving the others waiting.
"""
from __future__ import annotations

import hashlib
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from momcore import _core, reference
from momcore import _mlp_numpy as ref
from momcore.mlp import MLP, History


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError("momcore.distributed needs mpi4py and an MPI library: "
                          "pip install 'momcore[mpi]'") from exc
    return MPI


def _agree(comm: Any, error: BaseException | None) -> None:
    """Raises on every rank when any rank had an error (the first one's message)."""
    messages = comm.allgather(None if error is None else f"{type(error).__name__}: {error}")
    for rank, message in enumerate(messages):
        if message is not None:
            if error is not None:
                raise error
            raise RuntimeError(f"rank {rank} failed: {message}")


def fit(net: MLP, X: Any, y: Any, *, comm: Any = None, sharded: bool = False,
        epochs: int, batch_size: int = 32, lr: float = 0.1, momentum: float = 0.9,
        rule: str = "classical", lr_schedule: Callable[[int], float] | None = None,
        momentum_schedule: Callable[[int], float] | None = None, shuffle: bool = True,
        target_loss: float | None = None, verbose: bool = False,
        callback: Callable[[int, dict[str, float]], Any] | None = None,
        dampening: float = 0.0, weight_decay: float = 0.0) -> History:
    """``net.fit`` on every rank of ``comm`` (default ``MPI.COMM_WORLD``), data-parallel.

    Arguments as in :meth:`momcore.MLP.fit`, except that ``batch_size`` defaults to
    32 (a global batch shared by the ranks; one row would leave all but one rank
    idle). Call it on every rank with the same
    model (same sizes and seed, or the same loaded file) and the same arguments. See
    the module docstring for how batches are split and ordered. Returns the History
    (identical on every rank); ``callback`` runs on rank 0 only, and its decision to
    stop is passed to every rank.
    """
    MPI = _mpi()
    comm = MPI.COMM_WORLD if comm is None else comm
    rank, size = comm.Get_rank(), comm.Get_size()
    error: BaseException | None = None
    try:
        _check_replicas(comm, net)
        X, T, classify, lr_of, momentum_of = net._fit_arguments(
            X, y, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, rule=rule,
            lr_schedule=lr_schedule, momentum_schedule=momentum_schedule,
            target_loss=target_loss, verbose=verbose, callback=callback, dampening=dampening,
            weight_decay=weight_decay)
    except (TypeError, ValueError) as exc:
        error = exc
    _agree(comm, error)

    counts = comm.allgather(X.shape[0])
    if not sharded and len(set(counts)) != 1:
        _agree(comm, ValueError(f"without sharded=True every rank passes the same X; "
                                f"the ranks have {counts} rows"))
    n_total = sum(counts) if sharded else X.shape[0]
    first = sum(counts[:rank]) if sharded else 0  # global index of this rank's row 0
    batch = min(int(batch_size), n_total)
    max_rows = min(batch, X.shape[0]) if sharded else -(-batch // size)
    grad = np.zeros_like(net.params)
    X_rows = np.empty((max(max_rows, 1), X.shape[1]), net.dtype)
    T_rows = np.empty((max(max_rows, 1), T.shape[1]), net.dtype)
    core = (_core.NetCore(net.params, net._state, grad, net.sizes, net.hidden, net.output,
                          max(max_rows, 1)) if net.backend == "c" else None)
    if rule != net._state_rule:
        net._state.fill(0)
        net._state_rule = rule
    stats = np.zeros(2)  # [sum of per-sample losses, correct rows] of one step
    totals = np.zeros(2)
    history = net.history_ = History()
    try:
        for _ in range(int(epochs)):
            epoch = net.epochs
            lr_e, momentum_e = float(lr_of(epoch)), float(momentum_of(epoch))
            order = net._rng.permutation(n_total) if shuffle else np.arange(n_total)
            start = time.perf_counter()
            epoch_totals = np.zeros(2)
            for b0 in range(0, n_total, batch):
                rows = order[b0:b0 + batch]
                if sharded:
                    mine = rows[(rows >= first) & (rows < first + X.shape[0])] - first
                else:
                    k = rows.shape[0]
                    mine = rows[rank * k // size:(rank + 1) * k // size]
                m = mine.shape[0]
                if m:
                    np.take(X, mine, axis=0, out=X_rows[:m])
                    np.take(T, mine, axis=0, out=T_rows[:m])
                    loss, stats[1] = _gradient(net, core, X_rows[:m], T_rows[:m], grad)
                    stats[0] = m * loss
                    grad *= m  # the mean over this rank's rows, back to their sum
                else:
                    grad.fill(0)
                    stats[:] = 0
                comm.Allreduce(MPI.IN_PLACE, grad, op=MPI.SUM)
                comm.Allreduce(stats, totals, op=MPI.SUM)
                if not np.isfinite(totals[0]):
                    raise FloatingPointError(
                        f"the training loss became non-finite in epoch {epoch}; training "
                        f"stopped and the weights of the last finite step were kept")
                grad /= rows.shape[0]
                hyper = dict(lr=lr_e, momentum=momentum_e, rule=rule, dampening=dampening,
                             weight_decay=weight_decay)
                if core is not None:
                    core.step(**hyper)  # the step as net.fit takes it, on this thread
                else:
                    reference.momentum_step(net.params, grad, net._state, **hyper)
                net.steps += 1
                epoch_totals += totals
            seconds = time.perf_counter() - start
            net.epochs += 1
            logs = {"loss": float(epoch_totals[0] / n_total), "seconds": seconds,
                    "lr": lr_e, "momentum": momentum_e}
            history.loss.append(logs["loss"])
            history.seconds.append(seconds)
            history.lr.append(lr_e)
            history.momentum.append(momentum_e)
            if classify:
                logs["accuracy"] = float(epoch_totals[1] / n_total)
                history.accuracy.append(logs["accuracy"])
            if verbose and rank == 0:
                acc = f"  accuracy {logs['accuracy']:.4f}" if classify else ""
                print(f"epoch {epoch + 1:>4}  loss {logs['loss']:.6f}{acc}  ranks {size}  "
                      f"{seconds * 1e3:.1f} ms", flush=True)
            reason = ""
            if target_loss is not None and logs["loss"] <= target_loss:
                reason = "target_loss"
            elif callback is not None and rank == 0 and callback(epoch, logs) is False:
                reason = "callback"
            reason = comm.bcast(reason, root=0)
            if reason:
                history.stopped = reason
                return history
        history.stopped = "epochs"
        return history
    except FloatingPointError:
        raise  # every rank saw the same reduced loss and raises the same error
    except BaseException as exc:
        sys.stderr.write(f"momcore.distributed: rank {rank} of {size} failed, aborting the "
                         f"job: {type(exc).__name__}: {exc}\n")
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
        raise  # not reached


def _gradient(net: MLP, core: Any, X: np.ndarray, T: np.ndarray,
              grad: np.ndarray) -> tuple[float, int]:
    """grad := dE/dparams of the mean loss over the rows of X; returns that loss and
    the number of rows classified right."""
    if core is not None:
        return core.gradients(X, T)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        loss = ref.gradients(net.params, net.sizes, X, T, net.hidden, net.output, grad)
        out = ref.forward(net.params, net.sizes, X, net.hidden, net.output)[-1]
    return loss, int(np.count_nonzero(ref.predicted_class(out) == ref.predicted_class(T)))


def _check_replicas(comm: Any, net: MLP) -> None:
    """Every rank must start from the same network, weights, state and random state."""
    digest = (tuple(net.sizes), net.hidden, net.output, net.dtype.name, net.backend,
              net.steps, net.epochs, hashlib.sha256(net.params.tobytes()).hexdigest(),
              hashlib.sha256(net._state.tobytes()).hexdigest(),
              repr(net._rng.bit_generator.state))
    digests = comm.allgather(digest)
    if any(d != digests[0] for d in digests):
        raise ValueError("the ranks hold different networks (sizes, weights, optimizer or "
                         "random state); build every replica with the same sizes and seed, "
                         "or load the same file on every rank")

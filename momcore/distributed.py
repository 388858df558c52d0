"""Data-parallel training of :class:`momcore.MLP` over MPI (``pip install 'momcore[mpi]'``).

Every rank holds a full replica of the network. For each global batch, every rank
computes, in one compiled call, the sum of the gradients of its share of the batch's
rows divided by the global batch size into a flat gradient buffer (rank 0 adds the l2
term); the ranks add their buffers (the sum is the mean over the global batch): ranks
that all map one machine's memory in an MPI-3 shared window, each adding up its block
of the buffer between two barriers, other ranks with one ``Allreduce`` in place; and
every rank applies the same fused momentum step. The replicas therefore stay bit for
bit identical, and the result equals single-process training on the same global
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
import math
import sys
import traceback
from typing import Any

import numpy as np

from momcore import training
from momcore.mlp import MLP
from momcore.training import History


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
        batch_size: int = 32, **fit_arguments: Any) -> History:
    """``net.fit`` on every rank of ``comm`` (default ``MPI.COMM_WORLD``), data-parallel.

    Arguments as in :meth:`momcore.MLP.fit`, except that ``batch_size`` defaults to
    32 (a global batch shared by the ranks; one row would leave all but one rank
    idle). Call it on every rank with the same
    model (same sizes and seed, or the same loaded file) and the same arguments. See
    the module docstring for how batches are split and ordered. Returns the History
    (identical on every rank); ``callback`` runs on rank 0 only, and its decision to
    stop is passed to every rank; validation and early stopping run on every rank
    (the replicas are identical, so they agree).

    Before the first step the ranks agree, and raise on every rank when they do not:
    any exception while checking the model and the arguments on one rank (RuntimeError
    "rank r failed: ..." on the others); replicas that differ; training arguments that
    differ (epochs, batch size, shuffle, lr, momentum, rule, dampening, weight decay,
    the schedules' first values, early stopping, the width and dtype of the inputs and
    of the encoded targets, the accuracy counted: a difference would hang the job or
    silently break the identical replicas). Like ``net.fit`` it takes the model's
    training lock: a model already training raises RuntimeError, on every rank.
    During training, a failure on one rank that the others cannot see (a user's
    schedule or callback raising, MemoryError) aborts the whole job through
    ``comm.Abort`` after writing "momcore.distributed: rank r of n failed, aborting
    the job: ..." and the traceback to stderr; a non-finite loss raises
    FloatingPointError on every rank.

    Parameters
    ----------
    net : momcore.MLP
        The replica on this rank (the same on every rank).
    X : array_like
        Inputs: the whole data set on every rank, or this rank's shard with
        ``sharded=True``.
    y : array_like
        Targets, rows as ``X``.
    comm : mpi4py.MPI.Comm or None, keyword-only
        The communicator (default ``MPI.COMM_WORLD``).
    sharded : bool, keyword-only
        Whether each rank passes its own shard (the global data set is the shards
        concatenated in rank order).
    batch_size : int, keyword-only
        Rows of a global batch, shared by the ranks (default 32).
    **fit_arguments
        The other keyword arguments of :meth:`momcore.MLP.fit` (``epochs``, ``lr``,
        ``momentum``, ``rule``, schedules, validation, early stopping, ...).

    Returns
    -------
    History
        The training history, identical on every rank.

    Raises
    ------
    ValueError, TypeError
        On every rank, when the replicas or the arguments differ between ranks or an
        argument is refused (as by :meth:`momcore.MLP.fit`).
    RuntimeError
        On every rank, when the model is already training, or on the other ranks when one
        rank failed while checking ("rank r failed: ...").
    FloatingPointError
        On every rank, when the (reduced) loss is not finite.
    ImportError
        If mpi4py (the extra ``mpi``) is not installed.
    """
    MPI = _mpi()
    comm = MPI.COMM_WORLD if comm is None else comm
    trainer = _MPITrainer(MPI, comm, sharded)
    busy = net.acquire_training_lock()
    locked = busy is None
    try:
        error: BaseException | None = None
        try:
            if busy is not None:
                raise busy
            digest = _replica_digest(net)
        except Exception as exc:  # noqa: BLE001 - agreed below, raised on every rank
            error, digest = exc, None
        digests = comm.allgather(digest)  # one collective: every rank reaches it
        if error is None and any(d != digests[0] for d in digests if d is not None):
            error = ValueError(
                "the ranks hold different networks (sizes, weights, optimizer or random "
                "state); build every replica with the same sizes and seed, or load the "
                "same file on every rank")
        trainer.agree_on(error)
        try:
            history = net.train(X, y, trainer=trainer, batch_size=batch_size, **fit_arguments)
        except BaseException as exc:
            if trainer.agreed or _agreed_stop(net, exc):
                trainer.close()  # every rank is here, with the same error
            raise
        trainer.close()
        return history
    except BaseException as exc:
        if trainer.agreed or _agreed_stop(net, exc):
            raise  # every rank raises the same error
        sys.stderr.write(f"momcore.distributed: rank {trainer.rank} of {trainer.size} "
                         f"failed, aborting the job: {type(exc).__name__}: {exc}\n")
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
        raise  # not reached
    finally:
        if locked:
            net.release_training_lock()


def _agreed_stop(net: MLP, exc: BaseException) -> bool:
    """Whether exc is the training loop's non-finite stop, which every rank reaches
    together (the loss is reduced over the ranks); a FloatingPointError from anywhere
    else (rank 0's callback) is one rank's failure."""
    history = net.history_
    return (isinstance(exc, FloatingPointError) and history is not None
            and history.stopped == "nonfinite")


class _MPITrainer(training.Trainer):
    """Ranks that agree: rank 0 prints and runs the callback, its stop decision and
    every input error reach every rank."""

    def __init__(self, MPI: Any, comm: Any, sharded: bool) -> None:
        self.MPI, self.comm, self.sharded = MPI, comm, bool(sharded)
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.root = self.rank == 0
        self.alone = False
        self.agreed = False
        self._shared: _SharedSum | bool | None = None

    def agree_on(self, error: BaseException | None) -> None:
        try:
            _agree(self.comm, error)
        except BaseException:
            self.agreed = True
            raise

    def agree_on_arguments(self, arguments: dict[str, Any]) -> None:
        everyone = self.comm.allgather(arguments)
        differ = [key for key in arguments
                  if any(other.get(key) != arguments[key] for other in everyone)]
        differ += [key for other in everyone for key in other
                   if key not in arguments and key not in differ]
        if differ:
            self.agreed = True
            raise ValueError("the ranks were given different training arguments: " + "; ".join(
                f"{key} (" + ", ".join(f"rank {r}: {other.get(key)!r}"
                                       for r, other in enumerate(everyone)) + ")"
                for key in differ))

    def decide(self, reason: str) -> str:
        return self.comm.bcast(reason, root=0)

    def describe(self) -> str:
        return f"ranks {self.size}"

    def shared_sum(self, n: int, dtype: np.dtype) -> _SharedSum | None:
        """The buffers in which the ranks add their gradient shares of n elements, when
        every rank maps the same memory (made once per fit, collectively); None when
        they do not (the ranks then add with Allreduce)."""
        if self._shared is None:
            node = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED) if _SHARED_MEMORY \
                else None
            # (one rank has nothing to add: Allreduce in place leaves its buffer)
            together = node is not None and node.Get_size() == self.size > 1
            if self.comm.allreduce(together, op=self.MPI.LAND):
                self._shared = _SharedSum(self.MPI, self.comm, node, n, dtype)
            else:
                self._shared = False
            if node is not None:
                node.Free()
        return self._shared or None

    def close(self) -> None:
        """Frees the shared buffers (collectively: every rank calls it)."""
        if self._shared:
            self._shared.free()
        self._shared = None

    def runner(self, net: MLP, X: np.ndarray, T: np.ndarray, batch: int,
               accuracy: str) -> training.Runner:
        counts = self.comm.allgather(X.shape[0])
        if not self.sharded and len(set(counts)) != 1:
            self.agree_on(ValueError(f"without sharded=True every rank passes the same X; "
                                     f"the ranks have {counts} rows"))
        return _MPIRunner(self, net, X, T, counts, accuracy, batch)


class _MPIRunner:
    """Global batches split across the ranks. Per batch: one compiled call for this
    rank's share of the gradient (its rows gathered, the sum of their gradients over
    the global batch size, and on rank 0 the l2 term); the shares added up, with the
    losses and the rows right (in shared memory, _SharedSum, or with Allreduce in
    place); one compiled step, the same on every rank."""

    def __init__(self, trainer: _MPITrainer, net: MLP, X: np.ndarray, T: np.ndarray,
                 counts: list[int], accuracy: str, batch: int) -> None:
        self.trainer, self.X, self.T = trainer, X, T
        rank, size = trainer.rank, trainer.size
        self.n_rows = sum(counts) if trainer.sharded else X.shape[0]
        self.first = sum(counts[:rank]) if trainer.sharded else 0  # global index of row 0
        # The l2 term enters once, in rank 0's share (the replicas are identical).
        self.l2 = net.l2 if rank == 0 else 0.0
        self.shared = trainer.shared_sum(net.n_params, net.dtype)
        if self.shared is None:  # Allreduce in place of the shares, then the step
            self.grad = np.zeros_like(net.params)
            self.stats = np.zeros(2)  # [sum of per-sample losses and penalty, rows right]
            self.totals = np.zeros(2)
        else:  # this rank's share in shared memory; the step reads the shared sum
            self.grad, self.stats = self.shared.shares[rank], self.shared.stats[rank]
        # A rank's share of a batch holds at most min(batch, its rows) rows.
        self.kernel = net.gradient_kernel(self.grad, max(1, min(batch, X.shape[0])),
                                          accuracy=accuracy, l2=0.0)
        self.stepper = self.kernel if self.shared is None else net.gradient_kernel(
            self.shared.total, 1, accuracy=accuracy, l2=0.0)

    def run(self, rows: np.ndarray, batch: int) -> tuple[float, int, int, bool]:
        MPI, comm, trainer = self.trainer.MPI, self.trainer.comm, self.trainer
        X, T, grad, stats, shared = self.X, self.T, self.grad, self.stats, self.shared
        kernel, l2, first, n_mine = self.kernel, self.l2, self.first, X.shape[0]
        rank, size, sharded = trainer.rank, trainer.size, trainer.sharded
        sum_loss, correct, steps = 0.0, 0, 0
        for b0 in range(0, rows.shape[0], batch):
            part = rows[b0:b0 + batch]
            k = part.shape[0]
            if sharded:
                mine = part[(part >= first) & (part < first + n_mine)] - first
            else:
                mine = part[rank * k // size:(rank + 1) * k // size]
            loss, right, squares = kernel.gradient_share(X, T, mine, k, l2)
            stats[0] = loss + 0.5 * l2 * squares  # the batch's l2 term times its rows
            stats[1] = right
            if shared is None:
                comm.Allreduce(MPI.IN_PLACE, grad, op=MPI.SUM)
                comm.Allreduce(stats, self.totals, op=MPI.SUM)
                totals = self.totals
            else:
                totals = shared.add_up(rank)
            if not math.isfinite(totals[0]):  # the same on every rank
                return sum_loss, correct + int(totals[1]), steps, True
            self.stepper.step()
            steps += 1
            sum_loss += totals[0]
            correct += int(totals[1])
        return sum_loss, correct, steps, False


_SHARED_MEMORY = True
"""Whether ranks that all map one node's memory add their gradients there (else, and
across nodes, with Allreduce)."""


class _SharedSum:
    """The ranks' gradient shares and their sum in memory that every rank maps (an MPI-3
    shared window): each rank writes its share into its own row; after a barrier each
    rank adds up its block of columns over the rows, in rank order, into the one sum;
    after a second barrier every rank steps with that sum. No copies through MPI, and
    one sum for all (the replicas stay identical)."""

    def __init__(self, MPI: Any, comm: Any, node: Any, n: int, dtype: np.dtype) -> None:
        self.MPI, self.comm = MPI, comm
        size, rank = comm.Get_size(), comm.Get_rank()
        self.windows = []
        self.shares = self._shared(node, (size + 1, n), dtype)
        self.total = self.shares[size]
        self.stats = self._shared(node, (size, 2), np.dtype(np.float64))
        block = (-(-n // size) + 15) // 16 * 16  # a multiple of 16: whole cache lines
        self.block = slice(min(rank * block, n), min((rank + 1) * block, n))
        self.totals = np.zeros(2)
        # every row is written by its rank before it is read (add_up's first barrier)

    def _shared(self, node: Any, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        nbytes = shape[0] * shape[1] * dtype.itemsize
        win = self.MPI.Win.Allocate_shared(nbytes if node.Get_rank() == 0 else 0,
                                           dtype.itemsize, comm=node)
        self.windows.append(win)
        win.Lock_all(self.MPI.MODE_NOCHECK)
        buffer, _ = win.Shared_query(0)
        return np.ndarray(buffer=buffer, dtype=dtype, shape=shape)

    def _barrier(self) -> None:
        for win in self.windows:
            win.Sync()
        self.comm.Barrier()
        for win in self.windows:
            win.Sync()

    def add_up(self, rank: int) -> np.ndarray:
        """After every rank wrote its share and stats: this rank's block of the sum;
        returns the summed stats (the same numbers on every rank)."""
        self._barrier()
        block, shares = self.block, self.shares
        total = self.total[block]
        np.copyto(total, shares[0, block])
        for k in range(1, shares.shape[0] - 1):
            np.add(total, shares[k, block], out=total)
        totals = self.totals
        totals[:] = self.stats[0]
        for k in range(1, self.stats.shape[0]):
            totals += self.stats[k]
        self._barrier()
        return totals

    def free(self) -> None:
        for win in self.windows:
            win.Unlock_all()
            win.Free()
        self.windows = []


def _replica_digest(net: MLP) -> tuple[Any, ...]:
    """What every rank's replica must share: network, weights, state, random state."""
    return (tuple(net.sizes), net.hidden, net.output, net.dtype.name, net.backend,
            net.loss_name, net.steps, net.epochs,
            hashlib.sha256(net.params.tobytes()).hexdigest(),
            hashlib.sha256(net.optimizer_state.tobytes()).hexdigest(),
            repr(net.rng.bit_generator.state))

"""Training epochs on a team of threads (mc_mlp_train_epoch with BLAS held to one thread):
each thread's share of the rows and of the weights gives the steps of the same epoch on
one thread, batch by batch, to rounding."""
import ctypes
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import momcore
from momcore import _core
from momcore import reference as ref
from momcore._network import n_params as _n_params

needs_team = pytest.mark.skipif(
    _core.BLAS_THREADS_CONTROL is None or not _core.have_openmp() or os.cpu_count() < 2,
    reason="teams need OpenMP, two processors and an OpenBLAS whose thread count can be "
           "set")

# (sizes, batch, tail): every layer's product reaches the gemm threshold at the full
# batch and the step is team-sized. mlp.c's rule splits each product of a layer of I
# inputs and O outputs at B rows: forward by weight columns when O > B (a column-split
# output layer then takes its activation by rows), the delta below by weight rows when
# I > B, the weight gradient by weight columns when I < O (else by weight rows); each
# other one by batch rows. The last batch has `tail` rows: too little work for a team
# (thread 0 takes the step alone), or a team batch split otherwise than the full ones.
TEAM_CASES = [
    # forward: first layer by columns, output by rows; delta below by weight rows; the
    # first weight gradient by columns
    ([64, 256, 64], 64, 2),
    # the 1-row tail on the team: every product by columns, the second thread without
    # a row
    ([1024, 1024, 32], 64, 1),
    # 65 rows split unevenly; the second hidden layer and the delta below it by rows
    ([64, 160, 48, 24], 65, 2),
    # one layer (no barrier inside the backward pass), its output by columns; the 2-row
    # tail on the team
    ([4096, 256], 64, 2),
    # every product by batch rows, every weight gradient by weight rows
    ([160, 128, 40], 160, 2),
    # the narrow batch of 784-256-128-10: both hidden layers and the deltas below by
    # weights, the output by rows
    ([784, 256, 128, 10], 32, 5),
    # odd widths (37 columns in two parts of whole cache lines: 16 + 21); the output
    # layer by columns; a hidden layer's delta below by weight rows and its weight
    # gradient by columns (a barrier between)
    ([64, 37, 1500, 21], 16, 3),
    # a hidden layer 6 wide, less than a cache line: the second thread has none of its
    # columns or weight rows
    ([128, 2048, 6, 2048], 4, 3),
    # one layer of 5 outputs by columns, all on the first thread
    ([65536, 5], 4, 1),
]

RULES = [
    ("classical", dict(lr=0.05, momentum=0.9)),  # folded into the products (no gradient)
    ("velocity", dict(lr=0.05, momentum=0.8, dampening=0.25, weight_decay=1e-3)),
    ("nesterov_velocity", dict(lr=0.02, momentum=0.9)),
]

OUTPUTS = [("softmax", "cross_entropy"), ("sigmoid", "binary_cross_entropy"),
           ("identity", "squared_error")]


def _core_for(sizes, batch, *, folded, hidden="tanh", output="softmax", loss=None,
              dtype=np.float64, l2=0.0, seed=0):
    rng = np.random.default_rng(seed)
    n = _n_params(sizes)
    params = (rng.standard_normal(n) / np.sqrt(max(sizes))).astype(dtype)
    grad = None if folded else np.zeros(n, dtype)
    return _core.NetCore(params, np.zeros(n, dtype), grad, sizes, hidden, output, batch,
                         loss=loss, l2=l2)


def _data(sizes, n_rows, output, dtype, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, sizes[0])).astype(dtype)
    if output == "softmax":
        T = np.eye(sizes[-1], dtype=dtype)[rng.integers(0, sizes[-1], n_rows)]
    elif output == "sigmoid":
        T = (rng.random((n_rows, sizes[-1])) < 0.5).astype(dtype)
    else:
        T = rng.standard_normal((n_rows, sizes[-1])).astype(dtype)
    return X, T


def _batches_one_at_a_time(core, X, T, order, batch, rule, hyper):
    """The epoch as single-threaded gradient passes (NetCore.gradients runs on the calling
    thread) and the reference's steps; the classical step as its folded form computes
    it, state = m*state - lr*grad."""
    total, correct, steps = 0.0, 0, 0
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        loss, c = core.gradients(X[rows], T[rows])
        total += loss * rows.size
        correct += c
        steps += 1
        if rule == "classical":
            core.state[:] = hyper["momentum"] * core.state - hyper["lr"] * core.grad
            core.params[:] += core.state
        else:
            ref.momentum_step(core.params, core.grad, core.state, rule=rule, **hyper)
    return total, correct, steps


@pytest.fixture
def two_threads(threads):
    momcore.set_num_threads(2)


@needs_team
@pytest.mark.parametrize("rule, hyper", RULES, ids=[r for r, _ in RULES])
@pytest.mark.parametrize("sizes, batch, tail", TEAM_CASES, ids=str)
@pytest.mark.parametrize("output, loss", OUTPUTS, ids=[o for o, _ in OUTPUTS])
@pytest.mark.parametrize("hidden", ["tanh", "relu"])
def test_team_epoch_equals_its_batches_stepped_on_one_thread(two_threads, simd, sizes, batch,
                                                             tail, rule, hyper, output, loss,
                                                             hidden):
    n_rows = 3 * batch + tail
    X, T = _data(sizes, n_rows, output, np.float64)
    order = np.random.default_rng(6).permutation(n_rows).astype(np.int64)
    folded = rule == "classical"
    epoch = _core_for(sizes, batch, folded=folded, hidden=hidden, output=output, loss=loss)
    loop = _core_for(sizes, batch, folded=False, hidden=hidden, output=output, loss=loss)
    assert epoch.team_threads(batch) == 2
    total, correct, steps, stopped = epoch.train_epoch(X, T, order, batch, rule=rule, **hyper)
    want_total, want_correct, want_steps = _batches_one_at_a_time(loop, X, T, order, batch,
                                                                  rule, hyper)
    assert (steps, stopped, correct) == (want_steps, False, want_correct)
    np.testing.assert_allclose(total, want_total, rtol=1e-12)
    np.testing.assert_allclose(epoch.params, loop.params, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(epoch.state, loop.state, rtol=1e-11, atol=1e-14)


@needs_team
@pytest.mark.parametrize("sizes, batch", [([64, 256, 64], 64), ([8192, 128], 64),
                                          ([784, 256, 128, 10], 32),
                                          ([64, 37, 1500, 21], 16), ([128, 2048, 6, 2048], 4)],
                         ids=str)
@pytest.mark.parametrize("folded", [True, False], ids=["folded", "gradient"])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-11), (np.float32, 5e-5)])
def test_team_epoch_with_l2_equals_one_thread(two_threads, dtype, rtol, folded, sizes, batch):
    n_rows, l2 = 3 * batch + 8, 0.3
    X, T = _data(sizes, n_rows, "softmax", dtype)
    order = np.random.default_rng(2).permutation(n_rows).astype(np.int64)
    hyper = dict(lr=0.05, momentum=0.9)
    results = {}
    for threads in (2, 1):
        momcore.set_num_threads(threads)
        core = _core_for(sizes, batch, folded=folded, dtype=dtype, l2=l2)
        assert core.team_threads(batch) == threads
        out = core.train_epoch(X, T, order, batch, **hyper)
        results[threads] = out, core.epoch_penalty, core.params.copy(), core.state.copy()
    (out2, pen2, p2, s2), (out1, pen1, p1, s1) = results[2], results[1]
    assert out2[1:] == out1[1:]  # correct, steps, stopped
    np.testing.assert_allclose([out2[0], pen2], [out1[0], pen1], rtol=rtol)
    assert pen1 > 0
    np.testing.assert_allclose(p2, p1, rtol=rtol, atol=rtol * 1e-3)
    np.testing.assert_allclose(s2, s1, rtol=rtol, atol=rtol * 1e-3)


@needs_team
@pytest.mark.parametrize("sizes, batch", [([64, 256, 64], 64), ([64, 37, 1500, 21], 16)],
                         ids=str)
def test_team_epoch_stops_where_one_thread_does(two_threads, sizes, batch):
    """A batch whose loss is not finite stops the epoch on every thread before its step."""
    n_rows = 4 * batch
    X, T = _data(sizes, n_rows, "identity", np.float64)
    X[2 * batch + batch * 3 // 4] = 1e300  # in the third batch, the second thread's rows
    order = np.arange(n_rows, dtype=np.int64)
    results = {}
    for threads in (2, 1):
        momcore.set_num_threads(threads)
        core = _core_for(sizes, batch, folded=True, hidden="relu", output="identity")
        assert core.team_threads(batch) == threads
        out = core.train_epoch(X, T, order, batch, lr=0.01, momentum=0.9)
        results[threads] = out, core.params.copy()
    (out2, p2), (out1, p1) = results[2], results[1]
    assert out2[1:] == out1[1:] and out2[2:] == (2, True)  # two steps applied, then stopped
    np.testing.assert_allclose(out2[0], out1[0], rtol=1e-12)
    np.testing.assert_allclose(p2, p1, rtol=1e-11, atol=1e-14)


@needs_team
def test_one_thread_or_small_steps_make_no_team(threads):
    core = _core_for([64, 256, 64], 64, folded=True)
    momcore.set_num_threads(2)
    assert core.team_threads(64) == 2
    # 16 rows a thread too: each product is split so that no thread packs a weight
    # matrix another one packs as well
    assert _core.TEAM_MIN_MACS == 32 * (64 * 256 + 256 * 64)
    assert core.team_threads(32) == 2
    # too little work in the step, though every product reaches the gemm threshold
    assert 31 * 64 * 256 >= _core.GEMM_MIN_MACS
    assert core.team_threads(31) == 1
    small = _core_for([20, 40, 5], 64, folded=True)
    assert small.team_threads(64) == 1
    momcore.set_num_threads(1)
    assert core.team_threads(64) == 1
    with pytest.raises(ValueError, match="batch"):
        core.team_threads(0)


def _blas_threads() -> int:
    import scipy.linalg.cython_blas as cython_blas

    lib = ctypes.CDLL(cython_blas.__file__, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    get = getattr(lib, _core.BLAS_THREADS_CONTROL.replace("_set_", "_get_"))
    get.restype = ctypes.c_int
    return get()


@needs_team
def test_blas_thread_count_is_restored_after_epochs_in_many_threads(two_threads):
    sizes, batch = [64, 256, 64], 64
    X, T = _data(sizes, 640, "softmax", np.float64)
    order = np.arange(640, dtype=np.int64)
    before = _blas_threads()
    errors = []

    def train():
        try:
            core = _core_for(sizes, batch, folded=True)
            for _ in range(20):
                core.train_epoch(X, T, order, batch, lr=0.01, momentum=0.9)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=train) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    assert _blas_threads() == before


def test_no_team_when_asked_in_the_environment(tmp_path):
    """MOMCORE_NO_BLAS_TEAM=1: epochs run on the calling thread and BLAS's own threads."""
    code = """
import numpy as np
import momcore
from momcore import _core
from momcore._network import n_params

momcore.set_num_threads(2)
sizes = [64, 256, 64]
core = _core.NetCore(np.zeros(n_params(sizes)), np.zeros(n_params(sizes)), None, sizes,
                     "tanh", "softmax", 64)
print(_core.BLAS_THREADS_CONTROL, core.team_threads(64),
      momcore._config.config()["blas"]["thread control"])
"""
    env = dict(os.environ, MOMCORE_NO_BLAS_TEAM="1",
               PYTHONPATH=os.path.dirname(os.path.dirname(momcore.__file__)))
    # from a directory of its own: the source tree's momcore/ (without the built
    # extension) must not shadow the package under test
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True, cwd=tmp_path).stdout.split()
    assert out == ["None", "1", "None"]


@needs_team
@pytest.mark.parametrize("n_rows", [1, 63, 64, 200, 1000])
def test_team_predictions_equal_one_thread(threads, n_rows):
    sizes = [64, 256, 64]
    rng = np.random.default_rng(3)
    X = rng.standard_normal((n_rows, sizes[0]))
    core = _core_for(sizes, 128, folded=True)
    out = {}
    for t in (2, 1):
        momcore.set_num_threads(t)
        assert core.team_threads(128) == t
        out[t] = np.empty((n_rows, sizes[-1]))
        core.predict(X, out[t])
    np.testing.assert_allclose(out[2], out[1], rtol=1e-12, atol=1e-15)
    # and the network's outputs as written out in numpy
    W0, b0 = core.params[:64 * 256].reshape(64, 256), core.params[64 * 256:65 * 256]
    rest = core.params[65 * 256:]
    W1, b1 = rest[:256 * 64].reshape(256, 64), rest[256 * 64:]
    z = np.tanh(X @ W0 + b0) @ W1 + b1
    want = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out[2], want / want.sum(axis=1, keepdims=True), rtol=1e-10)


def _numpy_outputs(params, sizes, X, output):
    """The network's outputs (tanh hidden units) written out in numpy."""
    a, at = X, 0
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        W = params[at:at + n_in * n_out].reshape(n_in, n_out)
        b = params[at + n_in * n_out:at + n_in * n_out + n_out]
        at += n_in * n_out + n_out
        a = a @ W + b
        if i < len(sizes) - 2:
            a = np.tanh(a)
    if output == "softmax":
        a = np.exp(a - a.max(axis=1, keepdims=True))
        return a / a.sum(axis=1, keepdims=True)
    return 1 / (1 + np.exp(-a)) if output == "sigmoid" else a


@needs_team
@pytest.mark.parametrize("sizes, max_batch", [([784, 256, 128, 10], 32),
                                              ([64, 37, 1500, 21], 16),
                                              ([128, 2048, 6, 2048], 4), ([65536, 5], 4)],
                         ids=str)
@pytest.mark.parametrize("output", [o for o, _ in OUTPUTS])
def test_team_predictions_of_narrow_chunks_equal_one_thread(threads, sizes, max_batch,
                                                            output):
    """Chunks of max_batch rows split by weight columns, and a last chunk of one row (on
    the team or, too small, by rows)."""
    n_rows = 3 * max_batch + 1
    X = np.random.default_rng(4).standard_normal((n_rows, sizes[0]))
    core = _core_for(sizes, max_batch, folded=True, output=output)
    out = {}
    for t in (2, 1):
        momcore.set_num_threads(t)
        assert core.team_threads(max_batch) == t
        out[t] = np.empty((n_rows, sizes[-1]))
        core.predict(X, out[t])
    np.testing.assert_allclose(out[2], out[1], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out[2], _numpy_outputs(core.params, sizes, X, output),
                               rtol=1e-10, atol=1e-13)


@needs_team
@pytest.mark.parametrize("sizes, batch", [([784, 256, 128, 10], 32), ([64, 37, 1500, 21], 16),
                                          ([65536, 5], 4)], ids=str)
@pytest.mark.parametrize("order", ["gathered", "in place"])
@pytest.mark.parametrize("part", [0, 1], ids=["first thread's row", "second thread's row"])
def test_team_epoch_of_narrow_batches_refuses_a_bad_row_where_one_thread_does(
        threads, sizes, batch, order, part):
    """check_rows: a row with inf in the third batch, in either thread's rows of it, stops
    the epoch before that batch's pass (whose first product, by columns, reads every
    row) after the same two steps as on one thread."""
    n_rows = 4 * batch
    X, T = _data(sizes, n_rows, "softmax", np.float64)
    rows = np.arange(n_rows) if order == "in place" else np.arange(n_rows)[::-1].copy()
    bad = 2 * batch + (batch - 1 if part else 0)
    X[rows[bad], 3] = np.inf
    params = {}
    for count in (2, 1):
        momcore.set_num_threads(count)
        core = _core_for(sizes, batch, folded=True)
        assert core.team_threads(batch) == count
        message = f"order\\[{2 * batch}\\]; the 2 steps"
        with pytest.raises(_core.NonFiniteRows, match=message):
            core.train_epoch(X, T, rows, batch, lr=0.05, momentum=0.9, check_rows=True)
        assert core.steps_applied == 2
        params[count] = core.params.copy()
    np.testing.assert_allclose(params[2], params[1], rtol=1e-12, atol=1e-15)


@needs_team
def test_one_layer_team_penalty_is_read_before_any_thread_steps(threads):
    """The first batch's l2 penalty reads every weight; on a one-layer network no barrier
    of the backward pass holds a thread back from stepping its weight rows, so the sum
    must be taken before the team starts: the same penalty in every run."""
    sizes, batch, n_rows = [8192, 128], 64, 128
    X, T = _data(sizes, n_rows, "softmax", np.float64)
    order = np.arange(n_rows, dtype=np.int64)
    hyper = dict(lr=0.5, momentum=0.9)
    momcore.set_num_threads(1)
    one = _core_for(sizes, batch, folded=True, l2=50.0)
    one.train_epoch(X, T, order, batch, **hyper)
    momcore.set_num_threads(2)
    for _ in range(20):
        core = _core_for(sizes, batch, folded=True, l2=50.0)
        assert core.team_threads(batch) == 2
        core.train_epoch(X, T, order, batch, **hyper)
        np.testing.assert_allclose(core.epoch_penalty, one.epoch_penalty, rtol=1e-12)


@needs_team
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_during_a_team_epoch_gives_the_child_its_blas_threads(two_threads):
    """A child forked while another thread's epoch holds BLAS at one thread gets BLAS's
    thread count back (no team of the child would restore it)."""
    sizes, batch = [64, 256, 64], 64
    X, T = _data(sizes, 64 * 400, "softmax", np.float64)
    order = np.arange(X.shape[0], dtype=np.int64)
    before = _blas_threads()
    assert before > 1
    core = _core_for(sizes, batch, folded=True)
    done = threading.Event()

    def train():
        while not done.is_set():
            core.train_epoch(X, T, order, batch, lr=1e-3, momentum=0.9)

    worker = threading.Thread(target=train)
    worker.start()
    try:
        for _ in range(2000):  # until the epoch is seen holding BLAS at one thread
            if _blas_threads() == 1:
                break
        else:
            pytest.skip("no epoch was seen running")
        pid = os.fork()
        if pid == 0:  # the child: report BLAS's thread count through the exit status
            os._exit(_blas_threads())
        _, status = os.waitpid(pid, 0)
    finally:
        done.set()
        worker.join()
    assert os.waitstatus_to_exitcode(status) == before
    assert _blas_threads() == before

"""Threads: concurrent calls on disjoint buffers equal serial ones, the GIL is really
released during the C work, and what is not thread-safe is refused, not corrupted."""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import momcore
from momcore import _core
from momcore.datasets import load_digits


def _step_job(seed: int, n: int, dtype) -> tuple[bytes, bytes]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(n).astype(dtype)
    s = np.zeros(n, dtype)
    for rule in ("classical", "nesterov", "velocity", "one_step"):
        g = rng.standard_normal(n).astype(dtype)
        momcore.momentum_step(w, g, s, lr=0.01, momentum=0.9, rule=rule, weight_decay=1e-4)
    return w.tobytes(), s.tobytes()


def test_many_threads_stepping_disjoint_buffers_equal_serial():
    jobs = [(seed, n, dtype) for seed, (n, dtype) in enumerate(
        [(1000, np.float32), (_core.OMP_MIN_ELEMENTS + 17, np.float64), (33, np.float64),
         (2**18 + 5, np.float32)] * 4)]
    serial = [_step_job(*job) for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            assert list(pool.map(lambda job: _step_job(*job), jobs)) == serial


def test_many_threads_predicting_with_one_model_equal_serial():
    digits = load_digits()
    net = momcore.MLP([64, 32, 10], seed=1)
    net.fit(digits.X[:300] / 16, digits.y[:300], epochs=2)
    chunks = [digits.X[i::7] / 16 for i in range(7)] + [digits.X[:1] / 16, digits.X / 16]
    serial = [net.predict_proba(x) for x in chunks]
    with ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(5):
            results = list(pool.map(net.predict_proba, chunks))
            for got, want in zip(results, serial):
                np.testing.assert_array_equal(got, want)


def _largest_pause_while(busy) -> tuple[float, float]:
    """Runs busy() in a thread while this thread keeps executing Python bytecode;
    returns (how long busy() took, the longest pause between two bytecode loops)."""
    done = threading.Event()
    took = []

    def worker():
        start = time.perf_counter()
        busy()
        took.append(time.perf_counter() - start)
        done.set()

    thread = threading.Thread(target=worker)
    last = time.perf_counter()
    pause = 0.0
    thread.start()
    while not done.is_set():
        now = time.perf_counter()
        pause = max(pause, now - last)
        last = now
    thread.join()
    return took[0], pause


def test_the_gil_is_released_during_an_epoch_in_c():
    digits = load_digits()
    X = np.tile(digits.X / 16, (6, 1))
    y = np.tile(digits.y, 6)
    net = momcore.MLP([64, 128, 10], seed=0)
    net.fit(X[:10], y[:10], epochs=1)  # workspaces made outside the timed call
    took, pause = _largest_pause_while(lambda: net.fit(X, y, epochs=1, lr=0.001))
    assert took > 0.02, "the epoch is too short to tell"
    # Holding the GIL for the epoch would stall this thread for all of it.
    assert pause < took / 2, (took, pause)


def test_the_gil_is_released_during_a_large_step(threads):
    momcore.set_num_threads(1)
    n = 30_000_000
    w, g, s = np.zeros(n, np.float32), np.ones(n, np.float32), np.zeros(n, np.float32)
    momcore.momentum_step(w, g, s, lr=0.1, momentum=0.5)  # touch the pages first
    took, pause = _largest_pause_while(
        lambda: momcore.momentum_step(w, g, s, lr=0.1, momentum=0.5))
    assert took > 0.005, "the step is too short to tell"
    assert pause < took / 2, (took, pause)


def test_one_optimizer_from_two_threads_is_refused():
    n = 20_000_000
    opt = momcore.SGD([np.zeros(n, np.float32)], lr=0.1, momentum=0.9)
    grads = [np.ones(n, np.float32)]
    errors = []
    started = threading.Event()

    def stepper():
        started.set()
        for _ in range(20):
            try:
                opt.step(grads)
            except RuntimeError as exc:
                errors.append(exc)

    thread = threading.Thread(target=stepper)
    thread.start()
    started.wait()
    refused = 0
    while thread.is_alive():
        try:
            opt.step(grads)
        except RuntimeError as exc:
            assert "one optimizer steps in one thread at a time" in str(exc)
            refused += 1
    thread.join()
    if refused + len(errors) == 0:
        pytest.skip("the two threads never overlapped")
    # Every step that ran was a whole step: the state is the same in every element.
    assert np.all(opt.state[0] == opt.state[0][0])
    assert np.all(opt.params[0] == opt.params[0][0])


def test_one_model_fitting_in_two_threads_is_refused():
    digits = load_digits()
    X, y = np.tile(digits.X / 16, (4, 1)), np.tile(digits.y, 4)
    net = momcore.MLP([64, 64, 10], seed=0)
    outcome = []
    training = threading.Event()

    def first_epoch_done(epoch, logs):
        training.set()  # the first fit holds the model from here on

    thread = threading.Thread(target=lambda: outcome.append(
        net.fit(X, y, epochs=3, callback=first_epoch_done)))
    thread.start()
    assert training.wait(timeout=60)
    try:
        with pytest.raises(RuntimeError, match="one model trains in one thread"):
            while thread.is_alive():
                net.fit(X[:5], y[:5], epochs=1)
            pytest.skip("the first fit finished before the second started")
    finally:
        thread.join()
    assert outcome and outcome[0].epochs == 3


def test_thread_count_is_capped_at_the_processors(threads):
    momcore.set_num_threads(100_000)
    assert momcore.get_num_threads() <= max(1, os.cpu_count() or 1)
    w, g, s = np.zeros(2**17), np.ones(2**17), np.zeros(2**17)
    momcore.momentum_step(w, g, s, lr=0.5, momentum=0.0)
    assert np.all(w == -0.5)


def _child_step(queue):
    n = 2**20
    w, g, s = np.zeros(n), np.ones(n), np.zeros(n)
    momcore.momentum_step(w, g, s, lr=0.5, momentum=0.0)
    queue.put(float(w.sum()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_steps_instead_of_hanging(threads):
    momcore.set_num_threads(2)
    n = 2**20
    momcore.momentum_step(np.zeros(n), np.ones(n), np.zeros(n), lr=0.1, momentum=0.0)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_step, args=(queue,))
    child.start()
    child.join(timeout=60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the forked child hung in the kernel"
    assert queue.get(timeout=5) == -0.5 * n

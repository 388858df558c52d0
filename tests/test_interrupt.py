"""Ctrl-C during a long compiled epoch stops it within 100 ms and leaves the model
consistent: the step count matches the updates applied, the epoch count and History
only the epochs completed, and save, load and fit continue exactly."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import momcore

PACKAGE_PARENT = pathlib.Path(momcore.__file__).resolve().parents[1]

TRAINER = """
import json, signal, sys, time, numpy as np, momcore
# Ctrl-C raises KeyboardInterrupt even when this process inherited SIGINT ignored (a
# shell starts background jobs that way; Python then installs no handler of its own)
signal.signal(signal.SIGINT, signal.default_int_handler)
before, after = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
X = rng.standard_normal((30000, 784)).astype(np.float32)
y = rng.integers(0, 10, 30000)
hyper = dict(lr=0.01, momentum=0.9)
net = momcore.MLP([784, 512, 10], dtype=np.float32, seed=3)
net.fit(X[:20], y[:20], epochs=1, **hyper)   # counts that are not zero
net.save(before)
steps0, epochs0 = net.steps, net.epochs
print("ready", flush=True)
try:
    net.fit(X, y, epochs=2, **hyper)
    stopped_at = None
except KeyboardInterrupt:
    stopped_at = time.monotonic()
done = net.steps - steps0
report = {"stopped_at": stopped_at, "done": done, "epochs": net.epochs - epochs0,
          "history_epochs": net.history_.epochs, "stopped": net.history_.stopped}

# The same `done` online steps, from the checkpoint, in the order the epoch drew.
replay = momcore.MLP.load(before)
order = replay.rng.permutation(X.shape[0])[:done]
if done:
    replay.fit(X[order], y[order], epochs=1, shuffle=False, **hyper)
report["replay_params"] = bool(np.array_equal(replay.params, net.params))
report["replay_state"] = bool(np.array_equal(replay.optimizer_state, net.optimizer_state))

# save, load, fit: the same as fitting the interrupted model on.
net.save(after)
loaded = momcore.MLP.load(after)
report["loaded_counts"] = [loaded.steps == net.steps, loaded.epochs == net.epochs]
for model in (net, loaded):
    model.fit(X[:200], y[:200], epochs=1, **hyper)
report["continued"] = bool(np.array_equal(net.params, loaded.params)
                           and np.array_equal(net.optimizer_state, loaded.optimizer_state)
                           and net.steps == loaded.steps and net.epochs == loaded.epochs)
print(json.dumps(report), flush=True)
"""


@pytest.mark.parametrize("delay", [0.4, 1.3])
def test_sigint_stops_a_long_online_epoch_within_100ms_and_keeps_the_model_consistent(
        tmp_path, delay):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-c", TRAINER, str(tmp_path / "before.npz"),
                             str(tmp_path / "after.npz")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)  # well inside the first epoch (10 s and more)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0
    report = json.loads(out.strip().splitlines()[-1])
    assert report["stopped_at"] is not None, "the epoch ran to its end"
    print(f"stopped {(report['stopped_at'] - sent) * 1e3:.1f} ms after SIGINT, {report['done']} steps")
    assert report["stopped_at"] - sent < 0.1, f"stopped {report['stopped_at'] - sent:.3f} s late"
    assert 0 < report["done"] < 30000
    assert report["epochs"] == 0 and report["history_epochs"] == 0
    assert report["stopped"] == "interrupted"
    assert report["replay_params"] and report["replay_state"]
    assert report["loaded_counts"] == [True, True]
    assert report["continued"]


def test_an_epoch_in_another_thread_is_not_interrupted_and_counts_its_steps():
    """Only the main thread runs signal handlers: an epoch elsewhere never takes the GIL
    to check, and trains as before."""
    import threading
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((300, 4)), rng.integers(0, 3, 300)
    a, b = momcore.MLP([4, 8, 3], seed=2), momcore.MLP([4, 8, 3], seed=2)
    a.fit(X, y, epochs=3)
    worker = threading.Thread(target=b.fit, args=(X, y), kwargs={"epochs": 3})
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert np.array_equal(a.params, b.params) and a.steps == b.steps == 900

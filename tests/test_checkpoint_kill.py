"""Killing a process in the middle of MLP.save leaves the previous checkpoint intact."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np

import momcore

PACKAGE_PARENT = pathlib.Path(momcore.__file__).resolve().parents[1]

SAVER = """
import sys, numpy as np, momcore
net = momcore.MLP([784, 512, 256, 10], seed=1)
path = sys.argv[1]
print("ready", flush=True)
i = 0
while True:
    net.params[:] = i          # every checkpoint holds one value throughout
    net.save(path)
    i += 1
"""


def test_sigkill_during_save_leaves_a_whole_checkpoint(tmp_path):
    path = tmp_path / "model.npz"
    first = momcore.MLP([784, 512, 256, 10], seed=1)
    first.params[:] = -1
    first.save(path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")])))
    for delay in (0.05, 0.13, 0.31, 0.57):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        net = momcore.MLP.load(path)  # never a half-written file
        values = np.unique(net.params)
        assert values.size == 1, values[:5]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model.npz"]
    # a killed save may leave its temporary file behind, never a damaged checkpoint
    assert all(name.startswith(".momcore-") for name in leftovers), leftovers
    # and the next save removes those of processes that are gone
    net.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]

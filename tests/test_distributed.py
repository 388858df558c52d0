"""Data-parallel training over MPI (mpiexec -n 2 on this machine): equal to single-process
training on the same global batches, bit-identical replicas, checkpoints both ways, and a
failing rank stopping the job. Skipped when the MPI extra is not installed."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import momcore

pytest.importorskip("mpi4py", reason="the MPI extra is not installed: pip install 'momcore[mpi]'")
MPIEXEC = (shutil.which("mpiexec", path=str(pathlib.Path(sys.executable).parent))
           or shutil.which("mpiexec"))
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec found")

WORKER = pathlib.Path(__file__).with_name("mpi_worker.py")
PACKAGE_PARENT = pathlib.Path(momcore.__file__).resolve().parents[1]
RTOL = 1e-10


def _run(scenario: str, tmp_path: pathlib.Path, ranks: int = 2,
         timeout: float = 120) -> subprocess.CompletedProcess:
    """The scenario under mpiexec; a job still running after ``timeout`` seconds (a
    hang) is killed, with every rank (its own process group), and fails the test."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")])))
    args = [MPIEXEC, "-n", str(ranks), sys.executable, str(WORKER), scenario, str(tmp_path)]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{scenario}: the job hung (killed after {timeout} s)\n{out}{err}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _result(scenario: str, tmp_path: pathlib.Path, ranks: int = 2) -> dict:
    proc = _run(scenario, tmp_path, ranks)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((tmp_path / "result.json").read_text())


def _close(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


def _replicas_identical(tmp_path: pathlib.Path, ranks: int = 2) -> bool:
    blobs = {p.read_bytes() for p in tmp_path.glob("params-*.bin")}
    return len(blobs) == 1 and len(list(tmp_path.glob("params-*.bin"))) == ranks


@pytest.mark.parametrize("scenario", ["same", "odd_batch", "numpy", "nesterov_wd", "l2",
                                      "l2_numpy"])
def test_equals_single_process_training(scenario, tmp_path):
    r = _result(scenario, tmp_path)
    assert _close(r["params"], r["ref"]) < RTOL
    np.testing.assert_allclose(r["loss"], r["ref_loss"], rtol=1e-12)
    assert r["accuracy"] == r["ref_accuracy"]
    assert r["steps"] == r["ref_steps"] == 3 * -(-500 // {
        "odd_batch": 25, "nesterov_wd": 16, "l2": 25, "l2_numpy": 25}.get(scenario, 30))
    assert _replicas_identical(tmp_path)


@pytest.mark.parametrize("scenario", ["same", "l2", "sharded"])
def test_ranks_that_share_no_memory_add_their_gradients_with_allreduce(scenario, tmp_path):
    r = _result(f"{scenario}_allreduce", tmp_path)
    assert _close(r["params"], r["ref"]) < RTOL
    np.testing.assert_allclose(r["loss"], r["ref_loss"], rtol=1e-12)
    assert _replicas_identical(tmp_path)


@pytest.mark.parametrize("ranks", [1, 3])
def test_other_rank_counts_equal_single_process_training(ranks, tmp_path):
    # 3 ranks on 2 cores: oversubscribed, slower, and still the same result; 30 rows a
    # batch split 10/10/10, the last batch of 20 split 6/7/7.
    r = _result("same", tmp_path, ranks)
    assert _close(r["params"], r["ref"]) < RTOL
    assert _replicas_identical(tmp_path, ranks)


def test_unequal_shards_equal_training_on_their_concatenation(tmp_path):
    r = _result("sharded", tmp_path)
    assert _close(r["params"], r["ref"]) < RTOL
    np.testing.assert_allclose(r["loss"], r["ref_loss"], rtol=1e-12)
    assert _replicas_identical(tmp_path)


def test_checkpoints_move_between_distributed_and_single_process(tmp_path):
    r = _result("checkpoint", tmp_path)
    assert _close(r["params"], r["ref"]) < RTOL


def test_bad_input_on_one_rank_raises_on_every_rank(tmp_path):
    r = _result("bad_input", tmp_path)
    raised = [rank["raised"] for rank in r["ranks"]]
    assert raised == ["RuntimeError", "ValueError"]
    assert "rank 1 failed" in r["ranks"][0]["message"]
    assert "X must have shape (n, 64)" in r["ranks"][1]["message"]


def test_a_crashing_rank_stops_the_job_instead_of_hanging(tmp_path):
    proc = _run("crash", tmp_path)
    assert proc.returncode != 0
    assert "rank 1 of 2 failed, aborting the job: MemoryError: simulated" in proc.stderr
    assert not (tmp_path / "result.json").exists()


HANG = 60  # seconds: far beyond these 500-row jobs, short of a stuck test run


@pytest.mark.parametrize("key", ["epochs", "batch_size", "lr", "schedule", "labels"])
def test_different_training_arguments_raise_on_every_rank_before_the_first_step(
        key, tmp_path):
    proc = _run(f"differ_{key}", tmp_path, timeout=HANG)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = json.loads((tmp_path / "result.json").read_text())["ranks"]
    assert [r["raised"] for r in ranks] == ["ValueError", "ValueError"]
    assert ranks[0]["message"] == ranks[1]["message"]
    assert "the ranks were given different training arguments" in ranks[0]["message"]
    named = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "schedule": "lr",
             "labels": "accuracy"}[key]
    assert f"{named} (rank 0: " in ranks[0]["message"]
    assert [r["steps"] for r in ranks] == [0, 0]


def test_a_model_already_training_raises_on_every_rank(tmp_path):
    proc = _run("busy", tmp_path, timeout=HANG)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = json.loads((tmp_path / "result.json").read_text())["ranks"]
    assert [r["raised"] for r in ranks] == ["RuntimeError", "RuntimeError"]
    assert "rank 1 failed: RuntimeError: fit is already running" in ranks[0]["message"]
    assert [r["steps"] for r in ranks] == [0, 0]


def test_any_exception_while_comparing_the_replicas_raises_on_every_rank(tmp_path):
    proc = _run("digest_fails", tmp_path, timeout=HANG)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = json.loads((tmp_path / "result.json").read_text())["ranks"]
    assert [r["raised"] for r in ranks] == ["RuntimeError", "MemoryError"]
    assert "rank 1 failed: MemoryError: simulated" in ranks[0]["message"]


@pytest.mark.parametrize("scenario, message", [
    ("schedule_fails", "rank 1 of 2 failed, aborting the job: KeyError"),
    ("callback_fpe", "rank 0 of 2 failed, aborting the job: FloatingPointError: simulated"),
])
def test_a_failure_mid_training_on_one_rank_stops_the_job(scenario, message, tmp_path):
    proc = _run(scenario, tmp_path, timeout=HANG)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "result.json").exists()


def test_distributed_demo_runs_under_mpiexec(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "momcore", "demo",
                           "--distributed", "--out", str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("epoch   20") == 1  # rank 0 alone prints
    accuracy = float(proc.stdout.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 90
    single = momcore.MLP.load(tmp_path / "digits_distributed.npz")
    assert single.epochs == 20

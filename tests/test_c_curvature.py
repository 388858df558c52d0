"""The curvature pass compiled into a plain C program (tests/c/test_curvature.c, no
Python): against a hand-computed diagonal and central differences of the gradient, on
every SIMD path this CPU supports; also under valgrind's memcheck when installed."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sysconfig

import pytest

from momcore import _core

REPO = pathlib.Path(__file__).resolve().parents[1]
CC = os.environ.get("CC") or (sysconfig.get_config_var("CC") or "cc").split()[0]

pytestmark = pytest.mark.skipif(shutil.which(CC) is None or not (REPO / "src_c").is_dir(),
                                reason="needs a C compiler and the source tree")


@pytest.fixture(scope="module")
def c_program(tmp_path_factory) -> pathlib.Path:
    exe = tmp_path_factory.mktemp("c") / "test_curvature"
    # -fopenmp-simd: the kernels' `omp simd` pragmas, without the OpenMP runtime
    cmd = [CC, "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-O2",
           "-fopenmp-simd", "-I", str(REPO / "src_c"), str(REPO / "tests/c/test_curvature.c"),
           str(REPO / "src_c/mlp.c"), str(REPO / "src_c/vmath.c"),
           str(REPO / "src_c/momentum.c"), "-o", str(exe), "-lm", "-ldl"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


def test_c_curvature_matches_hand_and_finite_differences(c_program):
    result = subprocess.run([str(c_program)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    paths = len(_core.simd_supported())
    # per path: 4 by hand (3 weights and the bias) and 3 finite-difference checks
    assert f"{7 * paths} passed, 0 failed" in result.stdout
    assert "FAIL" not in result.stdout


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")
def test_c_curvature_is_memcheck_clean(c_program):
    result = subprocess.run(["valgrind", "--error-exitcode=3", "--leak-check=full", "-q",
                             str(c_program)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]

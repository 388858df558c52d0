"""The C kernels compiled into a plain C program (no Python), checked against cases
written by the numpy reference; also under valgrind's memcheck when it is installed."""
from __future__ import annotations

import os
import pathlib
import shutil
import struct
import subprocess
import sysconfig

import numpy as np
import pytest

from momcore import _core
from momcore import reference as ref
from momcore import registry

DAMPENED = registry.rules_taking("dampening")

REPO = pathlib.Path(__file__).resolve().parents[1]
# mc_dtype codes (src_c/momcore_kernels.h)
C_DTYPES = {"float32": 0, "float64": 1, "bfloat16": 2, "float16": 3}
try:
    from ml_dtypes import bfloat16
    CASE_DTYPES = [np.float32, np.float64, np.float16, bfloat16]
except ImportError:  # optional: the bfloat16 cases need it to be written
    CASE_DTYPES = [np.float32, np.float64, np.float16]
CC = os.environ.get("CC") or (sysconfig.get_config_var("CC") or "cc").split()[0]

pytestmark = pytest.mark.skipif(shutil.which(CC) is None or not (REPO / "src_c").is_dir(),
                                reason="needs a C compiler and the source tree")


def _write_case(path: pathlib.Path, dtype, rule: str, n: int, steps: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    hyper = dict(lr=0.03, momentum=0.85, dampening=0.2 if rule in DAMPENED else 0.0,
                 weight_decay=0.01 * (seed % 2))
    w0 = rng.standard_normal(n).astype(dtype)
    s0 = rng.standard_normal(n).astype(dtype)
    grads = rng.standard_normal((steps, n)).astype(dtype)
    w, s = w0.copy(), s0.copy()
    for g in grads:
        ref.momentum_step(w, g, s, rule=rule, **hyper)
    header = struct.pack("<iiiq4d", C_DTYPES[np.dtype(dtype).name], _core.RULE_CODES[rule],
                         steps, n, hyper["lr"], hyper["momentum"], hyper["dampening"],
                         hyper["weight_decay"])
    path.write_bytes(header + b"".join(a.tobytes() for a in (w0, s0, grads, w, s)))


@pytest.fixture(scope="module")
def c_program(tmp_path_factory) -> tuple[pathlib.Path, list[str]]:
    tmp = tmp_path_factory.mktemp("c")
    exe = tmp / "test_kernels"
    cmd = [CC, "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-O2",
           "-ffp-contract=off", "-I", str(REPO / "src_c"), str(REPO / "tests/c/test_kernels.c"),
           str(REPO / "src_c/momentum.c"), "-o", str(exe), "-lm"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    cases = []
    for i, (dtype, rule) in enumerate((d, r) for d in CASE_DTYPES for r in _core.RULES):
        for n in (1, 17, 1000 + i):
            path = tmp / f"case_{np.dtype(dtype).name}_{rule}_{n}.bin"
            _write_case(path, dtype, rule, n, steps=3, seed=i + n)
            cases.append(str(path))
    return exe, cases


def test_c_program_matches_reference_bit_for_bit(c_program):
    exe, cases = c_program
    result = subprocess.run([str(exe), *cases], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MISMATCH" not in result.stdout
    # each case alone through mc_momentum_step, then all in one mc_momentum_step_each
    assert f"{2 * len(cases) * len(_core.simd_supported())} passed, 0 failed" in result.stdout
    assert result.stdout.count(" each ") == len(cases) * len(_core.simd_supported())


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")
def test_c_program_is_memcheck_clean(c_program):
    exe, cases = c_program
    result = subprocess.run(["valgrind", "--error-exitcode=3", "--leak-check=full", "-q",
                             str(exe), *cases[::6]], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]

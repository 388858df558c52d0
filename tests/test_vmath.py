"""The vectorised exp and tanh of the MLP passes: glibc's libmvec where the running glibc
has it (looked up at load, not linked), scalar libm otherwise; both agree with numpy."""
from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest

import momcore
from momcore import MLP, _core

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.realpath(momcore.__file__)))

# predict_proba of the compiled passes against the numpy backend, relative to the
# largest output: exp and tanh within a few ulp, through two hidden layers.
RTOL = {"float32": 1e-5, "float64": 1e-13}

# The forward pass over inputs from 0 to far beyond the saturation of tanh, the
# sigmoid and softmax (|z| up to about 60, exp's argument down to about -120), for each
# activation with a vectorised exp or tanh, in both dtypes and with rows enough for the
# vector loops and their scalar remainders; prints the largest relative difference
# to the numpy backend per case, and what vector_math() reports.
PROBE = """
import json, sys
import numpy as np
from momcore import MLP, _core
rng = np.random.default_rng(3)
X = rng.standard_normal((37, 9)) * np.geomspace(1e-3, 30.0, 37)[:, None]
X[0] = 0.0
diffs = {}
for dtype in ("float32", "float64"):
    for hidden in ("tanh", "sigmoid"):
        for output in ("softmax", "sigmoid"):
            nets = [MLP([9, 23, 17, 5], hidden=hidden, output=output, dtype=dtype, seed=5,
                        backend=b) for b in ("c", "numpy")]
            y, ref = (net.predict_proba(X.astype(dtype)) for net in nets)
            assert np.isfinite(y).all()
            diffs[f"{dtype} {hidden} {output}"] = float(np.abs(y - ref).max() / np.abs(ref).max())
print(json.dumps({"vector_math": _core.vector_math(), "diffs": diffs}))
"""


def _probe(no_libmvec: bool, cwd) -> dict:
    """Runs PROBE in a fresh interpreter, from cwd (not the source tree, whose unbuilt
    momcore/ would come first on sys.path)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [PACKAGE_PARENT, os.environ.get("PYTHONPATH")])))
    env.pop("MOMCORE_NO_LIBMVEC", None)
    if no_libmvec:
        env["MOMCORE_NO_LIBMVEC"] = "1"
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=120, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def _libmvec_has(symbol: str) -> bool:
    """Whether this machine's glibc has libmvec with symbol (asked through ctypes)."""
    try:
        lib = ctypes.CDLL("libmvec.so.1")
    except OSError:
        return False
    return hasattr(lib, symbol)


def _dispatch_built() -> bool:
    """The build looks libmvec up on x86-64 Linux with glibc (src_c/vmath.h)."""
    return (sys.platform.startswith("linux") and platform.machine() == "x86_64"
            and platform.libc_ver()[0] == "glibc")


def test_vector_math_reports_each_function():
    assert set(_core.vector_math()) == {"exp", "tanh"}
    assert set(_core.vector_math().values()) <= {"libmvec", "libm"}
    assert momcore.show_config()["vector math"] == _core.vector_math()


@pytest.mark.skipif(os.environ.get("MOMCORE_NO_LIBMVEC", "0") not in ("", "0"),
                    reason="MOMCORE_NO_LIBMVEC is set for this run")
def test_libmvec_is_used_where_the_running_glibc_has_it():
    # libmvec's exp variants came with glibc 2.22, its tanh variants with 2.35; the
    # build links neither, so each is used exactly when this machine's glibc has it.
    for function, symbol in (("exp", "_ZGVdN4v_exp"), ("tanh", "_ZGVdN4v_tanh")):
        expected = "libmvec" if _dispatch_built() and _libmvec_has(symbol) else "libm"
        assert _core.vector_math()[function] == expected, function


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump is not installed")
def test_extension_does_not_link_libmvec():
    # Linking it would make the extension need the build machine's glibc.
    dynamic = subprocess.run(["objdump", "-p", _core.__file__], capture_output=True,
                             text=True, check=True).stdout
    needed = [line.split()[1] for line in dynamic.splitlines()
              if line.strip().startswith("NEEDED")]
    assert "libc.so.6" in needed or not _dispatch_built(), needed
    assert not any("mvec" in name for name in needed), needed


@pytest.mark.parametrize("no_libmvec", [False, True], ids=["default", "MOMCORE_NO_LIBMVEC"])
def test_activations_agree_with_numpy_on_either_path(no_libmvec, tmp_path):
    result = _probe(no_libmvec, tmp_path)
    if no_libmvec:
        assert result["vector_math"] == {"exp": "libm", "tanh": "libm"}
    else:
        assert result["vector_math"] == _core.vector_math()
    assert len(result["diffs"]) == 8
    for case, diff in result["diffs"].items():
        assert diff < RTOL[case.split()[0]], (case, diff)

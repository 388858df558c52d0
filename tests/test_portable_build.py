"""The C sources build as plain C99 with gcc and clang, with the x86 paths and with
the portable baseline alone (MC_PORTABLE_ONLY: what a machine without x86 compiles),
warnings as errors. Only what this machine has is tried: a missing compiler skips."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted((REPO / "src_c").glob("*.c")) if (REPO / "src_c").is_dir() else []

pytestmark = pytest.mark.skipif(not SOURCES, reason="no src_c/ beside the tests")


@pytest.mark.parametrize("portable", [False, True], ids=["x86", "portable"])
@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_sources_compile(cc, portable, tmp_path):
    if shutil.which(cc) is None or subprocess.run([cc, "--version"],
                                                  capture_output=True).returncode != 0:
        pytest.skip(f"{cc} is not installed or does not run here")
    for src in SOURCES:
        obj = tmp_path / (src.stem + ".o")
        cmd = [cc, "-std=c99", "-O2", "-Wall", "-Werror", "-fopenmp-simd",
               "-I", str(REPO / "src_c"), "-c", str(src), "-o", str(obj)]
        if portable:
            cmd.insert(1, "-DMC_PORTABLE_ONLY")
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stderr}"
        symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True).stdout
        has_x86 = any(isa in symbols for isa in ("avx2", "avx512"))
        assert has_x86 != portable or src.stem == "vmath", (src.name, portable)

"""Build of momcore's compiled core: the C kernels of src_c and their Cython wrapper.

Environment:
  MOMCORE_NO_OPENMP=1   build without OpenMP (the kernels then run on one thread)
  MOMCORE_MARCH=...     add -march=... (e.g. native) for a local, non-portable build
"""
import os
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

C_SOURCES = ["src_c/momentum.c"]
BASE_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno"]


def _compiles_with(flags):
    """True when the C compiler builds and links an OpenMP program with flags."""
    cc = sysconfig.get_config_var("CC") or "cc"
    code = "#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        cmd = cc.split() + [src, "-o", os.path.join(tmp, "probe")] + flags
        return subprocess.run(cmd, capture_output=True).returncode == 0


def _openmp_flags():
    if os.environ.get("MOMCORE_NO_OPENMP", "0") not in ("", "0"):
        print("momcore: OpenMP disabled by MOMCORE_NO_OPENMP", file=sys.stderr)
        return []
    if _compiles_with(["-fopenmp"]):
        return ["-fopenmp"]
    print("momcore: the compiler has no OpenMP; building single-threaded", file=sys.stderr)
    return []


omp = _openmp_flags()
march = os.environ.get("MOMCORE_MARCH")
extra = BASE_FLAGS + omp + ([f"-march={march}"] if march else [])

extensions = [
    Extension(
        "momcore._core",
        sources=["momcore/_core.pyx"] + C_SOURCES,
        include_dirs=["src_c", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
        extra_compile_args=extra,
        extra_link_args=omp,
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "embedsignature": True},
    ),
)

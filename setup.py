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

C_SOURCES = ["src_c/momentum.c", "src_c/mlp.c", "src_c/vmath.c"]
BASE_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fopenmp-simd"]


OPENMP_PROBE = "#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n"


def _compiles_with(code, flags):
    """True when the C compiler builds and links code with flags."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        cmd = cc.split() + [src, "-o", os.path.join(tmp, "probe")] + flags
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:  # no such compiler: the probe fails, the build says why later
            return False


def _openmp_flags():
    if os.environ.get("MOMCORE_NO_OPENMP", "0") not in ("", "0"):
        print("momcore: OpenMP disabled by MOMCORE_NO_OPENMP", file=sys.stderr)
        return []
    if _compiles_with(OPENMP_PROBE, ["-fopenmp"]):
        return ["-fopenmp"]
    print("momcore: the compiler has no OpenMP; building single-threaded", file=sys.stderr)
    return []


omp = _openmp_flags()
# libm; libdl for dlopen, which moved into libc with glibc 2.34 (libdl then is empty).
# glibc's vector math library is not linked: src_c/vmath.c looks it up at run time.
libraries = ["m", "dl"] if sys.platform.startswith("linux") else ["m"]
march = os.environ.get("MOMCORE_MARCH")
extra = BASE_FLAGS + omp + ([f"-march={march}"] if march else [])

extensions = [
    Extension(
        "momcore._core",
        sources=["momcore/_core.pyx"] + C_SOURCES,
        depends=[os.path.join("src_c", h) for h in os.listdir("src_c") if h.endswith(".h")],
        include_dirs=["src_c", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
        libraries=libraries,
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

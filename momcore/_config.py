"""What this build of momcore runs on: SIMD path, vector math, OpenMP, BLAS, threads."""
from __future__ import annotations

import platform
import sys
from typing import Any

import numpy as np

from momcore import _core


def config() -> dict[str, Any]:
    """The build and run-time configuration as a dict (what show_config prints).

    Returns
    -------
    dict
        See :func:`show_config`.
    """
    import scipy

    from momcore import __version__

    return {
        "momcore": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
        "simd": {"in use": _core.simd_path(), "supported": list(_core.simd_supported())},
        "vector math": _core.vector_math(),
        "openmp": {"built with": _core.have_openmp(), "threads": _core.get_num_threads(),
                   "min elements per parallel step": _core.OMP_MIN_ELEMENTS},
        "blas": {"source": "scipy.linalg.cython_blas", "scipy": scipy.__version__,
                 # minibatch epochs run on a team of momcore's threads, each calling gemm
                 # on its share with BLAS held to one thread, when BLAS's thread count can
                 # be set (see NetCore.team_threads)
                 "thread control": _core.BLAS_THREADS_CONTROL},
    }


def show_config() -> dict[str, Any]:
    """Prints the SIMD path, vector math, OpenMP, BLAS and threads in use; returns them
    as a dict.

    Returns
    -------
    dict
        ``momcore``, ``python`` and ``numpy`` versions, ``machine``, and the ``simd``,
        ``vector math`` (what the MLP passes' vectorised exp and tanh run: ``"libmvec"``
        or ``"libm"``), ``openmp`` and ``blas`` settings (dicts of their own), as printed.
        ``blas["thread control"]`` names the function momcore sets BLAS's thread count
        with while a minibatch epoch runs on a team of its threads (OpenBLAS's
        ``openblas_set_num_threads``, with scipy's prefix), or is None: then epochs run on
        the calling thread and BLAS's own threads (``MOMCORE_NO_BLAS_TEAM=1`` asks for
        that).

    Examples
    --------
    >>> import momcore
    >>> cfg = momcore.show_config()  # doctest: +ELLIPSIS
    momcore: ...
    >>> sorted(cfg)
    ['blas', 'machine', 'momcore', 'numpy', 'openmp', 'python', 'simd', 'vector math']
    """
    cfg = config()
    for key, value in cfg.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k}: {v}")
        else:
            print(f"{key}: {value}")
    return cfg

"""Shared fixtures, and a guard that the tests run the extension that was just built."""
from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

import momcore
from momcore import _core

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = pathlib.Path(momcore.__file__).resolve().parent

# Exact: the kernel and the reference perform the same IEEE operations in the same
# order (no FMA contraction), so they agree bit for bit. Tolerances apply only
# where a test compares against math written differently (closed forms).
RTOL = {np.float32: 2e-6, np.float64: 1e-14}
DTYPES = [np.float32, np.float64]
RULES = list(_core.RULES)


def _sources_newer_than(binary: pathlib.Path) -> list[str]:
    sources = list((REPO / "src_c").glob("*.[ch]")) + list((REPO / "momcore").glob("*.p[yx]x"))
    mtime = binary.stat().st_mtime
    return [str(p.relative_to(REPO)) for p in sources if p.stat().st_mtime > mtime]


def pytest_configure(config: pytest.Config) -> None:
    binary = pathlib.Path(_core.__file__).resolve()
    if PACKAGE == REPO / "momcore":
        if os.environ.get("MOMCORE_TEST_INSTALLED"):
            raise pytest.UsageError(
                f"momcore was imported from the source tree ({PACKAGE}), not from the "
                f"installed package; run pytest (not python -m pytest) from the repo root")
        stale = _sources_newer_than(binary)
        if stale:
            raise pytest.UsageError(
                f"the in-tree build {binary.name} is older than {', '.join(stale)}; "
                f"rebuild it (pip install . or python setup.py build_ext --inplace)")


def pytest_report_header(config: pytest.Config) -> str:
    return (f"momcore {momcore.__version__} from {PACKAGE}; SIMD {_core.simd_path()} "
            f"(supported {', '.join(_core.simd_supported())}); OpenMP "
            f"{_core.have_openmp()}, {_core.get_num_threads()} threads")


@pytest.fixture(params=list(_core.simd_supported()))
def simd(request: pytest.FixtureRequest):
    """Runs the test once per SIMD path this CPU supports."""
    previous = _core.select_simd(request.param)
    yield request.param
    _core.select_simd(previous)


@pytest.fixture
def threads():
    """Restores the thread count after a test that changes it."""
    previous = _core.get_num_threads()
    yield
    _core.set_num_threads(previous)

"""The examples in momcore's docstrings and in the user guide run, and print what they say.

The modules are those of the API reference (docs/_ext/apigen.py decides which names are
public), plus the private modules the public functions are defined in (momcore._core,
momcore._config). A module whose optional dependency is missing is skipped and says so.
"""
from __future__ import annotations

import doctest
import importlib
import importlib.util
import pathlib
import re

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
OPTIONAL = {"torch", "sklearn", "mpi4py", "matplotlib", "ml_dtypes"}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

pytestmark = pytest.mark.skipif(not (DOCS / "_ext" / "apigen.py").exists(),
                                reason="needs the source tree (docs/)")


def _apigen():
    spec = importlib.util.spec_from_file_location("apigen", DOCS / "_ext" / "apigen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _modules() -> list[str]:
    if not (DOCS / "_ext" / "apigen.py").exists():
        return []
    apigen = _apigen()
    names = apigen.public_modules()
    # where the public functions of the package itself are defined (momcore._core, ...)
    import momcore
    homes = {getattr(getattr(momcore, n), "__module__", None) for n in momcore.__all__}
    return names + sorted(h for h in homes if isinstance(h, str) and h.startswith("momcore._"))


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in OPTIONAL:
            pytest.skip(f"{name} needs the optional dependency {exc.name}")
        raise


def _run(tests: list[doctest.DocTest]) -> None:
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = []
    for test in tests:
        out: list[str] = []
        result = runner.run(test, out=out.append)
        if result.failed:
            report.append("".join(out))
    assert not report, "\n".join(report)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name, tmp_path, monkeypatch):
    module = _import(name)
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [t for t in finder.find(module, name, globs={"np": np}) if t.examples]
    # a compiled module's functions are found through its namespace
    for attr, obj in vars(module).items():
        if callable(obj) and type(obj).__name__ == "cython_function_or_method":
            tests += [t for t in finder.find(obj, f"{name}.{attr}", module=False,
                                             globs={"np": np}) if t.examples]
    _run(tests)


GUIDE = sorted((DOCS / "guide").glob("*.md")) if DOCS.exists() else []


@pytest.mark.parametrize("page", GUIDE, ids=[p.name for p in GUIDE])
def test_guide_examples(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # the ```pycon blocks of the page, in order, as one session
    text = "\n".join(re.findall(r"^```pycon\n(.*?)^```", page.read_text(), re.M | re.S))
    test = doctest.DocTestParser().get_doctest(text, {}, page.name, str(page), 0)
    _run([test])


def test_some_examples_exist():
    # the two kinds of examples above are not vacuous
    guide = sum(p.read_text().count(">>> ") for p in GUIDE)
    assert guide >= 10

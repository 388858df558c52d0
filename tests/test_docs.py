"""momcore's documentation, checked: docstrings and the examples they give.

Every public function, class and method has a numpydoc docstring: a Parameters section
naming each parameter it takes, a Returns (or Yields) section when it returns a value.
"Public" is what the API reference documents (docs/_ext/apigen.py decides), so a name
added to a module's ``__all__`` is held to this at once. The check reads the sections
the way numpydoc does (a title underlined with dashes; an entry ``name : type`` or
``name1, name2 : type`` at the section's indentation) without importing numpydoc.

The ``>>>`` examples of those docstrings and of the user guide (docs/guide/*.md) run and
print what they say; the modules are those of the reference plus the private modules the
package's own functions are defined in (momcore._core, momcore._config). A module whose
optional dependency is missing is skipped and says so.
"""
from __future__ import annotations

import ast
import doctest
import importlib
import importlib.util
import inspect
import pathlib
import re
import textwrap
from typing import Any

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
APIGEN = DOCS / "_ext" / "apigen.py"
OPTIONAL = {"torch", "sklearn", "mpi4py", "matplotlib", "ml_dtypes"}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

pytestmark = pytest.mark.skipif(not APIGEN.exists(), reason="needs the source tree (docs/)")


def _apigen():
    spec = importlib.util.spec_from_file_location("apigen", APIGEN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _public_modules() -> list[str]:
    return _apigen().public_modules() if APIGEN.exists() else []


def missing_optional(exc: BaseException | None) -> str | None:
    """The optional package whose absence caused ``exc`` (through its causes), if any."""
    while exc is not None:
        name = (getattr(exc, "name", None) or "").split(".")[0]
        if isinstance(exc, ImportError) and name in OPTIONAL:
            return name
        exc = exc.__cause__
    return None


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing = missing_optional(exc)
        if missing is None:
            raise
        pytest.skip(f"{name} needs the optional dependency {missing}")


# ------------------------------------------------------------------ the docstrings


def sections(doc: str) -> dict[str, list[str]]:
    """numpydoc sections of a docstring: title -> the names of its entries."""
    lines = textwrap.dedent(inspect.cleandoc(doc)).splitlines()
    found: dict[str, list[str]] = {}
    title = None
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1].strip()) \
                and line.strip() and len(lines[i + 1].strip()) >= len(line.strip()):
            title = line.strip()
            found[title] = []
            continue
        if title is None or re.fullmatch(r"-{3,}", line.strip()):
            continue
        if line and not line[0].isspace():
            entry = line.split(" : ")[0].strip()
            found[title] += [n.strip() for n in entry.split(",")]
    return found


def parameters(obj: Any) -> list[str]:
    """The names a caller passes: self/cls left out, ``*args``/``**kwargs`` with stars.
    For a class, those of the ``__init__`` or ``__new__`` written in Python for it (by
    its author, or by dataclass and NamedTuple); a class that only inherits a builtin's
    or typing's constructor takes none of its own."""
    target = obj
    if inspect.isclass(obj):
        target = None
        for attr in ("__init__", "__new__"):
            fn = inspect.unwrap(getattr(obj, attr))
            if isinstance(fn, staticmethod):
                fn = fn.__func__
            if inspect.isfunction(fn) and fn.__module__ != "typing":
                target = fn
                break
        if target is None:
            return []
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    names = []
    for i, p in enumerate(sig.parameters.values()):
        if i == 0 and p.name in ("self", "cls", "_cls") and (
                inspect.isclass(obj) or "." in obj.__qualname__):
            continue
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        names.append(prefix + p.name)
    return names


def returns_value(fn: Any) -> bool:
    """Whether ``fn`` returns something: its annotation, else a ``return <value>``."""
    try:
        annotation = inspect.signature(fn).return_annotation
    except (TypeError, ValueError):
        annotation = inspect.Signature.empty
    if annotation is not inspect.Signature.empty:
        return annotation not in (None, "None", type(None))
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return False
    body = tree.body[0]
    nested = {id(n) for n in ast.walk(body) if n is not body and
              isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))}
    inner = {id(m) for n in ast.walk(body) if id(n) in nested for m in ast.walk(n)}
    return any(isinstance(n, (ast.Return, ast.Yield)) and n.value is not None
               and not (isinstance(n.value, ast.Constant) and n.value.value is None)
               and id(n) not in inner for n in ast.walk(body))


def members(cls: type) -> list[tuple[str, Any]]:
    """The public methods and properties a class defines or inherits from a momcore
    class (what its reference page shows)."""
    out, seen = [], set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("momcore"):
            continue
        for name, value in vars(klass).items():
            if name in seen or (name.startswith("_") and name != "__call__"):
                continue
            seen.add(name)
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if inspect.isfunction(value) or isinstance(value, property):
                out.append((name, value))
    return out


def problems(qualname: str, obj: Any) -> list[str]:
    doc = inspect.getdoc(obj) if not isinstance(obj, property) else obj.__doc__
    if not doc or not doc.strip():
        return [f"{qualname}: no docstring"]
    if isinstance(obj, property):
        return []
    found = sections(doc)
    out = []
    wanted = parameters(obj)
    listed = set(found.get("Parameters", []))
    if inspect.isclass(obj):
        listed |= set(found.get("Attributes", []))
    if wanted and "Parameters" not in found and not (inspect.isclass(obj) and
                                                     "Attributes" in found):
        out.append(f"{qualname}: takes {', '.join(wanted)} but has no Parameters section")
    else:
        missing = [p for p in wanted if p not in listed and p.lstrip("*") not in listed]
        if missing:
            out.append(f"{qualname}: Parameters does not name {', '.join(missing)}")
    for title in ("Parameters", "Attributes", "Other Parameters"):
        prose = [n for n in found.get(title, []) if not re.fullmatch(r"\*{0,2}\w+", n)]
        if prose:  # text after the section without a title of its own (Notes, ...)
            out.append(f"{qualname}: {title} has an entry that is not a name: {prose[0]!r}")
    if not inspect.isclass(obj) and returns_value(obj) and not (
            "Returns" in found or "Yields" in found):
        out.append(f"{qualname}: returns a value but has no Returns section")
    return out


@pytest.mark.parametrize("name", _public_modules())
def test_public_docstrings(name):
    _import(name)
    report = []
    objects = _apigen().documented_objects(name)
    for qualname, obj in objects:
        report += problems(qualname, obj)
        if inspect.isclass(obj):
            for member, value in members(obj):
                report += problems(f"{qualname}.{member}", value)
    assert not report, "\n".join(report)


def test_the_checker_finds_what_is_missing():
    def documented(a, *, b=1, **kw) -> int:
        """Sum.

        Parameters
        ----------
        a, b : int
            Numbers.
        **kw
            Ignored.

        Returns
        -------
        int
        """
        return a + b

    def bare(a):
        """Nothing about a."""
        return a

    def silent(a) -> None:
        """Returns nothing.

        Parameters
        ----------
        a : int
        """

    def prose_after_parameters(a):
        """Sum.

        Parameters
        ----------
        a : int
            A number.

        This paragraph belongs under Notes.
        """

    assert problems("prose", prose_after_parameters) == [
        "prose: Parameters has an entry that is not a name: 'This paragraph belongs under Notes.'"]
    assert problems("documented", documented) == []
    assert problems("silent", silent) == []
    assert problems("bare", bare) == [
        "bare: takes a but has no Parameters section",
        "bare: returns a value but has no Returns section"]


# ------------------------------------------------------------------ the examples


def _doctest_modules() -> list[str]:
    names = _public_modules()
    if not names:
        return []
    # where the public functions of the package itself are defined (momcore._core, ...)
    import momcore
    homes = set()
    for n in momcore.__all__:
        try:
            homes.add(getattr(getattr(momcore, n), "__module__", None))
        except ImportError:  # MLPClassifier without scikit-learn: not a private module
            pass
    return names + sorted(h for h in homes if isinstance(h, str) and h.startswith("momcore._"))


def _run(tests: list[doctest.DocTest]) -> None:
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = []
    for test in tests:
        out: list[str] = []
        result = runner.run(test, out=out.append)
        if result.failed:
            report.append("".join(out))
    assert not report, "\n".join(report)


@pytest.mark.parametrize("name", _doctest_modules())
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

"""Writes the API reference of momcore from its public names, at every build.

A public module is ``momcore`` or any ``momcore.NAME`` whose name does not start with an
underscore; its public names are its ``__all__``, or else every function and class defined
in it whose name does not start with an underscore. Each name gets one page, under the
module where it is defined (``momcore.SGD`` is documented as ``momcore.optim.SGD``); a
module that re-exports a name links to that page. A name added to a module therefore
appears in the reference without editing the documentation.

The tests use the same functions (tests/test_docs.py), so
what is documented, what must have numpydoc sections and whose examples run are decided
here once. Sphinx is imported only by the Sphinx hooks.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import pathlib
import pkgutil
from types import ModuleType
from typing import Any

PACKAGE = "momcore"
OUT = "api/generated"

# Optional dependency of a module: its page says what to install.
# A re-exported name and where it is documented (momcore.SGD -> momcore.optim.SGD),
# filled by write_pages: cross-references to the short name resolve to the page.
ALIASES: dict[str, str] = {}

EXTRAS = {
    "momcore.torch": "torch",
    "momcore.sklearn": "sklearn",
    "momcore.distributed": "mpi",
    "momcore.plots": "plot",
}


def public_modules() -> list[str]:
    """``momcore`` and its public submodules, in alphabetical order after the package."""
    package = importlib.import_module(PACKAGE)
    names = sorted(f"{PACKAGE}.{m.name}" for m in pkgutil.iter_modules(package.__path__)
                   if not m.name.startswith("_"))
    return [PACKAGE] + names


def public_names(module: ModuleType) -> list[str]:
    """The public names of ``module``: ``__all__``, or else the public functions and
    classes defined in it and its constants (upper-case names)."""
    if hasattr(module, "__all__"):
        return [n for n in module.__all__ if not _names_a_module(module, n)]
    names = []
    assigned = _assigned_names(module)
    for n, obj in vars(module).items():
        if n.startswith("_") or inspect.ismodule(obj):
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            if getattr(obj, "__module__", None) == module.__name__:
                names.append(n)
        elif n.isupper() and n in assigned:  # a constant of this module
            names.append(n)
    return names


def _names_a_module(module: ModuleType, name: str) -> bool:
    """Whether ``module.name`` is a submodule; a name whose import fails (an optional
    peer missing) is not."""
    try:
        return inspect.ismodule(getattr(module, name, None))
    except ImportError:
        return False


def _assigned_names(module: ModuleType) -> set[str]:
    """The names a module's source assigns at its top level (not the ones it imports)."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return set()
    names = set()
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, ast.AnnAssign) else [])
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def home(obj: Any, where: str, modules: list[str]) -> str:
    """The public module whose page documents ``obj`` (found in module ``where``)."""
    if not _is_code(obj):
        return where  # data: documented where it is listed
    defined = getattr(obj, "__module__", None) or where
    if defined in modules:
        return defined
    return where  # defined in a private module (momcore._core, ...): documented here


def documented_objects(name: str) -> list[tuple[str, Any]]:
    """``(qualified name, object)`` of every public function and class that module
    ``name``'s page documents (data left out; re-exported names are documented where
    they are defined)."""
    modules = public_modules()
    module = importlib.import_module(name)
    found = []
    for n in public_names(module):
        try:
            obj = getattr(module, n)
        except ImportError:  # a lazily imported name whose optional peer is missing:
            continue         # it is documented (or skipped) in its own module
        if _is_code(obj) and home(obj, name, modules) == name:
            found.append((f"{name}.{n}", obj))
    return found


def _is_code(obj: Any) -> bool:
    """A class or a function (Python or compiled); anything else is documented as data."""
    return inspect.isclass(obj) or inspect.isroutine(obj)


def _role(obj: Any) -> str:
    return "class" if inspect.isclass(obj) else "func" if _is_code(obj) else "data"


def _title(text: str) -> str:
    return f"{text}\n{'=' * len(text)}\n"


def write_pages(srcdir: pathlib.Path) -> int:
    """Writes ``api/generated/*.rst`` and returns the number of object pages."""
    out = srcdir / OUT
    out.mkdir(parents=True, exist_ok=True)
    modules = public_modules()
    pages: dict[str, str] = {}
    objects = 0
    ALIASES.clear()
    for name in modules:
        module = importlib.import_module(name)
        own, elsewhere = [], []
        for n in public_names(module):
            obj = getattr(module, n)
            where = home(obj, name, modules)
            (own if where == name else elsewhere).append((n, obj, where))
        lines = [_title(name), f".. automodule:: {name}\n   :no-members:\n"]
        if name in EXTRAS:
            lines.append(f".. note::\n\n   Needs an optional extra: "
                         f"``pip install 'momcore[{EXTRAS[name]}]'``.\n")
        if own:
            lines.append(f".. currentmodule:: {name}\n\n.. autosummary::\n   :nosignatures:\n")
            lines += [f"   {n}" for n, _, _ in own]
            lines.append("\n.. toctree::\n   :hidden:\n")
            lines += [f"   {name}.{n}" for n, _, _ in own]
            lines.append("")
        for n, obj, where in elsewhere:
            ALIASES[f"{name}.{n}"] = f"{where}.{obj.__name__}"
        if elsewhere:
            lines.append("Also available here (documented where they are defined):\n")
            lines += [f"- :py:{_role(obj)}:`{name}.{n} <{where}.{obj.__name__}>`"
                      for n, obj, where in elsewhere]
            lines.append("")
        pages[f"{name}.rst"] = "\n".join(lines)
        for n, obj, _ in own:
            directive = ("autoclass" if inspect.isclass(obj) else
                         "autofunction" if _is_code(obj) else "autodata")
            body = [_title(f"{name}.{n}"), f".. currentmodule:: {name}\n",
                    f".. {directive}:: {n}"]
            if inspect.isclass(obj):
                body.append("   :members:\n   :inherited-members:")
                if callable(getattr(obj, "__call__", None)) and "__call__" in vars(obj):
                    body.append("   :special-members: __call__")
            pages[f"{name}.{n}.rst"] = "\n".join(body) + "\n"
            objects += 1
    index = [_title("API reference"),
             "Every public module of momcore, and every public function and class in it. "
             "This reference is written from the docstrings at each build.\n",
             ".. toctree::\n   :maxdepth: 1\n"]
    index += [f"   {m}" for m in modules]
    pages["index.rst"] = "\n".join(index) + "\n"
    # rewrite only what changed (keeps incremental builds incremental), drop stale pages
    for stale in set(p.name for p in out.glob("*.rst")) - set(pages):
        (out / stale).unlink()
    for fname, text in pages.items():
        path = out / fname
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return objects


def _builder_inited(app: Any) -> None:
    from sphinx.ext.autodoc.mock import mock
    from sphinx.util import logging

    # The optional peers that are not installed (conf.autodoc_mock_imports) are mocked
    # while the public names are collected, as autodoc mocks them while documenting.
    with mock(app.config.autodoc_mock_imports):
        count = write_pages(pathlib.Path(app.srcdir))
    logging.getLogger(__name__).info(f"apigen: {count} API pages")


def _skip_foreign_member(app: Any, what: str, name: str, obj: Any, skip: bool,
                         options: Any) -> bool | None:
    """Members a class inherits from another library (scikit-learn's ``get_params``
    and generated ``set_*_request`` methods, torch's ``zero_grad``, dict's and tuple's
    methods) are documented there, not here."""
    module = getattr(obj, "__module__", None)
    if module is None:
        module = getattr(getattr(obj, "__objclass__", None), "__module__", None)
    if what != "class":
        return None
    if isinstance(module, str) and not module.startswith(PACKAGE):
        return True
    if module is None and inspect.isroutine(obj):  # a builtin's method (dict.fromkeys)
        return True
    return None


def _resolve_alias(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """A Python cross-reference to a re-exported name (``momcore.MLP.fit``) that found
    nothing resolves to the documented one (``momcore.mlp.MLP.fit``)."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    for alias, real in ALIASES.items():
        if target == alias or target.startswith(alias + "."):
            new = real + target[len(alias):]
            return env.domains["py"].resolve_xref(env, node["refdoc"], app.builder,
                                                  node["reftype"], new, node, contnode)
    return None


def setup(app: Any) -> dict[str, Any]:
    app.connect("missing-reference", _resolve_alias)
    app.connect("builder-inited", _builder_inited)
    app.connect("autodoc-skip-member", _skip_foreign_member)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""Sphinx configuration of momcore's documentation.

Build (from the repository root, with ``pip install '.[docs]'``)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The API reference is written at build time from the public names of each public module
(``_ext/apigen.py``), the gallery is built by running ``examples/*.py``, and the user guide
includes the README's sections between its ``<!-- section: ... -->`` markers.
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
# `python -m sphinx` puts the working directory first on sys.path: from the repository
# root that is the source folder momcore/, which imports only after an in-place build
# (setup.py build_ext --inplace). Without one, document the installed package.
if not list((REPO / "momcore").glob("_core*.so")):
    sys.path[:] = [p for p in sys.path
                   if pathlib.Path(p or ".").resolve() != REPO]

import momcore  # noqa: E402

project = "momcore"
author = "the momcore developers"
copyright = "momcore developers, BSD-3-Clause"
version = momcore.__version__
release = momcore.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "apigen",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "examples/GALLERY_HEADER.rst"]

# The optional peers are documented from their modules when installed; otherwise their
# imports are mocked so that the reference still has every page.
autodoc_mock_imports = [name for name in ("torch", "sklearn", "mpi4py", "matplotlib")
                        if importlib.util.find_spec(name) is None]
autodoc_typehints = "none"          # the numpydoc sections say the types
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
autosummary_generate = False        # apigen writes the pages

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False

myst_enable_extensions = ["dollarmath", "colon_fence", "substitution"]
myst_substitutions = {"version": release}
myst_heading_anchors = 3

html_theme = "pydata_sphinx_theme"
html_title = f"momcore {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path: list[str] = []

sphinx_gallery_conf = {
    "examples_dirs": str(REPO / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "image_scrapers": ("gallery_scraper.png_scraper",),
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "write_computation_times": False,
    "show_memory": False,
    "plot_gallery": "True",
}

"""The version is written once (momcore/_version.py) and read everywhere else."""
from __future__ import annotations

import importlib.metadata
import os
import pathlib
import re

import pytest

import momcore
from momcore import _version

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_version_is_major_minor_patch():
    assert re.fullmatch(r"\d+\.\d+\.\d+", momcore.__version__)
    assert momcore.__version__ == _version.__version__


@pytest.mark.skipif(not (REPO / "pyproject.toml").exists(), reason="needs the source tree")
def test_pyproject_reads_the_version_from_the_package():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "momcore._version.__version__"}


@pytest.mark.skipif(not (REPO / "CHANGELOG.md").exists(), reason="needs the source tree")
def test_changelog_has_an_entry_for_the_version():
    headings = re.findall(r"^## (\d+\.\d+\.\d+)", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert momcore.__version__ in headings


@pytest.mark.skipif(not os.environ.get("MOMCORE_TEST_INSTALLED"),
                    reason="the installed package's metadata (CI)")
def test_installed_metadata_has_the_same_version():
    assert importlib.metadata.version("momcore") == momcore.__version__

"""The version of momcore: the one place it is written.

``pyproject.toml`` reads it (setuptools' dynamic version, parsed without importing
momcore), ``momcore.__version__`` re-exports it, ``momcore --version`` prints it, and
the documentation shows it. Versions follow ``MAJOR.MINOR.PATCH`` (see CHANGELOG.md).
"""
__version__ = "0.1.0"

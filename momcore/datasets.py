"""Small real data sets shipped with momcore, and a deterministic train/test split.

Both data sets come from the UCI Machine Learning Repository (https://archive.ics.uci.edu),
licensed under Creative Commons Attribution 4.0 (CC BY 4.0):

- Iris: R. A. Fisher's iris data (1936). 150 flowers, 4 measurements in cm (sepal length,
  sepal width, petal length, petal width), 3 species, 50 flowers each.
  https://archive.ics.uci.edu/dataset/53/iris
- Digits: "Optical Recognition of Handwritten Digits", the test part (E. Alpaydin,
  C. Kaynak, 1998). 1797 images of handwritten digits, each 8x8 blocks of pixel counts
  0..16 (64 features), labels 0..9.
  https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits

The files live in ``momcore/data/`` and are read with :mod:`importlib.resources`, so they
work from a wheel, a source tree or a zip import.
"""

from __future__ import annotations

import gzip
import io
import numbers
from importlib import resources
from typing import NamedTuple

import numpy as np

__all__ = ["Dataset", "load_iris", "load_digits", "train_test_split"]

_IRIS_FILE = "iris.csv"
_DIGITS_FILE = "digits.csv.gz"
_DIGITS_FEATURES = 64
_DIGITS_ROWS = 1797

_IRIS_DESCRIPTION = """\
Iris (R. A. Fisher, 1936), UCI Machine Learning Repository, CC BY 4.0.
150 samples, 4 features (sepal length, sepal width, petal length, petal width; cm),
3 classes (setosa, versicolor, virginica), 50 samples each."""

_DIGITS_DESCRIPTION = """\
Optical Recognition of Handwritten Digits, test part (E. Alpaydin, C. Kaynak, 1998),
UCI Machine Learning Repository, CC BY 4.0.
1797 samples, 64 features (8x8 blocks of pixel counts, integers 0..16, row by row),
10 classes (digits 0..9)."""


class Dataset(NamedTuple):
    """A labelled data set.

    Parameters
    ----------
    X : numpy.ndarray
        Features, ``(n, d)`` float64.
    y : numpy.ndarray
        Labels, ``(n,)`` int64 in ``0 .. k-1``.
    target_names : tuple of str
        The name of each class, ``k`` of them.
    description : str
        Where the data come from, their licence and shape.
    """

    X: np.ndarray
    y: np.ndarray
    target_names: tuple[str, ...]
    description: str


def _read_bytes(name: str) -> bytes:
    """Return the raw bytes of the packaged data file ``momcore/data/<name>``."""
    return resources.files("momcore").joinpath("data").joinpath(name).read_bytes()


def _split_table(table: np.ndarray, n_features: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Split a (n, n_features + 1) table into float64 features and int64 labels."""
    if table.ndim != 2 or table.shape[1] != n_features + 1:
        raise ValueError(
            f"{source}: expected {n_features + 1} columns, got table of shape {table.shape}"
        )
    X = np.ascontiguousarray(table[:, :n_features], dtype=np.float64)
    labels = table[:, n_features]
    y = labels.astype(np.int64)
    if not np.array_equal(y, labels):
        raise ValueError(f"{source}: class column holds non-integer values")
    return X, y


def load_iris() -> Dataset:
    """Fisher's iris: X (150, 4) float64 in cm, y (150,) int64 in {0, 1, 2}.

    The first line of the file is ``rows,features,name0,name1,name2``; it is checked
    against the table that follows.

    Returns
    -------
    Dataset
        ``X`` (sepal length, sepal width, petal length, petal width), ``y`` (setosa,
        versicolor, virginica; 50 rows each), the class names and a description.

    Raises
    ------
    ValueError
        If the packaged file does not match its header (a damaged installation).

    Examples
    --------
    >>> from momcore import datasets
    >>> iris = datasets.load_iris()
    >>> iris.X.shape, iris.target_names
    ((150, 4), ('setosa', 'versicolor', 'virginica'))
    """
    text = _read_bytes(_IRIS_FILE).decode("ascii")
    header, _, body = text.partition("\n")
    fields = header.strip().split(",")
    n_rows, n_features = int(fields[0]), int(fields[1])
    target_names = tuple(fields[2:])
    table = np.loadtxt(io.StringIO(body), delimiter=",", dtype=np.float64, ndmin=2)
    if table.shape[0] != n_rows:
        raise ValueError(f"{_IRIS_FILE}: header says {n_rows} rows, found {table.shape[0]}")
    X, y = _split_table(table, n_features, _IRIS_FILE)
    return Dataset(X=X, y=y, target_names=target_names, description=_IRIS_DESCRIPTION)


def load_digits() -> Dataset:
    """UCI optical digits (test part): X (1797, 64) float64, y (1797,) int64 in 0..9.

    X holds pixel counts, integers 0..16; row r is the 8x8 image ``X[r].reshape(8, 8)``.

    Returns
    -------
    Dataset
        ``X``, ``y``, the class names ``"0" .. "9"`` and a description.

    Raises
    ------
    ValueError
        If the packaged file does not have the expected rows and columns.

    Examples
    --------
    >>> from momcore import datasets
    >>> digits = datasets.load_digits()
    >>> digits.X.shape, int(digits.X.max()), digits.y[:5].tolist()
    ((1797, 64), 16, [0, 1, 2, 3, 4])
    """
    raw = gzip.decompress(_read_bytes(_DIGITS_FILE)).decode("ascii")
    table = np.loadtxt(io.StringIO(raw), delimiter=",", dtype=np.float64, ndmin=2)
    if table.shape[0] != _DIGITS_ROWS:
        raise ValueError(f"{_DIGITS_FILE}: expected {_DIGITS_ROWS} rows, found {table.shape[0]}")
    X, y = _split_table(table, _DIGITS_FEATURES, _DIGITS_FILE)
    target_names = tuple(str(digit) for digit in range(10))
    return Dataset(X=X, y=y, target_names=target_names, description=_DIGITS_DESCRIPTION)


def train_test_split(
    X: np.ndarray, y: np.ndarray, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle the rows and split them: ``(X_train, X_test, y_train, y_test)``.

    ``perm = np.random.default_rng(seed).permutation(n)``; the first
    ``ceil(test_fraction * n)`` rows of ``perm`` form the test set, the rest the training
    set (both in permuted order). Not stratified.

    Parameters
    ----------
    X : array_like
        Features, ``n`` rows (at least one dimension).
    y : array_like
        Targets, ``n`` rows.
    test_fraction : float, keyword-only
        The fraction of rows in the test set, in (0, 1) (default 0.2); at least one row
        must remain for training.
    seed : int, keyword-only
        Seed of the permutation (default 0).

    Returns
    -------
    X_train, X_test, y_train, y_test : numpy.ndarray
        Copies of the rows.

    Raises
    ------
    ValueError
        If ``X`` and ``y`` differ in rows, either is 0-d, or ``test_fraction`` is out of
        range or leaves no training rows.
    TypeError
        If ``test_fraction`` is not a number (booleans are not).

    Examples
    --------
    >>> import numpy as np
    >>> from momcore import datasets
    >>> X_train, X_test, y_train, y_test = datasets.train_test_split(
    ...     np.arange(20).reshape(10, 2), np.arange(10), test_fraction=0.3)
    >>> X_train.shape, X_test.shape
    ((7, 2), (3, 2))
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim == 0 or y.ndim == 0:
        raise ValueError("X and y must have at least one dimension")
    n = X.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"X and y have different numbers of rows: {n} and {y.shape[0]}")
    if isinstance(test_fraction, (bool, np.bool_)) or not isinstance(test_fraction, numbers.Real):
        raise TypeError(f"test_fraction must be a number, got {type(test_fraction).__name__}")
    test_fraction = float(test_fraction)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = int(np.ceil(test_fraction * n))
    if n_test >= n:
        raise ValueError(
            f"test_fraction={test_fraction} leaves no training rows out of {n}"
        )
    perm = np.random.default_rng(seed).permutation(n)
    test_rows, train_rows = perm[:n_test], perm[n_test:]
    return X[train_rows], X[test_rows], y[train_rows], y[test_rows]

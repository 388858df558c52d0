"""Tests of the embedded data sets and the train/test split."""

import numpy as np
import pytest

from momcore.datasets import Dataset, load_digits, load_iris, train_test_split


@pytest.fixture(scope="module")
def iris():
    return load_iris()


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_iris_shapes_and_dtypes(iris):
    assert isinstance(iris, Dataset)
    assert iris.X.shape == (150, 4)
    assert iris.y.shape == (150,)
    assert iris.X.dtype == np.float64
    assert iris.y.dtype == np.int64
    assert iris.X.flags.c_contiguous


def test_iris_classes(iris):
    assert iris.target_names == ("setosa", "versicolor", "virginica")
    assert np.bincount(iris.y).tolist() == [50, 50, 50]


def test_iris_values(iris):
    # The first row of Fisher's table, and measurements in cm within a plausible range.
    np.testing.assert_array_equal(iris.X[0], [5.1, 3.5, 1.4, 0.2])
    assert iris.y[0] == 0
    assert np.all(iris.X > 0) and np.all(iris.X < 10)
    assert "Fisher" in iris.description and "CC BY 4.0" in iris.description


def test_digits_shapes_and_dtypes(digits):
    assert isinstance(digits, Dataset)
    assert digits.X.shape == (1797, 64)
    assert digits.y.shape == (1797,)
    assert digits.X.dtype == np.float64
    assert digits.y.dtype == np.int64


def test_digits_values(digits):
    assert sorted(set(digits.y.tolist())) == list(range(10))
    assert digits.target_names == tuple(str(k) for k in range(10))
    assert digits.X.min() == 0 and digits.X.max() == 16
    np.testing.assert_array_equal(digits.X, np.round(digits.X))
    # Every class is present in roughly equal numbers (174..183 in the test part).
    counts = np.bincount(digits.y)
    assert counts.sum() == 1797 and counts.min() >= 170 and counts.max() <= 185
    assert "Alpaydin" in digits.description and "CC BY 4.0" in digits.description


def test_loaders_return_fresh_arrays(iris):
    again = load_iris()
    again.X[0, 0] = -1.0
    assert iris.X[0, 0] == 5.1


@pytest.mark.parametrize("n, test_fraction, n_test", [(150, 0.2, 30), (10, 0.25, 3), (7, 0.5, 4)])
def test_split_sizes(n, test_fraction, n_test):
    X = np.arange(2 * n, dtype=np.float64).reshape(n, 2)
    y = np.arange(n, dtype=np.int64)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_fraction=test_fraction)
    assert X_test.shape == (n_test, 2) and y_test.shape == (n_test,)
    assert X_train.shape == (n - n_test, 2) and y_train.shape == (n - n_test,)
    # The rows stay paired and together cover every row exactly once.
    np.testing.assert_array_equal(X_train[:, 0], 2 * y_train)
    np.testing.assert_array_equal(X_test[:, 0], 2 * y_test)
    assert sorted(np.concatenate([y_train, y_test]).tolist()) == list(range(n))


def test_split_matches_documented_permutation():
    X = np.arange(20, dtype=np.float64).reshape(10, 2)
    y = np.arange(10)
    _, _, y_train, y_test = train_test_split(X, y, test_fraction=0.3, seed=5)
    perm = np.random.default_rng(5).permutation(10)
    np.testing.assert_array_equal(y_test, perm[:3])
    np.testing.assert_array_equal(y_train, perm[3:])


def test_split_deterministic(iris):
    first = train_test_split(iris.X, iris.y, seed=3)
    second = train_test_split(iris.X, iris.y, seed=3)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    other = train_test_split(iris.X, iris.y, seed=4)
    assert not np.array_equal(first[3], other[3])


def test_split_returns_copies(iris):
    X_train, X_test, _, _ = train_test_split(iris.X, iris.y)
    assert not np.shares_memory(X_train, iris.X)
    assert not np.shares_memory(X_test, iris.X)


@pytest.mark.parametrize("test_fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fraction(iris, test_fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(iris.X, iris.y, test_fraction=test_fraction)


def test_split_rejects_mismatched_rows(iris):
    with pytest.raises(ValueError, match="rows"):
        train_test_split(iris.X, iris.y[:-1])

"""MLP.check_inputs: the finiteness test of X (one pass in C, _core.all_finite) refuses
exactly what np.isfinite refuses, before and after the conversion to the net's dtype."""
from __future__ import annotations

import numpy as np
import pytest

import momcore
from momcore import _core


BLOCK = 4096  # elements the C test reads between its checks for a find (MC_FINITE_BLOCK)


@pytest.mark.parametrize("n", [0, 1, 7, 15, 16, 17, 33, 65, 1000,
                               BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
def test_all_finite_agrees_with_isfinite(simd, dtype, n):
    rng = np.random.default_rng(n)
    a = rng.standard_normal(n).astype(dtype)
    assert _core.all_finite(a) is True
    info = np.finfo(dtype)
    # the ends, the middle, and both sides of every block boundary
    places = {0, n // 2, n - 1} | {k + d for k in range(BLOCK, n, BLOCK) for d in (-1, 0)}
    for bad in (np.nan, np.inf, -np.inf, -np.nan):
        for where in places if n else ():
            b = a.copy()
            b[where] = bad
            assert _core.all_finite(b) is False
    # the largest finite values and the smallest subnormals are finite
    edge = np.array([info.max, -info.max, info.smallest_subnormal, 0.0, -0.0], dtype)
    assert _core.all_finite(edge) is True


def test_all_finite_takes_only_what_it_can_read():
    with pytest.raises(TypeError, match="dtype int64"):
        _core.all_finite(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.all_finite(np.zeros(6)[::2])


NET_DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("net_dtype", NET_DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("x_dtype", [np.float16, np.float32, np.float64, np.longdouble],
                         ids=lambda d: np.dtype(d).name)
def test_nan_and_inf_are_refused_in_any_float_dtype(net_dtype, x_dtype):
    net = momcore.MLP([3, 4, 2], dtype=net_dtype)
    for bad in (np.nan, np.inf, -np.inf):
        for layout in ("C", "F"):
            X = np.ones((17, 3), x_dtype, order=layout)
            X[16, 2] = bad
            with pytest.raises(ValueError, match="X holds NaN or inf"):
                net.check_inputs(X)


def test_values_beyond_float32_are_refused_after_the_cast():
    net = momcore.MLP([2, 3, 2], dtype=np.float32)
    with pytest.raises(ValueError, match="beyond the range of float32"):
        net.check_inputs(np.array([[1.0, 3.5e38]]))
    with pytest.raises(ValueError, match="beyond the range of float32"):
        net.check_inputs(np.array([[-1e300, 1.0]]))
    # finite values whose sum overflows are fine (no sum is involved)
    X = net.check_inputs(np.full((5, 2), 3.4e38))
    assert X.dtype == np.float32 and np.isfinite(X).all()


def test_integers_and_booleans_pass_and_other_kinds_are_refused():
    net = momcore.MLP([2, 3, 2], dtype=np.float32)
    for X in (np.array([[2**62, -2**62]]), np.array([[True, False]]),
              np.array([[1, 2]], np.uint8)):
        out = net.check_inputs(X)
        assert out.dtype == np.float32 and out.flags.c_contiguous
    for X in (np.array([[1 + 1j, 2]]), np.array([["a", "b"]]), np.array([[1, None]]),
              np.array([[1, 2]], "m8[s]")):
        with pytest.raises(TypeError, match="real numbers"):
            net.check_inputs(X)


def test_an_array_in_the_nets_dtype_is_used_as_it_is():
    net = momcore.MLP([2, 3, 2], dtype=np.float64)
    X = np.ones((4, 2))
    assert net.check_inputs(X) is X
    F = np.asfortranarray(X)
    out = net.check_inputs(F)
    assert out is not F and out.flags.c_contiguous and np.array_equal(out, F)


def test_all_finite_or_none_reads_what_all_finite_reads_and_declines_the_rest():
    a = np.ones(5)
    assert _core.all_finite_or_none(a) is True
    a[3] = np.nan
    assert _core.all_finite_or_none(a) is False
    assert _core.all_finite_or_none(np.full((2, 3), np.inf, np.float32)) is False
    for other in (np.zeros(3, np.int64), np.zeros(6)[::2], np.zeros(3, ">f8"),
                  np.zeros(3, np.float16), [1.0, 2.0], 1.0, None):
        assert _core.all_finite_or_none(other) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
def test_one_hot_makes_the_rows_numpy_indexing_makes(dtype):
    rng = np.random.default_rng(3)
    for n, k in ((0, 3), (1, 1), (150, 3), (1000, 10), (70_000, 10)):
        y = rng.integers(0, k, n)
        for spelling in (dtype, np.dtype(dtype), np.dtype(dtype).name):
            out = _core.one_hot(y, k, spelling)
            assert out.dtype == dtype and out.flags.c_contiguous and out.flags.writeable
            assert np.array_equal(out, np.eye(k, dtype=dtype)[y])


def test_one_hot_reports_labels_outside_the_columns():
    for bad in (-1, 3, 2**40, -2**63):
        y = np.array([0, 2, bad, 1])
        assert _core.one_hot(y, 3, np.float64) is None
    with pytest.raises(TypeError, match="int64"):
        _core.one_hot(np.array([0, 1], np.int32), 2, np.float64)
    with pytest.raises(TypeError, match="int64"):
        _core.one_hot(np.array([0, 1, 0, 1])[::2], 2, np.float64)
    with pytest.raises(ValueError, match="k must be >= 1"):
        _core.one_hot(np.array([0, 1]), 0, np.float64)
    for dtype in (np.int64, np.float16, "float128", "no such type"):
        with pytest.raises(TypeError, match="dtype must be float32 or float64"):
            _core.one_hot(np.array([0, 1]), 2, dtype)


@pytest.mark.parametrize("labels", [np.array([0, 1, 2], np.uint8), np.array([0, 1, 2], np.int32),
                                    np.array([0, 1, 2], np.uint64), [0, 1, 2],
                                    np.array([0, 0, 1, 1, 2, 2])[::2]])
def test_targets_of_any_integer_labels(labels):
    net = momcore.MLP([2, 3, 3])
    assert np.array_equal(net.encode_targets(labels, 3), np.eye(3))


def test_labels_out_of_range_are_refused_with_their_range():
    net = momcore.MLP([2, 3, 3])
    for y, shown in (([0, 3, 1], r"\[0, 3\]"), ([-2, 0, 1], r"\[-2, 1\]"),
                     (np.array([0, 2**63 + 5, 1], np.uint64), r"\[0, 9223372036854775813\]")):
        with pytest.raises(ValueError, match=f"class labels must lie in \\[0, 3\\), got values in {shown}"):
            net.encode_targets(y, 3)


@pytest.mark.parametrize("bad", [[0, 1], np.arange(2, dtype=np.int32),
                                 np.arange(2).astype(">i8"), np.arange(4)[::2],
                                 np.zeros((1, 2), np.int64)],
                         ids=["list", "int32", "byteswapped", "strided", "2d"])
def test_row_indices_are_native_contiguous_int64_vectors(bad):
    """The compiled epoch, a process's gradient share and the one-hot encoder read
    their indices in place: anything else is a TypeError that names the argument
    (a byte-swapped int64 array used to be read as other rows)."""
    from momcore import _core, _network
    sizes = [4, 3, 2]
    p = np.zeros(_network.n_params(sizes))
    core = _core.NetCore(p, np.zeros_like(p), np.zeros_like(p), sizes, "tanh", "softmax", 4)
    X, T = np.zeros((4, 4)), np.zeros((4, 2))
    with pytest.raises(TypeError, match="order must be a C-contiguous 1-D int64"):
        core.train_epoch(X, T, bad, 2, lr=0.1, momentum=0.0)
    with pytest.raises(TypeError, match="rows must be a C-contiguous 1-D int64"):
        core.gradient_share(X, T, bad, 2)
    with pytest.raises(TypeError, match="labels must be a C-contiguous 1-D int64"):
        _core.one_hot(bad, 2, np.float64)
    with pytest.raises(ValueError, match=r"order\[1\] = 5 is not a row of X"):
        core.train_epoch(X, T, np.array([0, 5]), 2, lr=0.1, momentum=0.0)

"""MLP.check_inputs: the finiteness test of X (one pass in C, _core.all_finite) refuses
exactly what np.isfinite refuses, before and after the conversion to the net's dtype."""
from __future__ import annotations

import numpy as np
import pytest

import momcore
from momcore import _core


@pytest.mark.parametrize("n", [0, 1, 7, 15, 16, 17, 33, 65, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
def test_all_finite_agrees_with_isfinite(dtype, n):
    rng = np.random.default_rng(n)
    a = rng.standard_normal(n).astype(dtype)
    assert _core.all_finite(a) is True
    info = np.finfo(dtype)
    for bad in (np.nan, np.inf, -np.inf, -np.nan):
        for where in {0, n // 2, n - 1} if n else ():
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

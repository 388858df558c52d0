"""The Python layer of a fit call does each check once, and no less: what a repeated
call skips (hyperparameters checked by the previous call) is still checked when it
differs."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from momcore import MLP, schedules, training
from momcore.training import check_fit_arguments


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((12, 3)), rng.integers(0, 2, 12)


def test_hyperparameters_checked_by_the_last_call_are_checked_again_in_another_dtype():
    X, y = _data()
    lr = 1e39  # finite in float64, beyond float32
    wide, narrow = MLP([3, 4, 2]), MLP([3, 4, 2], dtype=np.float32)
    wide.fit(X, y, epochs=1, lr=lr, momentum=0.5)
    wide.fit(X, y, epochs=1, lr=lr, momentum=0.5)  # the same objects again
    with pytest.raises(ValueError, match="float32"):
        narrow.fit(X, y, epochs=1, lr=lr, momentum=0.5)
    assert narrow.steps == 0


def test_a_schedule_is_checked_on_every_call():
    X, y = _data()
    net = MLP([3, 4, 2])

    class Lr:
        value = 0.1

        def __call__(self, epoch):
            return self.value

    lr = Lr()
    net.fit(X, y, epochs=1, lr_schedule=lr, momentum=0.5)
    net.fit(X, y, epochs=1, lr_schedule=lr, momentum=0.5)
    lr.value = -1.0
    with pytest.raises(ValueError, match="lr"):
        net.fit(X, y, epochs=1, lr_schedule=lr, momentum=0.5)
    lr.value = np.float64(-1.0)  # a float subclass
    with pytest.raises(ValueError, match="lr"):
        net.fit(X, y, epochs=1, lr_schedule=lr, momentum=0.5)


@pytest.mark.parametrize("lr, momentum, per_step", [
    (0.1, 0.9, False),
    (schedules.per_step(lambda t: 0.1), 0.9, True),
    (0.1, schedules.per_step(lambda t: 0.9), True),
    (lambda epoch: 0.1, schedules.Constant(0.9, per="step"), True),
])
def test_per_step_is_known_once_the_arguments_are_checked(lr, momentum, per_step):
    assert check_fit_arguments(epochs=1, lr=lr, momentum=momentum).per_step is per_step


@pytest.mark.parametrize("kwargs, error", [
    (dict(epochs=True), ValueError), (dict(epochs=-1), ValueError),
    (dict(epochs=1.0), ValueError), (dict(epochs=1, batch_size=0), ValueError),
    (dict(epochs=1, batch_size=np.int64(0)), ValueError),
    (dict(epochs=1, shuffle="yes"), TypeError), (dict(epochs=1, verbose=None), TypeError),
])
def test_the_plain_types_fast_path_refuses_what_the_full_checks_refuse(kwargs, error):
    with pytest.raises(error):
        check_fit_arguments(**kwargs)
    # and numpy integers and booleans pass as before
    settings = check_fit_arguments(epochs=np.int64(2), batch_size=np.int32(3),
                                   shuffle=np.bool_(False), verbose=0)
    assert (settings.epochs, settings.batch_size, settings.shuffle, settings.verbose) == (
        2, 3, False, False)
    assert type(settings.epochs) is int and type(settings.shuffle) is bool


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [10, training._SUM_MIN - 1, training._SUM_MIN, 300_000])
def test_all_finite_agrees_with_isfinite(dtype, n):
    # from _SUM_MIN elements on, all_finite tries the sum first: a sum that overflows
    # must not make finite values look non-finite, and no inf or NaN may hide (nor
    # +inf and -inf together)
    rng = np.random.default_rng(n)
    a = rng.standard_normal(n).astype(dtype)
    big = np.finfo(dtype).max
    cases = [a]
    for bad in (np.nan, np.inf, -np.inf):
        b = a.copy()
        b[n // 3] = bad
        cases.append(b)
    b = a.copy()
    b[:2] = big, big  # the sum overflows
    cases.append(b)
    b = a.copy()
    b[:2] = np.inf, -np.inf
    cases.append(b)
    b = b.copy()
    b[-1] = np.inf
    cases.append(b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings either
        for c in cases:
            expected = bool(np.isfinite(c).all())
            assert training.all_finite(c) is expected
            if n % 10 == 0:
                assert training.all_finite(c.reshape(-1, 10)) is expected
            assert training.all_finite(c.astype(c.dtype.newbyteorder(">"))) is expected
            assert training.all_finite(c[::2]) is bool(np.isfinite(c[::2]).all())

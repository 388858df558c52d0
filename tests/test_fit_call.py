"""The Python layer of a fit call does each check once, and no less: what a repeated
call skips (hyperparameters checked by the previous call) is still checked when it
differs; the snapshot of weights and state behind the non-finite replay keeps its
buffers between calls and copies on momcore's threads, and still serves the replay."""
from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest

from momcore import MLP, _core, schedules, training
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


# ---- the epoch snapshot: its buffers kept between calls, copied on momcore's threads --


class _LrAt:
    """A per-step lr schedule: ``small`` before step ``k``, then ``huge``."""

    per = "step"

    def __init__(self, k: int, small: float, huge: float) -> None:
        self.k, self.small, self.huge = k, small, huge

    def __call__(self, t: int) -> float:
        return self.small if t < self.k else self.huge


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_kept_snapshot_buffers_serve_later_calls_and_their_replay(backend):
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(24, 3)) * 100, rng.normal(size=(24, 2)) * 100
    args = dict(batch_size=4, momentum=0.5, shuffle=False)

    def make():
        return MLP([3, 4, 2], hidden="identity", output="identity", seed=1, backend=backend)

    net = make()
    assert net._epoch_copies is None
    net.fit(X, Y, epochs=1, lr=1e-7, **args)
    copies = net._epoch_copies
    assert [c.shape for c in copies] == [net.params.shape, net.optimizer_state.shape]
    net.fit(X, Y, epochs=1, lr=1e-7, **args)
    assert net._epoch_copies is copies  # the same buffers, not new ones
    # the third call overflows the weights at its 4th step (a finite loss, then inf
    # weights): the replay from the kept copies ends at the last finite step
    with pytest.raises(FloatingPointError, match="last finite step"):
        net.fit(X, Y, epochs=1, lr_schedule=_LrAt(net.steps + 3, 1e-7, 1.7e308), **args)
    twin = make()
    twin.fit(X, Y, epochs=2, lr=1e-7, **args)
    twin.fit(X[:12], Y[:12], epochs=1, lr=1e-7, **args)
    assert net.steps == twin.steps == 15
    assert net.params.tobytes() == twin.params.tobytes()
    assert net.optimizer_state.tobytes() == twin.optimizer_state.tobytes()
    # per model: neither pickled nor shared by a copy
    assert pickle.loads(pickle.dumps(net))._epoch_copies is None
    assert copy.deepcopy(net)._epoch_copies is None


def test_kept_snapshot_buffers_follow_a_change_of_dtype_or_shape():
    X, y = _data()
    net = MLP([3, 4, 2])
    net.fit(X, y, epochs=1)
    stale = [np.zeros(5, np.float32)]  # as if another model's
    net._epoch_copies = stale
    net.fit(X, y, epochs=1)
    assert net._epoch_copies is not stale
    assert [c.dtype for c in net._epoch_copies] == [net.params.dtype] * 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.complex128])
@pytest.mark.parametrize("n", [0, 1, 7, 8191, 8192, 65_537, 300_001])
def test_copy_into_copies_every_byte(dtype, n, threads):
    rng = np.random.default_rng(n)
    src = rng.integers(-1000, 1000, size=n).astype(dtype)
    for count in (1, 2):
        _core.set_num_threads(count)
        dst = np.full_like(src, 7)
        assert _core.copy_into(dst, src) is True
        assert dst.tobytes() == src.tobytes()
    shaped = np.empty((n, 1), dtype)
    assert _core.copy_into(shaped, src.reshape(n, 1)) is True
    assert shaped.tobytes() == src.tobytes()


def test_copy_into_declines_what_it_cannot_copy_and_writes_nothing():
    src = np.arange(12.0)
    for dst, source in (
            (np.zeros(12, np.float32), src),  # another dtype
            (np.zeros(11), src[:10].copy()),  # another size
            (np.zeros((3, 4)), src),  # another shape
            (np.zeros(12).reshape(3, 4).T, src.reshape(4, 3)),  # not C-contiguous
            (np.zeros(6), src[::2]),  # a strided source
            (np.zeros(12).astype(">f8"), src.astype(">f8")),  # not native order
            ([0.0] * 12, src)):  # not an array
        before = np.array(dst, copy=True)
        assert _core.copy_into(dst, source) is False
        assert np.array_equal(np.asarray(dst), before)
    readonly = np.zeros(12)
    readonly.flags.writeable = False
    assert _core.copy_into(readonly, src) is False
    overlapping = np.arange(24.0)
    assert _core.copy_into(overlapping[:12], overlapping[6:18]) is False
    assert np.array_equal(overlapping, np.arange(24.0))


BIT_GENERATORS = [np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937,
                  np.random.Philox, np.random.SFC64]


@pytest.mark.parametrize("bit_generator", BIT_GENERATORS, ids=lambda b: b.__name__)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 150, 1024, 1025, 70_001])
def test_an_epochs_shuffle_is_numpys_permutation_drawn_the_same_way(bit_generator, n):
    mine, numpys = (np.random.Generator(bit_generator(n + 11)) for _ in range(2))
    for rng in (mine, numpys):
        rng.integers(0, 2**32, 3, dtype=np.uint64)  # a generator already in use
        rng.random()
    for _ in range(2):
        order = _core.permutation(mine, n)
        expected = numpys.permutation(n)
        assert order.dtype == np.int64 and order.shape == (n,)
        np.testing.assert_array_equal(order, expected)
    # the same draws taken, half-used 32-bit words included: what follows is the same
    assert repr(mine.bit_generator.state) == repr(numpys.bit_generator.state)
    np.testing.assert_array_equal(mine.integers(0, 2**63, 9), numpys.integers(0, 2**63, 9))
    np.testing.assert_array_equal(mine.integers(0, 7, 9, dtype=np.uint32),
                                  numpys.integers(0, 7, 9, dtype=np.uint32))


def test_permutation_leaves_other_generators_to_numpy_and_refuses_a_negative_size():
    class Logged(np.random.Generator):
        calls = 0

        def permutation(self, x, axis=0):
            Logged.calls += 1
            return super().permutation(x, axis)

    rng = Logged(np.random.PCG64(0))
    np.testing.assert_array_equal(_core.permutation(rng, 6),
                                  np.random.default_rng(0).permutation(6))
    assert Logged.calls == 1
    with pytest.raises(ValueError, match="n must be >= 0"):
        _core.permutation(np.random.default_rng(0), -1)


def test_fit_shuffles_with_the_models_generator_as_numpy_would():
    X, y = _data()
    net = MLP([3, 4, 2], seed=5)
    rng = np.random.default_rng(5)
    rng.bit_generator.state = net.rng.bit_generator.state
    net.fit(X, y, epochs=3)
    for _ in range(3):
        rng.permutation(X.shape[0])
    assert repr(net.rng.bit_generator.state) == repr(rng.bit_generator.state)


def test_repeated_plain_arguments_reuse_their_settings_and_nothing_else_does():
    lr = 0.5
    first = check_fit_arguments(epochs=3, lr=lr, min_delta=0.0)
    assert check_fit_arguments(epochs=3, lr=lr, min_delta=0.0) is first
    # equal but not the same objects, or not plain: checked again
    with pytest.raises(ValueError, match="epochs"):
        check_fit_arguments(epochs=True, lr=lr, min_delta=0.0)  # True == 1, but a bool
    with pytest.raises(ValueError, match="min_delta"):
        check_fit_arguments(epochs=3, lr=lr, min_delta=-0.5)
    data = [np.zeros((2, 3)), np.zeros(2)]
    check_fit_arguments(epochs=3, lr=lr, validation_data=data)
    data.append(None)  # a list can change between calls: never remembered
    with pytest.raises(TypeError, match="validation_data"):
        check_fit_arguments(epochs=3, lr=lr, validation_data=data)
    assert check_fit_arguments(epochs=3, lr=lr, min_delta=0.0) == first

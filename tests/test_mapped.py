"""Two memory maps of one file as operands: the address check cannot see that they
share bytes, so the kernels (and the reference) compare the maps' file regions."""
from __future__ import annotations

import numpy as np
import pytest

import momcore
from momcore import reference

IMPLS = {"compiled": momcore, "reference": reference}


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "weights.bin"
    np.zeros(200).tofile(p)
    return p


@pytest.mark.parametrize("impl", IMPLS)
def test_two_maps_of_the_same_bytes_are_refused(path, impl):
    w = np.memmap(path, np.float64, "r+", shape=(200,))[:100]
    state = np.memmap(path, np.float64, "r+", shape=(200,))[50:150]
    g = np.ones(100)
    with pytest.raises(ValueError, match="map the same bytes"):
        IMPLS[impl].momentum_step(w, g, state, lr=0.1, momentum=0.9)
    assert not np.asarray(w).any() and not np.asarray(state).any()
    with pytest.raises(ValueError, match=r"ws\[0\] and states\[1\]|states\[1\] and ws\[0\]"):
        IMPLS[impl].momentum_step_many([w, np.zeros(100)], [g, g], [np.zeros(100), state],
                                       lr=0.1, momentum=0.9)


@pytest.mark.parametrize("impl", IMPLS)
def test_maps_with_offsets_are_placed_in_the_file(path, impl):
    first = np.memmap(path, np.float64, "r+", shape=(100,))
    second = np.memmap(path, np.float64, "r+", offset=100 * 8, shape=(100,))
    g = np.ones(100)
    # disjoint regions of one file: a step like any other
    assert IMPLS[impl].momentum_step(first, g, second, lr=0.5, momentum=0.0) is True
    np.testing.assert_array_equal(np.asarray(first), -0.5)
    overlapping = np.memmap(path, np.float64, "r+", offset=60 * 8, shape=(100,))
    with pytest.raises(ValueError, match="map the same bytes"):
        IMPLS[impl].momentum_step(first, g, overlapping, lr=0.5, momentum=0.0)


@pytest.mark.parametrize("impl", IMPLS)
def test_two_maps_read_only_as_gradients_may_share_bytes(path, impl):
    grads = np.memmap(path, np.float64, "r", shape=(200,))
    again = np.memmap(path, np.float64, "r", shape=(200,))
    w, s = [np.zeros(200), np.zeros(200)], [np.zeros(200), np.zeros(200)]
    assert IMPLS[impl].momentum_step_many(w, [grads, again], s, lr=0.1, momentum=0.0)

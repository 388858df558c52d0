"""Property-based: for any shape, dtype and hyperparameters, compiled == reference."""
from __future__ import annotations

import numpy as np
from conftest import RULES
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import momcore
from momcore import reference as ref
from momcore import registry

dtypes = st.sampled_from([np.float32, np.float64])
# A rule is given a dampening only if it takes one (any other nonzero value is an error).
hyper = st.sampled_from(RULES).flatmap(lambda rule: st.fixed_dictionaries({
    "lr": st.floats(0.0, 10.0),
    "momentum": st.floats(-0.999, 0.999),
    "dampening": (st.floats(0.0, 0.999) if rule in registry.rules_taking("dampening")
                  else st.just(0.0)),
    "weight_decay": st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
    "rule": st.just(rule),
}))


@st.composite
def operands(draw):
    dtype = draw(dtypes)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40))
    elements = st.floats(-1e3, 1e3, width=32 if dtype == np.float32 else 64)
    w, g, s = (draw(hnp.arrays(dtype, shape, elements=elements)) for _ in range(3))
    return w, g, s


@settings(max_examples=300, deadline=None)
@given(operands(), hyper, st.integers(1, 3))
def test_compiled_equals_reference(ops, h, steps):
    w, g, s = ops
    w_ref, s_ref = w.copy(), s.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            momcore.momentum_step(w, g, s, **h)
            ref.momentum_step(w_ref, g, s_ref, **h)
    assert w.tobytes() == w_ref.tobytes()
    assert s.tobytes() == s_ref.tobytes()


@settings(max_examples=100, deadline=None)
@given(operands(), hyper, st.sampled_from(["raise", "skip"]), st.data())
def test_nonfinite_gradient_never_writes(ops, h, mode, data):
    w, g, s = ops
    if g.size == 0:
        return
    idx = data.draw(st.integers(0, g.size - 1))
    g.reshape(-1)[idx] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    w0, s0 = w.tobytes(), s.tobytes()
    try:
        applied = momcore.momentum_step(w, g, s, **h, nonfinite=mode)
        assert mode == "skip" and applied is False
    except FloatingPointError:
        assert mode == "raise"
    assert (w.tobytes(), s.tobytes()) == (w0, s0)

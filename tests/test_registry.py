"""The names of momcore.registry and the C enums of the compiled core cover each other:
every registered name has a distinct C code, and every code 0..N-1 has a name."""
from __future__ import annotations

import numpy as np
import pytest

from momcore import _core
from momcore import reference as ref
from momcore import registry

# (names the registry holds, the compiled layer's name -> code map, the C enum's count)
KINDS = {
    "rules": (tuple(registry.RULES), _core.RULE_CODES, _core.N_RULES),
    "activations": (tuple(dict.fromkeys(registry.HIDDEN + registry.OUTPUTS)),
                    _core.ACTIVATION_CODES, _core.N_ACTIVATIONS),
    "losses": (tuple(registry.LOSSES), _core.LOSS_CODES, _core.N_LOSSES),
    "nonfinite": (registry.NONFINITE, _core.NONFINITE_CODES, _core.N_NONFINITE),
    "accuracies": (_core.ACCURACIES, _core.ACCURACY_CODES, _core.N_ACCURACIES),
}


@pytest.mark.parametrize("kind", KINDS)
def test_every_name_has_a_distinct_code_and_every_code_a_name(kind):
    names, codes, count = KINDS[kind]
    assert set(codes) == set(names)  # no registered name lacks a code, no code is unnamed
    assert len(set(codes.values())) == len(codes)  # distinct
    assert sorted(codes.values()) == list(range(count))  # 0..N-1, each once


def test_exported_tuples_follow_the_registry_order():
    assert _core.RULES == tuple(registry.RULES) == ref.RULES
    assert _core.NONFINITE == registry.NONFINITE == ref.NONFINITE


def test_every_loss_pairs_with_outputs_the_core_knows():
    for loss in registry.LOSSES.values():
        assert set(loss.outputs) <= set(registry.OUTPUTS)
    for output, loss in registry.DEFAULT_LOSS.items():
        assert registry.loss_for(output) == loss


@pytest.mark.parametrize("rule", registry.RULES)
def test_every_registered_rule_steps_in_both_implementations(rule):
    for impl in (_core, ref):
        w, g, s = np.ones(3), np.ones(3), np.zeros(3)
        assert impl.momentum_step(w, g, s, lr=0.5, momentum=0.5, rule=rule) is True
        assert (w < 1).all()  # a descent step: against a positive gradient

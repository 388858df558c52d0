"""The names momcore accepts, in one place: update rules, non-finite policies,
activations and output/loss pairs.

Every other module checks a name against this registry, and the compiled layer maps
each name to its C enum explicitly (``momcore._core``); a test asserts that the two
sides cover each other. A new rule, activation or loss is added here first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """An update rule: what its state holds, one step in math, and which of the
    optional hyperparameters it takes (``lr``, ``momentum`` and ``weight_decay`` are
    taken by every rule).

    Parameters
    ----------
    name : str
        The name ``rule=`` takes.
    state : str
        What the state buffer holds.
    step : str
        One step, with ``g' = g + weight_decay*w``.
    takes_dampening : bool
        Whether the rule takes ``dampening``.
    takes_momenta : bool
        Whether the rule reads a per-weight momentum buffer (``momenta``).
    lr_in_state : bool
        Whether the state holds lr-scaled steps (a changed lr affects new gradients
        only) or raw gradients (a changed lr rescales the whole history).
    """

    name: str
    state: str
    step: str
    takes_dampening: bool = False
    takes_momenta: bool = False
    """Whether the rule reads a per-weight momentum buffer (``momenta``)."""
    lr_in_state: bool = True
    """Whether the state holds lr-scaled steps (a changed lr affects new gradients
    only) or raw gradients (a changed lr rescales the whole history)."""


RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule("classical", "the previous weight change Delta",
             "s = momentum*s - lr*g' ; w = w + s"),
        Rule("nesterov", "the previous weight change Delta",
             "s = momentum*s - lr*g' ; w = w + momentum*s - lr*g'"),
        Rule("velocity", "the velocity v (lr outside)",
             "s = momentum*s + (1-dampening)*g' ; w = w - lr*s",
             takes_dampening=True, lr_in_state=False),
        Rule("ema", "an exponential moving average of g",
             "s = momentum*s + (1-momentum)*g' ; w = w - lr*s", lr_in_state=False),
        Rule("one_step", "the previous plain step only",
             "step = -lr*g' ; w = w + step + momentum*s ; s = step"),
        Rule("nesterov_velocity", "the velocity v (lr outside)",
             "s = momentum*s + g' ; w = w - lr*(g' + momentum*s)", lr_in_state=False),
        Rule("qian", "the previous weight change Delta",
             "s = momenta*s - lr*g' ; w = w + s  (momenta: one momentum per weight; "
             "None: momentum for all, i.e. classical)", takes_momenta=True),
    )
}
"""Update rules by name; ``g' = g + weight_decay*w``."""

NONFINITE: tuple[str, ...] = ("propagate", "raise", "skip")
"""What a NaN or inf in the gradient does: flow into w, raise, or skip the step."""

HIDDEN: tuple[str, ...] = ("sigmoid", "tanh", "relu", "identity")
"""Activations of hidden layers."""

OUTPUTS: tuple[str, ...] = ("softmax", "sigmoid", "identity")
"""Activations of the output layer."""


@dataclass(frozen=True)
class Loss:
    """A per-sample loss and the output activations it pairs with.

    Parameters
    ----------
    name : str
        The name ``loss=`` takes.
    formula : str
        The loss of one sample, ``t`` the target and ``y`` the output.
    outputs : tuple of str
        The output activations it pairs with.
    """

    name: str
    formula: str
    outputs: tuple[str, ...]


LOSSES: dict[str, Loss] = {
    x.name: x
    for x in (
        Loss("cross_entropy", "-sum_j t_j log y_j", ("softmax",)),
        Loss("binary_cross_entropy", "-sum_j t_j log y_j + (1 - t_j) log(1 - y_j)",
             ("sigmoid",)),
        Loss("squared_error", "1/2 sum_j (t_j - y_j)^2", ("sigmoid", "identity")),
    )
}
"""Per-sample losses; the loss of a batch is the mean over its rows."""

DEFAULT_LOSS: dict[str, str] = {
    "softmax": "cross_entropy",
    "sigmoid": "squared_error",  # the lecture notes' units
    "identity": "squared_error",
}
"""The loss an output activation pairs with when none is named."""

ACCURACY: tuple[str, ...] = ("none", "argmax", "threshold")
"""How training counts rows classified right: not at all (regression); argmax of the
outputs equals argmax of the targets (first maximum on ties); every unit on the same
side of 1/2 as its target (binary and multilabel)."""


def check_name(kind: str, value: Any, argument: str | None = None) -> str:
    """``value`` if it names a registered ``kind``.

    Parameters
    ----------
    kind : {"rule", "nonfinite", "hidden", "output", "loss", "accuracy"}
        The kind of name.
    value : object
        The name to check.
    argument : str or None
        The argument's name for the error message (default: ``kind``).

    Returns
    -------
    str
        ``value``.

    Raises
    ------
    ValueError
        Naming the argument and the choices, if ``value`` is not one of them.

    Examples
    --------
    >>> from momcore import registry
    >>> registry.check_name("rule", "nesterov")
    'nesterov'
    >>> registry.check_name("hidden", "softplus", "hidden")
    Traceback (most recent call last):
    ...
    ValueError: hidden must be one of 'sigmoid', 'tanh', 'relu', 'identity'; got 'softplus'
    """
    choices = _CHOICES[kind]
    if isinstance(value, str) and value in choices:
        return value
    listed = ", ".join(repr(c) for c in choices)
    raise ValueError(f"{argument or kind} must be one of {listed}; got {value!r}")


def loss_for(output: str, loss: str | None = None) -> str:
    """The loss of an ``output`` activation.

    Parameters
    ----------
    output : str
        An output activation (``OUTPUTS``).
    loss : str or None
        A loss (``LOSSES``) to check against the pairs, or None for the default pair
        (``DEFAULT_LOSS``).

    Returns
    -------
    str
        The loss.

    Raises
    ------
    ValueError
        If ``output`` or ``loss`` is not registered, or they do not pair.

    Examples
    --------
    >>> from momcore import registry
    >>> registry.loss_for("softmax"), registry.loss_for("sigmoid", "binary_cross_entropy")
    ('cross_entropy', 'binary_cross_entropy')
    """
    check_name("output", output)
    if loss is None:
        return DEFAULT_LOSS[output]
    check_name("loss", loss)
    if output not in LOSSES[loss].outputs:
        pairs = ", ".join(f"{o} + {n}" for n, x in LOSSES.items() for o in x.outputs)
        raise ValueError(f"loss {loss!r} does not pair with output {output!r}; the pairs "
                         f"are {pairs}")
    return loss


def rules_taking(hyperparameter: str) -> tuple[str, ...]:
    """The rules that take an optional hyperparameter.

    Parameters
    ----------
    hyperparameter : {"dampening", "momenta"}
        The hyperparameter, as in the ``takes_*`` fields of :class:`Rule`.

    Returns
    -------
    tuple of str
        The names of those rules, in registry order.

    Examples
    --------
    >>> from momcore import registry
    >>> registry.rules_taking("dampening"), registry.rules_taking("momenta")
    (('velocity',), ('qian',))
    """
    return tuple(name for name, rule in RULES.items()
                 if getattr(rule, f"takes_{hyperparameter}"))


_CHOICES: dict[str, tuple[str, ...]] = {
    "rule": tuple(RULES),
    "nonfinite": NONFINITE,
    "hidden": HIDDEN,
    "output": OUTPUTS,
    "loss": tuple(LOSSES),
    "accuracy": ACCURACY,
}

"""SGD with momentum over a list of parameter arrays, on the fused kernel."""
from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from momcore import _core


def _our_names(message: str) -> str:
    """A momentum_step_many message in SGD's words: params, grads, state."""
    return (message.replace("ws[", "params[").replace("gs[", "grads[")
            .replace("states[", "state[").replace("ws, gs and states", "params, grads and state"))


class SGD:
    """Gradient descent with a momentum term for a fixed list of numpy arrays.

    Holds one state buffer per parameter (zeros of its shape and dtype) and
    updates every parameter in place with one C call per ``step``.

    Parameters
    ----------
    params : sequence of numpy.ndarray
        The arrays to train, updated in place (float32/float64, C-contiguous,
        writable, not overlapping).
    lr, momentum, rule, dampening, weight_decay, nonfinite
        As in :func:`momcore.momentum_step`. ``lr`` and ``momentum`` may be
        changed between steps (schedules); ``rule`` is fixed.

    One optimizer steps in one thread at a time: a ``step`` while another is running
    raises RuntimeError (separate optimizers on separate arrays run in parallel; the
    C work releases the GIL).
    """

    def __init__(self, params: Sequence[np.ndarray], *, lr: float, momentum: float = 0.0,
                 rule: str = "classical", dampening: float = 0.0, weight_decay: float = 0.0,
                 nonfinite: str = "propagate") -> None:
        if isinstance(params, np.ndarray) or not isinstance(params, (list, tuple)):
            raise TypeError("params must be a list or tuple of numpy arrays, got "
                            f"{type(params).__name__}")
        _core.check_hyperparameters(lr=lr, momentum=momentum, rule=rule, dampening=dampening,
                                    weight_decay=weight_decay, nonfinite=nonfinite)
        for i, p in enumerate(params):
            _core.check_array(p, name=f"params[{i}]")
        self.params: list[np.ndarray] = list(params)
        self.state: list[np.ndarray] = [np.zeros_like(p) for p in self.params]
        self._lr = float(lr)
        self._momentum = float(momentum)
        self.rule = rule
        self.dampening = float(dampening)
        self.weight_decay = float(weight_decay)
        self.nonfinite = nonfinite
        self.steps = 0
        self._stepping = threading.Lock()

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        _core.check_hyperparameters(lr=value, momentum=self._momentum)
        self._lr = float(value)

    @property
    def momentum(self) -> float:
        """The momentum coefficient of the next step."""
        return self._momentum

    @momentum.setter
    def momentum(self, value: float) -> None:
        _core.check_hyperparameters(lr=self._lr, momentum=value)
        self._momentum = float(value)

    def step(self, grads: Sequence[np.ndarray]) -> bool:
        """Applies one step with ``grads[i] = dE/dparams[i]``; True if applied."""
        if isinstance(grads, np.ndarray):
            raise TypeError("grads must be a sequence of numpy arrays, one per parameter, "
                            "not one array")
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"grads holds {len(grads)} arrays; this optimizer has "
                             f"{len(self.params)} parameters")
        if not self._stepping.acquire(blocking=False):
            raise RuntimeError("SGD.step is already running in another thread; one "
                               "optimizer steps in one thread at a time")
        try:
            applied = _core.momentum_step_many(
                self.params, grads, self.state, lr=self._lr, momentum=self._momentum,
                rule=self.rule, dampening=self.dampening, weight_decay=self.weight_decay,
                nonfinite=self.nonfinite)
        except (TypeError, ValueError) as exc:
            raise type(exc)(_our_names(str(exc))) from None
        finally:
            self._stepping.release()
        self.steps += applied
        return applied

    def zero_state(self) -> None:
        """Forgets the momentum history (state back to zero)."""
        for s in self.state:
            s.fill(0)

    def state_dict(self) -> dict[str, Any]:
        """A copy of everything needed to resume: hyperparameters, step count, state."""
        return {
            "lr": self._lr, "momentum": self._momentum, "rule": self.rule,
            "dampening": self.dampening, "weight_decay": self.weight_decay,
            "nonfinite": self.nonfinite, "steps": self.steps,
            "state": [s.copy() for s in self.state],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores a state_dict() of an optimizer over parameters of the same shapes."""
        keys = {"lr", "momentum", "rule", "dampening", "weight_decay", "nonfinite", "steps",
                "state"}
        missing = keys - set(state_dict)
        if missing:
            raise ValueError(f"state_dict lacks {sorted(missing)}")
        d = state_dict
        _core.check_hyperparameters(lr=d["lr"], momentum=d["momentum"], rule=d["rule"],
                                    dampening=d["dampening"], weight_decay=d["weight_decay"],
                                    nonfinite=d["nonfinite"])
        steps = d["steps"]
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
            raise ValueError(f"state_dict['steps'] must be a non-negative integer, got "
                             f"{steps!r}")
        saved = list(d["state"])
        if len(saved) != len(self.state):
            raise ValueError(f"state_dict holds {len(saved)} state arrays; this optimizer "
                             f"has {len(self.state)} parameters")
        saved = [np.asarray(theirs) for theirs in saved]
        for i, (mine, theirs) in enumerate(zip(self.state, saved)):
            if theirs.shape != mine.shape or theirs.dtype != mine.dtype:
                raise ValueError(f"state[{i}] is {theirs.dtype}{list(theirs.shape)}; "
                                 f"expected {mine.dtype}{list(mine.shape)}")
        # Everything is checked: only now does anything change.
        for mine, theirs in zip(self.state, saved):
            np.copyto(mine, theirs)
        self._lr, self._momentum = float(d["lr"]), float(d["momentum"])
        self.rule, self.nonfinite = d["rule"], d["nonfinite"]
        self.dampening, self.weight_decay = float(d["dampening"]), float(d["weight_decay"])
        self.steps = int(steps)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_stepping"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._stepping = threading.Lock()

    def __repr__(self) -> str:
        return (f"SGD({len(self.params)} arrays, lr={self._lr:g}, momentum={self._momentum:g}, "
                f"rule={self.rule!r})")

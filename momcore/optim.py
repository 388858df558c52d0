"""SGD with momentum over groups of parameter arrays, on the fused kernel.

:class:`SGD` owns the update: the rule, the hyperparameters of each parameter group,
one state buffer per parameter, the step count and the state_dict. Every ``step``
is one call into the compiled kernel, whatever the number of groups.
"""
from __future__ import annotations

import threading
from math import copysign
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from momcore import _core
from momcore import reference as _reference
from momcore.curvature import AUTO_LR, PerWeightMomentum, Tuner, check_auto_rule, is_auto
from momcore.registry import check_name

HYPERPARAMETERS = ("lr", "momentum", "rule", "dampening", "weight_decay")
"""The keys of a parameter group that the kernel reads, and their order."""
_NUMBERS = ("lr", "momentum", "dampening", "weight_decay")
_NAMES = ("params", "grads", "state")  # what the kernel's messages call the operands
BACKENDS = ("c", "numpy")


def checked_hyperparameters(hyper: Mapping[str, Any], where: str = "",
                            dtype: Any = None) -> dict[str, Any]:
    """hyper's five hyperparameters, checked by the kernel's own rules.

    Parameters
    ----------
    hyper : mapping
        Holds ``lr``, ``momentum``, ``rule``, ``dampening`` and ``weight_decay`` (other
        keys are ignored).
    where : str
        The start of every error message (e.g. "param_groups[1]: ").
    dtype : numpy dtype or None
        Check the values in arrays of this dtype (float32 refuses an lr beyond its range).

    Returns
    -------
    dict
        The five hyperparameters, numbers as floats.

    Raises
    ------
    TypeError, ValueError
        As :func:`momcore.momentum_step` would for these values.
    """
    values = {key: hyper[key] for key in HYPERPARAMETERS}
    try:
        _core.check_hyperparameters(**values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        if not where:
            raise
        raise type(exc)(f"{where}{exc}") from None
    for key in _NUMBERS:
        values[key] = float(values[key])
    return values


def _refuse_shared(params: list[np.ndarray]) -> None:
    """Raises unless the parameters' memory is disjoint: every step writes each of them
    in place, so an array given twice (or two views of one buffer) would make every
    step fail. Sorting by address keeps this O(n log n)."""
    spans = sorted((p.__array_interface__["data"][0], p.nbytes, i)
                   for i, p in enumerate(params) if p.nbytes)
    end, last = 0, -1
    for start, nbytes, i in spans:
        if start < end:
            first, second = sorted((last, i))
            raise ValueError(f"params[{first}] and params[{second}] share memory; an optimizer "
                             f"updates each array in place, so each may appear once")
        if start + nbytes > end:
            end, last = start + nbytes, i


def _same_float(a: Any, b: float) -> bool:
    """Whether a is the float b, bit for bit (0.0 and -0.0 differ)."""
    return type(a) is float and a == b and (a != 0.0 or copysign(1.0, a) == copysign(1.0, b))


class ParamGroup(dict):
    """One parameter group: its arrays under ``"params"`` and its hyperparameters
    (``lr``, ``momentum``, ``rule``, ``dampening``, ``weight_decay``).

    A plain dict to read, as in PyTorch; assigning ``lr``, ``momentum``,
    ``dampening`` or ``weight_decay`` checks the value first (a bad one raises and
    changes nothing). ``params`` and ``rule`` are fixed: the state's meaning
    depends on the rule, so a new rule takes a new optimizer. Other keys are the
    caller's own and are kept as they are.
    """

    def __setitem__(self, key: str, value: Any) -> None:
        if key in ("params", "rule"):
            raise ValueError(f"the {key!r} of a parameter group is fixed once the optimizer "
                             f"is made; make a new SGD to change it")
        if key in _NUMBERS:
            if type(value) is float and _same_float(self.get(key), value):
                return  # the value in force: nothing to check, nothing changes
            value = checked_hyperparameters({**self, key: value})[key]
        super().__setitem__(key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Sets each key as ``group[key] = value`` does: checked, in order.

        Parameters
        ----------
        *args, **kwargs
            As for ``dict.update``.

        Raises
        ------
        ValueError, TypeError
            For a refused value (the keys before it are set) or a fixed key.
        """
        for key, value in dict(*args, **kwargs).items():
            if not (type(value) is float and _same_float(self.get(key), value)):
                self[key] = value  # (a value in force would change nothing)

    def setdefault(self, key: str, default: Any = None) -> Any:
        """``group[key]``, set to ``default`` first (checked) when the key is absent.

        Parameters
        ----------
        key : str
            The key.
        default : object
            The value to set when ``key`` is absent.

        Returns
        -------
        object
            The key's value.
        """
        if key not in self:
            self[key] = default
        return self[key]

    def __reduce__(self) -> tuple:
        return (_group_from_dict, (dict(self),))


def _group_from_dict(d: dict) -> ParamGroup:
    group = ParamGroup()
    dict.update(group, d)
    return group


class SGD:
    """Gradient descent with a momentum term for groups of numpy arrays.

    Holds one state buffer per parameter (zeros of its shape and dtype) and updates
    every parameter in place with one C call per :meth:`step`.

    Parameters
    ----------
    params : sequence of numpy.ndarray, or sequence of dict
        The arrays to train, updated in place (float32/float64, or float16/bfloat16
        storage computed in float32; C-contiguous,
        writable, not overlapping); or parameter groups, as in PyTorch: dicts with
        the group's arrays under ``"params"`` and any of ``lr``, ``momentum``,
        ``dampening`` and ``weight_decay`` to override the defaults below.
    lr, momentum, rule, dampening, weight_decay
        The defaults of every group; as in :func:`momcore.momentum_step`.
        ``dampening`` is taken only by rules that use it (``velocity``).
        ``momentum="auto"``: a :class:`momcore.curvature.Tuner` (:attr:`tuner`) sets
        lr and momentum before every step from the gradients it is given (rules in
        ``momcore.curvature.AUTO_RULES``); ``lr`` is then only the first step's rate
        (None: ``momcore.curvature.AUTO_LR``). Otherwise ``lr`` is required.
    nonfinite : {"propagate", "raise", "skip"}
        What a NaN or inf in any gradient does; with "raise" and "skip" every
        gradient of every group is checked before anything is written.
    backend : {"c", "numpy"}
        "numpy" steps with :mod:`momcore.reference` (the ground truth, slower).
    per_weight : PerWeightMomentum or None
        With ``rule="qian"``: how curvatures observed by :meth:`observe_curvature`
        become one momentum per weight (None: ``PerWeightMomentum()``). Until the
        first observation every weight uses its group's ``momentum``.

    Raises
    ------
    TypeError, ValueError
        If an array or a hyperparameter is refused as by :func:`momcore.momentum_step`,
        a group is malformed, or two parameters share memory.

    Attributes
    ----------
    param_groups : list of ParamGroup
        Settable per group between steps: ``opt.param_groups[1]["lr"] = 0.01``.
    params, state : list of numpy.ndarray
        Every parameter and its state buffer, group after group.
    steps : int
        Steps applied (a skipped step does not count).
    tuner : momcore.curvature.Tuner or None
        With ``momentum="auto"``: the tuner that sets lr and momentum in :meth:`step`.
    momenta, curvature : list of numpy.ndarray or None
        With ``rule="qian"``: each parameter's per-weight momentum (read by the kernel
        in the step's pass) and the running curvature estimate behind it; None for
        the other rules.

    Notes
    -----
    ``opt.lr`` and ``opt.momentum`` read the value all groups share and set it in
    every group (schedules). One optimizer steps in one thread at a time: a
    ``step`` while another is running raises RuntimeError.
    """

    def __init__(self, params: Sequence[np.ndarray] | Sequence[Mapping[str, Any]], *,
                 lr: float | None = None, momentum: float | str = 0.0,
                 rule: str = "classical",
                 dampening: float = 0.0, weight_decay: float = 0.0,
                 nonfinite: str = "propagate", backend: str = "c",
                 per_weight: PerWeightMomentum | None = None) -> None:
        if isinstance(params, np.ndarray) or not isinstance(params, (list, tuple)):
            raise TypeError("params must be a list or tuple of numpy arrays or of parameter "
                            f"groups (dicts), got {type(params).__name__}")
        auto = is_auto(momentum)
        if auto:
            check_auto_rule(rule)
            lr, momentum = AUTO_LR if lr is None else lr, 0.0
        elif lr is None:
            raise TypeError("SGD needs lr (optional only with momentum='auto')")
        self.defaults: dict[str, Any] = checked_hyperparameters(
            dict(lr=lr, momentum=momentum, rule=rule, dampening=dampening,
                 weight_decay=weight_decay))
        check_name("nonfinite", nonfinite)
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        groups = list(params)
        if groups and all(isinstance(g, Mapping) for g in groups):
            specs = groups
        elif any(isinstance(g, Mapping) for g in groups):
            raise TypeError("params must hold either arrays or parameter groups (dicts), "
                            "not both")
        else:
            specs = [{"params": groups}]
        self.param_groups: list[ParamGroup] = []
        self.params: list[np.ndarray] = []
        for i, spec in enumerate(specs):
            self.param_groups.append(self._group(spec, i if len(specs) > 1 else None))
        _refuse_shared(self.params)
        self.state: list[np.ndarray] = [np.zeros_like(p) for p in self.params]
        self.momenta: list[np.ndarray] | None = None
        self.curvature: list[np.ndarray] | None = None
        self.curvature_observations = 0
        if per_weight is not None and not isinstance(per_weight, PerWeightMomentum):
            raise TypeError(f"per_weight must be a momcore.curvature.PerWeightMomentum, got "
                            f"{type(per_weight).__name__}")
        if any(g["rule"] == "qian" for g in self.param_groups):
            if len({g["rule"] for g in self.param_groups}) > 1:
                raise ValueError("rule 'qian' is per optimizer: every group must use it")
            self.per_weight = per_weight or PerWeightMomentum()
            self.momenta = [np.full_like(p, g["momentum"]) for g in self.param_groups
                            for p in g["params"]]
            self.curvature = [np.zeros(p.shape, np.float64) for p in self.params]
        elif per_weight is not None:
            raise ValueError("per_weight is taken only by rule 'qian'")
        self._nonfinite = nonfinite
        self.backend = backend
        self.steps = 0
        self._stepping = threading.Lock()
        self.tuner: Tuner | None = None
        if auto:
            for k, g in enumerate(self.param_groups):
                check_auto_rule(g["rule"], f"param_groups[{k}]: ")
            self.tuner = Tuner(self)

    def _group(self, spec: Mapping[str, Any], index: int | None) -> ParamGroup:
        where = "" if index is None else f"param_groups[{index}]: "
        if "params" not in spec:
            raise ValueError(f"{where}a parameter group needs its arrays under 'params'")
        arrays = spec["params"]
        if isinstance(arrays, np.ndarray):
            arrays = [arrays]
        if not isinstance(arrays, (list, tuple)):
            raise TypeError(f"{where}'params' must be a list of numpy arrays, got "
                            f"{type(arrays).__name__}")
        for p in arrays:
            _core.check_array(p, name=f"params[{len(self.params)}]")
            self.params.append(p)
        hyper = checked_hyperparameters({**self.defaults, **{k: v for k, v in spec.items()
                                                    if k in HYPERPARAMETERS}}, where)
        extra = {k: v for k, v in spec.items() if k not in HYPERPARAMETERS and k != "params"}
        return _group_from_dict({"params": list(arrays), **hyper, **extra})

    def add_param_group(self, group: Mapping[str, Any]) -> None:
        """Adds a parameter group with zero state, as PyTorch's ``Optimizer.add_param_group``.

        Parameters
        ----------
        group : dict
            The group's arrays under ``"params"`` and any hyperparameters that differ from
            :attr:`defaults`.

        Raises
        ------
        TypeError, ValueError
            If an array or a hyperparameter is refused, or an array shares memory with
            another parameter; nothing changes then.
        """
        if not isinstance(group, Mapping):
            raise TypeError(f"a parameter group is a dict, got {type(group).__name__}")
        count = len(self.params)
        try:
            made = self._group(group, len(self.param_groups))
            _refuse_shared(self.params)
            if self.tuner is not None:
                check_auto_rule(made["rule"], f"param_groups[{len(self.param_groups)}]: ")
        except BaseException:
            del self.params[count:]
            raise
        self.param_groups.append(made)
        self.state.extend(np.zeros_like(p) for p in self.params[count:])
        if self.tuner is not None:  # its window spans every weight: it starts again
            self.tuner = Tuner(self, beta=self.tuner.beta, window=self.tuner.window,
                               floor=self.tuner.floor, stochastic=self.tuner.stochastic)

    # ---- hyperparameters shared by every group (schedules) -----------------------

    def _shared(self, key: str) -> Any:
        groups = self.param_groups
        if len(groups) == 1:
            return groups[0][key]
        values = {g[key] for g in groups}
        if len(values) > 1:
            raise ValueError(f"the parameter groups have different {key} values; read "
                             f"param_groups[i][{key!r}]")
        return values.pop() if values else self.defaults[key]

    def _in_force(self, key: str, value: Any) -> bool:
        """Whether the hyperparameter key is the float value, bit for bit, in every
        group and in the defaults: setting it would change nothing."""
        if type(value) is not float or not _same_float(self.defaults[key], value):
            return False
        for g in self.param_groups:
            if not _same_float(g[key], value):
                return False
        return True

    def _set_everywhere(self, key: str, value: Any) -> None:
        if self._in_force(key, value):
            return  # in force everywhere already (a schedule's value, epoch after epoch)
        checked = [checked_hyperparameters({**g, key: value})[key] for g in self.param_groups]
        checked.append(checked_hyperparameters({**self.defaults, key: value})[key])
        for g in self.param_groups:
            dict.__setitem__(g, key, checked[0])
        self.defaults[key] = checked[0]

    @property
    def lr(self) -> float:
        """The learning rate of the next step (the one all groups share)."""
        return self._shared("lr")

    @lr.setter
    def lr(self, value: float) -> None:
        self._set_everywhere("lr", value)

    @property
    def momentum(self) -> float:
        """The momentum coefficient of the next step (the one all groups share)."""
        return self._shared("momentum")

    @momentum.setter
    def momentum(self, value: float) -> None:
        self._set_everywhere("momentum", value)

    @property
    def nonfinite(self) -> str:
        """What a NaN or inf in a gradient does: "propagate", "raise" or "skip"."""
        return self._nonfinite

    @nonfinite.setter
    def nonfinite(self, value: str) -> None:
        self._nonfinite = check_name("nonfinite", value)

    @property
    def rule(self) -> str:
        """The update rule (the one all groups share)."""
        return self._shared("rule")

    @property
    def dampening(self) -> float:
        """The dampening of the next step (the one all groups share)."""
        return self._shared("dampening")

    @property
    def weight_decay(self) -> float:
        """The weight decay of the next step (the one all groups share)."""
        return self._shared("weight_decay")

    def hyperparameters(self, group: int = 0) -> dict[str, Any]:
        """The hyperparameters of one group as keywords of momentum_step.

        Parameters
        ----------
        group : int
            Index into :attr:`param_groups` (default 0).

        Returns
        -------
        dict
            ``lr``, ``momentum``, ``rule``, ``dampening`` and ``weight_decay``.
        """
        g = self.param_groups[group]
        return {key: g[key] for key in HYPERPARAMETERS}

    @property
    def folds(self) -> bool:
        """Whether the update can be folded into a weight-gradient product
        (``state = momentum*state - lr*grad`` as gemm's beta): one group, the
        classical rule, no weight decay, non-finite values propagated. The MLP's
        compiled backward pass then needs no gradient buffer."""
        return (len(self.param_groups) == 1 and self.nonfinite == "propagate"
                and self.param_groups[0]["rule"] == "classical"
                and self.param_groups[0]["weight_decay"] == 0.0)

    # ---- the step ------------------------------------------------------------------

    def step(self, grads: Iterable[np.ndarray]) -> bool:
        """Applies one step with ``grads[i] = dE/dparams[i]``.

        Parameters
        ----------
        grads : sequence of numpy.ndarray
            One gradient per parameter, in the order of :attr:`params`, each of its
            parameter's shape and dtype; only read.

        Returns
        -------
        bool
            True if applied; False when ``nonfinite="skip"`` skipped it (nothing written, not
            counted in :attr:`steps`).

        Raises
        ------
        TypeError
            If ``grads`` is one array rather than a sequence, or a gradient is refused.
        ValueError
            If ``grads`` does not hold one array per parameter, or a gradient's shape or dtype
            differs from its parameter's.
        FloatingPointError
            With ``nonfinite="raise"``, when the step would write a NaN or inf (nothing
            written; with ``momentum="auto"`` the tuner and the lr and momentum it set stay
            as they were, as for any other error of the step).
        RuntimeError
            If another thread is stepping this optimizer.

        Examples
        --------
        >>> import numpy as np, momcore
        >>> w = np.ones(4)
        >>> opt = momcore.SGD([w], lr=0.1, momentum=0.9)
        >>> opt.step([np.ones(4)]), opt.step([np.ones(4)])
        (True, True)
        >>> w                                  # 1 - 0.1, then - (0.9*0.1 + 0.1)
        array([0.71, 0.71, 0.71, 0.71])
        """
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
            if self.tuner is None:
                applied = self._apply(grads)
            else:
                applied = self._tuned_step(grads)
        finally:
            self._stepping.release()
        self.steps += applied
        return applied

    def _tuned_step(self, grads: list[np.ndarray]) -> bool:
        """momentum="auto": the tuner observes the gradient the step descends
        (g' = g + wd*w) and sets lr and momentum, then the step; a step that raises
        (nonfinite="raise", a refused gradient) leaves the tuner and the
        hyperparameters as they were."""
        point = self.tuner._undo_point()
        pairs = [(g["lr"], g["momentum"]) for g in (self.defaults, *self.param_groups)]
        try:
            decays = [g["weight_decay"] for g in self.param_groups for _ in g["params"]]
            self.tuner.observe([g + d * p if d else g
                                for g, d, p in zip(grads, decays, self.params)])
            return self._apply(grads)
        except BaseException:
            self.tuner._undo(point)
            for group, (lr, momentum) in zip((self.defaults, *self.param_groups), pairs):
                dict.__setitem__(group, "lr", lr)
                dict.__setitem__(group, "momentum", momentum)
            raise

    def observe_curvature(self, diagonals: Iterable[np.ndarray]) -> None:
        """Updates the per-weight momenta (``rule="qian"``) from one observation of the
        curvature: ``diagonals[i]`` holds d^2E/dw^2 (or the Gauss-Newton diagonal,
        :meth:`momcore.MLP.curvature`) for every element of ``params[i]``, >= 0.
        The estimate is smoothed over observations and the momenta follow
        :class:`momcore.curvature.PerWeightMomentum` with each group's current lr.
        Cost: a few passes over the parameters in numpy.

        Parameters
        ----------
        diagonals : sequence of numpy.ndarray
            One curvature diagonal per parameter, of its shape, every value ``>= 0``.

        Raises
        ------
        ValueError
            If the rule is not ``qian``, or ``diagonals`` does not hold one array per
            parameter of its shape.
        """
        if self.curvature is None:
            raise ValueError(f"observe_curvature needs rule 'qian'; this optimizer uses "
                             f"{self.param_groups[0]['rule']!r}")
        diagonals = [np.asarray(d) for d in diagonals]
        if len(diagonals) != len(self.params) or any(
                d.shape != p.shape for d, p in zip(diagonals, self.params)):
            raise ValueError("diagonals must hold one array per parameter, of its shape")
        self.curvature_observations += 1
        self.per_weight.update_estimates(self.curvature, diagonals,
                                         self.curvature_observations)
        self._refresh_momenta()

    def _refresh_momenta(self) -> None:
        lrs = [g["lr"] for g in self.param_groups for _ in g["params"]]
        self.per_weight.momenta(self.momenta, self.curvature, lrs,
                                self.curvature_observations)
        self._momenta_lrs = [g["lr"] for g in self.param_groups]

    def _apply(self, grads: list[np.ndarray]) -> bool:
        if (self.momenta is not None and self.curvature_observations
                and [g["lr"] for g in self.param_groups] != self._momenta_lrs):
            self._refresh_momenta()  # a schedule changed an lr, and p* depends on it
        groups, start = [], 0
        for g in self.param_groups:
            stop = start + len(g["params"])
            group = (self.params[start:stop], grads[start:stop], self.state[start:stop],
                     self.hyperparameters(len(groups)))
            if self.momenta is not None and self.curvature_observations:
                # before the first observation the group's momentum serves every weight
                group += (self.momenta[start:stop],)
            groups.append(group)
            start = stop
        if self.backend == "c":
            return _core.step_groups(groups, nonfinite=self.nonfinite, names=_NAMES)
        return _reference.step_groups(groups, nonfinite=self.nonfinite, names=_NAMES)

    def zero_state(self) -> None:
        """Forgets the momentum history (state back to zero)."""
        for s in self.state:
            s.fill(0)

    # ---- state_dict ----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """A copy of everything needed to resume.

        Returns
        -------
        dict
            The defaults, each group's hyperparameters (``"param_groups"``, arrays given as
            indices into :attr:`params`), the non-finite policy, the step count and the state
            (copies).
        """
        groups, start = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            groups.append({**{k: v for k, v in g.items() if k != "params"},
                           "params": list(range(start, start + n))})
            start += n
        extra = {} if self.momenta is None else {
            "momenta": [p.copy() for p in self.momenta],
            "curvature": [k.copy() for k in self.curvature],
            "curvature_observations": self.curvature_observations}
        if self.tuner is not None:
            extra["tuner"] = self.tuner.state_dict()
        return {**self.defaults, "nonfinite": self.nonfinite, "steps": self.steps,
                "state": [s.copy() for s in self.state], "param_groups": groups, **extra}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restores a :meth:`state_dict`.

        A dict without ``"param_groups"`` (one group, the earlier format) sets every group
        to its hyperparameters. Everything is checked before anything changes.

        Parameters
        ----------
        state_dict : dict
            From :meth:`state_dict` of an optimizer over parameters of the same shapes and
            groups.

        Raises
        ------
        ValueError, TypeError
            If the dict does not match this optimizer (shapes, dtypes, groups) or holds a
            refused value; nothing changes then.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        keys = {"lr", "momentum", "rule", "dampening", "weight_decay", "nonfinite", "steps",
                "state"}
        missing = keys - set(state_dict)
        if missing:
            raise ValueError(f"state_dict lacks {sorted(missing)}")
        d = state_dict
        defaults = checked_hyperparameters(d)
        check_name("nonfinite", d["nonfinite"])
        steps = d["steps"]
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
            raise ValueError(f"state_dict['steps'] must be a non-negative integer, got "
                             f"{steps!r}")
        saved = d["state"]
        if not isinstance(saved, (list, tuple)):
            raise TypeError(f"state_dict['state'] must be a list of arrays, got "
                            f"{type(saved).__name__}")
        if len(saved) != len(self.state):
            raise ValueError(f"state_dict holds {len(saved)} state arrays; this optimizer "
                             f"has {len(self.state)} parameters")
        saved = [np.asarray(theirs) for theirs in saved]
        for i, (mine, theirs) in enumerate(zip(self.state, saved)):
            if theirs.shape != mine.shape or theirs.dtype != mine.dtype:
                raise ValueError(f"state[{i}] is {theirs.dtype}{list(theirs.shape)}; "
                                 f"expected {mine.dtype}{list(mine.shape)}")
        groups = self._loaded_groups(d.get("param_groups"), defaults)
        per_weight = None
        if self.momenta is not None and "momenta" in d:
            per_weight = ([np.asarray(a) for a in d["momenta"]],
                          [np.asarray(a) for a in d["curvature"]],
                          int(d["curvature_observations"]))
            for mine, theirs in zip(self.momenta + self.curvature,
                                    per_weight[0] + per_weight[1]):
                if theirs.shape != mine.shape:
                    raise ValueError("state_dict['momenta'] or ['curvature'] does not match "
                                     "the parameters")
        if self.tuner is not None and "tuner" in d:
            self.tuner.check_state_dict(d["tuner"])
        # Everything is checked: only now does anything change.
        if self.tuner is not None and "tuner" in d:
            self.tuner.load_state_dict(d["tuner"])
        if per_weight is not None:
            for mine, theirs in zip(self.momenta + self.curvature,
                                    per_weight[0] + per_weight[1]):
                np.copyto(mine, theirs)
            self.curvature_observations = per_weight[2]
            self._momenta_lrs = [g["lr"] for g in groups]
        for mine, theirs in zip(self.state, saved):
            np.copyto(mine, theirs)
        for mine, theirs in zip(self.param_groups, groups):
            dict.update(mine, theirs)
        self.defaults = defaults
        self._nonfinite = d["nonfinite"]
        self.steps = int(steps)

    def _loaded_groups(self, saved: Any, defaults: dict[str, Any]) -> list[dict[str, Any]]:
        """Each group's new hyperparameters from a state_dict's "param_groups"."""
        if saved is None:
            return [dict(defaults) for _ in self.param_groups]
        if not isinstance(saved, (list, tuple)) or len(saved) != len(self.param_groups):
            raise ValueError(f"state_dict['param_groups'] must list {len(self.param_groups)} "
                             f"groups, got {saved!r:.80}")
        groups, start = [], 0
        for i, (mine, theirs) in enumerate(zip(self.param_groups, saved)):
            n = len(mine["params"])
            if not isinstance(theirs, Mapping) or list(theirs.get("params", ())) != list(
                    range(start, start + n)):
                raise ValueError(f"state_dict['param_groups'][{i}] does not hold the "
                                 f"parameters {start}..{start + n - 1} of this optimizer")
            start += n
            hyper = checked_hyperparameters({**defaults, **{k: v for k, v in theirs.items()
                                                   if k in HYPERPARAMETERS}},
                                   f"state_dict['param_groups'][{i}]: ")
            extra = {k: v for k, v in theirs.items() if k not in HYPERPARAMETERS
                     and k != "params"}
            groups.append({**hyper, **extra})
        return groups

    # ---- copies and pickling -------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_stepping"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._stepping = threading.Lock()

    def __repr__(self) -> str:
        groups = "" if len(self.param_groups) == 1 else f", {len(self.param_groups)} groups"
        d = self.param_groups[0] if len(self.param_groups) == 1 else self.defaults
        return (f"SGD({len(self.params)} arrays{groups}, lr={d['lr']:g}, "
                f"momentum={d['momentum']:g}, rule={d['rule']!r})")

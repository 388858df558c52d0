"""PyTorch's SGD on momcore's kernel: :class:`SGD`, a ``torch.optim.Optimizer``.

With its defaults it steps as ``torch.optim.SGD`` does (the velocity form with
dampening, PyTorch's Nesterov, the momentum buffer that starts at the first
gradient, ``maximize``) and keeps ``torch.optim.SGD``'s state_dict format, so the
LR schedulers, checkpoints and step hooks of PyTorch work on it unchanged. ``rule=``
opens momcore's other update rules and ``nonfinite=`` its non-finite guard.

Every step is one call into the compiled kernel for all parameters of all groups,
in place on the tensors' memory: CPU float32/float64 tensors only, no copies.
"""
from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Iterable, Mapping
from itertools import chain, compress, repeat
from operator import attrgetter, is_not, itemgetter
from typing import Any

import numpy as np

try:
    import torch
    from torch.optim.optimizer import (
        Optimizer,
        _global_optimizer_post_hooks,
        _global_optimizer_pre_hooks,
    )
except ImportError as exc:  # pragma: no cover - exercised without torch only
    raise ImportError("momcore.torch needs PyTorch: pip install 'momcore[torch]'") from exc

from momcore import _core
from momcore.curvature import Tuner, check_auto_rule, is_auto
from momcore.registry import RULES, check_name

__all__ = ["SGD"]

_DTYPES = {torch.float32: (np.float32, ctypes.c_float),
           torch.float64: (np.float64, ctypes.c_double),
           torch.float16: (np.float16, ctypes.c_uint16)}
try:  # numpy has no bfloat16 of its own: ml_dtypes gives one (optional)
    from ml_dtypes import bfloat16 as _np_bfloat16
except ImportError:  # pragma: no cover - exercised without ml_dtypes
    _np_bfloat16 = None
else:
    _DTYPES[torch.bfloat16] = (_np_bfloat16, ctypes.c_uint16)


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A numpy array over t's memory (no copy); bfloat16 through its bits."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_np_bfloat16)
    return t.numpy()
_NAMES = ("params", "grads", "momentum_buffers")  # the kernel's words, if it ever raises
_GRAD = attrgetter("grad")
_GROUP_VALUES = itemgetter("lr", "momentum", "dampening", "weight_decay", "nesterov",
                           "maximize", "rule")


def _number(x: Any) -> Any:
    """A hyperparameter as the kernel takes it: tensors (torch allows a 0-d lr) as
    Python numbers."""
    return x.item() if isinstance(x, torch.Tensor) else x


def _rule(group: Mapping[str, Any]) -> str:
    """The momcore rule of a group: its ``rule``, or torch's (``velocity``, or
    ``nesterov_velocity`` with ``nesterov``) when that is None."""
    rule = group["rule"]
    if rule is not None:
        return rule
    return "nesterov_velocity" if group["nesterov"] else "velocity"


def _hyper(group: Mapping[str, Any]) -> dict[str, Any]:
    """The five hyperparameters of momcore's kernel for one group's step. Without
    momentum a step is plain gradient descent, whatever the dampening, as in torch."""
    lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
    if type(lr) is not float:  # noqa: E721  (the common case stays cheap)
        lr = _number(lr)
    if type(momentum) is not float:  # noqa: E721
        momentum = _number(momentum)
    if type(weight_decay) is not float:  # noqa: E721
        weight_decay = _number(weight_decay)
    rule = group["rule"] or ("nesterov_velocity" if group["nesterov"] else "velocity")
    return {"lr": lr, "momentum": momentum, "rule": rule,
            "dampening": _number(group["dampening"]) if momentum != 0 else 0.0,
            "weight_decay": weight_decay}


def _label(group: Mapping[str, Any], k: int, i: int) -> str:
    """How messages call parameter i of group k (with its name when the group has
    names, as torch 2.x allows)."""
    names = group.get("param_names")
    name = f" ({names[i]!r})" if names is not None and i < len(names) else ""
    return f"param_groups[{k}]['params'][{i}]{name}"


def _check_tensor(t: torch.Tensor, what: str) -> None:
    """Raises unless momcore's kernel can step ``t`` in place: a dense, contiguous
    float32/float64 tensor on the CPU. The message says what to use instead."""
    if t.device.type != "cpu":
        raise TypeError(f"{what} is on device {str(t.device)!r}; momcore.torch.SGD steps "
                        f"CPU tensors in place. For {t.device.type} tensors use "
                        f"torch.optim.SGD (fused=True where the device has it)")
    if t.layout != torch.strided:
        raise TypeError(f"{what} is sparse ({t.layout}); momcore steps dense tensors. Use "
                        f"torch.optim.SGD, which takes sparse gradients, or "
                        f"torch.optim.SparseAdam (or an nn.Embedding with sparse=False)")
    if t.is_complex():
        raise TypeError(f"{what} is complex ({t.dtype}); momcore's kernel steps real "
                        f"tensors. Use torch.optim.SGD, or train torch.view_as_real "
                        f"of it as a real parameter")
    if t.dtype == torch.bfloat16 and _np_bfloat16 is None:
        raise TypeError(f"{what} is bfloat16, which numpy sees only through the ml_dtypes "
                        f"package: pip install ml_dtypes (momcore never converts "
                        f"parameters)")
    if t.dtype not in _DTYPES:
        raise TypeError(f"{what} has dtype {t.dtype}; momcore steps float32, float64, "
                        f"float16 and bfloat16")
    if not t.is_contiguous():
        raise ValueError(f"{what} is not contiguous (strides {t.stride()}); momcore steps "
                         f"in place and never copies: make it contiguous (with "
                         f"torch.no_grad(): p.data = p.data.contiguous()) before stepping")
    if t.is_conj() or t.is_neg():
        raise ValueError(f"{what} has a lazy conjugate or negative bit; call "
                         f"resolve_conj()/resolve_neg() on it first")


def _grad_viewer(p: torch.Tensor, label: str) -> Callable[[torch.Tensor, int], np.ndarray]:
    """A maker of numpy arrays over the memory of p's gradients (given the gradient and
    its data pointer) that hold no reference to the gradient: each is valid only while
    its tensor is alive and keeps its memory, which :class:`_Plan` checks before every
    use. About 0.3 us a view (``Tensor.numpy()`` takes 0.5 us and keeps the tensor
    alive)."""
    dtype, ctype = _DTYPES[p.dtype]
    dtype, size, torch_dtype = np.dtype(dtype), p.numel(), p.dtype
    at = (ctype * size).from_address
    frombuffer, strided = np.frombuffer, torch.strided

    def view(g: torch.Tensor, ptr: int) -> np.ndarray:
        # torch gives a gradient its parameter's dtype, device and size, but not
        # always its layout (sparse, or assigned with other strides).
        if g.layout is not strided or not g.is_contiguous() or g.numel() != size \
                or g.dtype != torch_dtype:
            _check_tensor(g, f"{label}.grad")
            raise ValueError(f"{label}.grad is {g.dtype}{list(g.shape)}; expected the "
                             f"parameter's dtype and size")
        return frombuffer(at(ptr), dtype) if size else np.empty(0, dtype)

    return view


def _check_disjoint(extents: list[tuple[int, int, str]]) -> None:
    """Raises if two written tensors (parameters, momentum buffers) share memory;
    extents are (first byte, one past the last, label)."""
    extents = sorted(e for e in extents if e[1] > e[0])
    for (lo_a, hi_a, a), (lo_b, hi_b, b) in zip(extents, extents[1:]):
        if lo_b < hi_a:
            raise ValueError(f"{a} and {b} share memory; momcore writes parameters and "
                             f"momentum buffers in place, so they must not overlap")


class _Plan:
    """The kernel's operands for a run of steps: flat numpy views of the parameters,
    gradients and momentum buffers, sorted into the groups of one
    ``_core.step_groups`` call. Built when the parameters or their state change;
    checked, and its gradient views renewed, every step.

    Parameters and buffers are seen through ``.numpy()`` views of tensors the
    optimizer keeps alive anyway. Gradients are seen through borrowed views (no
    reference): a ``zero_grad`` elsewhere (``model.zero_grad()``) frees them at once,
    as with torch's optimizers, and a view is renewed whenever its gradient's memory
    is not where it was. Each step checks the groups (their lists of parameters, which
    have momentum or maximize), the state (its per-parameter dicts), and per parameter
    the data pointer and size of the parameter, its gradient and the buffer its state
    holds now: what ``p.data = ...``, a new gradient, ``load_state_dict``,
    ``state.clear()``, a buffer put in the state or ``share_memory_()`` change. This
    costs about 0.3 us a parameter; a new gradient tensor about 0.5 us more.
    """

    def __init__(self, opt: SGD, flags: list[tuple]) -> None:
        self.new: list[dict] = []                # states whose buffer this plan made
        try:
            self._build(opt, flags)
        except BaseException:
            self.forget_new_buffers()
            raise

    def _build(self, opt: SGD, flags: list[tuple]) -> None:
        self.flags = flags
        self.state = opt.state
        self.present: list[bool] = []            # which of them have a gradient
        self.slots: list[tuple[list, int, Callable]] = []  # per gradient: where its
        # view goes and what makes it
        self.buffers: list[torch.Tensor] = []    # momentum buffers in use
        self.buffer_states: list[dict] = []      # the state dicts holding them
        self.stepped: list[torch.Tensor] = []    # parameters stepped (version counters)
        self.negated: list[list[np.ndarray]] = []  # maximize: [grad view, scratch]
        self.zeroed: list[np.ndarray] = []       # momentum 0: a scratch state
        self.operands: list[tuple[int, bool, list, list, list]] = []
        extents: list[tuple[int, int, str]] = []
        flat: list[torch.Tensor] = []  # every parameter, group after group
        for k, group in enumerate(opt.param_groups):
            _, _, no_momentum, maximize = flags[k]
            first_step = (_rule(group) == "velocity" and not no_momentum
                          and _number(group["dampening"]) != 0)
            runs: dict[bool, tuple[list, list, list]] = {}
            for i, p in enumerate(group["params"]):
                g = p.grad
                flat.append(p)
                self.present.append(g is not None)
                if g is None:
                    continue
                label = _label(group, k, i)
                _check_tensor(p, label)
                _check_tensor(g, f"{label}.grad")
                w = _numpy(p.detach()).reshape(-1)
                new = False
                if no_momentum:
                    s = np.zeros_like(w)
                    self.zeroed.append(s)
                else:
                    buffer, new = self._buffer(opt.state[p], p, label)
                    s = _numpy(buffer).reshape(-1)
                    extents.append((buffer.data_ptr(), buffer.data_ptr() + s.nbytes,
                                    f"{label}'s momentum_buffer"))
                extents.append((p.data_ptr(), p.data_ptr() + w.nbytes, label))
                self.stepped.append(p)
                # torch starts a buffer at the first g' (no dampening that step): from a
                # zero state, velocity with dampening 0 computes exactly that.
                ws, gs, ss = runs.setdefault(new and first_step, ([], [], []))
                if maximize:
                    scratch = np.empty_like(w)
                    self.negated.append([None, scratch])
                    self.slots.append((self.negated[-1], 0, _grad_viewer(p, label)))
                    gs.append(scratch)
                else:
                    self.slots.append((gs, len(gs), _grad_viewer(p, label)))
                    gs.append(None)
                ws.append(w), ss.append(s)
            for first, (ws, gs, ss) in runs.items():
                self.operands.append((k, first, ws, gs, ss))
        _check_disjoint(extents)
        self.all_present = all(self.present)
        self.param_extents = [(p.data_ptr(), p.numel()) for p in flat]
        self.state_ids = list(map(id, opt.state.values()))
        self.buffer_ptrs = [b.data_ptr() for b in self.buffers]  # held: no address reuse
        self.grad_ptrs: list[int] = []

    def _buffer(self, state: dict, p: torch.Tensor, label: str) -> tuple[torch.Tensor, bool]:
        """p's momentum buffer, made (zeros) if it has none yet; True if made."""
        buffer = state.get("momentum_buffer")
        if buffer is None:
            buffer = torch.zeros_like(p, memory_format=torch.contiguous_format)
            state["momentum_buffer"] = buffer
            self.new.append(state)
            made = True
        else:
            if not isinstance(buffer, torch.Tensor) or buffer.shape != p.shape \
                    or buffer.dtype != p.dtype:
                what = (f"{buffer.dtype}{list(buffer.shape)}" if isinstance(buffer, torch.Tensor)
                        else type(buffer).__name__)
                raise ValueError(f"{label}'s momentum_buffer is {what}; expected a tensor "
                                 f"{p.dtype}{list(p.shape)} like the parameter")
            if not buffer.is_contiguous() or buffer.requires_grad:
                # A loaded checkpoint may hold any layout: the buffer is ours to replace.
                buffer = buffer.detach().contiguous(memory_format=torch.contiguous_format)
                state["momentum_buffer"] = buffer
            _check_tensor(buffer, f"{label}'s momentum_buffer")
            made = False
        self.buffers.append(buffer)
        self.buffer_states.append(state)
        return buffer, made

    def fits(self, opt: SGD, flags: list[tuple]) -> list[torch.Tensor] | None:
        """The gradients of the parameters that have one, with the views renewed where
        a gradient's memory moved; None if the plan no longer fits the optimizer."""
        if flags != self.flags or opt.state is not self.state:
            return None
        groups = opt.param_groups
        flat = (groups[0]["params"] if len(groups) == 1
                else list(chain.from_iterable(g["params"] for g in groups)))
        if [(p.data_ptr(), p.numel()) for p in flat] != self.param_extents \
                or list(map(id, opt.state.values())) != self.state_ids:
            return None
        try:
            # The buffer each state holds now: a buffer replaced, taken out or moved
            # in memory shows as another pointer (or a KeyError, an AttributeError).
            if [s["momentum_buffer"].data_ptr() for s in self.buffer_states] \
                    != self.buffer_ptrs:
                return None
            if self.all_present:
                grads = list(map(_GRAD, flat))
                ptrs = [g.data_ptr() for g in grads]  # AttributeError: a grad is None
            else:
                grads = list(map(_GRAD, flat))
                if list(map(is_not, grads, repeat(None))) != self.present:
                    return None
                grads = list(compress(grads, self.present))
                ptrs = [g.data_ptr() for g in grads]
        except (KeyError, AttributeError):
            return None
        if ptrs != self.grad_ptrs:
            self._renew(grads, ptrs)
        return grads

    def _renew(self, grads: list[torch.Tensor], ptrs: list[int]) -> None:
        """New views of the gradients whose memory moved."""
        old = self.grad_ptrs or [None] * len(ptrs)
        for (seq, i, view), g, ptr, was in zip(self.slots, grads, ptrs, old):
            if ptr != was:
                seq[i] = view(g, ptr)
        self.grad_ptrs = ptrs

    def forget_new_buffers(self) -> None:
        """Takes back the buffers this plan made (a step not applied leaves the state
        as it was)."""
        for state in self.new:
            state.pop("momentum_buffer", None)


def _with_step_hooks(step: Callable) -> Callable:
    """``step`` wrapped as ``torch.optim.Optimizer.profile_hook_step`` wraps every
    optimizer's step: global and per-optimizer pre-hooks (which may replace the
    arguments), the step, ``_optimizer_step_code``, post-hooks. Torch's wrapper also
    opens a ``record_function`` range, which costs microseconds, more than momcore's
    whole step of a small model: it is entered only while a profiler runs."""
    profiled = Optimizer.profile_hook_step(step)
    profiling = torch._C._autograd._profiler_enabled

    @functools.wraps(step)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        self = args[0]
        if profiling():
            return profiled(*args, **kwargs)
        if not (_global_optimizer_pre_hooks or self._optimizer_step_pre_hooks
                or self._optimizer_step_post_hooks or _global_optimizer_post_hooks):
            return step(*args, **kwargs)
        for pre_hook in chain(_global_optimizer_pre_hooks.values(),
                              self._optimizer_step_pre_hooks.values()):
            result = pre_hook(self, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(f"{step} must return None or a tuple of (new_args, "
                                       f"new_kwargs), but got {result}.")
        out = step(*args, **kwargs)
        self._optimizer_step_code()
        for post_hook in chain(self._optimizer_step_post_hooks.values(),
                               _global_optimizer_post_hooks.values()):
            post_hook(self, args, kwargs)
        return out

    wrapper.hooked = True  # type: ignore[attr-defined]  # Optimizer wraps it no further
    return wrapper


class SGD(Optimizer):
    r"""Stochastic gradient descent with momentum, as ``torch.optim.SGD``, on momcore's
    compiled kernel.

    With ``g' = -grad`` if ``maximize`` else ``grad``, then ``g' += weight_decay*p``,
    the default rule is torch's::

        b = g'                                   on a parameter's first step
        b = momentum*b + (1 - dampening)*g'      after
        p = p - lr*b                             (nesterov: p = p - lr*(g' + momentum*b))

    ``b`` is ``state[p]["momentum_buffer"]``; without momentum a step is
    ``p = p - lr*g'`` and no buffer is kept, as in torch.

    Parameters
    ----------
    params : iterable of Tensor or of dict
        Parameters or parameter groups, as for any ``torch.optim.Optimizer``.
        CPU tensors, float32 or float64, contiguous, updated in place.
    lr, momentum, dampening, weight_decay, nesterov, maximize
        As ``torch.optim.SGD`` (``lr`` may be a float or a 0-d tensor);
        ``momentum`` in [0, 1), or ``"auto"``: lr and momentum set before every step
        by a :class:`momcore.curvature.Tuner` (:attr:`tuner`) from the gradients (with
        weight decay and ``maximize`` applied); ``lr`` is the first step's rate; the
        rule is "classical" (the heavy ball; ``nesterov`` and other rules are
        refused); every group shares the tuned pair. The tuner keeps a float64 copy
        of the parameters for each of the last 10 steps and gradients (20 times the
        parameters' memory), and its state travels in :meth:`state_dict`.
    rule : str, optional
        A momcore rule (``momcore.registry.RULES``): "classical", "nesterov",
        "velocity", "ema", "one_step" or "nesterov_velocity". None (the default) is
        torch's: "velocity", or "nesterov_velocity" with ``nesterov=True``. A rule
        that ignores ``dampening`` refuses a nonzero one. Only "velocity" (the
        default) starts a buffer at the first gradient; the other rules start from a
        zero state, as in momcore. The rule of each group is its ``"rule"`` key.
        Rules that read a momentum per weight are refused (no such state here).
    nonfinite : {"propagate", "raise", "skip"}
        What a NaN or inf in any gradient does: flow into the parameters (torch's
        behaviour); raise FloatingPointError; or skip the whole step, every group,
        leaving parameters and buffers bit for bit as they were (counted in
        :attr:`skipped_steps`). Either way nothing is written before every gradient
        has been checked.

    Raises
    ------
    ValueError, TypeError
        If a hyperparameter is refused (as ``torch.optim.SGD`` and then
        :func:`momcore.momentum_step` refuse it) or a tensor cannot be stepped (CUDA,
        sparse, complex); the message names the group or the parameter.

    Notes
    -----
    Every :meth:`step` is one C call for all parameters of all groups, on numpy
    views of the tensors' memory (no copies), made once and remade only when a
    parameter, gradient or buffer tensor changes. Costs beyond torch's: with
    ``maximize`` each gradient is negated into a scratch tensor (one more read and
    write of it a step, and its memory); a group without momentum keeps a scratch
    state per parameter, zeroed every step.

    Parameters whose ``.grad`` is None are skipped, as in torch; a parameter whose
    first gradient comes late starts its buffer then. float16 and bfloat16 parameters
    (bfloat16 needs ml_dtypes, for numpy to see it) are stepped in float32 arithmetic
    with one rounding at each store, as ``momcore.momentum_step`` does. Non-CPU, sparse
    and complex tensors raise an error naming the parameter.
    """

    def __init__(self, params: Iterable[Any], lr: float | torch.Tensor = 1e-3,
                 momentum: float = 0, dampening: float = 0,
                 weight_decay: float | torch.Tensor = 0, nesterov: bool = False, *,
                 maximize: bool = False, rule: str | None = None,
                 nonfinite: str = "propagate") -> None:
        self._plan: _Plan | None = None
        self._last_hyperparameters: tuple | None = None
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        self.tuner: Tuner | None = None
        auto = is_auto(momentum)
        if auto:
            rule = "classical" if rule is None else rule
            check_auto_rule("nesterov_velocity" if nesterov else rule)
            momentum = 0.0
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov,
                    "maximize": maximize, "rule": rule}
        _check_group(defaults, "")
        super().__init__(params, defaults)
        if auto:
            for k, group in enumerate(self.param_groups):
                check_auto_rule(_rule(group), f"param_groups[{k}]: ")
            self.tuner = Tuner(_Tuned(self))

    @property
    def nonfinite(self) -> str:
        """What a NaN or inf in a gradient does: "propagate", "raise" or "skip"."""
        return self._nonfinite

    @nonfinite.setter
    def nonfinite(self, value: str) -> None:
        self._nonfinite = check_name("nonfinite", value)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds a group, as ``torch.optim.Optimizer.add_param_group``, after checking
        its hyperparameters and tensors.

        Parameters
        ----------
        param_group : dict
            ``{"params": tensors, ...}`` with any of the constructor's hyperparameters;
            the others are the defaults.

        Raises
        ------
        ValueError, TypeError
            If a hyperparameter is refused or a tensor cannot be stepped (CUDA, sparse,
            complex, non-contiguous); the group is then not added.
        """
        super().add_param_group(param_group)
        k = len(self.param_groups) - 1
        group = self.param_groups[k]
        try:
            _check_group(group, f"param_groups[{k}]: ")
            for i, p in enumerate(group["params"]):
                _check_tensor(p, _label(group, k, i))
            if getattr(self, "tuner", None) is not None:
                check_auto_rule(_rule(group), f"param_groups[{k}]: ")
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise
        self._plan = None
        tuner = getattr(self, "tuner", None)
        if tuner is not None:  # its window spans every weight: it starts again
            self.tuner = Tuner(_Tuned(self), beta=tuner.beta, window=tuner.window,
                               floor=tuner.floor, stochastic=tuner.stochastic)

    def state_dict(self) -> dict[str, Any]:
        """torch's state_dict, with the tuner's state under "tuner" (momentum="auto").

        Returns
        -------
        dict
            ``torch.optim.Optimizer.state_dict()``, plus ``"tuner"``: the tuner's
            :meth:`momcore.curvature.Tuner.state_dict` when there is a tuner.
        """
        state = super().state_dict()
        if self.tuner is not None:
            state["tuner"] = self.tuner.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's load_state_dict; the tuner's state (momentum="auto") is checked
        before anything changes.

        Parameters
        ----------
        state_dict : dict
            A :meth:`state_dict`.

        Raises
        ------
        TypeError, ValueError
            If the tuner's state cannot be loaded, or as torch's ``load_state_dict``.
        """
        tuner = state_dict.get("tuner") if self.tuner is not None else None
        if tuner is not None:
            self.tuner.check_state_dict(tuner)
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "tuner"})
        if tuner is not None:
            self.tuner.load_state_dict(tuner)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # a torch.optim.SGD checkpoint has no "rule"
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("rule", None)
        self.defaults.setdefault("rule", None)
        self.__dict__.setdefault("_nonfinite", "propagate")
        self.__dict__.setdefault("skipped_steps", 0)
        self.__dict__.setdefault("tuner", None)
        self._plan = None
        self._last_hyperparameters = None

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_nonfinite": self._nonfinite,
                "skipped_steps": self.skipped_steps, "tuner": self.tuner}

    def _hyperparameters(self) -> tuple[list[dict[str, Any]], list[tuple]]:
        """Each group's hyperparameters for the kernel, and the flags a plan is made
        for (each group's list of parameters, whether it has momentum and maximize);
        kept from the last step while the groups hold the same numbers."""
        groups = self.param_groups
        values = [(*_GROUP_VALUES(g), id(g["params"]), len(g["params"])) for g in groups]
        last = self._last_hyperparameters
        if last is not None and last[0] == values:
            return last[1], last[2]
        hypers = list(map(_hyper, groups))
        flags = [(id(g["params"]), len(g["params"]), h["momentum"] == 0, bool(g["maximize"]))
                 for g, h in zip(groups, hypers)]
        # A tensor (an lr) may change in place: only numbers are kept.
        tensors = any(isinstance(v, torch.Tensor) for vs in values for v in vs)
        self._last_hyperparameters = None if tensors else (values, hypers, flags)
        return hypers, flags

    @_with_step_hooks
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step of every parameter that has a gradient.

        One C call, whatever the number of groups.

        Parameters
        ----------
        closure : callable or None
            Re-evaluates the model and returns the loss, as for any torch optimizer; run
            with gradients enabled before the step.

        Returns
        -------
        torch.Tensor or None
            The closure's loss (None without a closure).

        Raises
        ------
        FloatingPointError
            With ``nonfinite="raise"``, when a gradient or a new value is NaN or inf
            (nothing written; with ``momentum="auto"`` the tuner and the lr and momentum
            it set stay as they were, as for any other error of the step).
        ValueError, TypeError
            If a group's hyperparameters were set to values the kernel refuses, or a
            tensor can no longer be stepped; the message names the group or parameter.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.tuner is None:
            return self._step(loss)
        # momentum="auto": a step that raises leaves the tuner and the pair it set as
        # they were
        point = (self.tuner._undo_point(),
                 [(group["lr"], group["momentum"]) for group in self.param_groups])
        try:
            self._tune()
            return self._step(loss)
        except BaseException:
            self.tuner._undo(point[0])
            for group, (lr, momentum) in zip(self.param_groups, point[1]):
                group["lr"], group["momentum"] = lr, momentum
            raise

    def _step(self, loss: Any) -> Any:
        """step after the closure and the tuner: one C call for every parameter that
        has a gradient; returns loss."""
        hypers, flags = self._hyperparameters()
        plan = self._plan
        grads = None if plan is None else plan.fits(self, flags)
        if grads is None:
            self._plan = None  # a plan that fails to build is not kept
            plan = _Plan(self, flags)
            grads = plan.fits(self, flags)
            self._plan = plan
        for grad, scratch in plan.negated:
            np.negative(grad, out=scratch)
        for s in plan.zeroed:
            s.fill(0)
        try:
            if len(plan.operands) == 1 and not plan.operands[0][1]:
                k, _, ws, gs, ss = plan.operands[0]
                applied = _core.momentum_step_many(ws, gs, ss, **hypers[k],
                                                   nonfinite=self._nonfinite)
            else:
                operands = [(ws, gs, ss, {**hypers[k], "dampening": 0.0} if first
                             else hypers[k]) for k, first, ws, gs, ss in plan.operands]
                applied = _core.step_groups(operands, nonfinite=self._nonfinite,
                                            names=_NAMES)
        except (TypeError, ValueError) as exc:
            plan.forget_new_buffers()
            self._plan = None
            _raise_for_group(exc, hypers)
            raise
        except BaseException:
            plan.forget_new_buffers()
            self._plan = None
            raise
        if applied:
            # Autograd's version counters see the in-place update, as after p.add_().
            torch.autograd.graph.increment_version(plan.stepped)
            if plan.new:  # the next step puts these parameters with the others
                self._plan = None
        else:
            plan.forget_new_buffers()
            self._plan = None
            self.skipped_steps += 1
        return loss


    def _tune(self) -> None:
        """momentum="auto": the tuner sees the gradients the step descends (weight decay
        and maximize applied) and sets every group's lr and momentum. A step in which
        some parameter has no gradient is not observed."""
        grads = []
        for group in self.param_groups:
            decay, sign = _number(group["weight_decay"]), -1.0 if group["maximize"] else 1.0
            for p in group["params"]:
                if p.grad is None:
                    return
                g = sign * p.grad.detach().to(torch.float64).numpy()
                grads.append(g + decay * p.detach().to(torch.float64).numpy() if decay else g)
        self.tuner.observe(grads)


class _Tuned:
    """momcore.torch.SGD as the Tuner sees an optimizer: its parameters as arrays, and
    one lr and momentum set in every group."""

    def __init__(self, optimizer: SGD) -> None:
        self.optimizer = optimizer

    @property
    def params(self) -> list[np.ndarray]:
        return [p.detach().to(torch.float64).numpy() for g in self.optimizer.param_groups
                for p in g["params"]]

    @property
    def lr(self) -> float:
        return float(_number(self.optimizer.param_groups[0]["lr"]))

    @lr.setter
    def lr(self, value: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = value

    @property
    def momentum(self) -> float:
        return float(_number(self.optimizer.param_groups[0]["momentum"]))

    @momentum.setter
    def momentum(self, value: float) -> None:
        for group in self.optimizer.param_groups:
            group["momentum"] = value


def _check_group(group: Mapping[str, Any], where: str) -> None:
    """torch.optim.SGD's checks of a group's hyperparameters, then momcore's."""
    lr = group["lr"]
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError(f"{where}Tensor lr must be 1-element")
    if _number(lr) < 0:
        raise ValueError(f"{where}Invalid learning rate: {lr}")
    if _number(group["momentum"]) < 0:
        raise ValueError(f"{where}Invalid momentum value: {group['momentum']}")
    if _number(group["weight_decay"]) < 0:
        raise ValueError(f"{where}Invalid weight_decay value: {group['weight_decay']}")
    rule = group["rule"]
    if rule is not None:
        check_name("rule", rule)
        if getattr(RULES[rule], "takes_momenta", False):
            raise ValueError(f"{where}rule {rule!r} reads a momentum per weight, which "
                             f"momcore.torch.SGD does not hold; use momcore.SGD for it")
        if group["nesterov"] and rule != "nesterov_velocity":
            raise ValueError(f"{where}nesterov=True is torch's Nesterov, the rule "
                             f"'nesterov_velocity'; with rule={rule!r} leave nesterov False")
    if group["nesterov"] and (_number(group["momentum"]) <= 0
                              or _number(group["dampening"]) != 0):
        raise ValueError(f"{where}Nesterov momentum requires a momentum and zero dampening")
    hyper = {**_hyper(group), "dampening": _number(group["dampening"])}
    try:
        _core.check_hyperparameters(**hyper)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}{exc}") from None


def _raise_for_group(exc: Exception, hypers: list[dict[str, Any]]) -> None:
    """Raises exc again naming the group whose hyperparameters caused it (a scheduler
    or the caller may set any value between steps); returns if none did."""
    for k, hyper in enumerate(hypers):
        try:
            _core.check_hyperparameters(**hyper)
        except (TypeError, ValueError) as mine:
            raise type(mine)(f"param_groups[{k}]: {mine}") from exc

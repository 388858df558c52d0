"""momcore: gradient descent with a momentum term, on a fused compiled kernel.

The momentum term (Rumelhart, Hinton & Williams 1986; N. Qian 1999) turns plain
gradient descent ``Delta w = -lr*g`` into ``Delta w(t) = -lr*g + momentum*Delta w(t-1)``.

Public API
----------
``momentum_step``, ``momentum_step_many``
    The fused in-place update (C, GIL released).
``SGD``
    The optimizer: parameter groups, state, ``state_dict``.
``MLP``
    A multilayer perceptron trained with momentum.
``MLPClassifier``, ``MLPRegressor``
    scikit-learn estimators (``momcore.sklearn``; needs scikit-learn:
    ``pip install 'momcore[sklearn]'``).
``momcore.torch.SGD``
    A ``torch.optim.Optimizer`` on the kernel (optional, not imported here:
    ``pip install 'momcore[torch]'``).
``registry``
    The names of rules, activations and losses.
``training``
    The training loop, ``History``.
``reference``
    The pure-numpy ground truth, same signatures.
``theory``
    Qian (1999): eigenvalues, rates, optimal momentum.
``schedules``, ``datasets``
    lr/momentum schedules; iris and digits.
``curvature``, ``distributed``, ``plots``
    Per-weight momentum and the tuner; training over MPI; figures.
``set_num_threads``, ``get_num_threads``, ``show_config``
    Threads and the build's configuration.
"""
from momcore._config import show_config
from momcore._version import __version__
from momcore._core import (
    get_num_threads,
    momentum_step,
    momentum_step_many,
    set_num_threads,
)
from momcore import datasets, reference, registry, schedules, theory, training
from momcore.mlp import MLP
from momcore.optim import SGD
from momcore.training import History

__all__ = [
    "History",
    "MLP",
    "MLPClassifier",
    "MLPRegressor",
    "SGD",
    "datasets",
    "get_num_threads",
    "momentum_step",
    "momentum_step_many",
    "reference",
    "registry",
    "schedules",
    "set_num_threads",
    "show_config",
    "theory",
    "training",
]


def __getattr__(name: str):
    # scikit-learn is an optional dependency: imported on first use of its estimators.
    if name in ("MLPClassifier", "MLPRegressor"):
        from momcore import sklearn as _sklearn
        return getattr(_sklearn, name)
    raise AttributeError(f"module 'momcore' has no attribute {name!r}")

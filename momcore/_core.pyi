from collections.abc import Sequence
from typing import TypedDict

import numpy as np

RULES: tuple[str, ...]
RULE_CODES: dict[str, int]
N_RULES: int
NONFINITE: tuple[str, ...]
NONFINITE_CODES: dict[str, int]
N_NONFINITE: int
OMP_MIN_ELEMENTS: int
SIMD_PATHS: tuple[str, ...]
GEMM_MIN_MACS: int
TEAM_MIN_MACS: int
BLAS_THREADS_CONTROL: str | None
ACTIVATION_CODES: dict[str, int]
N_ACTIVATIONS: int
LOSS_CODES: dict[str, int]
N_LOSSES: int
ACCURACIES: tuple[str, ...]
ACCURACY_CODES: dict[str, int]
N_ACCURACIES: int

class Hyper(TypedDict):
    lr: float
    momentum: float
    rule: str
    dampening: float
    weight_decay: float

def momentum_step(
    w: np.ndarray, g: np.ndarray, state: np.ndarray, *, lr: float, momentum: float,
    rule: str = ..., dampening: float = ..., weight_decay: float = ..., nonfinite: str = ...,
    momenta: np.ndarray | None = ...,
) -> bool: ...
def momentum_step_many(
    ws: Sequence[np.ndarray], gs: Sequence[np.ndarray], states: Sequence[np.ndarray], *,
    lr: float, momentum: float, rule: str = ..., dampening: float = ...,
    weight_decay: float = ..., nonfinite: str = ...,
    momenta: Sequence[np.ndarray] | None = ...,
) -> bool: ...
# A group is (ws, gs, states, hyper) or, for a rule that takes momenta, (ws, gs, states,
# hyper, momenta) with one per-weight momentum array per parameter (or None).
Group = (tuple[Sequence[np.ndarray], Sequence[np.ndarray], Sequence[np.ndarray], Hyper]
         | tuple[Sequence[np.ndarray], Sequence[np.ndarray], Sequence[np.ndarray], Hyper,
                 Sequence[np.ndarray] | None])
def step_groups(
    groups: Sequence[Group], *, nonfinite: str = ..., names: tuple[str, str, str] = ...,
) -> bool: ...
def check_hyperparameters(
    *, lr: float, momentum: float, rule: str = ..., dampening: float = ...,
    weight_decay: float = ..., nonfinite: str = ..., dtype: object = ...,
) -> None: ...
def check_array(obj: object, *, name: str = ..., writable: bool = ...) -> None: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def simd_path() -> str: ...
def simd_supported() -> tuple[str, ...]: ...
def select_simd(name: str) -> str: ...
def have_openmp() -> bool: ...
def vector_math() -> dict[str, str]: ...
def _stream5(w: np.ndarray, g: np.ndarray, s: np.ndarray, repeat: int = 1) -> None: ...
def all_finite(a: np.ndarray) -> bool: ...
def all_finite_or_none(a: object) -> bool | None: ...
def ready_rows(X: object, dtype: np.dtype, width: int, finite: bool = ...) -> bool: ...
def one_hot(labels: np.ndarray, k: int, dtype: np.dtype) -> np.ndarray | None: ...
def permutation(rng: np.random.Generator, n: int) -> np.ndarray: ...
def _round_to_half(src: np.ndarray, dst: np.ndarray, dtype: str) -> None: ...
def _widen_half(src: np.ndarray, dst: np.ndarray, dtype: str) -> None: ...

class NonFiniteRows(ValueError): ...

class NetCore:
    params: np.ndarray
    state: np.ndarray
    grad: np.ndarray | None
    sizes: np.ndarray
    max_batch: int
    loss: str
    accuracy: str
    steps_applied: int
    def __init__(
        self, params: np.ndarray, state: np.ndarray, grad: np.ndarray | None,
        sizes: Sequence[int], hidden: str, output: str, max_batch: int, *,
        loss: str | None = ..., accuracy: str | None = ..., l2: float = ...,
    ) -> None: ...
    l2: float
    epoch_penalty: float
    def predict(self, X: np.ndarray, out: np.ndarray) -> np.ndarray: ...
    def gradients(self, X: np.ndarray, T: np.ndarray) -> tuple[float, int]: ...
    def curvature(self, X: np.ndarray, T: np.ndarray, out: np.ndarray) -> tuple[float, int]: ...
    def gradient_share(self, X: np.ndarray, T: np.ndarray, rows: np.ndarray, divisor: int,
                       l2: float = ...) -> tuple[float, int, float]: ...
    def step(self, *, lr: float, momentum: float, rule: str = ..., dampening: float = ...,
             weight_decay: float = ..., momenta: np.ndarray | None = ...) -> None: ...
    def team_threads(self, batch: int) -> int: ...
    def train_epoch(
        self, X: np.ndarray, T: np.ndarray, order: np.ndarray, batch: int, *, lr: float,
        momentum: float, rule: str = ..., dampening: float = ..., weight_decay: float = ...,
        check_rows: bool = ...,
    ) -> tuple[float, int, int, bool]: ...

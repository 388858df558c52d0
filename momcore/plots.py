"""Pictures of the momentum iteration: Qian's Figure 1, a ravine, loss curves.

matplotlib is an optional extra (``pip install 'momcore[plot]'``). It is imported only when
a figure is drawn, and only through its Agg canvas: no pyplot, no global backend switch, no
window, no figure left open. Each function writes a small PNG (100 dpi) and returns its path
as a :class:`pathlib.Path`; :func:`ravine_numbers` is plain numpy and the compiled kernel.
"""

from __future__ import annotations

import math
import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from momcore import theory

__all__ = ["figure1", "loss_curves", "ravine", "ravine_numbers"]

DPI = 100
FIGSIZE = (6.4, 4.8)

# The ravine of ravine() and ravine_numbers(): the curvatures along the valley floor and
# across it, the floor rotated by RAVINE_ANGLE degrees.
RAVINE_CURVATURES = (1.0, 50.0)
RAVINE_ANGLE = 30.0
# The start, in the valley's own coordinates (along the floor, across it).
RAVINE_START = (-9.0, 0.9)


def _figure(figsize: tuple[float, float] = FIGSIZE) -> Any:
    """A matplotlib Figure drawn by the Agg canvas; ImportError naming the extra if missing."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "momcore.plots needs matplotlib, an optional extra: pip install 'momcore[plot]'"
        ) from exc
    del matplotlib  # imported first so that a blocked or missing package fails above
    figure = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _png_path(path: str | os.PathLike[str]) -> pathlib.Path:
    """path, for a PNG file: a name with another suffix (.jpg, .pdf) is refused rather
    than given PNG bytes under a name that says otherwise."""
    path = pathlib.Path(path)
    if path.suffix and path.suffix.lower() != ".png":
        raise ValueError(f"figures are written as PNG: name the file *.png, got {str(path)!r}")
    return path


def _save(figure: Any, path: str | os.PathLike[str]) -> pathlib.Path:
    path = _png_path(path)
    figure.savefig(path, dpi=DPI, format="png")
    return path


# ---------------------------------------------------------------------------- Figure 1


def figure1(
    path: str | os.PathLike[str],
    resolution: int = 300,
    *,
    point: tuple[float, float] | None = None,
) -> pathlib.Path:
    """Qian's Figure 1: the spectral radius ``max |lambda|`` over ``lr k`` and ``momentum``.

    The colour is :func:`momcore.theory.spectral_radius` on a ``resolution x resolution``
    grid of ``lr k`` in (0, 4) and ``momentum`` in (-1, 1), grey where it is >= 1 (the
    iteration diverges), with contour lines. Drawn on top: the convergent triangle of
    Result 3 (``0 < lr k < 2 + 2 p``, ``-1 < p < 1``) and the optimal momentum
    ``p* = (1 - sqrt(lr k))^2`` where the two roots coincide.

    Parameters
    ----------
    path : str or os.PathLike
        Where to write the PNG file.
    resolution : int
        Grid points per axis, ``>= 10`` (default 300).
    point : tuple of float or None, keyword-only
        ``(lr_k, momentum)``: one setting to mark.

    Returns
    -------
    pathlib.Path
        ``path``, the PNG file written (100 dpi).

    Raises
    ------
    ImportError
        If matplotlib (the extra ``plot``) is not installed.
    ValueError
        If ``path`` names a file with another suffix than ``.png``, or ``resolution < 10``.
    """
    _png_path(path)
    resolution = int(resolution)
    if resolution < 10:
        raise ValueError(f"resolution must be >= 10, got {resolution}")
    figure = _figure()
    axes = figure.add_subplot()

    lr_k = np.linspace(0.0, 4.0, resolution + 1)[1:] - 2.0 / resolution
    momentum = np.linspace(-1.0, 1.0, resolution + 1)[1:] - 1.0 / resolution
    radius = theory.spectral_radius(lr_k[None, :], momentum[:, None], 1.0)

    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(over="0.85")
    image = axes.imshow(radius, origin="lower", extent=(0.0, 4.0, -1.0, 1.0), aspect="auto",
                        cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    colorbar = figure.colorbar(image, ax=axes, extend="max")
    colorbar.set_label("spectral radius max|λ| (contraction per step)")
    levels = [0.25, 0.5, 0.75, 0.9]
    lines = axes.contour(lr_k, momentum, radius, levels=levels, colors="white",
                         linewidths=0.6, alpha=0.8)
    axes.clabel(lines, fontsize=7, fmt="%g")

    axes.plot([0.0, 4.0, 0.0, 0.0], [-1.0, 1.0, 1.0, -1.0], color="black", linewidth=1.5,
              label="convergent region: 0 < lr·k < 2 + 2·momentum")
    axes.text(3.0, -0.45, "diverges\n(max|λ| ≥ 1)", ha="center", va="center", fontsize=9,
              color="0.3")
    curve = np.linspace(0.0, 4.0, 400)
    axes.plot(curve, (1.0 - np.sqrt(curve)) ** 2, color="tab:red", linewidth=1.5,
              linestyle="--", label="optimal momentum (1 - √(lr·k))²")
    if point is not None:
        axes.plot([point[0]], [point[1]], marker="o", markersize=7, color="tab:orange",
                  markeredgecolor="black", linestyle="none",
                  label=f"lr·k = {point[0]:.4g}, momentum = {point[1]:.4g}")
    axes.set_xlim(0.0, 4.0)
    axes.set_ylim(-1.0, 1.0)
    axes.set_xlabel("lr · k  (learning rate × curvature)")
    axes.set_ylabel("momentum")
    axes.set_title("Momentum on a quadratic: contraction per step (Qian 1999, Fig. 1)",
                   fontsize=10)
    axes.legend(loc="lower right", fontsize=7, framealpha=0.9)
    figure.tight_layout()
    return _save(figure, path)


# ------------------------------------------------------------------------------ ravine


def _ravine_setup(curvatures: Sequence[float], angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The Hessian ``R diag(curvatures) R^T`` of the ravine and the rotation ``R``."""
    k_floor, k_wall = (float(c) for c in curvatures)
    if not 0.0 < k_floor < k_wall or not math.isfinite(k_wall):
        raise ValueError(f"curvatures must be (along, across) with 0 < along < across, "
                         f"got {tuple(curvatures)}")
    if not math.isfinite(angle):
        raise ValueError(f"angle must be finite, got {angle!r}")
    theta = math.radians(angle)
    rotation = np.array([[math.cos(theta), -math.sin(theta)],
                         [math.sin(theta), math.cos(theta)]])
    hessian = rotation @ np.diag([k_floor, k_wall]) @ rotation.T
    return 0.5 * (hessian + hessian.T), rotation


def _ravine_settings(curvatures: Sequence[float], lr: float | None, momentum: float | None,
                     plain_lr: float | None) -> tuple[float, float, float]:
    """``(lr, momentum, plain_lr)`` with the defaults of :func:`ravine_numbers` filled in."""
    k_floor, k_wall = (float(c) for c in curvatures)
    plain_lr = 2.0 / (k_floor + k_wall) if plain_lr is None else float(plain_lr)
    lr = plain_lr if lr is None else float(lr)
    if momentum is None:
        momentum = float(theory.optimal_momentum(lr, k_floor))
    return lr, float(momentum), plain_lr


def ravine_numbers(
    *,
    curvatures: Sequence[float] = RAVINE_CURVATURES,
    angle: float = RAVINE_ANGLE,
    lr: float | None = None,
    momentum: float | None = None,
    plain_lr: float | None = None,
    tol: float = 1e-6,
    max_steps: int = 100_000,
) -> dict[str, float]:
    """How many steps plain descent and momentum need to cross the ravine of :func:`ravine`.

    The quadratic ``E = 1/2 w^T H w`` with ``H = R diag(curvatures) R^T`` (``R`` a rotation by
    ``angle`` degrees), from the start of :func:`ravine`; both runs use the compiled kernel
    through :func:`momcore.theory.simulate`. Defaults: the plain run uses the best plain
    learning rate ``plain_lr = 2 / (k_along + k_across)``, which puts both curvatures at the
    rate ``(K - 1) / (K + 1)``; the momentum run adds to the same ``lr`` Qian's optimal
    momentum for the floor, ``(1 - sqrt(lr k_along))^2``. For the default curvatures that
    also damps the walls (a complex pair of radius ``sqrt(momentum)``): both then contract by
    ``1 - sqrt(lr k_along)`` per step, 0.80 against plain descent's 0.96. Plain numpy and
    the compiled kernel: needs no matplotlib.

    Parameters
    ----------
    curvatures : sequence of two floats, keyword-only
        Curvature along the floor and across it (default ``(1, 50)``).
    angle : float, keyword-only
        Rotation of the valley in degrees (default 30).
    lr : float or None, keyword-only
        Learning rate of the momentum run; None: ``plain_lr``.
    momentum : float or None, keyword-only
        Momentum of the momentum run; None: the optimal momentum for the floor.
    plain_lr : float or None, keyword-only
        Learning rate of plain descent; None: ``2 / (k_along + k_across)``.
    tol : float, keyword-only
        The factor E must fall by, in (0, 1) (default 1e-6).
    max_steps : int, keyword-only
        The longest run, ``>= 1``.

    Returns
    -------
    dict
        ``lr``, ``momentum``, ``plain_lr``, the per-step rates predicted by
        :func:`momcore.theory.spectral_radius` (``rate``, ``plain_rate``) and the measured
        ``steps`` and ``plain_steps``, the first step from which ``E < tol * E(w_0)`` holds
        (``inf`` if not within ``max_steps``).

    Raises
    ------
    ValueError
        If ``tol`` or ``max_steps`` is out of range, or a setting is refused by
        :func:`momcore.theory.simulate`.

    Examples
    --------
    >>> from momcore import plots
    >>> numbers = plots.ravine_numbers()
    >>> numbers["plain_steps"], numbers["steps"]
    (173.0, 41.0)
    """
    tol = float(tol)
    if not 0.0 < tol < 1.0:
        raise ValueError(f"tol must be in (0, 1), got {tol!r}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps!r}")
    hessian, rotation = _ravine_setup(curvatures, angle)
    lr, momentum, plain_lr = _ravine_settings(curvatures, lr, momentum, plain_lr)
    start = rotation @ np.array(RAVINE_START)
    k = np.asarray(curvatures, dtype=float)
    result: dict[str, float] = {"lr": lr, "momentum": momentum, "plain_lr": plain_lr}
    for prefix, run_lr, run_momentum in (("", lr, momentum), ("plain_", plain_lr, 0.0)):
        rate = float(np.max(theory.spectral_radius(run_lr, run_momentum, k)))
        # E falls like rate^(2t); three times that count leaves room for the transient.
        predicted = math.log(tol) / (2.0 * math.log(rate)) if 0.0 < rate < 1.0 else 0.0
        steps = int(min(max_steps, 3.0 * predicted + 100.0))
        run = theory.simulate(run_lr, run_momentum, None, steps, hessian=hessian, w0=start)
        result[prefix + "rate"] = rate
        result[prefix + "steps"] = run.steps_to(tol)
    return result


def ravine(
    path: str | os.PathLike[str],
    *,
    curvatures: Sequence[float] = RAVINE_CURVATURES,
    angle: float = RAVINE_ANGLE,
    lr: float | None = None,
    momentum: float | None = None,
    plain_lr: float | None = None,
    steps: int = 40,
) -> pathlib.Path:
    """Plain gradient descent and momentum in a long narrow valley, over contours of E.

    The setup of :func:`ravine_numbers` (curvatures 1 along the floor and 50 across it,
    rotated by 30 degrees). Both trajectories come from the compiled kernel
    (:func:`momcore.theory.simulate`), ``steps`` steps from the same start. Plain descent,
    whose learning rate is bounded by the steep walls, zig-zags across the valley and creeps
    along it; momentum damps the zig-zag and runs along the floor.

    Parameters
    ----------
    path : str or os.PathLike
        Where to write the PNG file.
    curvatures, angle, lr, momentum, plain_lr : keyword-only
        As in :func:`ravine_numbers`.
    steps : int, keyword-only
        The steps drawn of each run (default 40).

    Returns
    -------
    pathlib.Path
        ``path``, the PNG file written (100 dpi).

    Raises
    ------
    ImportError
        If matplotlib (the extra ``plot``) is not installed.
    ValueError
        If ``path`` names a file with another suffix than ``.png``, or a setting is refused by :func:`momcore.theory.simulate`.
    """
    hessian, rotation = _ravine_setup(curvatures, angle)
    lr, momentum, plain_lr = _ravine_settings(curvatures, lr, momentum, plain_lr)
    start = rotation @ np.array(RAVINE_START)
    plain = theory.simulate(plain_lr, 0.0, None, steps, hessian=hessian, w0=start)
    heavy = theory.simulate(lr, momentum, None, steps, hessian=hessian, w0=start)
    numbers = ravine_numbers(curvatures=curvatures, angle=angle, lr=lr, momentum=momentum,
                             plain_lr=plain_lr)

    figure = _figure((7.2, 4.6))
    axes = figure.add_subplot()
    # The box around the start and the minimum, padded; the valley runs corner to corner.
    corners = np.array([start, np.zeros(2)])
    low, high = corners.min(axis=0), corners.max(axis=0)
    pad = 0.3 * (high - low).max()
    (x_low, y_low), (x_high, y_high) = low - pad, high + pad
    x, y = np.meshgrid(np.linspace(x_low, x_high, 301), np.linspace(y_low, y_high, 301))
    energy = 0.5 * (hessian[0, 0] * x * x + 2.0 * hessian[0, 1] * x * y + hessian[1, 1] * y * y)
    e_start = 0.5 * start @ hessian @ start
    axes.contour(x, y, energy, levels=e_start * np.geomspace(1e-4, 4.0, 10), colors="0.65",
                 linewidths=0.7)

    def label(name: str, steps_to: float) -> str:
        count = f"{steps_to:.0f} steps" if math.isfinite(steps_to) else "not reached"
        return f"{name}: E < 1e-6·E(start) after {count}"

    for run, colour, name, steps_to in (
        (plain, "tab:red", f"plain descent, lr {plain_lr:.3g}", numbers["plain_steps"]),
        (heavy, "tab:blue", f"momentum {momentum:.3g}, lr {lr:.3g}", numbers["steps"]),
    ):
        w = run.weights
        axes.plot(w[:, 0], w[:, 1], color=colour, marker="o", markersize=2.5, linewidth=1.0,
                  label=label(name, steps_to))
    axes.plot([start[0]], [start[1]], marker="s", color="black", linestyle="none",
              label="start")
    axes.plot([0.0], [0.0], marker="*", markersize=11, color="black", linestyle="none",
              label="minimum")
    axes.set_xlim(x_low, x_high)
    axes.set_ylim(y_low, y_high)
    axes.set_aspect("equal")
    axes.set_xlabel("w[0]")
    axes.set_ylabel("w[1]")
    k_floor, k_wall = (float(c) for c in curvatures)
    axes.set_title(f"A ravine (curvature {k_floor:g} along the floor, {k_wall:g} across): "
                   f"the first {steps} steps", fontsize=10)
    axes.legend(loc="upper left", fontsize=7.5, framealpha=0.9)
    figure.tight_layout()
    return _save(figure, path)


# ------------------------------------------------------------------------- loss curves


def loss_curves(path: str | os.PathLike[str], histories: Mapping[str, Sequence[float]], *,
                title: str = "Training loss per epoch") -> pathlib.Path:
    """Per-epoch loss curves, one per label, on a log scale.

    Parameters
    ----------
    path : str or os.PathLike
        Where to write the PNG file.
    histories : mapping of str to sequence of float
        A label (e.g. ``"momentum 0.9"``) to its per-epoch losses (``History.loss``);
        epoch 1 is the first value. Losses must be finite and > 0 (log axis).
    title : str, keyword-only
        The title of the plot.

    Returns
    -------
    pathlib.Path
        ``path``, the PNG file written (100 dpi).

    Raises
    ------
    ImportError
        If matplotlib (the extra ``plot``) is not installed.
    ValueError
        If ``path`` names a file with another suffix than ``.png``, ``histories`` is empty, or a curve is empty or holds a loss that is not finite
        and > 0.
    """
    if not histories:
        raise ValueError("histories must hold at least one curve")
    curves = {}
    for label, losses in histories.items():
        values = np.asarray(losses, dtype=float)
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"histories[{label!r}] must be a non-empty sequence of losses")
        if not np.all(np.isfinite(values) & (values > 0)):
            raise ValueError(f"histories[{label!r}] must hold finite losses > 0 (log scale)")
        curves[str(label)] = values
    figure = _figure()
    axes = figure.add_subplot()
    for label, values in curves.items():
        epochs = np.arange(1, values.size + 1)
        axes.plot(epochs, values, marker="o" if values.size <= 30 else None, markersize=3,
                  linewidth=1.3, label=label)
    from matplotlib.ticker import MaxNLocator

    axes.set_yscale("log")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("mean training loss")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, path)

"""
Qian's Figure 1: where momentum converges, and how fast
=======================================================

On a quadratic with curvature ``k`` the classical momentum rule contracts the distance
to the minimum by the spectral radius ``max|lambda|`` of its iteration matrix each step
(:func:`momcore.theory.spectral_radius`). The plot shows it over ``lr k`` and
``momentum``: the convergent triangle of Qian's Result 3 (``0 < lr k < 2 + 2 momentum``,
``-1 < momentum < 1``) and the optimal momentum ``(1 - sqrt(lr k))^2`` (dashed).
"""
import pathlib
import tempfile

from momcore import plots, theory

out = pathlib.Path(tempfile.mkdtemp())

# %%
# One setting marked: ``lr k = 0.01`` with its optimal momentum.
lr_k = 0.01
p = float(theory.optimal_momentum(lr_k, 1.0))
print(f"optimal momentum {p:.2f}, contraction per step "
      f"{float(theory.spectral_radius(lr_k, p, 1.0)):.2f} (plain descent: {1 - lr_k:.2f})")
figure = plots.figure1(out / "figure1.png", resolution=200, point=(lr_k, p))

"""
A ravine: plain descent zig-zags, momentum runs along the floor
===============================================================

A quadratic valley with curvature 1 along its floor and 50 across it, rotated by 30
degrees. Plain gradient descent at its best learning rate bounces between the walls;
the same learning rate with momentum (Polyak's tuned pair, :func:`momcore.theory.tune`)
follows the floor. Both runs use the compiled kernel, :func:`momcore.momentum_step`.
"""
import pathlib
import tempfile

from momcore import plots

out = pathlib.Path(tempfile.mkdtemp())

# %%
# Steps each needs to reduce the error a millionfold.
numbers = plots.ravine_numbers()
for key, value in numbers.items():
    print(f"{key:>20}: {value:.4g}")

# %%
# The first 40 steps of each, over the contours of the error.
figure = plots.ravine(out / "ravine.png", steps=40)

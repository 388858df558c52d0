"""momcore.plots: each figure is a small valid PNG; without matplotlib, a clear ImportError."""

from __future__ import annotations

import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import momcore
from momcore import plots, theory

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_BYTES = 150_000


def _check_png(path, written) -> None:
    assert written == path
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert 10_000 < len(data) < MAX_BYTES
    # The IHDR chunk: width and height at 100 dpi, a few hundred pixels each.
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert 400 <= width <= 1000 and 300 <= height <= 800


@pytest.fixture
def matplotlib():
    return pytest.importorskip("matplotlib")


def test_figure1_writes_a_png(matplotlib, tmp_path):
    path = tmp_path / "figure1.png"
    _check_png(path, plots.figure1(path, resolution=120, point=(0.01, 0.81)))


def test_figure1_accepts_a_str_path(matplotlib, tmp_path):
    written = plots.figure1(str(tmp_path / "f.png"), resolution=40)
    assert written == tmp_path / "f.png" and written.is_file()


def test_figure1_rejects_tiny_resolution(matplotlib, tmp_path):
    with pytest.raises(ValueError, match="resolution"):
        plots.figure1(tmp_path / "f.png", resolution=3)


def test_ravine_writes_a_png(matplotlib, tmp_path):
    path = tmp_path / "ravine.png"
    _check_png(path, plots.ravine(path))


def test_loss_curves_writes_a_png(matplotlib, tmp_path):
    epochs = np.arange(30)
    histories = {
        "momentum 0": list(2.0 * np.exp(-0.05 * epochs)),
        "momentum 0.5": list(2.0 * np.exp(-0.1 * epochs)),
        "momentum 0.9": list(2.0 * np.exp(-0.3 * epochs) + 1e-3),
    }
    path = tmp_path / "loss.png"
    _check_png(path, plots.loss_curves(path, histories))


@pytest.mark.parametrize(
    ("histories", "match"),
    [
        pytest.param({}, "at least one", id="empty"),
        pytest.param({"a": []}, "non-empty", id="empty-curve"),
        pytest.param({"a": [1.0, 0.0]}, "> 0", id="zero-loss"),
        pytest.param({"a": [1.0, math.nan]}, "finite", id="nan-loss"),
    ],
)
def test_loss_curves_rejects_bad_histories(matplotlib, tmp_path, histories, match):
    with pytest.raises(ValueError, match=match):
        plots.loss_curves(tmp_path / "loss.png", histories)


@pytest.mark.parametrize(
    "draw",
    [
        pytest.param(lambda path: plots.figure1(path, resolution=20), id="figure1"),
        pytest.param(plots.ravine, id="ravine"),
        pytest.param(lambda path: plots.loss_curves(path, {"a": [1.0, 0.5]}), id="loss_curves"),
    ],
)
def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path, draw):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'momcore\[plot\]'"):
        draw(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_importing_plots_does_not_import_matplotlib(tmp_path):
    # Run from elsewhere, on the directory of the momcore these tests import.
    package_parent = pathlib.Path(momcore.__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(package_parent), os.environ.get("PYTHONPATH")])))
    code = "import sys, momcore.plots, momcore.theory; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# ------------------------------------------------------------------- the ravine in numbers


def test_ravine_numbers_momentum_crosses_the_valley_faster():
    numbers = plots.ravine_numbers()
    k_along, k_across = plots.RAVINE_CURVATURES
    assert numbers["plain_lr"] == pytest.approx(2.0 / (k_along + k_across))
    assert numbers["lr"] == numbers["plain_lr"]
    assert numbers["momentum"] == pytest.approx(theory.optimal_momentum(numbers["lr"], k_along))
    assert numbers["plain_rate"] == pytest.approx(49.0 / 51.0)
    assert numbers["rate"] == pytest.approx(1.0 - math.sqrt(numbers["lr"] * k_along))
    # E ~ rate^(2t): the measured counts follow the predicted rates.
    for prefix in ("", "plain_"):
        predicted = math.log(1e-6) / (2.0 * math.log(numbers[prefix + "rate"]))
        assert predicted <= numbers[prefix + "steps"] <= 1.6 * predicted + 10
    assert numbers["plain_steps"] > 3 * numbers["steps"]


def test_ravine_numbers_with_chosen_settings():
    numbers = plots.ravine_numbers(lr=0.02, momentum=0.9, plain_lr=0.03, tol=1e-4)
    assert (numbers["lr"], numbers["momentum"], numbers["plain_lr"]) == (0.02, 0.9, 0.03)
    assert numbers["rate"] == pytest.approx(math.sqrt(0.9))
    assert numbers["plain_rate"] == pytest.approx(1.0 - 0.03)
    assert numbers["steps"] < numbers["plain_steps"] < math.inf


def test_ravine_numbers_divergent_plain_descent_never_gets_there():
    numbers = plots.ravine_numbers(plain_lr=0.05)  # 0.05 * 50 > 2
    assert numbers["plain_rate"] > 1.0
    assert numbers["plain_steps"] == math.inf


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param(dict(curvatures=(50.0, 1.0)), "curvatures", id="swapped"),
        pytest.param(dict(curvatures=(0.0, 1.0)), "curvatures", id="zero"),
        pytest.param(dict(angle=math.inf), "angle", id="angle"),
        pytest.param(dict(tol=2.0), "tol", id="tol"),
    ],
)
def test_ravine_numbers_rejects_bad_setup(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plots.ravine_numbers(**kwargs)

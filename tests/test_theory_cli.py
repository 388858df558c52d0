"""``python -m momcore theory``: the numbers it prints, and its errors."""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import subprocess
import sys

import pytest

import momcore
from momcore import _theory_cli

# The directory holding the imported package: a subprocess run from elsewhere imports the same.
PACKAGE_PARENT = pathlib.Path(momcore.__file__).resolve().parents[1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="momcore")
    _theory_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(capsys, *argv: str) -> tuple[int, str]:
    args = _parser().parse_args(["theory", *argv])
    code = args.func(args)
    return code, capsys.readouterr().out


def _field(out: str, label: str) -> str:
    """The text after ``label:`` on its line."""
    match = re.search(rf"^\s*{re.escape(label)}:\s*(.*)$", out, re.MULTILINE)
    assert match, f"no line {label!r} in:\n{out}"
    return match.group(1)


def test_optimal_setting_by_hand(capsys):
    # lr k = 0.01: the optimal momentum is (1 - 0.1)^2 = 0.81, a double root at 0.9.
    code, out = _run(capsys, "--lr", "0.01", "--momentum", "0.81", "--k", "1")
    assert code == 0
    assert _field(out, "converges").startswith("yes")
    assert _field(out, "eigenvalues").startswith("0.9 (double root")
    assert _field(out, "rate").startswith("0.9 per step")
    assert _field(out, "without momentum").startswith("rate 0.99 per step")
    assert _field(out, "optimal momentum").startswith("0.81 for this lr and k, rate 0.9 ")
    # ceil(log 1e-6 / log 0.9) = 132 and ceil(log 1e-6 / log 0.99) = 1375.
    assert _field(out, "with momentum 0.81") == "132"
    assert _field(out, "with the optimal 0.81") == "132"
    assert _field(out, "without momentum").startswith("rate")  # the first such line
    assert re.search(r"^\s*without momentum:\s+1375$", out, re.MULTILINE)
    # m = p dt^2 / lr = 81, mu = dt (1 - p) / lr = 19.
    assert _field(out, "physics (dt = 1)").startswith("mass 81, friction 19 ")
    assert "Polyak" not in out


def test_complex_pair_and_polyak(capsys):
    code, out = _run(capsys, "--lr", "0.01", "--momentum", "0.9", "--k", "1", "--k-max", "100",
                     "--tol", "1e-3")
    assert code == 0
    # b = 1.9 - 0.01 = 1.89: roots 0.945 +- sqrt(0.9 - 0.945^2) i, modulus sqrt(0.9).
    assert _field(out, "eigenvalues") == (
        "0.945 ± 0.0835165i (complex pair: the component oscillates)")
    assert _field(out, "rate").startswith("0.948683 per step")
    assert "iterations to 0.001:" in out
    # Polyak for [1, 100]: lr = 4 / 121, momentum = (9/11)^2, rate 9/11.
    assert "Polyak's heavy ball for k in [1, 100] (condition number 100):" in out
    assert "lr = 0.0330579, momentum = 0.669421, rate 0.818182 per step" in out
    assert "best plain descent: lr = 0.019802, rate 0.980198 per step" in out
    assert _field(out, "physics (dt = 1)").startswith("mass 90, friction 10 ")


def test_divergent_setting(capsys):
    code, out = _run(capsys, "--lr", "1", "--momentum", "0.5", "--k", "3.5")
    assert code == 0
    assert _field(out, "converges").startswith("no")
    assert _field(out, "with momentum 0.5") == "never (does not converge)"
    assert re.search(r"^\s*without momentum:\s+never \(does not converge\)$", out, re.MULTILINE)
    # lr k = 3.5 < 4: an optimal momentum still exists, (1 - sqrt(3.5))^2, and converges.
    assert _field(out, "optimal momentum").startswith("0.758343 for this lr and k, rate 0.870829 ")


def test_no_optimum_beyond_lr_k_4_and_no_mass_without_momentum(capsys):
    code, out = _run(capsys, "--lr", "5", "--momentum", "0", "--k", "1")
    assert code == 0
    assert _field(out, "optimal momentum").startswith("none")
    assert "with the optimal" not in out
    assert _field(out, "physics (dt = 1)").startswith("none")


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        pytest.param(["--lr", "-0.1", "--momentum", "0.5", "--k", "1"], "lr", id="negative-lr"),
        pytest.param(["--lr", "0.1", "--momentum", "nan", "--k", "1"], "momentum", id="nan"),
        pytest.param(["--lr", "0.1", "--momentum", "0.5", "--k", "0"], "k must be > 0", id="k"),
        pytest.param(["--lr", "0.1", "--momentum", "0.5", "--k", "2", "--k-max", "1"], "k-max",
                     id="k-max-below-k"),
        pytest.param(["--lr", "0.1", "--momentum", "0.5", "--k", "1", "--tol", "2"], "tol",
                     id="tol"),
    ],
)
def test_bad_values_are_value_errors(argv, match):
    args = _parser().parse_args(["theory", *argv])
    with pytest.raises(ValueError, match=match):
        _theory_cli.run(args)


def test_run_with_a_namespace(capsys):
    args = argparse.Namespace(lr=0.25, momentum=0.25, k=1.0)
    assert _theory_cli.run(args) == 0
    out = capsys.readouterr().out
    assert _field(out, "optimal momentum").startswith("0.25 for this lr and k, rate 0.5 ")


def test_plot_writes_figure1(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "figure1.png"
    code, out = _run(capsys, "--lr", "0.01", "--momentum", "0.81", "--k", "1",
                     "--plot", str(path))
    assert code == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote Figure 1 to {path}" in out


def test_plot_without_matplotlib_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    args = _parser().parse_args(["theory", "--lr", "0.01", "--momentum", "0.81", "--k", "1",
                                 "--plot", str(tmp_path / "f.png")])
    code = _theory_cli.run(args)
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert "pip install 'momcore[plot]'" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def _momcore(tmp_path: pathlib.Path, *argv: str) -> subprocess.CompletedProcess:
    """``python -m momcore theory ...`` on the momcore these tests import (tree or installed)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "momcore", "theory", *argv], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)


def test_python_m_momcore_theory(tmp_path):
    result = _momcore(tmp_path, "--lr", "0.01", "--momentum", "0.81", "--k", "1", "--k-max", "100")
    assert result.returncode == 0, result.stderr
    assert _field(result.stdout, "rate").startswith("0.9 per step")
    assert _field(result.stdout, "optimal momentum").startswith("0.81 ")
    assert "Polyak's heavy ball" in result.stdout


def test_python_m_momcore_theory_bad_value_is_one_line(tmp_path):
    result = _momcore(tmp_path, "--lr", "-1", "--momentum", "0.5", "--k", "1")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == "momcore: error: lr must be >= 0, got -1.0"

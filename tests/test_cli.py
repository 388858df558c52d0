"""The command line: demo and bench print what they promise; bad arguments fail cleanly."""
from __future__ import annotations

import importlib.util
import re

import pytest

from momcore.__main__ import main


def _rows(out: str, data: str) -> dict[str, list[str]]:
    """setting -> the table's cells, for one data set of the demo table."""
    rows = {}
    for line in out.splitlines():
        if line.startswith(data + " "):
            setting = re.split(r"\s{2,}", line[len(data):].strip())[0]
            rows[setting] = line.split()
    return rows


def test_demo_shows_momentum_needs_fewer_epochs(capsys, tmp_path):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for data in ("iris", "digits"):
        rows = _rows(out, data)
        assert set(rows) == {"momentum 0", "momentum 0.5", "momentum 0.9", "annealed 0.5->0.9",
                             "nesterov 0.9"}
        epochs = {k: (int(v[-6]) if v[-6].isdigit() else float("inf")) for k, v in rows.items()}
        assert epochs["momentum 0.9"] < epochs["momentum 0.5"] < epochs["momentum 0"]
        for cells in rows.values():
            speedup = float(cells[-1].rstrip("x"))
            assert speedup > 1.0
            accuracy = float(cells[-4].rstrip("%"))
            assert accuracy >= 90.0
    plain, momentum = (int(m) for m in re.findall(r": (\d+) steps", out))
    assert momentum < plain
    if importlib.util.find_spec("matplotlib"):
        for name in ("figure1.png", "ravine.png", "loss_digits.png"):
            assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "figures skipped" in out


def test_bench_prints_every_row(capsys, threads):
    assert main(["bench", "--quick", "--budget", "0.01", "--settle", "0", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for case in ("n=1e+03 float32", "n=1e+06 float64", "momentum_step_many 100 x 1e3",
                 "online epoch iris 4-8-3", "online epoch digits 64-128-10",
                 "step 784-256-128-10 b128 float32", "fit call iris 4-8-3 online",
                 "fit call 784-256-128-10 b128", "online epoch digits 64-128-10 tanh float32"):
        assert case in out
    assert "n=1e+07" not in out
    assert "None" not in out.split()


@pytest.mark.parametrize("argv", [["demo", "--numpy-epochs", "0"], ["bench", "--threads", "0"]],
                         ids=["demo_epochs", "bench_threads"])
def test_bad_values_are_one_line_errors(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("momcore: error:") and "\n" not in err


def test_unknown_command_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train"])
    assert exc.value.code == 2


@pytest.mark.parametrize("argv, option", [
    (["--settle", "inf"], "--settle"), (["--settle", "nan"], "--settle"),
    (["--settle", "-1"], "--settle"), (["--budget", "nan"], "--budget"),
    (["--budget", "0"], "--budget"), (["--budget", "inf"], "--budget"),
    (["--threads", "0"], "--threads"), (["--threads", "-2"], "--threads"),
])
def test_bench_refuses_bad_options_by_name_before_printing_anything(capsys, argv, option):
    assert main(["bench", "--quick", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # not even the table's header
    err = captured.err.strip()
    assert err.startswith(f"momcore: error: {option} must be") and "\n" not in err


def test_version(capsys):
    import momcore
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"momcore {momcore.__version__}"


@pytest.mark.parametrize("argv0, prog", [("/venv/bin/momcore", "momcore"),
                                         ("/x/momcore/__main__.py", "python -m momcore")])
def test_usage_names_the_command_the_user_ran(capsys, monkeypatch, argv0, prog):
    monkeypatch.setattr("sys.argv", [argv0, "--help"])
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith(f"usage: {prog} ")


@pytest.mark.parametrize("name", ["figure.jpg", "figure.pdf", "figure.JPEG"])
def test_theory_plot_refuses_a_name_that_is_not_png(capsys, tmp_path, name):
    path = tmp_path / name
    assert main(["theory", "--lr", "0.1", "--momentum", "0.5", "--k", "1",
                 "--plot", str(path)]) == 2
    assert "name the file *.png" in capsys.readouterr().err
    assert not path.exists()


def test_floor_table_has_a_row_per_case_and_ratios_of_real_times():
    from momcore import _bench
    # settle: a team's idle OpenMP threads spin for some milliseconds after an epoch, and
    # OpenBLAS's idle threads for about 0.1 s after the products; either slows the
    # contender timed next on two cores
    rows = _bench.floor_table(budget=0.001, settle=0.15)
    assert len(rows) == len(_bench.FLOOR_CASES)
    assert len({r["case"] for r in rows}) == len(rows)
    for r in rows:  # the step does the products and more: never 5x faster than them
        assert r["c_ms"] > 0 and 0.2 < r["over_gemm"] < 50
    text = _bench.format_floor_table(rows)
    assert "step 64-4096-10 b128 tanh float64" in text and "b32 tanh float32" in text

"""The README's Python examples run as written, and print what the README says."""
from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.skipif(not README.exists(), reason="needs the source tree")
def test_readme_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    # The sections on the optional peers run where the peer is installed (CI has both).
    blocks = [b for b in blocks
              if all(importlib.util.find_spec(peer) is not None
                     for peer in ("torch", "sklearn") if f"import {peer}" in b
                     or f"from {peer}" in b)]
    monkeypatch.chdir(tmp_path)
    exec(compile("\n".join(blocks), str(README), "exec"), {})
    last = capsys.readouterr().out.strip().splitlines()[-1].split()
    # the MLP example's comment: "# 20, 0.043, 0.98"
    assert int(last[0]) == 20
    assert abs(float(last[1]) - 0.043) < 0.0005
    assert abs(float(last[2]) - 0.98) < 0.005
    assert (tmp_path / "digits.npz").exists()

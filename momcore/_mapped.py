"""Operands that map the same region of one file twice.

Two ``np.memmap`` objects of one file live at different addresses, so the kernels'
address check cannot see that they share bytes. Memory maps know their file and
where they start in it, which makes the check cheap for them; other ways of mapping a
file twice (``mmap`` objects wrapped by ``np.frombuffer``, shared memory) stay
undetected, as the README says. Used by the compiled layer and the reference alike.
"""
from __future__ import annotations

import mmap
import os
from collections.abc import Iterable

import numpy as np


def _file_span(a: np.ndarray) -> tuple[str, int, int] | None:
    """(the file's real path, first byte, one past the last) of a memory-mapped array
    in its file; None for anything else."""
    if not isinstance(a, np.memmap) or a.filename is None or a.nbytes == 0:
        return None
    base = a.base
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if base is None:
        return None
    mapped_at = np.frombuffer(base, np.uint8).__array_interface__["data"][0]
    mapping_starts = a.offset - a.offset % mmap.ALLOCATIONGRANULARITY
    first = mapping_starts + a.__array_interface__["data"][0] - mapped_at
    return os.path.realpath(a.filename), first, first + a.nbytes


def check(operands: Iterable[tuple[np.ndarray, str, bool]]) -> None:
    """Raises ValueError when a written operand (``written`` True) and any other
    operand are memory maps of overlapping bytes of one file. ``operands`` holds
    (array, its name in messages, written)."""
    spans = []
    for a, name, written in operands:
        span = _file_span(a)
        if span is not None:
            spans.append((*span, name, written))
    if len(spans) < 2:
        return
    spans.sort()
    for i, (path, first, end, name, written) in enumerate(spans):
        for other_path, other_first, _, other_name, other_written in spans[i + 1:]:
            if other_path != path or other_first >= end:
                break
            if written or other_written:
                raise ValueError(
                    f"{name} and {other_name} map the same bytes of {path}; w and state "
                    f"are written in place and must not overlap any other operand (map "
                    f"the file once and take views of it)")

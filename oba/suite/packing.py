"""Packing cells into trials, so that Ray Tune tracks a bounded number of trials whatever the grid.

Tune's cost per trial grows with the number of trials it tracks; a cell's
cost must not. The cells are ordered by dense context (:meth:`Cell.context_key`:
cells sharing one dense model, calibration batches, groups and fidelity ground
truth become neighbours, keeping their grid order) and cut into
``min(len(cells), max_trials)`` contiguous trials (``[run] max_trials``, 1000 by default) whose sizes differ by at most
one cell. A trial then builds each dense context it meets once
(:mod:`oba.suite.context`) and runs every cell that shares it.
"""
from __future__ import annotations

from .grid import Cell


def pack(cells: list[Cell], max_trials: int) -> list[list[Cell]]:
    """``cells`` grouped by dense context, cut into at most ``max_trials`` trials of near-equal size (none empty)."""
    if max_trials < 1:
        raise ValueError(f"max_trials must be at least 1, got {max_trials}")
    first_use: dict[str, int] = {}
    for cell in cells:
        first_use.setdefault(cell.context_key(), len(first_use))
    ordered = sorted(cells, key=lambda cell: first_use[cell.context_key()])
    count = min(len(ordered), max_trials)
    return [ordered[i * len(ordered) // count : (i + 1) * len(ordered) // count] for i in range(count)]

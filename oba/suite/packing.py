"""Packing cells into trials, so that Ray Tune tracks a bounded number of trials whatever the grid.

Tune's cost per trial (~0.1–0.2 s to start and track one, measured in
benchmarks/README.md) grows with the number of trials it tracks; a cell's cost
must not. The cells are ordered by dense context (:meth:`Cell.context_key`:
cells sharing one dense model, calibration batches, groups and fidelity ground
truth become neighbours, keeping their grid order) and cut into contiguous
trials whose sizes differ by at most one cell. A trial then builds each dense
context it meets once (:mod:`oba.suite.context`) and runs every cell that
shares it. The number of trials is

    min(cells, max_trials, max(⌈cells ÷ MIN_CELLS_PER_TRIAL⌉, TRIALS_PER_SLOT × slots))

``max_trials`` bounds what Tune tracks (``[run] max_trials``, 1000 by
default); ``MIN_CELLS_PER_TRIAL`` cells share one trial's cost when there are
many; ``TRIALS_PER_SLOT`` trials per slot (trials that can run at once) keep
every slot busy until the end of the run.
"""
from __future__ import annotations

import math

from oba.suite.cells import Cell

MIN_CELLS_PER_TRIAL = 10
TRIALS_PER_SLOT = 4


def trial_count(cells: int, max_trials: int, slots: int) -> int:
    """How many trials ``cells`` cells are packed into (see the module docstring)."""
    if max_trials < 1 or slots < 1:
        raise ValueError(f"max_trials and slots must be at least 1, got {max_trials} and {slots}")
    return min(cells, max_trials, max(math.ceil(cells / MIN_CELLS_PER_TRIAL), TRIALS_PER_SLOT * slots))


def pack(cells: list[Cell], max_trials: int, slots: int) -> list[list[Cell]]:
    """``cells`` grouped by dense context, cut into :func:`trial_count` trials of near-equal size (none empty)."""
    first_use: dict[str, int] = {}
    for cell in cells:
        first_use.setdefault(cell.context_key(), len(first_use))
    ordered = sorted(cells, key=lambda cell: first_use[cell.context_key()])
    count = trial_count(len(ordered), max_trials, slots)
    return [ordered[i * len(ordered) // count : (i + 1) * len(ordered) // count] for i in range(count)]

"""The iterative protocol's stage rows, as the reports read them.

An iterative cell (``[prune] stages = [s1, …, sK]``) stores one row per stage;
a one-shot cell is stage 1 of 1 with schedule :data:`ONE_SHOT`. Every stage row
carries the cell's final ratio sK in ``ratio`` and its own ratio s_k in
``stage_ratio``. A cell's *final row* is the one with ``stage == stages``: it is
what boards, aggregates, tables and the trade-off compare, so an iterative
cell counts once; the earlier stages feed the trajectory figure
(:mod:`.trajectory`) and the regression gate's stage comparisons
(:mod:`.check`).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from oba.suite.cells import Cell

ONE_SHOT = "one-shot"
STAGE_COLUMNS = ("stage", "stages", "stage_ratio", "schedule")


def is_iterative(schedule: object) -> bool:
    """Whether ``schedule`` names an iterative schedule (anything but :data:`ONE_SHOT` or empty)."""
    return isinstance(schedule, str) and schedule not in ("", ONE_SHOT)


def final_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The rows with ``stage == stages`` (every row of a one-shot cell) of a normalised table."""
    return results[results["stage"] == results["stages"]]


def schedule_suffix(schedule: object, separator: str = ", ") -> str:
    """``separator + schedule`` for an iterative schedule, "" for one-shot (whose labels stay as they were)."""
    return f"{separator}{schedule}" if is_iterative(schedule) else ""


def row_ids(cells: Iterable[Cell]) -> set[str]:
    """The stored id of every stage row of ``cells`` (:meth:`Cell.row_ids`; a one-shot cell's single id is its own)."""
    return {row for cell in cells for row in cell.row_ids()}

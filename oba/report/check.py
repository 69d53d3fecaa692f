"""Regression gate: compare a results table with a baseline, cell by cell.

Cells are matched on (model, dataset, criterion, structure, allocation, ratio,
seed). Allocation is part of the key so that a global and a uniform cell of the
same setting are never compared with each other.

Exit codes (:attr:`CheckResult.exit_code`):

* 0 — every compared baseline cell is present in the results with status ok and
  a final accuracy at most ``tolerance`` percentage points below the baseline's
  (improvements never fail);
* 1 — some cells dropped by more than ``tolerance`` points (the regressions);
* 2 — the check could not be completed: a source is unreadable, the baseline has
  no ok cell, baseline cells are missing from the results or failed there, or a
  key matches several cells (ambiguous). This outranks 1.

Cells in the results that the baseline lacks, and baseline cells that failed in
the baseline itself, are reported as notes and do not affect the exit code.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import pandas as pd

from .load import ResultsUnreadable, load_results

KEYS = ("model", "dataset", "criterion", "structure", "allocation", "ratio", "seed")
# Float slack so that a drop of exactly ``tolerance`` points passes despite rounding.
_SLACK = 1e-9


@dataclass
class CheckResult:
    """Outcome of :func:`check`. Key tuples follow :data:`KEYS`; accuracies are in percent."""

    tolerance: float
    compared: int = 0
    regressions: list[tuple[tuple, float, float]] = field(default_factory=list)
    missing: list[tuple] = field(default_factory=list)
    errored: list[tuple[tuple, str]] = field(default_factory=list)
    ambiguous: list[tuple] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    extra: list[tuple] = field(default_factory=list)
    baseline_failed: list[tuple] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """2 when incomplete (unreadable, missing, errored, ambiguous), else 1 on regressions, else 0."""
        if self.unreadable or self.missing or self.errored or self.ambiguous:
            return 2
        return 1 if self.regressions else 0

    def render(self) -> str:
        """Plain-text report: a verdict line, then a table per kind of finding."""
        verdict = {0: "PASS", 1: "FAIL: regressions", 2: "ERROR: check incomplete"}[self.exit_code]
        lines = [
            f"{verdict} — {self.compared} cell(s) compared, tolerance {self.tolerance:g} percentage points",
        ]
        for problem in self.unreadable:
            lines += ["", f"unreadable: {problem}"]
        if self.regressions:
            rows = [
                [*_key_cells(key), f"{base:.2f}", f"{current:.2f}", f"{base - current:.2f}"]
                for key, base, current in self.regressions
            ]
            lines += ["", f"Regressions ({len(rows)}):", _table([*KEYS, "baseline %", "current %", "drop (pp)"], rows)]
        if self.missing:
            lines += ["", f"Missing from the results ({len(self.missing)}):", _table(list(KEYS), [_key_cells(k) for k in self.missing])]
        if self.errored:
            rows = [[*_key_cells(key), message] for key, message in self.errored]
            lines += ["", f"Failed or without accuracy in the results ({len(rows)}):", _table([*KEYS, "error"], rows)]
        if self.ambiguous:
            rows = [_key_cells(k) for k in self.ambiguous]
            lines += ["", f"Ambiguous: several cells share the key ({len(rows)}):", _table(list(KEYS), rows)]
        if self.baseline_failed:
            lines += [
                "",
                f"Note: {len(self.baseline_failed)} baseline cell(s) failed in the baseline itself and were not compared:",
                _table(list(KEYS), [_key_cells(k) for k in self.baseline_failed]),
            ]
        if self.extra:
            lines += [
                "",
                f"Note: {len(self.extra)} result cell(s) have no baseline and were not compared:",
                _table(list(KEYS), [_key_cells(k) for k in self.extra]),
            ]
        return "\n".join(lines)


def _key_cells(key: tuple) -> list[str]:
    cells = []
    for name, value in zip(KEYS, key):
        if name == "ratio":
            cells.append(f"{value:g}")
        elif name == "seed":
            cells.append(str(int(value)) if not math.isnan(value) else "–")
        else:
            cells.append(str(value))
    return cells


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _keyed(table: pd.DataFrame) -> dict[tuple, list[pd.Series]]:
    cells: dict[tuple, list[pd.Series]] = {}
    for _, row in table.iterrows():
        key = tuple(
            round(float(row[k]), 9) if k == "ratio" else float(row[k]) if k == "seed" else str(row[k]) for k in KEYS
        )
        cells.setdefault(key, []).append(row)
    return cells


def check(
    results: str | os.PathLike[str] | pd.DataFrame,
    baseline: str | os.PathLike[str] | pd.DataFrame,
    tolerance: float = 1.0,
) -> CheckResult:
    """Compare ``results`` with ``baseline`` (tables, result folders, Parquet files or URIs).

    ``tolerance`` is the largest allowed drop of final accuracy, in percentage points.
    Never raises for unreadable sources: they are reported in the result (exit code 2).
    """
    outcome = CheckResult(tolerance=tolerance)
    tables = {}
    for role, source in (("baseline", baseline), ("results", results)):
        try:
            tables[role] = load_results(source)
        except ResultsUnreadable as exc:
            outcome.unreadable.append(f"{role}: {exc}")
    if outcome.unreadable:
        return outcome
    base_cells = _keyed(tables["baseline"])
    current_cells = _keyed(tables["results"])
    usable = 0
    for key, base_rows in sorted(base_cells.items()):
        if len(base_rows) > 1 or len(current_cells.get(key, [])) > 1:
            outcome.ambiguous.append(key)
            continue
        base = base_rows[0]
        if base["status"] != "ok" or pd.isna(base["final_acc"]):
            outcome.baseline_failed.append(key)
            continue
        usable += 1
        if key not in current_cells:
            outcome.missing.append(key)
            continue
        current = current_cells[key][0]
        if current["status"] != "ok" or pd.isna(current["final_acc"]):
            message = current["error"] if isinstance(current["error"], str) and current["error"] else f"status {current['status']}, no final accuracy"
            outcome.errored.append((key, message))
            continue
        outcome.compared += 1
        base_pct, current_pct = float(base["final_acc"]) * 100, float(current["final_acc"]) * 100
        if base_pct - current_pct > tolerance + _SLACK:
            outcome.regressions.append((key, base_pct, current_pct))
    if usable == 0:
        outcome.unreadable.append("baseline: holds no ok cell to compare against")
    outcome.extra = sorted(set(current_cells) - set(base_cells))
    return outcome

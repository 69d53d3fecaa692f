"""Grouping results into panels and summarising metrics over seeds.

A *panel* is one experimental setting that figures and boards compare criteria
within: (model, dataset, structure, allocation, schedule). Allocation is part of
the key because global and uniform allocation are different experiments (DESIGN
2.3); the schedule because an iterative setting that ends at a ratio is not the
one-shot setting at that ratio (:mod:`.stages`). Figures, boards and tables
compare each cell's final row (:func:`.stages.final_rows`).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pandas as pd

from oba.report.stages import ONE_SHOT, schedule_suffix

PANEL_KEYS = ("model", "dataset", "structure", "allocation", "schedule")


def ok_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The rows with ``status == "ok"``."""
    return results[results["status"] == "ok"]


def panels(results: pd.DataFrame) -> Iterator[tuple[tuple[str, ...], pd.DataFrame]]:
    """Yield ``(panel key, rows)`` for every panel, in sorted key order."""
    for key, rows in results.groupby(list(PANEL_KEYS), sort=True, dropna=False):
        yield tuple(str(k) for k in key), rows


def panel_title(key: tuple[str, ...]) -> str:
    """``model · dataset · structure · allocation allocation[ · iterative schedule]`` with empty parts left out."""
    model, dataset, structure, allocation, schedule = key
    parts = [model, dataset, structure]
    if allocation:
        parts.append(f"{allocation} allocation")
    return " · ".join(p for p in parts if p) + schedule_suffix(schedule, " · ")


def panel_stem(key: tuple[str, ...]) -> str:
    """The panel's parts joined by "-" for file and element names, empty parts and a one-shot schedule left out."""
    return "-".join(part for part in key if part and part != ONE_SHOT)


def seed_summary(rows: pd.DataFrame, by: list[str], metric: str, scale: float = 1.0) -> pd.DataFrame:
    """Mean, sample standard deviation (NaN for one value) and count of ``metric × scale``.

    Only ``ok`` rows with a finite value count. Returns columns ``by + [mean, std, n]``
    sorted by ``by``.
    """
    valid = ok_rows(rows)
    valid = valid[valid[metric].notna()]
    values = valid.assign(_value=valid[metric] * scale)
    grouped = values.groupby(by, sort=True)["_value"]
    summary = grouped.agg(mean="mean", std="std", n="count").reset_index()
    return summary


def removed_fractions(rows: pd.DataFrame) -> pd.DataFrame:
    """Fraction of each layer's capacity removed, one row per (ok row, layer).

    Columns: criterion, ratio, seed, layer, kind, dense, remaining, removed.
    ``layer_widths`` is the store's JSON text (or an already parsed dict). Layers
    keep the order in which it lists them (first appearance across rows); rows
    with missing or malformed widths are skipped.
    """
    records = []
    for row in ok_rows(rows).itertuples(index=False):
        try:
            widths = json.loads(row.layer_widths) if isinstance(row.layer_widths, str) else row.layer_widths
        except ValueError:
            widths = None
        if not isinstance(widths, dict):
            continue
        for layer, entry in widths.items():
            try:
                dense = float(entry["dense"])
                remaining = float(entry["remaining"])
            except (KeyError, TypeError, ValueError):
                continue
            if dense <= 0:
                continue
            records.append(
                {
                    "criterion": row.criterion,
                    "ratio": row.ratio,
                    "seed": row.seed,
                    "layer": str(layer),
                    "kind": str(entry.get("kind", "")),
                    "dense": dense,
                    "remaining": remaining,
                    "removed": 1.0 - remaining / dense,
                }
            )
    return pd.DataFrame.from_records(
        records, columns=["criterion", "ratio", "seed", "layer", "kind", "dense", "remaining", "removed"]
    )


def cells_anchor(board_key: tuple, criterion: str | None = None) -> str:
    """The report's element id of a board's cells, ``(model, dataset, structure, allocation, ratio, schedule)``, or
    of one criterion's; a one-shot board's id names no schedule."""
    model, dataset, structure, allocation, ratio, schedule = board_key
    parts = [model, dataset, structure, allocation, f"{float(ratio) * 100:g}", schedule_suffix(schedule, "")]
    parts += [criterion] if criterion else []
    return "cells-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(str(p) for p in parts if p != "")).strip("-")

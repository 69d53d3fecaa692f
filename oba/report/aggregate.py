"""Grouping results into panels and summarising metrics over seeds.

A *panel* is one experimental setting that figures and boards compare criteria
within: (model, dataset, structure, allocation). Allocation is part of the key
because global and uniform allocation are different experiments (DESIGN 2.3).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pandas as pd

PANEL_KEYS = ("model", "dataset", "structure", "allocation")


def ok_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The rows with ``status == "ok"``."""
    return results[results["status"] == "ok"]


def panels(results: pd.DataFrame) -> Iterator[tuple[tuple[str, ...], pd.DataFrame]]:
    """Yield ``(panel key, rows)`` for every panel, in sorted key order."""
    for key, rows in results.groupby(list(PANEL_KEYS), sort=True, dropna=False):
        yield tuple(str(k) for k in key), rows


def panel_title(key: tuple[str, ...]) -> str:
    """``model · dataset · structure · allocation allocation`` with empty parts left out."""
    model, dataset, structure, allocation = key
    parts = [model, dataset, structure]
    if allocation:
        parts.append(f"{allocation} allocation")
    return " · ".join(p for p in parts if p)


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
    """The report's element id of a board's cells, ``(model, dataset, structure, allocation, ratio)``, or of one criterion's."""
    model, dataset, structure, allocation, ratio = board_key
    parts = [model, dataset, structure, allocation, f"{float(ratio) * 100:g}"] + ([criterion] if criterion else [])
    return "cells-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(str(p) for p in parts if p != "")).strip("-")

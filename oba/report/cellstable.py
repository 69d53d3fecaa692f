"""The report's tables: every row, sortable (or seed means per setting above a size), and the failed cells.

The cells table has one row per stored row (an iterative cell's every stage, with
its stage k/K and stage ratio when the results hold iterative schedules). The
first row of each board and of each (board, criterion) carries the id
:func:`.aggregate.cells_anchor` gives, which the leaderboard links to. Above a
row limit (the report's ``CELL_TABLE_LIMIT``) the table shows one row per
setting, criterion and stage instead: means over its ok seeds, with the numbers
of ok and failed seeds.
"""
from __future__ import annotations

import html
import json

import pandas as pd

from oba.report.aggregate import PANEL_KEYS, cells_anchor, panel_title
from oba.report.stages import is_iterative, schedule_suffix


def _fmt(value: object, spec: str) -> str:
    if value is None or pd.isna(value):
        return "–"
    return format(value, spec)


def _cell(value: object, spec: str = "", scale: float = 1.0, text: bool = False) -> str:
    if text:
        shown = "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
        return f'<td class="text" data-value="{html.escape(shown)}">{html.escape(shown)}</td>'
    number = None if value is None or pd.isna(value) else float(value) * scale
    sort_key = "" if number is None else repr(number)
    return f'<td data-value="{sort_key}">{_fmt(number, spec)}</td>'


_CELL_COLUMNS = [
    ("setting", "setting", "", 1.0, True),
    ("criterion", "criterion", "", 1.0, True),
    ("criterion options", "criterion_options", "", 1.0, True),
    ("ratio (%)", "ratio", ".0f", 100.0, False),
    ("seed", "seed", ".0f", 1.0, False),
    ("status", "status", "", 1.0, True),
    ("dense acc (%)", "dense_acc", ".2f", 100.0, False),
    ("pruned acc, raw (%)", "pruned_acc_raw", ".2f", 100.0, False),
    ("pruned acc, BN-recal. (%)", "pruned_acc", ".2f", 100.0, False),
    ("final acc (%)", "final_acc", ".2f", 100.0, False),
    ("MACs speedup (×)", "macs_speedup", ".2f", 1.0, False),
    ("latency speedup (×)", "latency_speedup", ".2f", 1.0, False),
    ("scoring (s)", "scoring_seconds", ".3g", 1.0, False),
    ("scoring (× grad)", "scoring_seconds_per_grad", ".3g", 1.0, False),
    ("fidelity ρ (signed ΔL)", "fidelity", ".3f", 1.0, False),
    ("fidelity ρ (|ΔL|)", "fidelity_abs", ".3f", 1.0, False),
    ("fidelity P@k", "fidelity_precision", ".3f", 1.0, False),
    ("k", "fidelity_k", ".0f", 1.0, False),
    ("cell", "cell_id", "", 1.0, True),
]


OPTION_KEYS_LEFT_OUT = ("name", "mode", "step_seeds")
"""``criterion_config`` keys the cells table leaves out: shown elsewhere, or per step (kept in the rows)."""


def criterion_options(config: object) -> str:
    """``key=value`` pairs of a row's ``criterion_config`` (JSON text), e.g. ``fisher=true, obs_update=true, seed=0``."""
    if not isinstance(config, str) or not config:
        return ""
    options = json.loads(config)
    return ", ".join(
        f"{key}={json.dumps(value)}" for key, value in sorted(options.items()) if key not in OPTION_KEYS_LEFT_OUT
    )


def _head(columns: list[tuple[str, str, str, float, bool]]) -> str:
    return "".join(f'<th class="{"text" if text else ""}">{html.escape(label)}</th>' for label, _, _, _, text in columns)


def _anchored_rows(ordered: pd.DataFrame, columns: list[tuple[str, str, str, float, bool]]) -> str:
    """Table rows; the first row of each board and of each (board, criterion) carries its :func:`cells_anchor` id."""
    body, seen = [], set()
    for _, row in ordered.iterrows():
        key = (row["model"], row["dataset"], row["structure"], row["allocation"], row["ratio"], row["schedule"])
        ids = [cells_anchor(key)] if key not in seen else []
        seen.add(key)
        if (key, row["criterion"]) not in seen:
            ids.append(cells_anchor(key, row["criterion"]))
            seen.add((key, row["criterion"]))
        cells = "".join(
            _RENDERERS[column](row[column]) if column in _RENDERERS else _cell(row[column], spec, scale, text)
            for _, column, spec, scale, text in columns
        )
        anchors = "".join(f'<span id="{i}"></span>' for i in ids[1:])
        identity = f' id="{ids[0]}"' if ids else ""
        css = "" if row.get("status", "ok") == "ok" else ' class="error"'
        body.append(f"<tr{identity}{css}>{cells.replace('</td>', anchors + '</td>', 1) if anchors else cells}</tr>")
    return "".join(body)


def _wrapped(value: str) -> str:
    return f'<td class="text wrap" data-value="{html.escape(value)}">{html.escape(value)}</td>'


def _short_id(value: str) -> str:
    """The first 8 characters of a cell id; the whole id in the tooltip and the sort key."""
    shown = html.escape(str(value))
    return f'<td class="text" data-value="{shown}" title="{shown}">{shown[:8]}</td>'


_RENDERERS = {"setting": _wrapped, "criterion_options": _wrapped, "cell_id": _short_id}
"""Cells-table columns drawn by their own function (wrapping text, shortened ids)."""


_SETTING_COLUMNS = [
    *(next(c for c in _CELL_COLUMNS if c[1] == name) for name in ("setting", "ratio", "criterion")),
    ("seeds ok", "seeds", ".0f", 1.0, False),
    ("failed", "failed", ".0f", 1.0, False),
]
_SUMMARISED = [column for column in _CELL_COLUMNS if not column[4] and column[1] not in ("ratio", "seed")]
_STAGE_COLUMNS = [("stage", "stage_label", "", 1.0, True), ("stage ratio (%)", "stage_ratio", ".0f", 100.0, False)]
"""Shown after the ratio when the results hold iterative schedules: the row's stage (k/K) and its ratio."""


def _with_stages(columns: list[tuple[str, str, str, float, bool]], staged: bool) -> list[tuple[str, str, str, float, bool]]:
    """``columns`` with :data:`_STAGE_COLUMNS` after the ratio when ``staged``."""
    if not staged:
        return columns
    at = [column[1] for column in columns].index("ratio") + 1
    return columns[:at] + _STAGE_COLUMNS + columns[at:]


def cells_table(results: pd.DataFrame, raw_rows: str, limit: int) -> str:
    """Every row (an iterative cell's every stage), sortable; above ``limit`` rows, seed means per
    (board, criterion, stage) instead. ``raw_rows``: links to the raw rows (HTML), or ""."""
    keys = ["model", "dataset", "structure", "allocation", "ratio", "schedule", "criterion"]
    staged = bool(results["schedule"].map(is_iterative).any())
    results = results.assign(setting=[panel_title(key) for key in results[list(PANEL_KEYS)].itertuples(index=False)],
                             stage_label=results["stage"].astype(str) + "/" + results["stages"].astype(str))
    if len(results) <= limit:
        results = results.assign(criterion_options=results["criterion_config"].map(criterion_options))
        ordered = results.sort_values(keys + ["seed", "stage"])
        columns = _with_stages(_CELL_COLUMNS, staged)
        intro = "Click a column header to sort."
    else:
        ok = results["status"] == "ok"
        metrics = [column for _, column, _, _, _ in _SUMMARISED]
        means = results[ok].groupby([*keys, "stage"], sort=True)[metrics].mean()
        counts = results.assign(ok=ok).groupby([*keys, "stage", "setting", "stage_label", "stage_ratio"], sort=True)[
            "ok"].agg(seeds="sum", failed=lambda s: (~s).sum()).reset_index(["setting", "stage_label", "stage_ratio"])
        ordered = counts.join(means).reset_index()
        columns = _with_stages(_SETTING_COLUMNS, staged) + _SUMMARISED
        what = "rows" if staged else "cells"
        intro = (f"{len(results)} {what} are too many to embed: one row per setting and criterion"
                 f"{' and stage' if staged else ''}, means over its ok seeds. Click a column header to sort.")
    if raw_rows:
        intro += f" Every cell, every column: {raw_rows}."
    return (
        f"<p>{intro}</p>"
        f'<div class="scroll"><table class="sortable" id="all-cells"><thead><tr>{_head(columns)}</tr></thead><tbody>'
        + _anchored_rows(ordered, columns)
        + "</tbody></table></div>"
    )


def errors_table(results: pd.DataFrame) -> str:
    """The failed rows with their messages; an iterative cell's ratio names its schedule and the failed stage."""
    failed = results[results["status"] != "ok"]
    if failed.empty:
        return '<p class="empty">No cell failed.</p>'
    keys = ["model", "dataset", "structure", "allocation", "criterion", "ratio", "seed", "status"]
    head = "".join(f'<th class="text">{k}</th>' for k in keys) + '<th class="text">message</th>'
    body = []
    for _, row in failed.sort_values([*keys[:-1], "stage"]).iterrows():
        shown = {k: str(row[k]) for k in keys}
        stage = f", stage {row['stage']}/{row['stages']}" if is_iterative(row["schedule"]) else ""
        shown["ratio"] = _fmt(row["ratio"] * 100, ".0f") + "%" + schedule_suffix(row["schedule"]) + stage
        shown["seed"] = _fmt(row["seed"], ".0f")
        values = [html.escape(shown[k]) for k in keys]
        message = "" if row["error"] is None or pd.isna(row["error"]) else str(row["error"])
        body.append(
            "<tr>"
            + "".join(f'<td class="text">{v}</td>' for v in values)
            + f'<td class="message">{html.escape(message)}</td></tr>'
        )
    return f'<div class="scroll"><table id="errors"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'

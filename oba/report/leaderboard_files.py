"""The leaderboard folder: the HTML page, the Markdown text, the JSON document and the raw rows, written together."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from oba.report.band import Band
from oba.report.leaderboard import board_document, contents, render_markdown
from oba.report.leaderboard_page import render_html
from oba.report.load import load_results
from oba.report.palette import criterion_colours
from oba.report.rawrows import JSON_FILE, write_json, write_raw_rows


def write_leaderboard(
    results: str | os.PathLike[str] | pd.DataFrame,
    output_dir: str | os.PathLike[str],
    band: Band | None = None,
    report: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Write ``index.html``, ``leaderboard.md``, ``board.json``, ``cells.csv`` and ``cells.parquet`` into ``output_dir``.

    ``band``: the measured noise of the suite's reference (its ``band.json``);
    ties then also absorb machine noise. ``report``: the HTML report of the same
    results; the boards then link to its cells (by a path relative to the folder).
    Returns the paths by kind: html, markdown, json, csv, parquet.
    """
    table = load_results(results)
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    link = Path(os.path.relpath(Path(report).resolve(), directory.resolve())).as_posix() if report else None
    written = {"html": directory / "index.html", "markdown": directory / "leaderboard.md"}
    shown = contents(table, band)
    colours = criterion_colours(table["criterion"])
    written["html"].write_text(render_html(shown, colours, link), encoding="utf-8")
    written["markdown"].write_text(render_markdown(shown, report=link), encoding="utf-8")
    written["json"] = write_json(board_document(shown), directory / JSON_FILE)
    written.update(write_raw_rows(table, directory))
    return written


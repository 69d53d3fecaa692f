"""The leaderboard as one HTML page (no script): method, ranks across boards with a CD diagram, boards, trade-off."""
from __future__ import annotations

import html

from oba.report.aggregate import cells_anchor
from oba.report.cddiagram import cd_diagram_svg
from oba.report.leaderboard import (
    ACROSS_HEADERS,
    ACROSS_METHOD,
    BOARD_HEADERS,
    METHOD,
    TRADEOFF_METHOD,
    Cell,
    Contents,
    across_rows,
    across_summary,
    board_rows,
)
from oba.report.ranking import Board
from oba.report.rawrows import CSV_FILE, JSON_FILE, PARQUET_FILE

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1320px; padding: 16px 20px; color: #222; }
h1 { font-size: 26px; } h2 { font-size: 20px; margin-top: 30px; border-bottom: 2px solid #d0d4da; padding-bottom: 3px; }
h3 { font-size: 16px; margin: 20px 0 4px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 3px 16px; font-size: 14px; }
dt { color: #666; } dd { margin: 0; font-family: ui-monospace, monospace; word-break: break-word; }
.method { background: #f6f7f9; border-left: 4px solid #4e79a7; padding: 8px 14px; font-size: 14px; line-height: 1.45; }
.method p { margin: 4px 0; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #dde1e6; padding: 3px 7px; text-align: right; }
td { white-space: nowrap; }
th { background: #eef1f5; vertical-align: bottom; }
td:nth-child(2), th:nth-child(2) { text-align: left; }
table.across td:first-child, table.across th:first-child, table.tradeoff td:first-child { text-align: left; }
table.across td:nth-child(2), table.across th:nth-child(2) { text-align: right; }
.scroll { overflow-x: auto; max-width: 100%; }
.dense { color: #555; font-size: 14px; margin: 4px 0; }
.note { background: #fff6e5; border-left: 4px solid #e49444; padding: 4px 12px; font-size: 14px; margin: 6px 0; }
.summary { font-size: 14px; }
nav a { margin-right: 14px; }
svg.cd-diagram { min-width: 560px; max-width: 100%; height: auto; }
"""


def _cell(cell: Cell) -> str:
    if isinstance(cell, str):
        return f"<td>{html.escape(cell)}</td>"
    return f'<td><a href="{html.escape(cell[1])}">{html.escape(cell[0])}</a></td>'


def _table(headers: list[str], rows: list[list[Cell]], css: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(c) for c in r) + "</tr>" for r in rows)
    return f'<div class="scroll"><table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _board(board: Board, report: str | None) -> str:
    notes = "".join(f'<p class="note">{html.escape(note)}</p>' for note in board.notes)
    cells = f' · <a href="{html.escape(report)}#{cells_anchor(board.key)}">cells in the report</a>' if report else ""
    return (
        f"<section><h3>{html.escape(board.title)}</h3><p class=\"dense\">{html.escape(board.dense_label)}{cells}</p>"
        f"{notes}{_table(BOARD_HEADERS, board_rows(board, report), 'board')}</section>"
    )


def render_html(shown: Contents, colours: dict[str, str], report: str | None = None) -> str:
    """The leaderboard as a self-contained HTML page; ``colours`` per criterion (the CD diagram's)."""
    fact_list = "".join(f"<dt>{html.escape(label)}</dt><dd>{html.escape(value)}</dd>" for label, value in shown.facts)
    links = [f'<a href="{name}">{name}</a>' for name in (CSV_FILE, PARQUET_FILE, JSON_FILE)]
    if report:
        links.insert(0, f'<a href="{html.escape(report)}">the report</a>')
    body = []
    for section in shown.sections:
        diagram = f'<div class="scroll">{cd_diagram_svg(section.across, colours)}</div>' if section.across else ""
        body.append(
            f'<h2 id="{section.metric}">{html.escape(section.heading)}</h2><h3>Across boards</h3>'
            f'<p class="summary">{html.escape(across_summary(section))}</p>{diagram}'
            f"{_table(ACROSS_HEADERS, across_rows(section), 'across')}"
            + "".join(_board(b, report) for b in section.boards)
        )
    if shown.tradeoff:
        body.append('<h2 id="tradeoff">Trade-off: accuracy after fine-tuning against speedup, across ratios</h2>')
        body += [f"<h3>{html.escape(t)}</h3>{_table(headers, rows, 'tradeoff')}" for t, headers, rows in shown.tradeoff]
    toc = "".join(f'<a href="#{s.metric}">{html.escape(s.heading)}</a>' for s in shown.sections)
    toc += '<a href="#tradeoff">Trade-off</a>' if shown.tradeoff else ""
    method = "".join(f"<p>{html.escape(text)}</p>" for text in (METHOD, ACROSS_METHOD, TRADEOFF_METHOD))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>Pruning criteria leaderboard</title>'
        f"<style>{STYLE}</style></head><body><h1>Pruning criteria leaderboard</h1><dl>{fact_list}"
        f"<dt>Downloads</dt><dd>{' · '.join(links)}</dd></dl>"
        f"<nav>{toc}</nav>"
        f'<h2>Method</h2><div class="method">{method}</div>{"".join(body)}</body></html>'
    )

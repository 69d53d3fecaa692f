"""The critical-difference diagram (Demšar 2006) of an across-board comparison, as inline SVG.

An axis of mean ranks (1, the best, on the left); each criterion hangs from its
mean rank to its label, the better half on the left; a thick bar joins each
group of criteria that Nemenyi's test does not separate; a scale bar above the
axis shows the critical difference.
"""
from __future__ import annotations

import html

from oba.report.across import AcrossBoards

WIDTH = 760
MARGIN = 190
ROW = 21
AXIS_Y = 54
BAR_STEP = 8


def _x(rank: float, count: int) -> float:
    return MARGIN + (rank - 1) / max(count - 1, 1) * (WIDTH - 2 * MARGIN)


def cd_diagram_svg(result: AcrossBoards, colours: dict[str, str]) -> str:
    """SVG text of ``result``'s diagram; each criterion's line and marker in ``colours[criterion]``."""
    count = len(result.criteria)
    left = (count + 1) // 2
    first_label = AXIS_Y + BAR_STEP * (len(result.groups) + 1) + 16
    height = first_label + ROW * left + 10
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="cd-diagram" viewBox="0 0 {WIDTH} {height}" '
            f'width="{WIDTH}" height="{height}" role="img" font-family="system-ui, sans-serif" font-size="13">'
        ),
        (
            f"<title>Critical-difference diagram: mean rank over {result.boards} boards; bars join criteria that "
            f"Nemenyi's test does not separate at α = {result.alpha:g}</title>"
        ),
        f'<line x1="{_x(1, count):.1f}" y1="{AXIS_Y}" x2="{_x(count, count):.1f}" y2="{AXIS_Y}" stroke="#333"/>',
    ]
    for tick in range(1, count + 1):
        x = _x(tick, count)
        parts.append(f'<line x1="{x:.1f}" y1="{AXIS_Y - 5}" x2="{x:.1f}" y2="{AXIS_Y}" stroke="#333"/>')
        parts.append(f'<text x="{x:.1f}" y="{AXIS_Y - 9}" text-anchor="middle">{tick}</text>')
    span = min(result.critical_difference, count - 1)
    wider = " (wider than the axis)" if result.critical_difference > count - 1 else ""
    end = _x(1 + span, count)
    parts.append(f'<line x1="{_x(1, count):.1f}" y1="18" x2="{end:.1f}" y2="18" stroke="#b2182b" stroke-width="2"/>')
    parts.append(f'<text x="{_x(1, count):.1f}" y="12" fill="#b2182b">CD = {result.critical_difference:.2f}{wider}</text>')
    for level, group in enumerate(result.groups):
        ranks = [result.mean_ranks[result.criteria.index(name)] for name in group]
        y = AXIS_Y + BAR_STEP * (level + 1)
        parts.append(
            f'<line x1="{_x(min(ranks), count) - 3:.1f}" y1="{y}" x2="{_x(max(ranks), count) + 3:.1f}" y2="{y}" '
            f'stroke="#222" stroke-width="4" stroke-linecap="round"><title>not separated: {html.escape(", ".join(group))}</title></line>'
        )
    for index, (name, value) in enumerate(zip(result.criteria, result.mean_ranks)):
        on_left = index < left
        row = index if on_left else count - 1 - index
        y = first_label + ROW * row
        x = _x(value, count)
        edge = MARGIN - 12 if on_left else WIDTH - MARGIN + 12
        colour = colours.get(name, "#333")
        label = f"{html.escape(name)} ({value:.2f})"
        anchor = "end" if on_left else "start"
        text_x = edge - 4 if on_left else edge + 4
        parts.append(
            f'<polyline points="{x:.1f},{AXIS_Y} {x:.1f},{y} {edge:.1f},{y}" fill="none" stroke="{colour}" stroke-width="1.6"/>'
            f'<circle cx="{x:.1f}" cy="{AXIS_Y}" r="3.5" fill="{colour}"/>'
            f'<text x="{text_x:.1f}" y="{y + 4}" text-anchor="{anchor}">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)

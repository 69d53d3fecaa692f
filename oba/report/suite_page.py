"""The results report: one self-contained HTML page (plotly.js inline, opens offline).

Layout: a provenance header and a short reading guide, then, when the results
hold iterative schedules, their trajectories (:mod:`.trajectory`), then one
section per panel (model × dataset × structure × allocation × schedule) with the
figures of its cells' final rows, then the failed cells with their messages,
then a sortable table of every row (:mod:`.cellstable`; above
:data:`CELL_TABLE_LIMIT` rows, one row per setting and criterion instead, the
raw rows being in the leaderboard folder). With ``plotly_js="shared"`` the page
loads ``plotly.min.js`` from its own folder (written there once) instead of
embedding it: reports in one folder then share one copy. Optionally the same
figures as static PNGs, which needs kaleido and a Chrome/Chromium browser.
"""
from __future__ import annotations

import html
import importlib.util
import os
import re
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from oba.report.aggregate import panel_stem, panel_title, panels
from oba.report.cellstable import cells_table, errors_table
from oba.report.figures import Style, panel_figures
from oba.report.load import load_results
from oba.report.palette import criterion_colours, criterion_symbols
from oba.report.provenance import provenance
from oba.report.stages import final_rows, is_iterative
from oba.report.trajectory import GUIDE, trajectory

WIDE_FIGURES = ("accuracy", "allocation", "scoring-time", "fidelity", "trajectory")
CELL_TABLE_LIMIT = 2000
"""Above this many rows the report embeds one row per (board, criterion, stage), not one per row."""
PLOTLY_JS_MODES = ("inline", "shared")
PLOTLY_JS_FILE = "plotly.min.js"


class StaticExportError(RuntimeError):
    """Static images could not be written: kaleido or a Chrome/Chromium browser is missing."""


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #222; background: #f6f7f9; }
header, main > section { max-width: 1500px; margin: 0 auto; padding: 0 16px; }
header { padding-top: 20px; }
h1 { font-size: 26px; margin: 0 0 10px; }
h2 { font-size: 20px; margin: 28px 0 10px; border-bottom: 2px solid #d0d4da; padding-bottom: 4px; }
dl.provenance { display: grid; grid-template-columns: max-content 1fr; gap: 3px 16px; font-size: 14px; margin: 0; }
dl.provenance dt { color: #666; }
dl.provenance dd { margin: 0; font-family: ui-monospace, monospace; word-break: break-word; }
.howto { background: #fff; border-left: 4px solid #4e79a7; padding: 8px 16px; font-size: 14px; line-height: 1.45; }
.howto li { margin: 3px 0; }
nav { font-size: 14px; margin-top: 10px; }
nav a { margin-right: 14px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(620px, 100%), 1fr)); gap: 14px; }
.figure { background: #fff; border: 1px solid #dde1e6; border-radius: 4px; padding: 4px; min-width: 0; overflow: hidden; }
.figure.wide { grid-column: 1 / -1; }
.figure > div { height: auto !important; }
.empty { color: #777; font-style: italic; }
table { border-collapse: collapse; font-size: 12px; background: #fff; }
th, td { border: 1px solid #dde1e6; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #eef1f5; cursor: pointer; user-select: none; position: sticky; top: 0; white-space: normal; vertical-align: bottom; }
td.wrap { white-space: normal; min-width: 8em; max-width: 13em; }
tr:target td, tbody:target td { background: #fff3c4; }
td.text, th.text { text-align: left; }
td.message { text-align: left; white-space: pre-wrap; font-family: ui-monospace, monospace; max-width: 900px; }
tr.error td { background: #fdecec; }
.scroll { overflow: auto; max-height: 720px; max-width: 100%; }
"""

_SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var ascending = th.dataset.order !== "asc";
      th.dataset.order = ascending ? "asc" : "desc";
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
        var nx = parseFloat(x), ny = parseFloat(y);
        var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""

_NARROW_SCRIPT = """
(function () {
  var NARROW = 560, ENTRY = 22;
  function fit(div) {
    var layout = div.layout;
    if (!layout || !div.data) { return; }
    var entries = div.data.filter(function (t) { return t.showlegend !== false; }).length;
    var narrow = div.clientWidth < NARROW;
    if (!entries || div.dataset.narrow === String(narrow)) { return; }
    if (!div.dataset.height) {
      div.dataset.height = layout.height;
      div.dataset.bottom = layout.margin.b;
      div.dataset.right = layout.margin.r;
    }
    var extra = narrow ? ENTRY * (entries + 1) + 10 : 0;
    div.dataset.narrow = String(narrow);
    div.style.height = (Number(div.dataset.height) + extra) + "px";
    Plotly.relayout(div, {
      "height": Number(div.dataset.height) + extra,
      "margin.b": Number(div.dataset.bottom) + extra,
      "margin.r": narrow ? 10 : Number(div.dataset.right),
      "legend.yref": narrow ? "container" : "paper",
      "legend.y": narrow ? 0 : 1,
      "legend.yanchor": narrow ? "bottom" : "auto",
      "legend.x": narrow ? 0 : 1.02,
      "legend.xanchor": "left"
    });
  }
  window.fitLegend = fit;
  window.addEventListener("resize", function () { document.querySelectorAll(".js-plotly-plot").forEach(fit); });
})();
"""
"""Below ``NARROW`` px a figure's legend moves under the plot, and the figure grows to hold it.

Defined in the page's head; each figure calls ``fitLegend`` once drawn (Plotly's ``post_script``)."""

_HOW_TO_READ = """
<ul>
<li>Each section is one setting (model · dataset · structure · allocation, and the schedule when it is iterative).
Within it every criterion started from the same dense checkpoint per seed and had the same schedule and fine-tuning
budget; an iterative schedule's cells are shown after their last stage.</li>
<li>Every figure's subtitle says what it aggregates. Points are means over seeds; bars and shaded bands are one standard
deviation across seeds (none with one seed). Accuracies are top-1 on the test split, in percent.</li>
<li><b>Accuracy vs speedup</b> (after fine-tuning, and right after pruning with batch-norm statistics recalibrated):
one line per criterion through its target ratios, against the MACs speedup and the measured latency speedup (dense ÷
pruned, log axes); higher and further right is better. The dashed line is the dense model (speedup 1×); ringed points joined by a
dotted line are the Pareto front (no other point is both faster and more accurate).</li>
<li><b>Latency vs MACs</b>: points below the dashed y = x line got less wall-clock speedup than their MACs promise.</li>
<li><b>Where capacity was removed</b>: the share of each layer's channels, neurons or heads removed, per criterion,
layers in the order the rows record them: the order in which the model registers its modules (rows written before
that order was recorded list them in the pruning graph's order). In small models this allocation can decide the outcome more than the
ranking within a layer.</li>
<li><b>Fidelity</b> compares each sampled unit's score on the dense model with the loss change ΔL measured by removing it
alone: the Spearman correlation with the signed ΔL (what pruning should follow: a unit whose removal lowers the loss
goes first) and with |ΔL| (what |Σ s| scores estimate), and P@k, the share of the k lowest-scored units among the k
truly cheapest, with k the share of units the first pruning step removed, applied to the sample; P@k is the one
figure with the target ratio on x, since k follows it.
<b>Scoring cost</b> is on log axes, in seconds and in multiples of one plain gradient pass on the same batches.</li>
<li>Each criterion has one colour and one marker shape in every figure (a colour-blind-safe palette). Click a legend
entry to hide it; hover for exact values.</li>
</ul>
"""


def _provenance_block(results: pd.DataFrame) -> str:
    items = provenance(results).items()
    return '<dl class="provenance">' + "".join(
        f"<dt>{html.escape(label)}</dt><dd>{html.escape(value)}</dd>" for label, value in items
    ) + "</dl>"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def _plotly_script(plotly_js: str) -> str:
    if plotly_js not in PLOTLY_JS_MODES:
        raise ValueError(f"plotly_js must be one of {', '.join(PLOTLY_JS_MODES)}, got {plotly_js!r}")
    if plotly_js == "shared":
        return f'<script type="text/javascript" src="{PLOTLY_JS_FILE}"></script>'
    return f'<script type="text/javascript">{get_plotlyjs()}</script>'


def _figure_block(stem: str, name: str, figure: go.Figure) -> str:
    """One figure as a grid item (spanning the row for :data:`WIDE_FIGURES`), its div id ``figure-<stem>``."""
    div = pio.to_html(
        figure,
        full_html=False,
        include_plotlyjs=False,
        div_id=f"figure-{stem}",
        config={"displaylogo": False, "responsive": True},
        post_script="fitLegend(document.getElementById('{plot_id}'));",
    )
    wide = " wide" if name in WIDE_FIGURES else ""
    return f'<div class="figure{wide}">{div}</div>'


def build_report(
    results: pd.DataFrame, plotly_js: str = "inline", leaderboard: str | None = None
) -> tuple[str, list[tuple[str, go.Figure]]]:
    """Render a normalised results table; return the page and its figures as ``(file stem, figure)``.

    ``plotly_js``: ``"inline"`` embeds plotly.js, ``"shared"`` loads :data:`PLOTLY_JS_FILE` from the page's folder.
    ``leaderboard``: the leaderboard folder, relative to the page; the page then links to it and its raw rows.
    """
    style = Style(criterion_colours(results["criterion"]), criterion_symbols(results["criterion"]))
    sections, toc, figures, trajectories = [], [], [], []
    for index, (key, rows) in enumerate(panels(results), start=1):
        title = panel_title(key)
        cells = final_rows(rows)
        built = panel_figures(cells, style, title, structure=key[2])
        path = trajectory(rows, style, title, structure=key[2]) if is_iterative(key[-1]) else None
        blocks = []
        for name, figure in built + ([("trajectory", path)] if path is not None else []):
            stem = f"{index:02d}-{_slug(panel_stem(key))}-{name}"
            figures.append((stem, figure))
            (trajectories if name == "trajectory" else blocks).append(_figure_block(stem, name, figure))
        ok = int((cells["status"] == "ok").sum())
        summary = f"{ok} ok cell(s), {len(cells) - ok} failed"
        content = "".join(blocks) if blocks else '<p class="empty">No successful cell in this setting.</p>'
        toc.append(f'<a href="#panel-{index}">{html.escape(title)}</a>')
        sections.append(
            f'<section id="panel-{index}"><h2>{html.escape(title)} <small>({summary})</small></h2>'
            f'<div class="grid">{content}</div></section>'
        )
    if not sections:
        sections.append('<section><p class="empty">The results hold no cells.</p></section>')
    if trajectories:
        toc.insert(0, '<a href="#trajectories">iterative trajectories</a>')
        sections.insert(0, '<section id="trajectories"><h2>Iterative schedules: accuracy through the stages</h2>'
                           f'<div class="grid">{"".join(trajectories)}</div></section>')
    guide = _HOW_TO_READ.replace("</ul>", GUIDE + "</ul>") if trajectories else _HOW_TO_READ
    errors = int((results["status"] != "ok").sum())
    cells = len(final_rows(results))
    stage_rows = f", {len(results)} rows with the earlier stages" if len(results) != cells else ""
    suites = ", ".join(provenance(results).suites) or "results"
    board = f"{leaderboard.rstrip('/')}/" if leaderboard else ""
    raw_rows = (f'<a href="{html.escape(board)}cells.csv">cells.csv</a>, '
                f'<a href="{html.escape(board)}cells.parquet">cells.parquet</a>') if leaderboard else ""
    board_link = f'<a href="{html.escape(board)}index.html">leaderboard</a>' if leaderboard else ""
    page = (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Pruning report: {html.escape(suites)}</title>"
        f"<style>{_STYLE}</style>{_plotly_script(plotly_js)}<script>{_NARROW_SCRIPT}</script></head><body>"
        f"<header><h1>Pruning criteria report: {html.escape(suites)}</h1>{_provenance_block(results)}"
        f'<div class="howto"><b>How to read this</b>{guide}</div>'
        f"<nav>{''.join(toc)}<a href=\"#errors-section\">failed cells ({errors})</a>"
        f'<a href="#cells-section">all cells</a>{board_link}</nav></header><main>'
        + "".join(sections)
        + f'<section id="errors-section"><h2>Failed cells ({errors})</h2>{errors_table(results)}</section>'
        + f'<section id="cells-section"><h2>All cells ({cells}{stage_rows})</h2>'
        f"{cells_table(results, raw_rows, CELL_TABLE_LIMIT)}</section></main>"
        f"<script>{_SORT_SCRIPT}</script></body></html>"
    )
    return page, figures


STATIC_WIDTH = 1200
"""Pixel width of static images; each figure keeps its own height (which fits its legend)."""


def write_pngs(
    figures: list[tuple[str, go.Figure]], png_dir: str | os.PathLike[str], image_format: str = "png"
) -> list[Path]:
    """Write each figure as ``<png_dir>/<stem>.<image_format>`` (png, svg or pdf), :data:`STATIC_WIDTH` wide.

    Raises :class:`StaticExportError` naming what to install when kaleido or a browser is missing.
    """
    if importlib.util.find_spec("kaleido") is None:
        raise StaticExportError(
            "PNG export needs the 'kaleido' package (pip install kaleido) and a Chrome or Chromium browser "
            "(e.g. apt-get install chromium)."
        )
    directory = Path(png_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}.{image_format}" for stem, _ in figures]
    if not figures:
        return paths
    try:
        pio.write_images(
            [figure for _, figure in figures],
            paths,
            format=image_format,
            width=STATIC_WIDTH,
            height=[figure.layout.height for _, figure in figures],
        )
    except RuntimeError as exc:
        raise StaticExportError(
            "PNG export failed: kaleido could not start a Chrome or Chromium browser. Install one "
            f"(e.g. apt-get install chromium) and make sure it is on PATH. Cause: {exc}"
        ) from exc
    return paths


def write_report(
    results: str | os.PathLike[str] | pd.DataFrame,
    output: str | os.PathLike[str],
    png_dir: str | os.PathLike[str] | None = None,
    plotly_js: str = "inline",
    leaderboard: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the HTML report of ``results`` (a table or any source :func:`load_results` reads) to ``output``.

    ``plotly_js="shared"`` writes ``plotly.min.js`` beside ``output`` (once; the same bytes every time) and
    loads it from there instead of embedding it. ``leaderboard``: the leaderboard folder of the same results;
    the page links to it and to its raw rows. With ``png_dir``, also write every figure there as a PNG
    (needs kaleido and Chromium). Failed cells never stop the report; they are listed in its errors table.
    Returns the path of the HTML file.
    """
    table = load_results(results)
    target = Path(output)
    link = Path(os.path.relpath(Path(leaderboard).resolve(), target.parent.resolve())).as_posix() if leaderboard else None
    page, figures = build_report(table, plotly_js, link)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    if plotly_js == "shared":
        script = target.parent / PLOTLY_JS_FILE
        text = get_plotlyjs()
        if not script.is_file() or script.read_text(encoding="utf-8") != text:
            script.write_text(text, encoding="utf-8")
    if png_dir is not None:
        write_pngs(figures, png_dir)
    return target

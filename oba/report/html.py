"""The results report: one self-contained HTML page (plotly.js inline, opens offline).

Layout: a provenance header and a short reading guide, then one section per
panel (model × dataset × structure × allocation) with its figures, then the
failed cells with their messages, then a sortable table of every cell (above
:data:`CELL_TABLE_LIMIT` cells, one row per setting and criterion instead, the
raw rows being in the leaderboard folder). Each board's and each criterion's
rows carry the id :func:`.aggregate.cells_anchor` gives, which the leaderboard
links to. With ``plotly_js="shared"`` the page loads ``plotly.min.js`` from
its own folder (written there once) instead of embedding it: reports in one
folder then share one copy. Optionally the same figures as static PNGs, which
needs kaleido and a Chrome/Chromium browser.
"""
from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from .aggregate import PANEL_KEYS, cells_anchor, panel_title, panels
from .figures import Style, panel_figures
from .load import load_results
from .palette import criterion_colours, criterion_symbols
from .provenance import provenance

WIDE_FIGURES = ("accuracy", "allocation", "scoring-time", "fidelity")
CELL_TABLE_LIMIT = 2000
"""Above this many cells the report embeds one row per (board, criterion), not one per cell."""
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
<li>Each section is one setting (model · dataset · structure · allocation). Within it every criterion
started from the same dense checkpoint per seed and had the same schedule and fine-tuning budget.</li>
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
        key = (row["model"], row["dataset"], row["structure"], row["allocation"], row["ratio"])
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


def _cells_table(results: pd.DataFrame, raw_rows: str) -> str:
    """Every cell, sortable; above :data:`CELL_TABLE_LIMIT` cells, seed means per (board, criterion) instead."""
    keys = ["model", "dataset", "structure", "allocation", "ratio", "criterion"]
    results = results.assign(setting=[panel_title(key) for key in results[list(PANEL_KEYS)].itertuples(index=False)])
    if len(results) <= CELL_TABLE_LIMIT:
        results = results.assign(criterion_options=results["criterion_config"].map(criterion_options))
        ordered = results.sort_values(keys + ["seed"])
        columns = _CELL_COLUMNS
        intro = "Click a column header to sort."
    else:
        ok = results["status"] == "ok"
        metrics = [column for _, column, _, _, _ in _SUMMARISED]
        means = results[ok].groupby(keys, sort=True)[metrics].mean()
        counts = results.assign(ok=ok).groupby([*keys, "setting"], sort=True)["ok"].agg(
            seeds="sum", failed=lambda s: (~s).sum()
        ).reset_index("setting")
        ordered = counts.join(means).reset_index()
        columns = _SETTING_COLUMNS + _SUMMARISED
        intro = (f"{len(results)} cells are too many to embed: one row per setting and criterion, means over its ok "
                 "seeds. Click a column header to sort.")
    if raw_rows:
        intro += f" Every cell, every column: {raw_rows}."
    return (
        f"<p>{intro}</p>"
        f'<div class="scroll"><table class="sortable" id="all-cells"><thead><tr>{_head(columns)}</tr></thead><tbody>'
        + _anchored_rows(ordered, columns)
        + "</tbody></table></div>"
    )


def _errors_table(results: pd.DataFrame) -> str:
    failed = results[results["status"] != "ok"]
    if failed.empty:
        return '<p class="empty">No cell failed.</p>'
    keys = ["model", "dataset", "structure", "allocation", "criterion", "ratio", "seed", "status"]
    head = "".join(f'<th class="text">{k}</th>' for k in keys) + '<th class="text">message</th>'
    body = []
    for _, row in failed.sort_values(keys[:-1]).iterrows():
        shown = {k: str(row[k]) for k in keys}
        shown["ratio"] = _fmt(row["ratio"] * 100, ".0f") + "%"
        shown["seed"] = _fmt(row["seed"], ".0f")
        values = [html.escape(shown[k]) for k in keys]
        message = "" if row["error"] is None or pd.isna(row["error"]) else str(row["error"])
        body.append(
            "<tr>"
            + "".join(f'<td class="text">{v}</td>' for v in values)
            + f'<td class="message">{html.escape(message)}</td></tr>'
        )
    return f'<div class="scroll"><table id="errors"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


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


def build_report(
    results: pd.DataFrame, plotly_js: str = "inline", leaderboard: str | None = None
) -> tuple[str, list[tuple[str, go.Figure]]]:
    """Render a normalised results table; return the page and its figures as ``(file stem, figure)``.

    ``plotly_js``: ``"inline"`` embeds plotly.js, ``"shared"`` loads :data:`PLOTLY_JS_FILE` from the page's folder.
    ``leaderboard``: the leaderboard folder, relative to the page; the page then links to it and its raw rows.
    """
    style = Style(criterion_colours(results["criterion"]), criterion_symbols(results["criterion"]))
    sections, toc, figures = [], [], []
    for index, (key, rows) in enumerate(panels(results), start=1):
        title = panel_title(key)
        built = panel_figures(rows, style, title, structure=key[2])
        blocks = []
        for name, figure in built:
            stem = f"{index:02d}-{_slug('-'.join(k for k in key if k))}-{name}"
            figures.append((stem, figure))
            div = pio.to_html(
                figure,
                full_html=False,
                include_plotlyjs=False,
                div_id=f"figure-{stem}",
                config={"displaylogo": False, "responsive": True},
                post_script="fitLegend(document.getElementById('{plot_id}'));",
            )
            wide = " wide" if name in WIDE_FIGURES else ""
            blocks.append(f'<div class="figure{wide}">{div}</div>')
        ok = int((rows["status"] == "ok").sum())
        summary = f"{ok} ok cell(s), {len(rows) - ok} failed"
        content = "".join(blocks) if blocks else '<p class="empty">No successful cell in this setting.</p>'
        toc.append(f'<a href="#panel-{index}">{html.escape(title)}</a>')
        sections.append(
            f'<section id="panel-{index}"><h2>{html.escape(title)} <small>({summary})</small></h2>'
            f'<div class="grid">{content}</div></section>'
        )
    if not sections:
        sections.append('<section><p class="empty">The results hold no cells.</p></section>')
    errors = int((results["status"] != "ok").sum())
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
        f'<div class="howto"><b>How to read this</b>{_HOW_TO_READ}</div>'
        f"<nav>{''.join(toc)}<a href=\"#errors-section\">failed cells ({errors})</a>"
        f'<a href="#cells-section">all cells</a>{board_link}</nav></header><main>'
        + "".join(sections)
        + f'<section id="errors-section"><h2>Failed cells ({errors})</h2>{_errors_table(results)}</section>'
        + f'<section id="cells-section"><h2>All cells ({len(results)})</h2>'
        f"{_cells_table(results, raw_rows)}</section></main>"
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
    try:
        import kaleido  # noqa: F401  (imported only to fail early with a clear message)
    except ImportError as exc:
        raise StaticExportError(
            "PNG export needs the 'kaleido' package (pip install kaleido) and a Chrome or Chromium browser "
            "(e.g. apt-get install chromium)."
        ) from exc
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

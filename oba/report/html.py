"""The results report: one self-contained HTML page (plotly.js inline, opens offline).

Layout: a provenance header and a short reading guide, then one section per
panel (model × dataset × structure × allocation) with its figures, then the
failed cells with their messages, then a sortable table of every cell.
Optionally the same figures as static PNGs, which needs kaleido and a
Chrome/Chromium browser.
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

from .aggregate import panel_title, panels
from .figures import Style, panel_figures
from .load import load_results
from .palette import criterion_colours, criterion_symbols
from .provenance import provenance

WIDE_FIGURES = ("allocation", "scoring-time", "fidelity")


class StaticExportError(RuntimeError):
    """Static images could not be written: kaleido or a Chrome/Chromium browser is missing."""


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #222; background: #f6f7f9; }
header, main > section { max-width: 1500px; margin: 0 auto; padding: 0 24px; }
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
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(620px, 1fr)); gap: 14px; }
.figure { background: #fff; border: 1px solid #dde1e6; border-radius: 4px; padding: 4px; min-width: 0; }
.figure.wide { grid-column: 1 / -1; }
.empty { color: #777; font-style: italic; }
table { border-collapse: collapse; font-size: 13px; background: #fff; }
th, td { border: 1px solid #dde1e6; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #eef1f5; cursor: pointer; user-select: none; position: sticky; top: 0; }
td.text, th.text { text-align: left; }
td.message { text-align: left; white-space: pre-wrap; font-family: ui-monospace, monospace; max-width: 900px; }
tr.error td { background: #fdecec; }
.scroll { overflow-x: auto; max-height: 720px; }
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

_HOW_TO_READ = """
<ul>
<li>Each section is one setting (model · dataset · structure · allocation). Within it every criterion
started from the same dense checkpoint per seed and had the same schedule and fine-tuning budget.</li>
<li>Points are means over seeds; error bars are one standard deviation across seeds (none when there is one seed).
Accuracies are top-1 on the test split, in percent.</li>
<li><b>Accuracy vs MACs speedup</b>: higher and further right is better; the dashed line is the dense model.
<b>Accuracy right after pruning</b> shows how much damage the criterion did before fine-tuning repaired it.</li>
<li><b>Where capacity was removed</b>: the share of each layer's channels, neurons or heads removed, per criterion.
In small models this layer allocation can decide the outcome more than the ranking within a layer.</li>
<li><b>Latency vs MACs</b>: points below the dashed y = x line got less wall-clock speedup than their MACs promise.
<b>Scoring cost</b> is on log axes, in seconds and in multiples of one plain gradient pass on the same batches.
<b>Fidelity</b> compares each sampled unit's score on the dense model with the loss change ΔL measured by removing it
alone: the Spearman correlation with the signed ΔL (what pruning should follow: a unit whose removal lowers the loss
goes first) and with |ΔL| (what |Σ s| scores estimate), and P@k, the share of the k lowest-scored units among the k
truly cheapest, with k the share of units the first pruning step removed, applied to the sample.</li>
<li>Each criterion has one colour in every figure. Click a legend entry to hide it; hover for exact values.</li>
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
    ("model", "model", "", 1.0, True),
    ("dataset", "dataset", "", 1.0, True),
    ("structure", "structure", "", 1.0, True),
    ("allocation", "allocation", "", 1.0, True),
    ("criterion", "criterion", "", 1.0, True),
    ("criterion options", "criterion_options", "", 1.0, True),
    ("ratio (%)", "ratio", ".0f", 100.0, False),
    ("seed", "seed", ".0f", 1.0, False),
    ("status", "status", "", 1.0, True),
    ("dense acc (%)", "dense_acc", ".2f", 100.0, False),
    ("pruned acc, raw (%)", "pruned_acc_raw", ".2f", 100.0, False),
    ("pruned acc, BN-recalibrated (%)", "pruned_acc", ".2f", 100.0, False),
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


def _cells_table(results: pd.DataFrame) -> str:
    results = results.assign(criterion_options=results["criterion_config"].map(criterion_options))
    head = "".join(
        f'<th class="{"text" if text else ""}">{html.escape(label)}</th>' for label, _, _, _, text in _CELL_COLUMNS
    )
    ordered = results.sort_values(["model", "dataset", "structure", "allocation", "criterion", "ratio", "seed"])
    body = []
    for _, row in ordered.iterrows():
        cells = "".join(_cell(row[column], spec, scale, text) for _, column, spec, scale, text in _CELL_COLUMNS)
        css = "" if row["status"] == "ok" else ' class="error"'
        body.append(f"<tr{css}>{cells}</tr>")
    return (
        '<div class="scroll"><table class="sortable" id="all-cells"><thead><tr>'
        + head
        + "</tr></thead><tbody>"
        + "".join(body)
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
    return f'<table id="errors"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _provenance_block(results: pd.DataFrame) -> str:
    items = provenance(results).items()
    return '<dl class="provenance">' + "".join(
        f"<dt>{html.escape(label)}</dt><dd>{html.escape(value)}</dd>" for label, value in items
    ) + "</dl>"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def build_report(results: pd.DataFrame) -> tuple[str, list[tuple[str, go.Figure]]]:
    """Render a normalised results table; return the page and its figures as ``(file stem, figure)``."""
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
    page = (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>Pruning report: {html.escape(suites)}</title>"
        f"<style>{_STYLE}</style><script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
        f"<header><h1>Pruning criteria report: {html.escape(suites)}</h1>{_provenance_block(results)}"
        f'<div class="howto"><b>How to read this</b>{_HOW_TO_READ}</div>'
        f"<nav>{''.join(toc)}<a href=\"#errors-section\">failed cells ({errors})</a>"
        '<a href="#cells-section">all cells</a></nav></header><main>'
        + "".join(sections)
        + f'<section id="errors-section"><h2>Failed cells ({errors})</h2>{_errors_table(results)}</section>'
        + f'<section id="cells-section"><h2>All cells ({len(results)})</h2>'
        "<p>Click a column header to sort.</p>"
        f"{_cells_table(results)}</section></main>"
        f"<script>{_SORT_SCRIPT}</script></body></html>"
    )
    return page, figures


def write_pngs(figures: list[tuple[str, go.Figure]], png_dir: str | os.PathLike[str]) -> list[Path]:
    """Write each figure as ``<png_dir>/<stem>.png``; raise :class:`StaticExportError` naming what to install."""
    try:
        import kaleido  # noqa: F401  (imported only to fail early with a clear message)
    except ImportError as exc:
        raise StaticExportError(
            "PNG export needs the 'kaleido' package (pip install kaleido) and a Chrome or Chromium browser "
            "(e.g. apt-get install chromium)."
        ) from exc
    directory = Path(png_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}.png" for stem, _ in figures]
    if not figures:
        return paths
    try:
        pio.write_images(
            [figure for _, figure in figures],
            paths,
            format="png",
            width=1200,
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
) -> Path:
    """Write the HTML report of ``results`` (a table or any source :func:`load_results` reads) to ``output``.

    With ``png_dir``, also write every figure there as a PNG (needs kaleido and Chromium).
    Failed cells never stop the report; they are listed in its errors table.
    Returns the path of the HTML file.
    """
    table = load_results(results)
    page, figures = build_report(table)
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    if png_dir is not None:
        write_pngs(figures, png_dir)
    return target

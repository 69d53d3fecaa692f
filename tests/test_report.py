"""The HTML report: content, colours, failure handling, and rendering in headless Chromium."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
from results_fixtures import error_row, report_rows, row, write_store

from oba.report import StaticExportError, load_results, write_report
from oba.report.html import build_report, write_pngs
from oba.report.palette import criterion_colours

CHROMIUM = shutil.which("chromium")
FIGURES_PER_SETTING = 6
SETTINGS = 2

# Injected first in <head>: records uncaught errors, unhandled rejections and console.error
# into <pre id="js-errors"> so that --dump-dom shows them.
ERROR_COLLECTOR = """<script>
window.__jsErrors = [];
function __recordJsError(message) {
  window.__jsErrors.push(String(message));
  var sink = document.getElementById("js-errors");
  if (sink) { sink.textContent = JSON.stringify(window.__jsErrors); }
}
window.addEventListener("error", function (e) { __recordJsError("error: " + (e.message || e.type)); }, true);
window.addEventListener("unhandledrejection", function (e) {
  __recordJsError("rejection: " + (e.reason && e.reason.message ? e.reason.message : e.reason));
});
var __consoleError = console.error;
console.error = function () {
  __recordJsError("console.error: " + Array.prototype.join.call(arguments, " "));
  return __consoleError.apply(console, arguments);
};
document.addEventListener("DOMContentLoaded", function () {
  var sink = document.createElement("pre");
  sink.id = "js-errors";
  sink.textContent = JSON.stringify(window.__jsErrors);
  document.body.appendChild(sink);
});
</script>"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_store(tmp_path_factory.mktemp("results"), report_rows())


@pytest.fixture(scope="module")
def figures(store: str) -> dict[str, go.Figure]:
    return dict(build_report(load_results(store))[1])


@pytest.fixture(scope="module")
def report(store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(store, tmp_path_factory.mktemp("report") / "report.html")


def _render_dom(page: Path, tmp_path: Path, planted: str = "") -> str:
    """Load ``page`` with the error collector (and ``planted`` script) in headless Chromium; return the DOM."""
    text = page.read_text(encoding="utf-8")
    before_body_end, _, after = text.replace("<head>", "<head>" + ERROR_COLLECTOR, 1).rpartition("</body>")
    instrumented = before_body_end + planted + "</body>" + after
    target = tmp_path / "instrumented.html"
    target.write_text(instrumented, encoding="utf-8")
    completed = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1400,3000",
            "--virtual-time-budget=10000",
            "--dump-dom",
            target.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def _collected_errors(dom: str) -> list[str]:
    match = re.search(r'<pre id="js-errors">(.*?)</pre>', dom, re.DOTALL)
    assert match, "the error collector did not run"
    return json.loads(html.unescape(match.group(1)))


def test_report_is_self_contained_and_lists_everything(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    assert "<script src=" not in page
    assert "plotly.js v" in page  # the library itself, inline
    for text in (
        "cnn · digits · structured · global allocation",
        "vit · mnist · structured · global allocation",
        "0123456789abcdef0123456789abcdef01234567",
        "torch 2.14.1",
        "cpu (2 threads)",
        "2026-11-29 08:00 UTC",
        "How to read this",
        "RuntimeError: scoring diverged (NaN in Hessian-vector product)",
        "Failed cells (1)",
        "All cells (24)",
    ):
        assert text in page, text
    assert page.count('<tr class="error">') == 1


def test_every_setting_gets_every_figure_with_labelled_axes(figures: dict[str, go.Figure]) -> None:
    names = [stem.split("-", 1)[1] for stem in figures]
    assert len(figures) == SETTINGS * FIGURES_PER_SETTING
    assert sorted(set(names)) == sorted(
        {
            "cnn-digits-structured-global-" + kind
            for kind in ("accuracy", "pruned-accuracy", "allocation", "latency", "fidelity", "scoring-time")
        }
        | {
            "vit-mnist-structured-global-" + kind
            for kind in ("accuracy", "pruned-accuracy", "allocation", "latency", "fidelity", "scoring-time")
        }
    )
    for stem, figure in figures.items():
        assert figure.layout.title.text, stem
        assert any(axis.title.text for axis in figure.select_xaxes()), stem
        assert all(axis.title.text for axis in figure.select_yaxes()), stem
    accuracy = figures["01-cnn-digits-structured-global-accuracy"]
    assert "(%)" in accuracy.layout.yaxis.title.text and "(×" in accuracy.layout.xaxis.title.text
    # One x convention per family: every accuracy and latency figure has a speedup on a log x axis.
    for kind in ("accuracy", "pruned-accuracy", "latency"):
        for axis in figures[f"01-cnn-digits-structured-global-{kind}"].select_xaxes():
            assert axis.type == "log" and "speedup" in axis.title.text, (kind, axis.title.text)
    assert [a.title.text.split(" (")[0] for a in accuracy.select_xaxes()] == ["MACs speedup", "latency speedup"]
    scoring = figures["01-cnn-digits-structured-global-scoring-time"]
    assert scoring.layout.yaxis.type == "log" and scoring.layout.yaxis2.type == "log"


def test_accuracy_points_are_seed_means_with_std_bands(figures: dict[str, go.Figure]) -> None:
    accuracy = figures["01-cnn-digits-structured-global-accuracy"]
    oba = next(trace for trace in accuracy.data if trace.name == "oba" and trace.xaxis == "x")
    band = next(trace for trace in accuracy.data if trace.name == "oba ±1 std" and trace.xaxis == "x")
    rows = [r for r in report_rows() if r["model"] == "cnn" and r["criterion"] == "oba"]
    for index, ratio in enumerate((0.3, 0.6)):
        at = [r for r in rows if r["ratio"] == ratio]
        values = pd.Series([r["final_acc"] * 100 for r in at])
        assert oba.y[index] == pytest.approx(values.mean())
        assert oba.x[index] == pytest.approx(pd.Series([r["macs_speedup"] for r in at]).mean())
        # The band's upper edge runs forward through the ratios, its lower edge back.
        assert band.y[index] == pytest.approx(values.mean() + values.std(ddof=1))
        assert band.y[3 - index] == pytest.approx(values.mean() - values.std(ddof=1))
    dense = pd.Series({r["seed"]: r["dense_acc"] for r in rows}).mean() * 100
    assert any(shape.y0 == pytest.approx(dense) for shape in accuracy.layout.shapes), "the dense reference line"
    assert any(trace.name == "Pareto front" for trace in accuracy.data)


def test_fidelity_panel_shows_signed_and_absolute_spearman_and_precision_per_ratio(figures: dict[str, go.Figure]) -> None:
    figure = figures["01-cnn-digits-structured-global-fidelity"]
    subtitle = figure.layout.title.subtitle.text
    assert "ρ: mean ± std over all cells" in subtitle and "P@k: mean ± std over seeds per target ratio" in subtitle
    ok = [r for r in report_rows() if r["model"] == "cnn" and r["criterion"] == "taylor" and r["status"] == "ok"]
    assert len(ok) == 3, "the fixture's failed taylor cell must not count"
    traces = {(t.xaxis, t.name): t for t in figure.data}
    for axis, column in (("x", "fidelity"), ("x2", "fidelity_abs")):
        values = pd.Series([r[column] for r in ok])
        assert traces[(axis, "taylor")].y[0] == pytest.approx(values.mean())
        assert traces[(axis, "taylor")].error_y.array[0] == pytest.approx(values.std(ddof=1))
    precision = traces[("x3", "taylor")]
    assert list(precision.x) == pytest.approx([30.0, 60.0])
    at_30 = pd.Series([r["fidelity_precision"] for r in ok if r["ratio"] == 0.3])
    (at_60,) = [r["fidelity_precision"] for r in ok if r["ratio"] == 0.6]
    assert list(precision.y) == pytest.approx([at_30.mean(), at_60])


def test_each_criterion_has_one_colour_in_every_figure(store: str, figures: dict[str, go.Figure]) -> None:
    colours = criterion_colours(load_results(store)["criterion"])
    assert len(set(colours.values())) == 3
    seen = 0
    for figure in figures.values():
        for trace in figure.data:
            if trace.type == "scatter" and trace.name in colours:
                assert trace.marker.color == colours[trace.name], (trace.name, trace.marker.color)
                seen += 1
            if trace.type == "scatter" and trace.fill == "toself":
                assert trace.fillcolor == colours[trace.legendgroup], trace.name
            if trace.type == "heatmap":
                for label in trace.y:
                    name = label.rsplit(" ", 1)[-1]
                    assert colours[name] in label
    assert seen >= SETTINGS * 3 * 5


def test_layer_allocation_heatmap_shows_removed_percent_per_layer(figures: dict[str, go.Figure]) -> None:
    allocation = figures["01-cnn-digits-structured-global-allocation"]
    heatmaps = [trace for trace in allocation.data if trace.type == "heatmap"]
    assert len(heatmaps) == 2  # one facet per ratio
    rows = [r for r in report_rows() if r["model"] == "cnn" and r["criterion"] == "oba" and r["ratio"] == 0.6]
    expected = pd.Series(
        [1 - json.loads(r["layer_widths"])["fc1"]["remaining"] / 128 for r in rows]
    ).mean() * 100
    facet = heatmaps[1]
    row_index = [label.endswith(" oba") for label in facet.y].index(True)
    column_index = list(facet.x).index("fc1 (neurons)")
    assert facet.z[row_index][column_index] == pytest.approx(expected)
    assert facet.x[0] == "conv1 (channels)"  # layer order as the widths list them


def test_only_failed_cells_still_give_a_report(tmp_path: Path) -> None:
    store = write_store(tmp_path / "results", [error_row(seed=0, error="ValueError: boom"), error_row(seed=1)])
    page = write_report(store, tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "No successful cell in this setting." in page
    assert "ValueError: boom" in page and "Failed cells (2)" in page


def test_empty_results_give_a_report(tmp_path: Path) -> None:
    page = write_report(pd.DataFrame(columns=["model", "dataset", "criterion", "ratio", "seed", "status"]), tmp_path / "r.html")
    assert "The results hold no cells." in page.read_text(encoding="utf-8")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)")
def test_report_renders_in_chromium_without_javascript_errors(report: Path, tmp_path: Path) -> None:
    dom = _render_dom(report, tmp_path)
    assert _collected_errors(dom) == []
    figures = SETTINGS * FIGURES_PER_SETTING
    assert dom.count('class="plot-container plotly"') == figures
    assert dom.count('<svg class="main-svg"') >= 2 * figures
    assert dom.count('<g class="hm"') == SETTINGS * 2  # one heatmap per ratio facet
    assert dom.count('class="legendtext"') >= SETTINGS * 3 * 3


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)")
def test_error_collector_catches_planted_javascript_errors(report: Path, tmp_path: Path) -> None:
    planted = (
        '<script>Promise.reject(new Error("planted rejection"));</script>'
        '<script>throw new Error("planted failure");</script>'
    )
    errors = _collected_errors(_render_dom(report, tmp_path, planted))
    assert any("planted failure" in e for e in errors), errors
    assert any("planted rejection" in e for e in errors), errors


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)")
def test_png_export_writes_one_image_per_figure(tmp_path: Path) -> None:
    pytest.importorskip("kaleido", reason="kaleido is not installed")
    rows = [r for r in report_rows() if r["model"] == "cnn"]
    write_report(pd.DataFrame(rows), tmp_path / "report.html", png_dir=tmp_path / "png")
    images = sorted((tmp_path / "png").glob("*.png"))
    assert len(images) == FIGURES_PER_SETTING
    for image in images:
        data = image.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(data[16:20], "big") == 1200  # IHDR width


def test_png_export_without_a_browser_names_what_to_install(
    figures: dict[str, go.Figure], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("kaleido", reason="kaleido is not installed")
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-browser"))  # kaleido's browser override
    with pytest.raises(StaticExportError, match="apt-get install chromium"):
        write_pngs(list(figures.items())[:1], tmp_path / "png")
    assert not list((tmp_path / "png").glob("*.png"))


def test_cells_table_shows_each_cells_criterion_options(tmp_path: Path) -> None:
    """criterion_config's options (not name, mode or per-step seeds) appear in the cell's row, in key order."""
    config = {"name": "kfac-obs", "mode": "eval", "fisher": "true", "obs_update": True, "seed": 1,
              "step_seeds": {"1": 5}, "signed": False}
    store = write_store(tmp_path / "results", [row(criterion="kfac-obs", criterion_config=config)])
    page = write_report(store, tmp_path / "report.html").read_text(encoding="utf-8")
    shown = html.escape('fisher="true", obs_update=true, seed=1, signed=false')
    assert f'<td class="text wrap" data-value="{shown}">{shown}</td>' in page
    assert "step_seeds" not in page

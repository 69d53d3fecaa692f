"""The HTML report: content, colours, failure handling, and rendering in headless Chromium."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from browser import CHROMIUM, LAYOUT_CHECK, collected_errors, layout_check, render_dom, render_in_frame
from results_fixtures import cell_id, error_row, report_rows, row, write_store

from oba.report import StaticExportError, load_results, write_leaderboard, write_report
from oba.report.palette import criterion_colours
from oba.report.suite_page import build_report, write_pngs

FIGURES_PER_SETTING = 6
SETTINGS = 2

@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_store(tmp_path_factory.mktemp("results"), report_rows())


@pytest.fixture(scope="module")
def figures(store: str) -> dict[str, go.Figure]:
    return dict(build_report(load_results(store))[1])


@pytest.fixture(scope="module")
def report(store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(store, tmp_path_factory.mktemp("report") / "report.html")


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
    dom = render_dom(report, tmp_path)
    assert collected_errors(dom) == []
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
    errors = collected_errors(render_dom(report, tmp_path, planted))
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


def _many_criteria_rows(copies: int = 5) -> list[dict]:
    """The CNN setting with every criterion copied ``copies`` times under longer names: 15 criteria, more than
    the palette has colours, to stress legends."""
    rows = []
    for copy in range(copies):
        for item in report_rows():
            if item["model"] == "cnn":
                renamed = dict(item, criterion=f"{item['criterion']}-variant-{copy}")
                renamed["cell_id"] = cell_id(renamed)
                rows.append(renamed)
    return rows


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A report and its leaderboard (linked both ways) of :func:`_many_criteria_rows`, and the criteria."""
    rows = _many_criteria_rows()
    folder = tmp_path_factory.mktemp("crowded")
    write_leaderboard(pd.DataFrame(rows), folder / "leaderboard", report=folder / "report.html")
    write_report(pd.DataFrame(rows), folder / "report.html", leaderboard=folder / "leaderboard")
    return folder, sorted({r["criterion"] for r in rows})


def _assert_every_legend_shows_every_criterion(check: dict, criteria: list[str]) -> None:
    with_legend = [figure for figure in check["figures"] if figure["entries"]]
    assert len(with_legend) == 4, [figure["id"] for figure in check["figures"]]  # all but allocation and scoring
    for figure in with_legend:
        names = [entry["name"] for entry in figure["entries"]]
        assert set(criteria) <= set(names), (figure["id"], sorted(set(criteria) - set(names)))
        hidden = [entry["name"] for entry in figure["entries"] if not entry["inside"]]
        assert hidden == [] and not figure["scrolls"], (figure["id"], hidden)
        assert figure["in_figure"] and figure["in_window"], figure["id"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)")
def test_every_legend_entry_is_visible_at_1400_px_and_tables_fit(crowded: tuple[Path, list[str]], tmp_path: Path) -> None:
    folder, criteria = crowded
    dom = render_dom(folder / "report.html", tmp_path, LAYOUT_CHECK)
    assert collected_errors(dom) == []
    check = layout_check(dom)
    _assert_every_legend_shows_every_criterion(check, criteria)
    assert check["wide_tables"] == [] and not check["page_wider"]
    board = layout_check(render_dom(folder / "leaderboard" / "index.html", tmp_path, LAYOUT_CHECK))
    assert board["wide_tables"] == [] and not board["page_wider"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)")
def test_every_legend_entry_is_visible_at_phone_width(crowded: tuple[Path, list[str]], tmp_path: Path) -> None:
    folder, criteria = crowded
    dom = render_in_frame(folder / "report.html", tmp_path, 390, LAYOUT_CHECK)
    assert json.loads(html.unescape(re.search(r'<pre id="js-errors">(.*?)</pre>', dom, re.DOTALL).group(1))) == []
    check = layout_check(dom)
    _assert_every_legend_shows_every_criterion(check, criteria)
    assert not check["page_wider"], "wide tables scroll inside their box; the page itself does not"
    board = layout_check(render_in_frame(folder / "leaderboard" / "index.html", tmp_path, 390, LAYOUT_CHECK))
    assert not board["page_wider"]


def _links(page: Path) -> list[str]:
    """The page's hrefs outside its scripts (plotly.js itself holds URLs)."""
    text = re.sub(r"<script.*?</script>", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [html.unescape(href) for href in re.findall(r'href="([^"]+)"', text)]


def test_links_between_report_and_leaderboard_resolve(crowded: tuple[Path, list[str]]) -> None:
    folder, criteria = crowded
    pages = [folder / "report.html", folder / "leaderboard" / "index.html", folder / "leaderboard" / "leaderboard.md"]
    checked = 0
    for page in pages:
        for href in _links(page) if page.suffix == ".html" else re.findall(r"\]\(([^)]+)\)", page.read_text()):
            path, _, anchor = href.partition("#")
            target = (page.parent / path).resolve() if path else page
            assert target.is_file(), (page.name, href)
            if anchor:
                assert f'id="{anchor}"' in target.read_text(encoding="utf-8"), (page.name, href)
            checked += 1
    board = (folder / "leaderboard" / "index.html").read_text(encoding="utf-8")
    # Every criterion of every board (2 ratios × 2 metrics) links to its cells in the report.
    assert sum(board.count(f"#cells-cnn-digits-structured-global-30-{c}\"") for c in criteria) == 2 * len(criteria)
    assert checked > 4 * len(criteria)


def test_leaderboard_folder_holds_the_raw_rows_and_the_boards(crowded: tuple[Path, list[str]]) -> None:
    folder, criteria = crowded
    rows = _many_criteria_rows()
    csv = pd.read_csv(folder / "leaderboard" / "cells.csv")
    parquet = pd.read_parquet(folder / "leaderboard" / "cells.parquet")
    assert len(csv) == len(parquet) == len(rows)
    assert sorted(parquet["cell_id"]) == sorted(r["cell_id"] for r in rows)
    stored = parquet.set_index("cell_id")["final_acc"]
    assert stored.isna().sum() == sum(r["final_acc"] is None for r in rows) == 5
    assert stored.dropna().to_dict() == pytest.approx({r["cell_id"]: r["final_acc"] for r in rows if r["final_acc"]})
    document = json.loads((folder / "leaderboard" / "board.json").read_text(encoding="utf-8"))
    across = document["metrics"]["final_acc"]["across"]
    assert across is None or set(across["criteria"]) <= set(criteria)
    assert len(document["metrics"]["final_acc"]["boards"]) == 2


def test_outputs_are_byte_identical_on_rerun(store: str, tmp_path: Path) -> None:
    for run in ("a", "b"):
        write_leaderboard(store, tmp_path / run / "board", report=tmp_path / run / "r.html")
        write_report(store, tmp_path / run / "r.html", leaderboard=tmp_path / run / "board", plotly_js="shared")
    first = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert [str(p) for p in first] == sorted(
        str(p.relative_to(tmp_path / "b")) for p in (tmp_path / "b").rglob("*") if p.is_file()
    )
    assert {"board/cells.csv", "board/cells.parquet", "board/board.json", "plotly.min.js"} <= {str(p) for p in first}
    for path in first:
        assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes(), path


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)")
def test_shared_plotly_js_is_written_once_beside_the_report_and_loads(store: str, tmp_path: Path) -> None:
    first = write_report(store, tmp_path / "one.html", plotly_js="shared")
    second = write_report(store, tmp_path / "two.html", plotly_js="shared")
    library = tmp_path / "plotly.min.js"
    assert library.is_file() and library.stat().st_size > 1_000_000
    for page in (first, second):
        text = page.read_text(encoding="utf-8")
        assert '<script type="text/javascript" src="plotly.min.js"></script>' in text and "plotly.js v" not in text
        assert page.stat().st_size < library.stat().st_size / 4
    dom = render_dom(first, tmp_path)
    assert collected_errors(dom) == []
    assert dom.count('class="plot-container plotly"') == SETTINGS * FIGURES_PER_SETTING
    with pytest.raises(ValueError, match="inline, shared"):
        write_report(store, tmp_path / "three.html", plotly_js="cdn")


def test_a_big_study_embeds_one_row_per_setting_and_criterion(store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import oba.report.suite_page as report_html

    monkeypatch.setattr(report_html, "CELL_TABLE_LIMIT", 10)
    page = write_report(store, tmp_path / "r.html", leaderboard=tmp_path / "board").read_text(encoding="utf-8")
    table = page[page.index('id="all-cells"') :]
    # 2 settings × 3 criteria × 2 ratios; the failed cnn/taylor/60% cell counts as failed beside one ok seed.
    assert table.count("<tr") == 1 + 12
    assert "24 cells are too many to embed" in page and 'href="board/cells.csv"' in page
    assert 'id="cells-cnn-digits-structured-global-60-taylor"' in page
    failed = re.search(r'<tr id="cells-cnn-digits-structured-global-60-taylor">(.*?)</tr>', page).group(1)
    assert '<td data-value="1.0">1</td><td data-value="1.0">1</td>' in failed, "1 seed ok, 1 failed"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)")
def test_png_export_shows_every_criterion_in_its_legend(tmp_path: Path) -> None:
    """The static export's legend (read from the same export as SVG) lists every criterion inside its box, and the
    PNG holds each criterion's colour inside that box."""
    pytest.importorskip("kaleido", reason="kaleido is not installed")
    from PIL import Image

    rows = _many_criteria_rows()
    figures = [(stem, figure) for stem, figure in build_report(load_results(pd.DataFrame(rows)))[1]
               if stem.endswith(("-accuracy", "-fidelity"))]
    svgs = write_pngs(figures, tmp_path, "svg")
    pngs = write_pngs(figures, tmp_path, "png")
    colours = criterion_colours(r["criterion"] for r in rows)
    for svg, png in zip(svgs, pngs):
        text = svg.read_text(encoding="utf-8")
        legend = re.search(r'<g class="legend"[^>]*transform="translate\(([\d.]+),\s*([\d.]+)\)"', text)
        left, top = float(legend.group(1)), float(legend.group(2))
        box = re.search(r'<rect class="bg"[^>]*?width="([\d.]+)" height="([\d.]+)"', text[legend.start():])
        width, height = float(box.group(1)), float(box.group(2))
        names = re.findall(r'class="legendtext"[^>]*>([^<]+)<', text)
        assert set(colours) <= set(names), (svg.name, sorted(set(colours) - set(names)))
        offsets = [float(y) for y in re.findall(r'<g class="traces" transform="translate\([\d.]+,\s*([\d.]+)\)"', text)]
        assert max(offsets) < height, (svg.name, "an entry lies below the legend box")
        image = Image.open(png).convert("RGB")
        assert image.size[0] == 1200
        crop = np.asarray(image.crop((int(left), int(top), int(left + width), int(top + height))))
        region = {tuple(pixel) for pixel in crop.reshape(-1, 3).tolist()}
        for criterion, colour in colours.items():
            rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
            assert rgb in region, (png.name, criterion, colour)

"""Reports, leaderboard and gate on iterative-stage rows, against values derived by hand from the fixture's formulas.

Fixture (results_fixtures.iterative_rows): cnn/digits, criteria magnitude-l2 (q = 0), oba (q = 0.02) and taylor
(q = 0.01), seeds 0, 1, 2 with offsets e = −0.4, +0.1, +0.6 points (mean +0.1, sample std 0.5), dense 96 + 0.2·s.
Iterative 0.1/0.2/0.3, stage ratio s_k, in percent: after fine-tuning 95.5 − 10·s_k + 100·q + e, right after pruning
93 − 50·s_k + 200·q + e; taylor's seed 2 fails in stage 3. One-shot at r: after fine-tuning 94 − 12·r + 100·q + e.
Seed means over 3 seeds add 0.1; taylor's stage 3 has seeds 0 and 1 (mean offset −0.15, std 0.5/√2).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
from browser import CHROMIUM, LAYOUT_CHECK, collected_errors, layout_check, render_dom, render_in_frame
from results_fixtures import SCHEDULE, iterative_rows, report_rows, row, stage_row, write_store

from oba.report import check, load_results, write_leaderboard, write_report
from oba.report.band import Band, measure_band, setting_key
from oba.report.ranking import boards
from oba.report.stages import row_ids
from oba.report.suite_page import build_report
from oba.report.trajectory import stage_points

ROOT = Path(__file__).resolve().parents[1]
FINE_TUNED = {  # (criterion, stage) → seed mean after the stage's fine-tuning (percent)
    ("magnitude-l2", 1): 94.6, ("magnitude-l2", 2): 93.6, ("magnitude-l2", 3): 92.6,
    ("oba", 1): 96.6, ("oba", 2): 95.6, ("oba", 3): 94.6,
    ("taylor", 1): 95.6, ("taylor", 2): 94.6, ("taylor", 3): 93.35,
}
PRUNED = {  # right after the stage's pruning, BN-recalibrated
    ("magnitude-l2", 1): 88.1, ("magnitude-l2", 2): 83.1, ("magnitude-l2", 3): 78.1,
    ("oba", 1): 92.1, ("oba", 2): 87.1, ("oba", 3): 82.1,
    ("taylor", 1): 90.1, ("taylor", 2): 85.1, ("taylor", 3): 79.85,
}
TRAJECTORY = "01-cnn-digits-structured-global-iterative-0.1-0.2-0.3-trajectory"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_store(tmp_path_factory.mktemp("iterative"), iterative_rows())


@pytest.fixture(scope="module")
def built(store: str) -> tuple[str, dict[str, go.Figure]]:
    page, figures = build_report(load_results(store))
    return page, dict(figures)


def test_rows_older_than_the_stage_columns_read_as_one_shot_cells() -> None:
    """tests/data/schema4: four rows of the smoke reference as committed before issue 22 (schema version 4)."""
    reference = load_results(str(ROOT / "tests" / "data" / "schema4"))
    assert len(reference) == 4 and (reference["schema_version"].astype(int) == 4).all()
    assert sorted(reference["criterion"]) == ["oba-hvp", "taylor", "taylor2", "taylor2-group"], "renamed on load"
    assert (reference["stage"] == 1).all() and (reference["stages"] == 1).all()
    assert (reference["stage_ratio"] == reference["ratio"]).all() and (reference["schedule"] == "one-shot").all()
    bare = load_results(pd.DataFrame([row(ratio=0.4)]))
    assert bare.loc[0, ["stage", "stages", "stage_ratio", "schedule"]].tolist() == [1, 1, 0.4, "one-shot"]


def test_boards_rank_final_rows_and_never_mix_an_iterative_schedule_with_one_shot(store: str) -> None:
    ranked = {(b.ratio, b.schedule): b for b in boards(load_results(store))}
    assert set(ranked) == {(0.3, SCHEDULE), (0.3, "one-shot"), (0.6, "one-shot")}
    iterative = {e.criterion: e for e in ranked[(0.3, SCHEDULE)].entries}
    assert {name: e.mean * 100 for name, e in iterative.items()} == pytest.approx(
        {name: FINE_TUNED[(name, 3)] for name in iterative})
    assert (iterative["taylor"].seeds, iterative["taylor"].failed) == (2, 1)
    one_shot = {e.criterion: e.mean * 100 for e in ranked[(0.3, "one-shot")].entries}
    assert one_shot == pytest.approx({"magnitude-l2": 90.5, "oba": 92.5, "taylor": 91.5})
    assert ranked[(0.3, SCHEDULE)].title.endswith("ratio 30%, iterative 0.1/0.2/0.3")
    assert ranked[(0.3, "one-shot")].title.endswith("ratio 30%")
    pruned = {e.criterion: e.mean * 100 for e in boards(load_results(store), "pruned_acc")[0].entries}
    assert pruned == pytest.approx({name: PRUNED[(name, 3)] for name in pruned})


def test_leaderboard_keeps_every_stage_row_and_links_each_board_to_its_cells(store: str, tmp_path: Path) -> None:
    written = write_leaderboard(store, tmp_path / "board", report=tmp_path / "report.html")
    write_report(store, tmp_path / "report.html", leaderboard=tmp_path / "board")
    cells = pd.read_csv(written["csv"])
    assert len(cells) == len(pd.read_parquet(written["parquet"])) == len(iterative_rows()) == 45
    staged = cells[cells["schedule"] == SCHEDULE]
    assert sorted(staged.groupby("stage").size().tolist()) == [9, 9, 9]
    assert staged[staged["stage"] < 3]["cell_id"].str.endswith(("-stage1", "-stage2")).all()
    assert sorted(staged["stage_ratio"].unique()) == [0.1, 0.2, 0.3]
    document = json.loads(written["json"].read_text(encoding="utf-8"))
    assert sorted(b["schedule"] for b in document["metrics"]["final_acc"]["boards"]) == ["iterative 0.1/0.2/0.3",
                                                                                        "one-shot", "one-shot"]
    markdown = written["markdown"].read_text(encoding="utf-8")
    assert "### cnn · digits · structured · global allocation · ratio 30%, iterative 0.1/0.2/0.3" in markdown
    anchor = "cells-cnn-digits-structured-global-30-iterative-0.1-0.2-0.3"
    assert f"report.html#{anchor}" in written["html"].read_text(encoding="utf-8")
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert f'id="{anchor}"' in report and f'id="{anchor}-oba"' in report


def test_report_sections_compare_final_rows_and_the_table_lists_every_stage(built: tuple) -> None:
    page, figures = built
    assert "cnn · digits · structured · global allocation · iterative 0.1/0.2/0.3" in page
    assert "All cells (27, 45 rows with the earlier stages)" in page
    assert "30%, iterative 0.1/0.2/0.3, stage 3/3" in page, "the failed stage in the errors table"
    accuracy = figures["01-cnn-digits-structured-global-iterative-0.1-0.2-0.3-accuracy"]
    oba = next(t for t in accuracy.data if t.name == "oba" and t.xaxis == "x")
    assert list(oba.y) == pytest.approx([FINE_TUNED[("oba", 3)]]) and list(oba.x) == pytest.approx([1 / 0.7])
    one_shot = figures["02-cnn-digits-structured-global-accuracy"]
    oba = next(t for t in one_shot.data if t.name == "oba" and t.xaxis == "x")
    assert list(oba.y) == pytest.approx([92.5, 94 - 7.2 + 2 + 0.1])


def test_trajectory_points_are_seed_means_through_the_stages(built: tuple) -> None:
    _, figures = built
    assert [stem for stem in figures if stem.endswith("trajectory")] == [TRAJECTORY]
    figure = figures[TRAJECTORY]
    for axis, expected in (("x", FINE_TUNED), ("x2", PRUNED)):
        for criterion in ("magnitude-l2", "oba", "taylor"):
            line = next(t for t in figure.data if t.name == criterion and t.xaxis == axis)
            assert list(line.x) == pytest.approx([10.0, 20.0, 30.0])
            assert list(line.y) == pytest.approx([expected[(criterion, k)] for k in (1, 2, 3)])
            band = next(t for t in figure.data if t.name == f"{criterion} ±1 std" and t.xaxis == axis)
            spread = [0.5, 0.5, 0.5 / math.sqrt(2) if criterion == "taylor" else 0.5]
            assert list(band.y[:3]) == pytest.approx([expected[(criterion, k)] + spread[k - 1] for k in (1, 2, 3)])
            assert list(band.y[3:]) == pytest.approx([expected[(criterion, k)] - spread[k - 1] for k in (3, 2, 1)])
    dense = 96.0 + 0.2  # mean over seeds of 96 + 0.2·s
    assert [shape.y0 for shape in figure.layout.shapes] == pytest.approx([dense, dense])
    assert [t.name for t in figure.data if t.showlegend is not False] == ["magnitude-l2", "oba", "taylor"]
    assert all("removed after the stage" in axis.title.text for axis in figure.select_xaxes())
    staged = [r for r in iterative_rows() if r.get("schedule") == SCHEDULE]
    taylor = stage_points(load_results(pd.DataFrame(staged)), "final_acc").query("criterion == 'taylor'")
    assert taylor["n"].tolist() == [3, 3, 2]


def test_no_trajectory_without_iterative_rows() -> None:
    one_shot = [r for r in iterative_rows() if r.get("schedule") != SCHEDULE]
    for rows in (one_shot, report_rows()):
        page, figures = build_report(load_results(pd.DataFrame(rows)))
        assert 'id="trajectories"' not in page and "accuracy through the stages" not in page
        assert not [stem for stem in figures if "trajectory" in stem or "iterative" in stem]


def _stage_shift(rows: list[dict], criterion: str, schedule: str, stage_ratio: float, points: float) -> list[dict]:
    """``rows`` with both gated metrics of every seed of one (criterion, schedule, stage ratio) moved by ``points``."""
    moved = []
    for item in rows:
        item = dict(item)
        if ((item["criterion"], item.get("schedule", "one-shot"), item.get("stage_ratio", item["ratio"]))
                == (criterion, schedule, stage_ratio) and item["status"] == "ok"):
            item["pruned_acc"] += points / 100
            item["final_acc"] += points / 100
        moved.append(item)
    return moved


def test_gate_compares_every_stage_of_an_iterative_setting(store: str, tmp_path: Path) -> None:
    same = check(store, store)
    assert same.exit_code == 0
    # 9 iterative (criterion, stage) keys and 6 one-shot settings, three gated metrics each.
    assert len(same.comparisons) == (9 + 6) * 3
    assert same.render().startswith("PASS — 9 setting(s) (and 6 earlier stage(s) of iterative settings)")
    # No band file: the band is 3·√2·s/√n from the baseline's seeds, s = 0.5 points over 3 seeds.
    stage = next(c for c in same.comparisons if c.key[2] == "oba" and c.key[-1] == 0.2 and c.metric == "final_acc")
    assert stage.allowed == pytest.approx(3 * math.sqrt(2) * 0.5 / math.sqrt(3))
    assert stage.baseline == pytest.approx(FINE_TUNED[("oba", 2)])

    lowered = write_store(tmp_path / "stage2", _stage_shift(iterative_rows(), "oba", SCHEDULE, 0.2, -3.0))
    outcome = check(lowered, store)
    assert outcome.exit_code == 1
    assert {(c.key[2], c.key[6], c.key[7], c.metric) for c in outcome.regressions} == {
        ("oba", SCHEDULE, 0.2, "pruned_acc"), ("oba", SCHEDULE, 0.2, "final_acc")}
    assert all(c.drop == pytest.approx(3.0) for c in outcome.regressions)
    assert "iterative 0.1/0.2/0.3  0.2" in outcome.render()


def test_gate_never_compares_an_iterative_setting_with_one_shot_at_its_ratio(store: str, tmp_path: Path) -> None:
    lowered = write_store(tmp_path / "oneshot", _stage_shift(iterative_rows(), "taylor", "one-shot", 0.3, -3.0))
    outcome = check(lowered, store)
    assert outcome.exit_code == 1
    assert {(c.key[2], c.key[6], c.key[7]) for c in outcome.regressions} == {("taylor", "one-shot", 0.3)}
    # Taylor's iterative setting failed its seed 2 in the baseline: noted, and the other seeds compared.
    assert [k[-1] for k in outcome.baseline_failed] == [2]


def test_gate_reports_a_missing_stage_as_incomplete(store: str, tmp_path: Path) -> None:
    rows = [r for r in iterative_rows() if not (r["criterion"] == "oba" and r.get("stage") == 1 and r["seed"] == 0)]
    outcome = check(write_store(tmp_path / "missing", rows), store)
    assert outcome.exit_code == 2
    assert outcome.missing == [("cnn", "digits", "oba", "structured", "global", 0.3, SCHEDULE, 0.1, 0)]


def test_band_file_keeps_stage_settings_and_reads_older_files_as_one_shot(store: str, tmp_path: Path) -> None:
    reference = load_results(store)
    # Machine B moves every seed of oba's stage 2 by +0.2 points: seed means m, m + 0.2 → machine std 0.2/√2.
    other = load_results(pd.DataFrame(_stage_shift(iterative_rows(), "oba", SCHEDULE, 0.2, 0.2)))
    band = measure_band(reference, [other], ["a", "b"], z=3.0, floor=0.5)
    key = ("cnn", "digits", "oba", "structured", "global", 0.3, SCHEDULE, 0.2)
    measured = band.settings[key].metrics["final_acc"]
    assert measured.machine_std == pytest.approx(0.2 / math.sqrt(2))
    assert measured.band == pytest.approx(max(0.5, 3 * math.sqrt(2) * 0.2 / math.sqrt(2)))
    again = Band.read(band.write(tmp_path / "band.json"))
    assert again.allowed_drop(key, "final_acc") == pytest.approx(measured.band)
    older = json.loads((tmp_path / "band.json").read_text())
    for entry in older["settings"]:
        del entry["schedule"], entry["stage_ratio"]
    (tmp_path / "older.json").write_text(json.dumps(older))
    read = Band.read(tmp_path / "older.json")
    assert all(k[6] == "one-shot" and k[7] == k[5] for k in read.settings)
    assert setting_key(stage_row(1, criterion="oba")) == ("cnn", "digits", "oba", "structured", "global", 0.3,
                                                        SCHEDULE, 0.1)


def test_a_suites_row_ids_name_every_stage_row() -> None:
    from oba.suite.cells import expand
    from oba.suite.config import load_suite

    cell = expand(load_suite(ROOT / "suites" / "ci.toml"))[0]
    iterative = type(cell)(cell.suite, cell.cell_id, {**cell.config, "prune": {**cell.config["prune"],
                                                                                "stages": [0.05, 0.1]}})
    assert row_ids([cell]) == {cell.cell_id}
    assert row_ids([iterative]) == {f"{cell.cell_id}-stage1", cell.cell_id}


def _crowded_iterative(copies: int = 5) -> list[dict]:
    """The fixture's iterative rows with each criterion copied under ``copies`` longer names (15 criteria)."""
    return [dict(item, criterion=f"{item['criterion']}-variant-{copy}", cell_id=f"{item['cell_id']}-{copy}")
            for copy in range(copies) for item in iterative_rows() if item.get("schedule") == SCHEDULE]


@pytest.fixture(scope="module")
def crowded_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    rows = _crowded_iterative()
    return write_report(pd.DataFrame(rows), tmp_path_factory.mktemp("crowded") / "report.html"), sorted(
        {r["criterion"] for r in rows})


def _assert_trajectory_legend_complete(check_result: dict, criteria: list[str]) -> None:
    (figure,) = [f for f in check_result["figures"] if f["id"].endswith("-trajectory")]
    names = [entry["name"] for entry in figure["entries"]]
    assert names == criteria, names
    assert all(entry["inside"] for entry in figure["entries"]) and not figure["scrolls"]
    assert figure["in_figure"] and figure["in_window"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)")
def test_trajectory_section_renders_with_every_legend_entry_visible(crowded_report: tuple, tmp_path: Path) -> None:
    report, criteria = crowded_report
    dom = render_dom(report, tmp_path, LAYOUT_CHECK)
    assert collected_errors(dom) == []
    assert dom.count('id="trajectories"') == 1
    _assert_trajectory_legend_complete(layout_check(dom), criteria)
    narrow = render_in_frame(report, tmp_path, 390, LAYOUT_CHECK)
    _assert_trajectory_legend_complete(layout_check(narrow), criteria)

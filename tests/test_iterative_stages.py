"""Iterative stages: one row per stage, each stage to its fraction of the dense MACs, resumable between stages.

Real data (scikit-learn digits), real training; a cell takes seconds.
"""
from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from nets import ResidualCNN
from s3_server import objects

from oba import models
from oba.store.compaction import compact
from oba.store.results import ResultStore, filesystem
from oba.suite.cell import run_cell, stage_ratio_of_current
from oba.suite.cells import Cell, cell_id, expand
from oba.suite.config import load_suite
from oba.suite.stage_models import load_stage_model, save_stage_model
from oba.suite.trial import run_trial_cells
from suites import tiny_suite

STAGES = [0.15, 0.3, 0.45]
REPO = Path(__file__).resolve().parents[1]


def iterative(cell: Cell, stages: list[float]) -> Cell:
    """``cell`` made iterative through ``stages`` (its ratio the last), as a suite with ``[prune] stages`` expands."""
    config = copy.deepcopy(cell.config)
    config["prune"]["stages"] = stages
    config["ratio"] = stages[-1]
    return Cell(cell.suite, cell_id(config), config)


@pytest.fixture(scope="module")
def cell(tmp_path_factory: pytest.TempPathFactory) -> Cell:
    folder = tmp_path_factory.mktemp("stages")
    (one_shot,) = expand(load_suite(tiny_suite(folder, criteria=("taylor",), ratios=(0.45,))))
    return iterative(one_shot, STAGES)


def _run(cell: Cell, cache: Path, stored=None) -> list[dict]:
    written: list[dict] = []
    last = run_cell(cell, cache_dir=str(cache), write=written.append, stored=stored)
    return [*written, last]


@pytest.fixture(scope="module")
def uninterrupted(cell: Cell, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    cache = tmp_path_factory.mktemp("cache")
    return _run(cell, cache), cache


def test_the_stage_ratio_removes_what_is_left_to_reach_the_dense_target() -> None:
    # 1000 dense MACs, 850 left after a first stage at 0.15: reaching 0.3 of the dense MACs removed means
    # 700 left, so 150 of the 850 go: 150/850.
    assert stage_ratio_of_current(1000, 850, 0.3) == pytest.approx(150 / 850)
    assert stage_ratio_of_current(1000, 1000, 0.15) == pytest.approx(0.15)


def test_an_iterative_cell_stores_one_row_per_stage_each_at_its_fraction_of_dense_macs(
        cell: Cell, uninterrupted: tuple[list[dict], Path]) -> None:
    rows, _ = uninterrupted
    assert [r["status"] for r in rows] == ["ok"] * 3, [r.get("error") for r in rows]
    assert [r["stage"] for r in rows] == [1, 2, 3]
    assert [r["stages"] for r in rows] == [3, 3, 3]
    assert [r["stage_ratio"] for r in rows] == STAGES
    assert [r["cell_id"] for r in rows] == [f"{cell.cell_id}-stage1", f"{cell.cell_id}-stage2", cell.cell_id]
    assert {r["schedule"] for r in rows} == {"iterative 0.15/0.3/0.45"}
    assert {r["ratio"] for r in rows} == {0.45}
    dense = {r["macs_dense"] for r in rows}
    assert len(dense) == 1
    for row, target in zip(rows, STAGES):
        removed = 1 - row["macs_pruned"] / row["macs_dense"]
        # each stage lands near its target fraction of the DENSE MACs (one stem channel of this tiny model is
        # about 2 % of them); removing s_k of the current model instead would remove 0.405 and 0.67 by stage 3
        assert abs(removed - target) <= 0.03, (target, removed)
        assert row["macs_speedup"] == pytest.approx(row["macs_dense"] / row["macs_pruned"])
    assert rows[0]["macs_pruned"] > rows[1]["macs_pruned"] > rows[2]["macs_pruned"]
    assert len({r["params_dense"] for r in rows}) == 1


def test_layer_widths_and_the_cap_refer_to_the_dense_model_and_only_shrink(
        uninterrupted: tuple[list[dict], Path]) -> None:
    rows, _ = uninterrupted
    widths = [r["layer_widths"] for r in rows]
    assert widths[0].keys() == widths[1].keys() == widths[2].keys()
    for name in widths[0]:
        dense = {w[name]["dense"] for w in widths}
        assert len(dense) == 1, (name, dense)
        remaining = [w[name]["remaining"] for w in widths]
        assert remaining == sorted(remaining, reverse=True), (name, remaining)
        # tiny suite's layer cap is the default 0.9 of the dense units: at least 1/10 (and one unit) stays
        assert remaining[-1] >= max(1, widths[0][name]["dense"] - int(0.9 * widths[0][name]["dense"]))


def test_fidelity_is_the_dense_models_repeated_on_every_stage(
        uninterrupted: tuple[list[dict], Path]) -> None:
    rows, _ = uninterrupted
    assert len({(r["fidelity"], r["fidelity_abs"], r["fidelity_precision"], r["fidelity_k"]) for r in rows}) == 1
    assert all(r["pruned_acc"] is not None and r["final_acc"] is not None for r in rows)


def test_each_earlier_stage_keeps_its_fine_tuned_model(cell: Cell, uninterrupted: tuple[list[dict], Path]) -> None:
    rows, cache = uninterrupted
    for stage, row in enumerate(rows[:-1], start=1):
        model = load_stage_model(str(cache), cell.row_id(stage), models.create("resnet8", 10, 1, 8), "cpu")
        assert model is not None
        channels = sum(w["remaining"] for w in row["layer_widths"].values())
        assert channels < sum(w["dense"] for w in row["layer_widths"].values())
    assert load_stage_model(str(cache), cell.row_id(3), models.create("resnet8", 10, 1, 8), "cpu") is None


def test_a_cell_stopped_after_stage_two_resumes_with_stage_three_alone_and_equal_rows(
        cell: Cell, uninterrupted: tuple[list[dict], Path]) -> None:
    rows, cache = uninterrupted
    stored = {rows[0]["cell_id"]: rows[0], rows[1]["cell_id"]: rows[1]}
    resumed = _run(cell, cache, stored=stored.get)
    assert [r["stage"] for r in resumed] == [3]
    for column in ("pruned_acc_raw", "pruned_acc", "final_acc", "macs_pruned", "fidelity", "layer_widths"):
        assert resumed[0][column] == rows[2][column], column


def test_a_stage_without_its_kept_model_is_run_again(cell: Cell, uninterrupted: tuple[list[dict], Path],
                                                     tmp_path: Path) -> None:
    rows, _ = uninterrupted
    stored = {rows[0]["cell_id"]: rows[0], rows[1]["cell_id"]: rows[1]}
    again = _run(cell, tmp_path / "empty-cache", stored=stored.get)
    assert [r["stage"] for r in again] == [1, 2, 3]
    assert [r["final_acc"] for r in again] == [r["final_acc"] for r in rows]


def test_a_stage_model_kept_on_s3_loads_as_the_same_module_bit_for_bit(s3_location: str) -> None:
    cache = s3_location.replace("/results?", "/cache?")
    model = ResidualCNN(c=5)  # widths no default-built ResidualCNN has: the module itself must come back
    model(torch.randn(8, 2, 6, 6))  # training-mode pass: running statistics away from their initial values
    model.eval()
    save_stage_model(cache, "cell-stage1", model)
    assert objects(cache) == ["stages/cell-stage1.pt"], "one entry, no temporary left behind"
    loaded = load_stage_model(cache, "cell-stage1", ResidualCNN(), "cpu")
    assert isinstance(loaded, ResidualCNN) and loaded.conv0.out_channels == 5
    x = torch.randn(4, 2, 6, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert load_stage_model(cache, "cell-stage2", ResidualCNN(), "cpu") is None


def test_an_iterative_cell_with_results_and_cache_on_s3_resumes_from_the_model_kept_there(
        cell: Cell, s3_location: str) -> None:
    cache = s3_location.replace("/results?", "/cache?")
    config = {"results": s3_location, "cache_dir": cache, "git_sha": "test", "threads": 1, "data_root": None,
              "download": False, "device": "cpu", "gpu": 0, "pipeline": "full"}
    ids = [cell.row_id(stage) for stage in (1, 2, 3)]
    store = ResultStore(s3_location)
    assert run_trial_cells(config, [cell]) == (1, 1)
    first = {row["cell_id"]: row for row in store.read().to_dict("records")}
    assert sorted(first) == sorted(ids) and {row["status"] for row in first.values()} == {"ok"}
    assert [first[i]["stage"] for i in ids] == [1, 2, 3]
    assert [name for name in objects(cache) if name.startswith("stages/")] == [f"stages/{i}.pt" for i in ids[:2]]
    fs, root = filesystem(s3_location)
    for row_id in ids[1:]:  # the run stopped after stage 1: stages 2 and 3 never stored
        fs.delete_file(f"{root}/{row_id}.parquet")
    assert run_trial_cells(config, [cell]) == (1, 1)
    again = {row["cell_id"]: row for row in store.read().to_dict("records")}
    assert sorted(again) == sorted(ids)
    assert again[ids[0]]["finished_at"] == first[ids[0]]["finished_at"], "stage 1 was not run again"
    for row_id in ids[1:]:
        assert again[row_id]["started_at"] > first[ids[-1]]["finished_at"], row_id
        for column in ("status", "stage", "pruned_acc_raw", "pruned_acc", "final_acc", "macs_pruned", "params_pruned",
                       "fidelity", "layer_widths"):
            assert again[row_id][column] == first[row_id][column], (row_id, column)


def test_a_cell_whose_earlier_stage_was_compacted_resumes_after_it(
        cell: Cell, uninterrupted: tuple[list[dict], Path], tmp_path: Path) -> None:
    """A run that ended with this cell failed at stage 2 and compacted its store: the next run reads stage 1's row
    from the compacted file and runs stages 2 and 3 alone."""
    rows, cache = uninterrupted
    results = str(tmp_path / "results")
    store = ResultStore(results)
    store.write(rows[0])
    store.write({**rows[1], "status": "error", "error": "stage 2/3: boom"})
    compact(results, settle=0.05)
    assert not list((tmp_path / "results").glob("*.parquet")), "both rows are compacted"
    config = {"results": results, "cache_dir": str(cache), "git_sha": "test", "threads": 1, "data_root": None,
              "download": False, "device": "cpu", "gpu": 0, "pipeline": "full"}
    assert run_trial_cells(config, [cell]) == (1, 1)
    loose = sorted(part.stem for part in (tmp_path / "results").glob("*.parquet"))
    assert loose == sorted([cell.row_id(2), cell.row_id(3)]), "stage 1 was not run again"
    again = store.read().set_index("cell_id")
    for stage in (2, 3):
        for column in ("status", "pruned_acc_raw", "pruned_acc", "final_acc", "macs_pruned", "fidelity"):
            assert again.loc[cell.row_id(stage), column] == rows[stage - 1][column], (stage, column)


def test_a_failing_stage_returns_the_cells_error_row_naming_the_stage(cell: Cell, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import oba.suite.cell_workers as cell_workers

    calls = []
    real = cell_workers.fine_tune

    def fail_second(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("planted failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(cell_workers, "fine_tune", fail_second)
    rows = _run(cell, tmp_path / "cache")
    assert [r["status"] for r in rows] == ["ok", "error"]
    assert rows[0]["cell_id"] == cell.row_id(1)
    assert rows[1]["cell_id"] == cell.cell_id
    assert rows[1]["error"].startswith("stage 2/3: RuntimeError: planted failure")


def test_a_one_shot_cell_is_stage_one_of_one(tmp_path: Path) -> None:
    (one_shot,) = expand(load_suite(tiny_suite(tmp_path, criteria=("taylor",), ratios=(0.3,))))
    written: list[dict] = []
    row = run_cell(one_shot, cache_dir=str(tmp_path / "cache"), write=written.append)
    assert written == []
    assert (row["status"], row["cell_id"], row["stage"], row["stages"], row["stage_ratio"], row["schedule"]) == \
        ("ok", one_shot.cell_id, 1, 1, 0.3, "one-shot")
    assert "stages" not in json.loads(json.dumps(row["config"]))["prune"]


def test_later_stages_of_a_randomised_criterion_draw_as_later_pruning_steps(tmp_path: Path) -> None:
    (one_shot,) = expand(load_suite(tiny_suite(tmp_path, criteria=("random",), ratios=(0.3,))))
    rows = _run(iterative(one_shot, [0.15, 0.3]), tmp_path / "cache")
    assert [r["status"] for r in rows] == ["ok", "ok"], [r.get("error") for r in rows]
    steps = [r["criterion_config"]["step_seeds"] for r in rows]
    # the tiny suite prunes in one step per stage: stage 1 is step 1, stage 2 step 2, with different seeds
    assert [sorted(s) for s in steps] == [["1"], ["2"]], steps
    assert steps[0]["1"] != steps[1]["2"]


def _kill_session(session: int) -> None:
    """SIGKILL every process of ``session`` (the driver's, and Ray's processes it started: some in process groups
    of their own), so that no orphaned trial finishes the cell after the kill."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # stat fields after the name: state, ppid, pgrp, session
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.ray
@pytest.mark.slow
def test_a_run_killed_between_stages_resumes_after_the_last_stored_stage(tmp_path: Path) -> None:
    suite_path = tiny_suite(tmp_path, criteria=("taylor",), ratios=(0.4,))
    suite_path.write_text(suite_path.read_text().replace("[prune]\nsteps = 1\n",
                                                         "[prune]\nsteps = 1\nstages = [0.1, 0.2, 0.3, 0.4]\n"))
    (cell,) = expand(load_suite(suite_path))
    results = tmp_path / "results"
    first = results / f"{cell.row_id(1)}.parquet"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "oba.cli", "run", str(suite_path), "--results", str(results)]
    driver = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not first.exists():
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    _kill_session(driver.pid)
    driver.wait()
    before = {part.stem: ResultStore(str(results)).read_cell(part.stem) for part in results.glob("*.parquet")}
    assert cell.cell_id not in before, "the cell ended before the kill: the test did not stop it between stages"
    assert cell.row_id(1) in before
    resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(r"1 cells, 0 already stored, 1 to run", resumed.stderr), resumed.stderr[-2000:]
    rows = ResultStore(str(results)).read()
    assert sorted(rows["cell_id"]) == sorted(cell.row_id(k) for k in (1, 2, 3, 4))
    assert set(rows["status"]) == {"ok"}
    by_id = {row["cell_id"]: row for row in rows.to_dict("records")}
    for row_id, row in before.items():  # stages stored before the kill were not run again
        assert by_id[row_id]["finished_at"] == row["finished_at"], row_id
    assert sorted(by_id[cell.row_id(k)]["stage"] for k in (1, 2, 3, 4)) == [1, 2, 3, 4]

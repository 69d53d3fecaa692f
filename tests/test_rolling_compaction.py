"""Folding a run's rows while it runs: which rows move, when, and that every reader still sees each row once."""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from oba.store.compaction import compact
from oba.store.lease import COMPACTION_LEASE, Lease
from oba.store.results import COLUMNS, ResultStore, StoredRows
from oba.store.rolling_compaction import RollingCompaction
from oba.store.scan import COMPACTED, LOOSE, partition_folder, partition_values
from oba.suite.cells import Cell, expand
from oba.suite.config import load_suite
from suites import tiny_suite


def _grid(tmp_path: Path, stages: bool = False) -> list[Cell]:
    """6 cells (3 criteria × 2 seeds); with ``stages`` each cell has 3 stages (3 rows)."""
    path = tiny_suite(tmp_path, criteria=("taylor", "random", "magnitude-l1"), seeds=(0, 1))
    if stages:
        path.write_text(path.read_text().replace("[prune]\n", "[prune]\nstages = [0.1, 0.2, 0.3]\n"))
    return expand(load_suite(path))


def _store(cell: Cell, store: ResultStore, ok: bool = True, value: float = 0.5) -> None:
    """Every stage row of ``cell``; the last one "ok" or an error."""
    for stage in range(1, len(cell.stage_ratios) + 1):
        last = stage == len(cell.stage_ratios)
        store.write({**cell.identity(stage), "status": "ok" if ok or not last else "error",
                     "error": None if ok or not last else "boom", "final_acc": value + stage})


def _kinds(store: ResultStore) -> dict[str, int]:
    """row id → kind of the file holding it (loose parts by name; compacted rows by reading the files)."""
    kinds = {f.path.rsplit("/", 1)[-1][: -len(".parquet")]: LOOSE for f in store.files() if f.kind == LOOSE}
    compacted = [f for f in store.files() if f.kind == COMPACTED]
    for file in compacted:
        for row_id in pd.read_parquet(file.path, columns=["cell_id"])["cell_id"]:
            kinds.setdefault(row_id, COMPACTED)
    return kinds


def test_only_the_ok_rows_of_ended_trials_move_and_readers_see_every_row_once(tmp_path: Path) -> None:
    cells = _grid(tmp_path, stages=True)
    store = ResultStore(str(tmp_path / "results"))
    trials = [{c.cell_id: c.row_ids() for c in trial} for trial in (cells[:2], cells[2:4], cells[4:])]
    rolling = RollingCompaction(store.location, trials, threshold=3, stream=io.StringIO())
    _store(cells[0], store)
    rolling.cell_done(cells[0].cell_id, True)
    _store(cells[2], store)
    rolling.cell_done(cells[2].cell_id, True)
    assert rolling.close() == 0, "trial 2 has not ended"
    _store(cells[3], store, ok=False)
    rolling.cell_done(cells[3].cell_id, False)  # trial 2 ends: its ok cell's 3 rows are due
    assert rolling.close() == 3
    kinds = _kinds(store)
    assert {r for r, k in kinds.items() if k == COMPACTED} == {cells[2].row_id(s) for s in (1, 2, 3)}
    assert all(kinds[cells[3].row_id(s)] == LOOSE for s in (1, 2, 3)), (
        "a failed cell's rows stay loose: the next run rewrites its error row and resumes from its stages' rows")
    assert all(kinds[cells[0].row_id(s)] == LOOSE for s in (1, 2, 3)), "trial 1 has not ended: its rows stay"
    rows = store.read()
    assert len(rows) == 9 and rows["cell_id"].is_unique
    assert store.finished(c.cell_id for c in cells) == {cells[0].cell_id, cells[2].cell_id}


def test_rows_wait_below_the_threshold_and_while_another_compaction_holds_the_store(tmp_path: Path) -> None:
    cells = _grid(tmp_path)
    store = ResultStore(str(tmp_path / "results"))
    trials = [{cell.cell_id: cell.row_ids()} for cell in cells]
    rolling = RollingCompaction(store.location, trials, threshold=2, stream=io.StringIO())
    _store(cells[0], store)
    rolling.cell_done(cells[0].cell_id, True)
    assert rolling.close() == 0 and rolling.foldable == [cells[0].cell_id], "1 row < threshold 2: nothing moves"
    with Lease(store.location, "oba store compact", name=COMPACTION_LEASE, settle=0.05):
        _store(cells[1], store)
        rolling.cell_done(cells[1].cell_id, True)
        assert rolling.close() == 0, "the fold found the compaction lease held"
    assert sorted(rolling.foldable) == sorted(c.cell_id for c in cells[:2]), "its rows wait for the next fold"
    _store(cells[2], store)
    rolling.cell_done(cells[2].cell_id, True)
    assert rolling.close() == 3 and rolling.foldable == []
    assert set(_kinds(store).values()) == {COMPACTED}


def test_a_fold_writes_beside_older_compacted_files_and_its_newer_rows_win(tmp_path: Path) -> None:
    cells = _grid(tmp_path)
    store = ResultStore(str(tmp_path / "results"))
    for cell in cells:
        _store(cell, store, value=0.1)
    compact(store.location, settle=0.05)
    before = [f.path for f in store.files() if f.kind == COMPACTED]
    _store(cells[0], store, value=0.7)
    _store(cells[1], store, value=0.7)
    summary = compact(store.location, settle=0.05, rows={cells[0].cell_id}, merge=False)
    assert summary.folded == 1 and summary.removed == 0 and summary.cells is None
    files = store.files()
    assert set(before) < {f.path for f in files if f.kind == COMPACTED}, "the older file is kept beside the new one"
    assert [f.path.rsplit("/", 1)[-1] for f in files if f.kind == LOOSE] == [f"{cells[1].cell_id}.parquet"]
    table = store.read().set_index("cell_id")
    assert len(table) == len(cells)
    assert table.loc[cells[0].cell_id, "final_acc"] == 1.7 and table.loc[cells[1].cell_id, "final_acc"] == 1.7
    assert (table.drop(index=[cells[0].cell_id, cells[1].cell_id])["final_acc"] == 1.1).all()
    compact(store.location, settle=0.05, rows={cells[1].cell_id}, merge=False)
    assert len([f for f in store.files() if f.kind == COMPACTED]) == 3 and not store.versions()
    merged = compact(store.location, settle=0.05)  # no loose part left: it merges the partition's three files
    assert merged.cells == len(cells) and len([f for f in store.files() if f.kind == COMPACTED]) == 1
    pd.testing.assert_frame_equal(table[[c for c in COLUMNS if c != "cell_id"]],
                                  store.read().set_index("cell_id")[[c for c in COLUMNS if c != "cell_id"]])


def test_a_partition_folder_gives_back_the_values_it_was_made_of() -> None:
    for values in (("smoke", "resnet8", "digits"), ("a b/c", "m=1", "%x"), ("s", None, "d")):
        assert partition_values("/r", partition_folder("/r", values)) == values


def test_a_row_is_read_from_its_loose_part_else_from_the_newest_compacted_file_of_its_partition(tmp_path: Path) -> None:
    cells = _grid(tmp_path)
    store = ResultStore(str(tmp_path / "results"))
    partition = (cells[0].suite, cells[0].config["model"], cells[0].config["dataset"])
    assert StoredRows(store).get(cells[0].cell_id, partition) is None, "nothing stored"
    _store(cells[0], store, value=0.1)
    _store(cells[1], store, value=0.1)
    compact(store.location, settle=0.05)
    _store(cells[0], store, value=0.2)
    compact(store.location, settle=0.05, rows={cells[0].cell_id}, merge=False)
    _store(cells[1], store, value=0.3)
    rows = StoredRows(store)
    first, second = rows.get(cells[0].cell_id, partition), rows.get(cells[1].cell_id, partition)
    assert first["final_acc"] == 1.2, "the newer of two compacted files"
    assert (first["suite"], first["model"], first["dataset"]) == partition
    assert second["final_acc"] == 1.3, "a loose part before any compacted row"
    assert rows.get(cells[2].cell_id, partition) is None
    assert rows.get(cells[0].cell_id, ("other", "resnet8", "digits")) is None, "another partition's files"

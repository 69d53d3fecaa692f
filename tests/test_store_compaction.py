"""Compaction, column reads and the manifest, on real Parquet files in real folders."""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from results_fixtures import row

from oba.cli import main
from oba.report import load_results
from oba.report.check import check
from oba.store.compaction import _take, compact
from oba.store.results import COLUMNS, ResultStore


def _cells(store: ResultStore, n: int, **fields) -> dict[str, dict]:
    written = {}
    for i in range(n):
        cell = row(seed=i, model=f"m{i % 2}", criterion=("oba", "taylor", "random")[i % 3], **fields)
        store.write(cell)
        written[cell["cell_id"]] = cell
    return written


def test_compaction_folds_parts_into_hive_partitions_and_every_reader_sees_the_same_rows(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    written = _cells(store, 12)
    before = store.read().sort_values("cell_id").reset_index(drop=True)
    summary = compact(str(tmp_path), settle=0.05)
    assert summary.folded == 12 and len(summary.written) == 2 and summary.cells == 12
    assert not list(tmp_path.glob("*.parquet"))
    files = sorted(p.relative_to(tmp_path).parent.as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files == ["suite=fixture/model=m0/dataset=digits", "suite=fixture/model=m1/dataset=digits"]
    after = store.read().sort_values("cell_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before[COLUMNS], after[COLUMNS])
    plain = ds.dataset(str(tmp_path), format="parquet", partitioning="hive").to_table().to_pandas()
    assert sorted(plain["cell_id"]) == sorted(written) and set(plain["model"]) == {"m0", "m1"}
    assert sorted(load_results(str(tmp_path))["cell_id"]) == sorted(written)
    assert store.finished() == set(written)


def test_a_part_rewritten_after_compaction_wins_and_the_next_compaction_keeps_it(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    failed = row(seed=0, status="error", error="boom", final_acc=None)
    store.write(failed)
    store.write(row(seed=1))
    compact(str(tmp_path), settle=0.05)
    assert store.statuses()[failed["cell_id"]] == "error"
    store.write({**failed, "status": "ok", "error": None, "final_acc": 0.77})
    assert store.statuses()[failed["cell_id"]] == "ok"
    assert len(store.read()) == 2
    compact(str(tmp_path), settle=0.05)
    table = store.read().set_index("cell_id")
    assert len(table) == 2 and table.loc[failed["cell_id"], "final_acc"] == 0.77
    assert len([p for p in tmp_path.rglob("*.parquet") if "_manifest" not in p.parts]) == 1


def test_an_interrupted_compaction_loses_nothing_and_the_next_one_finishes_it(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    written = _cells(store, 6)
    _take(store, [f for f in store.files()])
    assert not list(tmp_path.glob("*.parquet"))
    assert sorted(store.read()["cell_id"]) == sorted(written)
    compact(str(tmp_path), settle=0.05)
    assert sorted(store.read()["cell_id"]) == sorted(written) and not (tmp_path / "_folding").exists()


def test_an_unreadable_part_is_put_back_and_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ResultStore(str(tmp_path))
    _cells(store, 3)
    broken = Path(store.write(row(seed=99)))
    broken.write_bytes(b"not parquet")
    assert main(["store", "compact", str(tmp_path)]) == 2
    assert f"left unreadable result part {tmp_path}/_folding/" in capsys.readouterr().err
    assert broken.is_file() and len(store.read_readable()[0]) == 3


def _rewrite_rounds(location: str, cells: int, rounds: int) -> None:
    store = ResultStore(location)
    for r in range(rounds):
        for i in range(cells):
            store.write(row(seed=i, final_acc=r / 1000))


def test_no_cell_is_lost_or_duplicated_while_a_run_rewrites_cells_during_compactions(tmp_path: Path) -> None:
    """A writer rewrites 20 cells round after round while compactions run; the last round must win everywhere."""
    location, cells, rounds = str(tmp_path), 20, 40
    writer = mp.get_context("spawn").Process(target=_rewrite_rounds, args=(location, cells, rounds))
    writer.start()
    compactions = 0
    while writer.is_alive():
        compact(location, settle=0.0)
        compactions += 1
    writer.join()
    assert writer.exitcode == 0 and compactions >= 2
    for when in ("before the last compaction", "after it"):
        table = ResultStore(location).read()
        assert sorted(table["seed"]) == list(range(cells)), when
        assert set(table["final_acc"]) == {(rounds - 1) / 1000}, when
        compact(location, settle=0.0)


def test_warm_statuses_come_from_the_manifest_and_a_rewritten_part_is_read_again(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    written = _cells(store, 4)
    now = time.time_ns()
    for k, cell_id in enumerate(sorted(written)):  # written a minute ago, ten seconds apart
        os.utime(tmp_path / f"{cell_id}.parquet", ns=(now, now - (60 - 10 * k) * 10**9))
    oldest = min(written)
    assert store.statuses() == dict.fromkeys(written, "ok")
    part = tmp_path / f"{oldest}.parquet"
    stat = part.stat()
    part.write_bytes(b"x" * stat.st_size)  # same size and mtime: only the manifest can still answer
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert store.statuses() == dict.fromkeys(written, "ok")
    assert store.read(["cell_id", "status", "error", "model"])["error"].isna().all()
    assert [u.path for u in store.read_readable()[1]] == [str(part)]
    store.write({**written[oldest], "status": "error", "error": "late failure"})
    assert store.statuses()[oldest] == "error"


def test_readers_read_only_the_columns_they_ask_for(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    _cells(store, 3)
    compact(str(tmp_path), settle=0.05)
    store.write(row(seed=7))
    frame = store.read(["status", "model"])
    assert list(frame.columns) == ["cell_id", "status", "model"] and len(frame) == 4
    loaded = load_results(str(tmp_path), ["final_acc"])
    assert loaded["final_acc"].notna().all() and loaded["package_versions"].isna().all()
    with pytest.raises(ValueError, match="unknown result columns \\['accuracy'\\]"):
        store.read(["accuracy"])
    assert check(str(tmp_path), str(tmp_path)).exit_code == 0


def test_status_counts_per_model_and_criterion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ResultStore(str(tmp_path))
    _cells(store, 6)
    store.write(row(seed=50, model="m0", criterion="oba", status="error", error="x"))
    earlier = row(seed=51, model="m0", criterion="oba")
    store.write({**earlier, "cell_id": f"{earlier['cell_id']}-stage1"})  # an iterative cell's earlier stage: no cell
    assert main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "lease: none (no run holds this store)"
    table = [line.split() for line in out[2:]]
    assert table[0] == ["model", "criterion", "done", "failed"]
    assert ["m0", "oba", "1", "1"] in table and ["m1", "taylor", "1", "0"] in table and table[-1] == ["total", "6", "1"]
    assert pq.read_table(next(tmp_path.glob("*.parquet"))).num_rows == 1


@pytest.mark.parametrize("command", [["status"], ["store", "compact"]])
def test_a_missing_location_is_a_one_line_error(tmp_path: Path, command: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "typo")
    assert main([*command, missing]) == 2
    assert capsys.readouterr().err.splitlines() == [f"oba {command[0]}: error: results {missing}: no such folder"]
    assert not (tmp_path / "typo").exists()

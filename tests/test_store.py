"""The Parquet store: atomic parts keyed by cell, read back as one table."""
from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from results_fixtures import row

from oba.report import load_results
from oba.store.results import COLUMNS, SCHEMA, SCHEMA_VERSION, ResultStore


def _row(cell_id: str, status: str = "ok", acc: float = 0.5) -> dict:
    return {"cell_id": cell_id, "suite": "t", "model": "m", "dataset": "d", "criterion": "c", "structure": "channels",
            "allocation": "global", "ratio": 0.5, "seed": 0, "status": status, "final_acc": acc,
            "config": {"a": 1}, "layer_widths": {"conv": {"kind": "channels", "dense": 8, "remaining": 4}}}


def test_round_trip_keeps_every_column(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path / "r"))
    path = store.write(_row("abc"))
    table = pq.read_table(path)
    assert table.schema.names == COLUMNS
    frame = store.read()
    assert list(frame.columns) == COLUMNS and len(frame) == 1
    row = frame.iloc[0]
    assert row["schema_version"] == SCHEMA_VERSION and row["final_acc"] == 0.5 and row["config"] == '{"a": 1}'
    assert not [p for p in (tmp_path / "r").iterdir() if not p.name.endswith(".parquet")]


def test_rewriting_a_cell_replaces_its_part(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    store.write(_row("abc", status="error"))
    store.write(_row("def"))
    assert store.finished() == {"def"}
    store.write(_row("abc", status="ok", acc=0.7))
    frame = store.read()
    assert sorted(frame["cell_id"]) == ["abc", "def"]
    assert store.finished() == {"abc", "def"}
    assert float(frame.set_index("cell_id").loc["abc", "final_acc"]) == 0.7


def test_empty_or_missing_location_reads_as_empty_table(tmp_path: Path) -> None:
    frame = ResultStore(str(tmp_path / "nothing-here")).read()
    assert frame.empty and list(frame.columns) == COLUMNS


def test_filesystem_uri_location(tmp_path: Path) -> None:
    store = ResultStore(f"file://{tmp_path}/uri")
    store.write(_row("xyz"))
    assert (tmp_path / "uri" / "xyz.parquet").is_file()
    assert ResultStore(str(tmp_path / "uri")).finished() == {"xyz"}


def test_unknown_columns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown result columns"):
        ResultStore(str(tmp_path)).write({**_row("a"), "accuracy": 1.0})


def _hammer(location: str, worker: int) -> None:
    store = ResultStore(location)
    for i in range(20):
        store.write(_row(f"cell{i % 5}", acc=worker + i / 100))


def test_concurrent_writers_lose_nothing_and_duplicate_nothing(tmp_path: Path) -> None:
    location = str(tmp_path / "shared")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(location, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    frame = ResultStore(location).read()
    assert sorted(frame["cell_id"]) == [f"cell{i}" for i in range(5)]
    assert sorted(p.name for p in Path(location).iterdir()) == [f"cell{i}.parquet" for i in range(5)]


def test_version_one_rows_read_their_pruned_accuracy_as_raw(tmp_path: Path) -> None:
    """Schema 1 had no batch-norm recalibration: its pruned_acc is the raw accuracy."""
    new = row(cell_id="new", pruned_acc_raw=0.31, pruned_acc=0.87)
    store = ResultStore(str(tmp_path))
    store.write(new)
    old = row(cell_id="old", pruned_acc=0.42)
    old.update(schema_version=1, config="{}", package_versions="{}")
    version_one = pa.schema([f for f in SCHEMA if f.name != "pruned_acc_raw"])
    pq.write_table(pa.Table.from_pylist([{k: old.get(k) for k in version_one.names}], schema=version_one), tmp_path / "old.parquet")
    table = load_results(str(tmp_path)).set_index("cell_id")
    assert table.loc["new", "pruned_acc_raw"] == 0.31 and table.loc["new", "pruned_acc"] == 0.87
    assert table.loc["old", "pruned_acc_raw"] == 0.42 and pd.isna(table.loc["old", "pruned_acc"])


def test_criterion_config_is_stored_as_json_and_older_rows_read_it_as_null(tmp_path: Path) -> None:
    """Schema 3 adds criterion_config (JSON text); version 1/2 parts, which lack the column, read back null."""
    config = {"name": "random", "mode": "eval", "seed": 1, "step_seeds": {"1": 12, "2": 34}}
    version_two = pa.schema([f for f in SCHEMA if f.name not in ("criterion_config", "fidelity_abs", "fidelity_precision", "fidelity_k")])
    old = row(cell_id="old")
    old.update(schema_version=2, config="{}", package_versions="{}")
    only_old = tmp_path / "only-old"
    only_old.mkdir()
    pq.write_table(pa.Table.from_pylist([{k: old.get(k) for k in version_two.names}], schema=version_two),
                   only_old / "old.parquet")
    frame = ResultStore(str(only_old)).read()
    assert list(frame.columns) == COLUMNS and frame["criterion_config"].isna().all()
    store = ResultStore(str(tmp_path / "mixed"))
    store.write(row(cell_id="new", criterion_config=config))
    (tmp_path / "mixed" / "old.parquet").write_bytes((only_old / "old.parquet").read_bytes())
    table = store.read().set_index("cell_id")
    assert table.loc["new", "schema_version"] == SCHEMA_VERSION
    assert json.loads(table.loc["new", "criterion_config"]) == config
    assert pd.isna(table.loc["old", "criterion_config"]) and table.loc["old", "schema_version"] == 2


def test_version_two_rows_read_with_the_fidelity_columns_null(tmp_path: Path) -> None:
    """Schema 3 adds fidelity against |ΔL|, precision at k and k; older parts have none of them."""
    added = ("fidelity_abs", "fidelity_precision", "fidelity_k")
    store = ResultStore(str(tmp_path))
    store.write(row(cell_id="new", fidelity=0.3, fidelity_abs=0.6, fidelity_precision=0.75, fidelity_k=4))
    assert pq.read_table(tmp_path / "new.parquet").schema.field("fidelity_k").type == pa.int64()
    old = row(cell_id="old", fidelity=0.2)
    old.update(schema_version=2, config="{}", package_versions="{}")
    version_two = pa.schema([f for f in SCHEMA if f.name not in added])
    pq.write_table(pa.Table.from_pylist([{k: old.get(k) for k in version_two.names}], schema=version_two), tmp_path / "old.parquet")
    table = load_results(str(tmp_path)).set_index("cell_id")
    assert table.loc["new", "schema_version"] == SCHEMA_VERSION
    assert (table.loc["new", "fidelity"], table.loc["new", "fidelity_abs"]) == (0.3, 0.6)
    assert (table.loc["new", "fidelity_precision"], table.loc["new", "fidelity_k"]) == (0.75, 4)
    assert table.loc["old", "fidelity"] == 0.2 and all(pd.isna(table.loc["old", name]) for name in added)


def test_version_three_rows_read_with_the_dense_weights_columns_null(tmp_path: Path) -> None:
    """Schema 4 adds where the dense weights came from and their SHA-256; older parts have neither."""
    added = ("dense_weights", "dense_weights_sha256")
    store = ResultStore(str(tmp_path))
    store.write(row(cell_id="new", dense_weights="torchvision:ResNet50_Weights.IMAGENET1K_V2", dense_weights_sha256="ab" * 32))
    old = row(cell_id="old")
    old.update(schema_version=3, config="{}", package_versions="{}")
    version_three = pa.schema([f for f in SCHEMA if f.name not in added])
    pq.write_table(pa.Table.from_pylist([{k: old.get(k) for k in version_three.names}], schema=version_three), tmp_path / "old.parquet")
    table = store.read().set_index("cell_id")
    assert table.loc["new", "schema_version"] == SCHEMA_VERSION and table.loc["old", "schema_version"] == 3
    assert table.loc["new", "dense_weights"] == "torchvision:ResNet50_Weights.IMAGENET1K_V2"
    assert table.loc["new", "dense_weights_sha256"] == "ab" * 32
    assert all(pd.isna(table.loc["old", name]) for name in added)


def test_rows_older_than_version_six_name_the_old_oba_taylor2(tmp_path: Path) -> None:
    """Before schema 6, ``oba`` was today's ``taylor2`` and ``oba-group`` today's ``taylor2-group``: such rows are
    read under today's names; a version 6 ``oba`` row is the paper's OBA and keeps its name."""
    store = ResultStore(str(tmp_path))
    store.write(row(cell_id="new-oba", criterion="oba"))
    store.write(row(cell_id="new-taylor2", criterion="taylor2"))
    old = [row(cell_id=f"old-{name}", criterion=name) for name in ("oba", "oba-group", "taylor", "oba-hvp")]
    for item in old:
        item.update(schema_version=5, config="{}", package_versions="{}")
    pq.write_table(pa.Table.from_pylist([{k: item.get(k) for k in SCHEMA.names} for item in old], schema=SCHEMA),
                   tmp_path / "old.parquet")
    table = load_results(str(tmp_path)).set_index("cell_id")
    assert table["criterion"].to_dict() == {"new-oba": "oba", "new-taylor2": "taylor2", "old-oba": "taylor2",
                                            "old-oba-group": "taylor2-group", "old-taylor": "taylor",
                                            "old-oba-hvp": "oba-hvp"}
    assert table.loc["old-oba", "schema_version"] == 5 and table.loc["new-oba", "schema_version"] == SCHEMA_VERSION == 6
    again = load_results(table.reset_index()).set_index("cell_id")
    assert again["criterion"].to_dict() == table["criterion"].to_dict(), "renaming twice changes nothing"
    raw = ResultStore(str(tmp_path)).read().set_index("cell_id")
    assert raw.loc["old-oba", "criterion"] == "oba", "the stored rows themselves are left as they were"


def test_stored_errors_are_plain_text(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    store.write({**_row("bad", status="error"), "error": "\x1b[36mray::_prepare_dense()\x1b[39m (pid=7)\r\n\x1b]0;title\x07boom\x00"})
    assert store.read_cell("bad")["error"] == "ray::_prepare_dense() (pid=7)\nboom"


def test_an_unreadable_part_is_named_by_read_and_skipped_by_read_readable(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    store.write(_row("good"))
    broken = Path(store.write(_row("broken")))
    broken.write_bytes(broken.read_bytes()[:30])
    with pytest.raises(OSError, match=f"unreadable result part {broken}: "):
        store.read()
    frame, unreadable = store.read_readable()
    assert list(frame["cell_id"]) == ["good"] and [u.path for u in unreadable] == [str(broken)]

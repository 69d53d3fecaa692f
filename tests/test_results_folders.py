"""Reading a folder that holds several suites' stores (as ``results/reference``): only result parts are opened."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from results_fixtures import row, write_store

from oba.cli import main
from oba.report import ResultsUnreadable, load_results, read_results

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "results" / "reference"


def _suites(folder: Path) -> dict[str, list[dict]]:
    """Two suites' stores under ``folder``, each with the side files a committed reference keeps beside its parts,
    and a snapshot folder (no parts) and a README beside the stores."""
    rows = {name: [row(suite=name, criterion=criterion, seed=seed) for criterion in ("oba", "taylor") for seed in (0, 1)]
            for name in ("smoke", "tiny")}
    for name, suite_rows in rows.items():
        write_store(folder / name, suite_rows)
        (folder / name / "band.json").write_text("[]")
        (folder / name / "manifest.json").write_text(json.dumps({"files": 4}))
        (folder / name / "README").write_text("how these rows were made\n")
    (folder / "snapshot").mkdir()
    (folder / "snapshot" / "snapshot.json").write_text("{}")
    (folder / "snapshot" / "scores.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (folder / "README.md").write_text("# reference results\n")
    return rows


@pytest.mark.parametrize("uri", [False, True])
def test_a_folder_of_stores_reads_every_stores_parts_and_nothing_else(tmp_path: Path, uri: bool) -> None:
    rows = _suites(tmp_path / "reference")
    location = (tmp_path / "reference").as_uri() if uri else str(tmp_path / "reference")
    loaded = read_results(location)
    assert not loaded.skipped
    assert sorted(loaded.table["cell_id"]) == sorted(r["cell_id"] for suite in rows.values() for r in suite)
    assert loaded.table.groupby("suite").size().to_dict() == {"smoke": 4, "tiny": 4}


def test_a_folder_of_stores_on_s3_reads_every_stores_parts_and_nothing_else(s3_location: str) -> None:
    from oba.store.results import filesystem

    bucket, query = s3_location[len("s3://"):].split("/", 1)[0], s3_location.split("?", 1)[1]
    fs, root = filesystem(s3_location)
    rows = {}
    for name in ("smoke", "tiny"):
        rows[name] = [row(suite=name, seed=seed) for seed in (0, 1)]
        write_store(f"s3://{bucket}/results/{name}?{query}", rows[name])
        with fs.open_output_stream(f"{root}/{name}/band.json") as side:
            side.write(b"[]")
    with fs.open_output_stream(f"{root}/snapshot/snapshot.json") as side:
        side.write(b"{}")
    loaded = read_results(s3_location)
    assert not loaded.skipped and loaded.table.groupby("suite").size().to_dict() == {"smoke": 2, "tiny": 2}


def test_an_unreadable_part_of_one_store_is_named_and_the_rest_read(tmp_path: Path) -> None:
    _suites(tmp_path / "reference")
    broken = sorted((tmp_path / "reference" / "tiny").glob("*.parquet"))[0]
    broken.write_bytes(b"PAR1 truncated")
    loaded = read_results(str(tmp_path / "reference"))
    assert len(loaded.table) == 7 and [part.path for part in loaded.skipped] == [str(broken)]
    with pytest.raises(ResultsUnreadable, match=f"unreadable result part {broken}: "):
        load_results(str(tmp_path / "reference"))


def test_two_stores_holding_the_same_cells_are_refused_naming_both(tmp_path: Path) -> None:
    same = [row(seed=seed) for seed in (0, 1)]
    write_store(tmp_path / "runs" / "native", same)
    write_store(tmp_path / "runs" / "avx2", same)
    with pytest.raises(ResultsUnreadable) as refused:
        load_results(str(tmp_path / "runs"))
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'runs'}: sub-folders avx2 and native both hold cell ") and "\n" not in message


def test_a_folder_of_side_files_only_has_no_results(tmp_path: Path) -> None:
    (tmp_path / "notes" / "snapshot").mkdir(parents=True)
    (tmp_path / "notes" / "band.json").write_text("{}")
    (tmp_path / "notes" / "snapshot" / "snapshot.json").write_text("{}")
    with pytest.raises(ResultsUnreadable, match=f"^{tmp_path / 'notes'}: no results here"):
        load_results(str(tmp_path / "notes"))


def test_a_hive_dataset_folder_reads_its_parquet_files_only(tmp_path: Path) -> None:
    rows = [row(seed=seed, model=model) for model in ("cnn", "mlp") for seed in (0, 1)]
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k not in ("config", "package_versions")}
                                  for r in rows])
    pq.write_to_dataset(table, str(tmp_path / "dataset"), partition_cols=["model"])
    (tmp_path / "dataset" / "README.md").write_text("exported rows\n")
    (tmp_path / "dataset" / "model=cnn" / "notes.json").write_text("{}")
    loaded = load_results(str(tmp_path / "dataset"))
    assert sorted(loaded["cell_id"]) == sorted(r["cell_id"] for r in rows) and set(loaded["model"]) == {"cnn", "mlp"}


@pytest.mark.parametrize("command", ["report", "leaderboard"])
def test_report_and_leaderboard_read_the_committed_reference_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    output = tmp_path / ("reference.html" if command == "report" else "board")
    assert main([command, str(REFERENCE), "-o", str(output)]) == 0
    assert not capsys.readouterr().err
    cells = len(load_results(str(REFERENCE / "smoke")))
    assert len(load_results(str(REFERENCE))) == cells
    if command == "leaderboard":
        assert len(pq.read_table(output / "cells.parquet")) == cells

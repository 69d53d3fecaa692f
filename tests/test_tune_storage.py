"""``[run] tune_storage``: where Ray Tune keeps a run's experiment folder — a temporary folder, a local path, or a
pyarrow filesystem URI (here a real S3-compatible server, moto's server mode on loopback).

The run test starts Ray; run it in a loopback-only network namespace.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from s3_server import objects

from oba.cli import main
from oba.store.results import ResultStore
from oba.suite.cells import expand
from oba.suite.config import SuiteError, load_suite
from oba.suite.tune_storage import tune_storage
from suites import tiny_suite


def _with_tune_storage(folder: Path, value: str, **grid) -> Path:
    path = tiny_suite(folder, **grid)
    path.write_text(path.read_text() + f'tune_storage = "{value}"\n')
    return path


@pytest.mark.parametrize("value, message", [
    ("ftp://host/runs", "'ftp://host/runs': unsupported scheme 'ftp'; accepted: a local folder, or a URI of scheme "
                        "s3, gs, gcs, abfs, abfss, hdfs, viewfs, file that pyarrow can open"),
    ("s3://bucket/tune?endpoint_override=127.0.0.1:9000&scheme=http&colour=blue",
     r"pyarrow cannot open it \(Unexpected query parameter in S3 URI: 'colour'\); accepted: a local folder"),
    ("s3:///tune?endpoint_override=127.0.0.1:9000&scheme=http", r"\(Missing bucket name in S3 URI\)"),
])
def test_a_tune_storage_pyarrow_cannot_open_is_one_line_naming_the_file_key_and_what_is_accepted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, message: str) -> None:
    path = _with_tune_storage(tmp_path, value)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("tune_storage"))
    with pytest.raises(SuiteError, match=message) as err:
        load_suite(path)
    assert str(err.value).startswith(f"{path}:{line}: [run] tune_storage: {value!r}: ")
    assert main(["run", str(path), "--results", str(tmp_path / "results")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"oba run: error: {err.value}"]
    assert not (tmp_path / "results").exists(), "refused before anything ran"


def test_a_tune_storage_that_cannot_be_written_stops_the_run_before_anything_runs(
        tmp_path: Path, s3_location: str, capsys: pytest.CaptureFixture[str]) -> None:
    missing = s3_location.replace("//oba-", "//oba-missing-", 1).replace("/results?", "/tune?")
    path = _with_tune_storage(tmp_path, missing)
    assert main(["run", str(path), "--dry-run", "--results", str(tmp_path / "results")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    bucket = missing.split("/")[2]
    assert line.startswith(f"oba run: error: Tune storage ([run] tune_storage) {bucket}/tune is not writable: "), line


def test_tune_storage_is_a_temporary_folder_by_default_a_kept_folder_or_the_uris_filesystem(
        tmp_path: Path, s3_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_suite(tiny_suite(tmp_path)).run["tune_storage"] == ""
    with tune_storage("") as storage:
        temporary = Path(storage.path)
        assert storage.filesystem is None and temporary.is_dir() and temporary.name.startswith("oba-tune-")
    assert not temporary.exists(), "the default folder is deleted when the run ends"
    monkeypatch.chdir(tmp_path)
    with tune_storage("tune/runs") as storage:
        assert (storage.path, storage.filesystem) == (str(tmp_path / "tune" / "runs"), None)
    monkeypatch.setenv("HOME", str(tmp_path))
    with tune_storage("~/kept") as storage:
        assert storage.path == os.path.join(str(tmp_path), "kept")
    uri = s3_location.replace("/results?", "/tune?")
    assert load_suite(_with_tune_storage(tmp_path, uri)).run["tune_storage"] == uri
    with tune_storage(uri) as storage:
        bucket = s3_location.split("/")[2]
        assert storage.path == f"{bucket}/tune" and isinstance(storage.filesystem, pafs.S3FileSystem)


@pytest.mark.ray
@pytest.mark.slow
def test_a_fake_cell_run_keeps_tunes_experiment_on_s3_and_stores_every_cell(
        tmp_path: Path, s3_location: str, capsys: pytest.CaptureFixture[str]) -> None:
    uri = s3_location.replace("/results?", "/tune?")
    path = _with_tune_storage(tmp_path, uri, criteria=("taylor", "magnitude-l1", "random"))
    path.write_text(path.read_text() + "max_trials = 2\n")
    results = tmp_path / "fake"
    assert main(["run", str(path), "--fake-cell", "--results", str(results)]) == 0, capsys.readouterr().err[-3000:]
    frame = ResultStore(str(results)).read()
    assert sorted(frame["cell_id"]) == sorted(c.cell_id for c in expand(load_suite(path)))
    assert set(frame["status"]) == {"ok"}
    names = objects(uri)
    experiments = {name.split("/")[0] for name in names}
    assert len(experiments) == 1 and next(iter(experiments)).startswith("tiny-"), names
    (experiment,) = experiments
    assert f"{experiment}/tuner.pkl" in names, names
    assert [n for n in names if re.fullmatch(rf"{re.escape(experiment)}/experiment_state-.+\.json", n)], names
    assert len([n for n in names if n.endswith("/result.json")]) == 2, "one result file per trial"

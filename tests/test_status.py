"""``oba status`` on a store with unreadable files: each named on stderr, the table kept, exit 1."""
from __future__ import annotations

from pathlib import Path

import pytest
from results_fixtures import row, write_store

from oba.cli import main
from oba.store.compaction import compact


def _status(results: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], list[str]]:
    code = main(["status", str(results)])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def test_a_corrupt_part_is_named_and_fails_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    write_store(results, [row(seed=seed) for seed in range(3)])
    broken = sorted(results.glob("*.parquet"))[1]
    broken.write_bytes(broken.read_bytes()[:40])
    code, out, err = _status(results, capsys)
    assert code == 1
    assert out[-1].split() == ["total", "2", "0"], "the readable cells are still counted"
    assert len(err) == 1 and err[0].startswith(f"oba status: warning: skipped unreadable result part {broken}: ")


def test_a_store_whose_only_compacted_file_is_corrupt_is_not_shown_as_empty(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    write_store(results, [row(seed=seed) for seed in range(2)])
    compact(str(results), settle=0.05)
    (compacted,) = results.rglob("part-*.parquet")
    compacted.write_bytes(b"not parquet")
    code, out, err = _status(results, capsys)
    assert code == 1 and out[-1].split() == ["total", "0", "0"]
    assert len(err) == 1 and err[0].startswith(f"oba status: warning: skipped unreadable result part {compacted}: ")


def test_a_readable_store_exits_0_without_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    write_store(results, [row(seed=0), row(seed=1, status="error", error="boom")])
    code, out, err = _status(results, capsys)
    assert code == 0 and not err and out[-1].split() == ["total", "1", "1"]

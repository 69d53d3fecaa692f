"""The regression gate: exit codes 0 / 1 / 2 on real Parquet results and baselines."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oba.report import check
from oba.store import ResultStore
from results_fixtures import error_row, row, write_store

CRITERIA = ("magnitude-l2", "oba")
RATIOS = (0.3, 0.6)
SEEDS = (0, 1)


def _grid(cells: dict[tuple, dict] | None = None) -> list[dict]:
    """2 criteria × 2 ratios × 2 seeds; ``cells[(criterion, ratio, seed)]`` overrides fields of a cell."""
    rows = []
    for criterion in CRITERIA:
        for ratio in RATIOS:
            for seed in SEEDS:
                key = (criterion, ratio, seed)
                fields = {"criterion": criterion, "ratio": ratio, "seed": seed, "final_acc": 0.95 - ratio / 10}
                fields.update((cells or {}).get(key, {}))
                rows.append(row(**fields))
    return rows


@pytest.fixture()
def baseline(tmp_path: Path) -> str:
    return write_store(tmp_path / "baseline", _grid())


def _results(tmp_path: Path, rows: list[dict]) -> str:
    return write_store(tmp_path / "results", rows)


def test_identical_results_pass(tmp_path: Path, baseline: str) -> None:
    outcome = check(_results(tmp_path, _grid()), baseline)
    assert outcome.exit_code == 0
    assert outcome.compared == 8 and not outcome.regressions
    assert outcome.render().startswith("PASS")
    assert check(_results(tmp_path, _grid()), Path(baseline).as_uri()).exit_code == 0  # a pyarrow file:// URI


def test_drop_beyond_tolerance_is_a_regression(tmp_path: Path, baseline: str) -> None:
    # Baseline oba/0.6/seed 1 is 89.0 %; 87.5 % is a 1.5-point drop, over the 1-point tolerance.
    rows = _grid(cells={("oba", 0.6, 1): {"final_acc": 0.875}})
    outcome = check(_results(tmp_path, rows), baseline, tolerance=1.0)
    assert outcome.exit_code == 1
    assert len(outcome.regressions) == 1
    key, base, current = outcome.regressions[0]
    assert key == ("cnn", "digits", "oba", "structured", "global", 0.6, 1.0)
    assert (base, current) == (pytest.approx(89.0), pytest.approx(87.5))
    text = outcome.render()
    assert "Regressions (1)" in text and "89.00" in text and "87.50" in text and "1.50" in text
    # The same drop passes a looser gate.
    assert check(_results(tmp_path, rows), baseline, tolerance=2.0).exit_code == 0


def test_drops_within_tolerance_and_improvements_pass(tmp_path: Path) -> None:
    baseline = write_store(tmp_path / "baseline", _grid(cells={("oba", 0.3, 0): {"final_acc": 0.513}}))
    rows = _grid(
        cells={
            ("oba", 0.6, 1): {"final_acc": 0.882},  # 0.8-point drop from 89.0 %
            # Exactly 1.0 point (51.3 → 50.3) at a 1-point tolerance; in floats 51.3 − 50.3 = 1.000000000000007.
            ("oba", 0.3, 0): {"final_acc": 0.503},
            ("magnitude-l2", 0.3, 1): {"final_acc": 0.99},  # improvement
        }
    )
    outcome = check(_results(tmp_path, rows), baseline, tolerance=1.0)
    assert outcome.exit_code == 0, outcome.render()
    assert outcome.compared == 8


def test_missing_cell_is_incomplete(tmp_path: Path, baseline: str) -> None:
    rows = [r for r in _grid() if not (r["criterion"] == "oba" and r["ratio"] == 0.3 and r["seed"] == 1)]
    outcome = check(_results(tmp_path, rows), baseline)
    assert outcome.exit_code == 2
    assert outcome.missing == [("cnn", "digits", "oba", "structured", "global", 0.3, 1.0)]
    assert "Missing from the results (1)" in outcome.render()


def test_errored_cell_is_incomplete_even_with_a_regression(tmp_path: Path, baseline: str) -> None:
    rows = [
        r
        for r in _grid(cells={("oba", 0.6, 0): {"final_acc": 0.5}})
        if not (r["criterion"] == "magnitude-l2" and r["ratio"] == 0.3 and r["seed"] == 0)
    ]
    rows.append(error_row(criterion="magnitude-l2", ratio=0.3, seed=0, error="RuntimeError: out of memory"))
    outcome = check(_results(tmp_path, rows), baseline)
    assert outcome.exit_code == 2
    assert [message for _, message in outcome.errored] == ["RuntimeError: out of memory"]
    assert len(outcome.regressions) == 1
    assert "out of memory" in outcome.render()


def test_unreadable_or_absent_baseline(tmp_path: Path) -> None:
    results = _results(tmp_path, _grid())
    garbage = tmp_path / "baseline.parquet"
    garbage.write_bytes(b"this is not a parquet file")
    outcome = check(results, str(garbage))
    assert outcome.exit_code == 2
    assert outcome.unreadable and str(garbage) in outcome.unreadable[0]
    absent = check(results, str(tmp_path / "nowhere"))
    assert absent.exit_code == 2 and "no such file or folder" in absent.render()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check(results, str(empty)).exit_code == 2


def test_single_file_baseline_and_extra_cells(tmp_path: Path, baseline: str) -> None:
    single = tmp_path / "reference.parquet"
    table = ResultStore(baseline).read()
    pq.write_table(pa.Table.from_pandas(table[table["criterion"] == "oba"]), single)
    outcome = check(_results(tmp_path, _grid()), str(single))
    assert outcome.exit_code == 0
    assert outcome.compared == 4
    assert len(outcome.extra) == 4
    assert "4 result cell(s) have no baseline" in outcome.render()


def test_duplicate_keys_are_ambiguous(tmp_path: Path, baseline: str) -> None:
    rows = _grid() + [row(criterion="oba", ratio=0.3, seed=0, final_acc=0.5, suite="other")]
    outcome = check(_results(tmp_path, rows), baseline)
    assert outcome.exit_code == 2
    assert outcome.ambiguous == [("cnn", "digits", "oba", "structured", "global", 0.3, 0.0)]

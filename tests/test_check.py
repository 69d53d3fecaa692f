"""The regression gate on seed means with noise bands, on real Parquet results; bands computed by hand.

Grid: 2 criteria × 2 ratios × 3 seeds. Per cell, pruned_acc = base − 0.1·ratio and
final_acc = base + 0.3 − 0.1·ratio with a per-seed offset, so every setting has seed
values {m − 0.5, m, m + 0.5} points around its mean m: seed std 0.5 points.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from oba.report import check, load_results
from oba.report.band import Band, measure_band
from results_fixtures import error_row, row, write_store

CRITERIA = ("magnitude-l2", "oba")
RATIOS = (0.3, 0.6)
SEEDS = (0, 1, 2)
SEED_OFFSET = {0: -0.005, 1: 0.0, 2: 0.005}


def _grid(shift: dict[tuple, float] | None = None, metric_shift: float = 0.0, machine: float = 0.0) -> list[dict]:
    """Rows of the grid; ``shift[(criterion, ratio, seed)]`` moves both metrics of one cell (fractions)."""
    rows = []
    for criterion in CRITERIA:
        for ratio in RATIOS:
            for seed in SEEDS:
                delta = (shift or {}).get((criterion, ratio, seed), 0.0) + metric_shift + machine * (seed - 1)
                pruned = 0.90 - ratio / 10 + SEED_OFFSET[seed] + delta
                rows.append(row(criterion=criterion, ratio=ratio, seed=seed, pruned_acc=pruned, final_acc=pruned + 0.03))
    return rows


def _store(tmp_path: Path, name: str, rows: list[dict]) -> str:
    return write_store(tmp_path / name, rows)


def test_fallback_band_from_the_baseline_seed_spread(tmp_path: Path) -> None:
    # No band file: allowed drop = max(floor, 3·√2·s_seed/√n) = 3·√2·0.5/√3 = 1.2247 points.
    outcome = check(_store(tmp_path, "r", _grid()), _store(tmp_path, "b", _grid()), tolerance=0.5)
    assert outcome.exit_code == 0
    assert len(outcome.comparisons) == 2 * 2 * 3
    accuracies = {round(c.allowed, 4) for c in outcome.comparisons if c.metric != "fidelity"}
    assert accuracies == {round(3 * math.sqrt(2) * 0.5 / math.sqrt(3), 4)}
    # Fidelity is the same 0.7 for every seed: no seed spread, so the floor.
    assert {c.allowed for c in outcome.comparisons if c.metric == "fidelity"} == {0.5}
    assert outcome.render().startswith("PASS")


def test_measured_band_by_hand(tmp_path: Path) -> None:
    reference = load_results(pd.DataFrame(_grid()))
    # Machine B moves seed 0 down and seed 2 up by 0.3 points (seed mean unchanged) and, for oba at 0.6 only,
    # every seed up by 0.2 points: that setting's seed means are m and m + 0.2 → std 0.2/√2 = 0.14142.
    other = load_results(pd.DataFrame(_grid(shift={("oba", 0.6, s): 0.002 for s in SEEDS}, machine=0.003)))
    band = measure_band(reference, [other], ["a", "b"], z=3.0, floor=0.5)
    oba = band.settings[("cnn", "digits", "oba", "structured", "global", 0.6, "one-shot", 0.6)].metrics["final_acc"]
    assert oba.machine_std == pytest.approx(0.2 / math.sqrt(2), abs=1e-9)
    assert oba.seed_std == pytest.approx(0.5, abs=1e-9)
    # Family = the board cnn/digits/structured/global/0.6: RMS of (0, 0.14142) = 0.1;
    # oba's own spread is larger, so σ = 0.14142 and band = max(0.5, 3·√2·0.14142) = 0.6.
    assert oba.sigma == pytest.approx(0.2 / math.sqrt(2), abs=1e-9)
    assert oba.band == pytest.approx(0.6, abs=1e-9)
    flat = band.settings[("cnn", "digits", "magnitude-l2", "structured", "global", 0.3, "one-shot", 0.3)].metrics["pruned_acc"]
    raised = band.settings[("cnn", "digits", "magnitude-l2", "structured", "global", 0.6, "one-shot", 0.6)].metrics["final_acc"]
    # Board 0.6: magnitude-l2's own spread 0 is raised to the board's RMS 0.1 → 3·√2·0.1 = 0.424 → the floor 0.5.
    assert raised.sigma == pytest.approx(0.1, abs=1e-9) and raised.band == pytest.approx(0.5)
    # Board 0.3: own spread 0 and the RMS of (0, 0) is 0 → σ = 0 → the floor 0.5.
    assert flat.sigma == pytest.approx(0.0, abs=1e-9)
    assert flat.band == pytest.approx(0.5)
    path = band.write(tmp_path / "band.json")
    again = Band.read(path)
    assert again.allowed_drop(("cnn", "digits", "oba", "structured", "global", 0.6, "one-shot", 0.6), "final_acc") == pytest.approx(0.6)
    assert json.loads(path.read_text())["machines"] == ["a", "b"]


@pytest.fixture()
def gate(tmp_path: Path) -> tuple[str, Band]:
    baseline = _store(tmp_path, "baseline", _grid())
    band = measure_band(load_results(baseline), [load_results(pd.DataFrame(_grid(machine=0.002)))], ["a", "b"])
    return baseline, band


def test_planted_three_point_drop_of_every_seed_fails(tmp_path: Path, gate: tuple[str, Band]) -> None:
    baseline, band = gate
    lowered = _grid(shift={("oba", 0.3, s): -0.03 for s in SEEDS})
    outcome = check(_store(tmp_path, "r", lowered), baseline, band=band)
    assert outcome.exit_code == 1
    assert {(c.key[2], c.key[5], c.metric) for c in outcome.regressions} == {("oba", 0.3, "pruned_acc"), ("oba", 0.3, "final_acc")}
    assert all(c.drop == pytest.approx(3.0) for c in outcome.regressions)
    text = outcome.render()
    assert "REGRESSION" in text and "allowed drop" in text and "-3.00" in text


def test_a_fidelity_drop_fails_on_its_own(tmp_path: Path, gate: tuple[str, Band]) -> None:
    # Every seed of one setting ranks units worse: ρ 0.70 → 0.68, a drop of 2 in 100·ρ against the floor 0.5;
    # the accuracies are untouched, so fidelity alone fails.
    baseline, band = gate
    rows = [{**r, "fidelity": 0.68} if (r["criterion"], r["ratio"]) == ("oba", 0.6) else r for r in _grid()]
    outcome = check(_store(tmp_path, "r", rows), baseline, band=band)
    assert outcome.exit_code == 1
    assert [(c.key[2], c.key[5], c.metric) for c in outcome.regressions] == [("oba", 0.6, "fidelity")]
    assert outcome.regressions[0].drop == pytest.approx(2.0)


def test_one_cell_moving_inside_a_stable_seed_mean_passes(tmp_path: Path, gate: tuple[str, Band]) -> None:
    # One seed 2 points down and another 2 points up: the cell moved, the seed mean did not.
    baseline, band = gate
    moved = _grid(shift={("oba", 0.6, 0): -0.02, ("oba", 0.6, 2): 0.02})
    outcome = check(_store(tmp_path, "r", moved), baseline, band=band)
    assert outcome.exit_code == 0, outcome.render()


def test_improvements_never_fail(tmp_path: Path, gate: tuple[str, Band]) -> None:
    baseline, band = gate
    assert check(_store(tmp_path, "r", _grid(metric_shift=0.05)), baseline, band=band).exit_code == 0


def test_missing_or_failed_seed_is_incomplete(tmp_path: Path, gate: tuple[str, Band]) -> None:
    baseline, band = gate
    rows = [r for r in _grid() if not (r["criterion"] == "oba" and r["ratio"] == 0.3 and r["seed"] == 1)]
    outcome = check(_store(tmp_path, "missing", rows), baseline, band=band)
    assert outcome.exit_code == 2
    assert outcome.missing == [("cnn", "digits", "oba", "structured", "global", 0.3, "one-shot", 0.3, 1)]
    rows.append(error_row(criterion="oba", ratio=0.3, seed=1, error="RuntimeError: out of memory"))
    failed = check(_store(tmp_path, "failed", rows), baseline, band=band)
    assert failed.exit_code == 2 and "out of memory" in failed.render()


def test_corrupt_part_is_named_by_file(tmp_path: Path, gate: tuple[str, Band]) -> None:
    baseline, band = gate
    results = _store(tmp_path, "r", _grid())
    broken = sorted(Path(results).glob("*.parquet"))[3]
    broken.write_bytes(broken.read_bytes()[:40])
    outcome = check(results, baseline, band=band)
    assert outcome.exit_code == 2
    assert broken.name in outcome.render()


def test_duplicate_seed_cells_are_ambiguous(tmp_path: Path, gate: tuple[str, Band]) -> None:
    baseline, band = gate
    rows = _grid() + [row(criterion="oba", ratio=0.3, seed=0, pruned_acc=0.5, final_acc=0.5, suite="other")]
    outcome = check(_store(tmp_path, "r", rows), baseline, band=band)
    assert outcome.exit_code == 2
    assert outcome.ambiguous == [("cnn", "digits", "oba", "structured", "global", 0.3, "one-shot", 0.3, 0)]


def test_unreadable_or_absent_baseline(tmp_path: Path) -> None:
    results = _store(tmp_path, "r", _grid())
    garbage = tmp_path / "baseline.parquet"
    garbage.write_bytes(b"this is not a parquet file")
    outcome = check(results, str(garbage))
    assert outcome.exit_code == 2 and str(garbage) in outcome.unreadable[0]
    assert "no such file or folder" in check(results, str(tmp_path / "nowhere")).render()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check(results, str(empty)).exit_code == 2


def test_band_and_check_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from oba.cli import main

    baseline = _store(tmp_path, "baseline", _grid())
    other = _store(tmp_path, "other", _grid(machine=0.002))
    assert main(["band", baseline, "--name", "here", "--machine", f"there={other}"]) == 0
    assert (Path(baseline) / "band.json").is_file()
    assert "machines here, there" in capsys.readouterr().out
    assert Band.read(Path(baseline) / "band.json").machines == ["here", "there"]
    assert main(["check", _store(tmp_path, "same", _grid()), "--baseline", baseline]) == 0
    assert "bands: band file (z=3, machines: here, there)" in capsys.readouterr().out
    lowered = _store(tmp_path, "lowered", _grid(shift={("magnitude-l2", 0.6, s): -0.03 for s in SEEDS}))
    assert main(["check", lowered, "--baseline", baseline]) == 1
    assert "REGRESSION" in capsys.readouterr().out
    assert main(["band", baseline, "--machine", "no-equals-sign"]) == 2
    assert "NAME=RESULTS" in capsys.readouterr().err

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
from results_fixtures import error_row, row, write_store

from oba.report import check, load_results
from oba.report.band import Band, measure_band

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


def _band_payload(tmp_path: Path) -> dict:
    """A real band file's contents (one setting, three metrics), to break one field at a time."""
    reference = load_results(pd.DataFrame(_grid()))
    return json.loads(measure_band(reference).write(tmp_path / "good.json").read_text())


def _broken(payload: dict, path: tuple, value: object) -> dict:
    """``payload`` with the field at ``path`` (keys and list indices) set to ``value`` (deleted when it is ...)."""
    copy = json.loads(json.dumps(payload))
    target = copy
    for step in path[:-1]:
        target = target[step]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return copy


BROKEN_FIELDS = [
    (("z",), "x", "z: expected a number, got a text"),
    (("floor",), None, "floor: expected a number, got null"),
    (("machines",), "ab", "machines: expected a list of names, got a text"),
    (("machines",), [1], "machines: expected a list of names, got a list"),
    (("created",), 5, "created: expected a text, got a number"),
    (("settings",), {}, "settings: expected a list of settings, got an object"),
    (("settings", 0), [], "settings[0]: expected an object with model, dataset, criterion"),
    (("settings", 0), None, "settings[0]: expected an object with model"),
    (("settings", 0, "model"), ..., "settings[0]: expected an object with model, dataset, criterion, structure, "
                                     "allocation, ratio; model missing"),
    (("settings", 0, "criterion"), 3, "settings[0].criterion: expected a text, got a number"),
    (("settings", 0, "ratio"), "0.3", "settings[0].ratio: expected a number, got a text"),
    (("settings", 0, "schedule"), [], "settings[0].schedule: expected a text or null, got a list"),
    (("settings", 0, "stage_ratio"), True, "settings[0].stage_ratio: expected a number or null, got a boolean"),
    (("settings", 0, "final_acc"), [], "settings[0].final_acc: expected an object with mean, seeds"),
    (("settings", 0, "final_acc", "band"), ..., "settings[0].final_acc: expected an object with mean, seeds, "
                                                "seed_std, machine_std, machines, sigma, band; band missing"),
    (("settings", 0, "final_acc", "seeds"), 2.5, "settings[0].final_acc.seeds: expected a whole number, got a number"),
    (("settings", 0, "final_acc", "mean"), "high", "settings[0].final_acc.mean: expected a number, got a text"),
]


@pytest.mark.parametrize(("path", "value", "message"), BROKEN_FIELDS)
def test_a_band_file_with_a_wrong_field_is_refused_naming_the_file_and_the_field(
        tmp_path: Path, path: tuple, value: object, message: str) -> None:
    from oba._errors import UserError

    bad = tmp_path / "band.json"
    bad.write_text(json.dumps(_broken(_band_payload(tmp_path), path, value)))
    with pytest.raises(UserError) as refused:
        Band.read(bad)
    text = str(refused.value)
    assert text.startswith(f"{bad}: not a readable band file (") and message in text and "\n" not in text


@pytest.mark.parametrize(("content", "message"), [
    ("[]", "expected a JSON object with format, z, floor, machines, settings, got a list"),
    ("null", "expected a JSON object with format, z, floor, machines, settings, got null"),
    ("3", "got a number"),
    ('"band"', "got a text"),
    ('{"format": 1}', "expected a JSON object with format, z, floor, machines, settings; z, floor, machines, "
                      "settings missing"),
    ('{"format": 2}', "format 2, this version reads 1"),
    ("{", "Expecting property name"),
    ("[" * 100_000, "recursion"),
])
def test_a_band_file_of_the_wrong_type_is_refused_naming_the_file(tmp_path: Path, content: str, message: str) -> None:
    from oba._errors import UserError

    bad = tmp_path / "band.json"
    bad.write_text(content)
    with pytest.raises(UserError) as refused:
        Band.read(bad)
    text = str(refused.value)
    assert text.startswith(f"{bad}: not a readable band file (") and message in text and "\n" not in text


def test_band_files_written_before_the_iterative_protocol_still_read(tmp_path: Path) -> None:
    older = _band_payload(tmp_path)
    for entry in older["settings"]:
        del entry["schedule"], entry["stage_ratio"]
    (tmp_path / "older.json").write_text(json.dumps(older))
    assert all(key[6] == "one-shot" for key in Band.read(tmp_path / "older.json").settings)


@pytest.mark.parametrize("content", ["[]", "null", "7", '{"format": 1, "z": 3}', '{"format": 1, "z": 3, "floor": 0.5, '
                                     '"machines": "native", "settings": []}'])
@pytest.mark.parametrize("command", ["check", "leaderboard", "check-beside"])
def test_check_and_leaderboard_refuse_a_malformed_band_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, command: str) -> None:
    from oba.cli import main

    results = _store(tmp_path, "results", _grid())
    baseline = _store(tmp_path, "baseline", _grid())
    bad = Path(baseline) / "band.json" if command == "check-beside" else tmp_path / "bad.json"
    bad.write_text(content)
    args = {"check": ["check", results, "--baseline", baseline, "--band", str(bad)],
            "leaderboard": ["leaderboard", results, "-o", str(tmp_path / "board"), "--band", str(bad)],
            "check-beside": ["check", results, "--baseline", baseline]}[command]
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    prefix = f"oba {args[0]}: error: {bad}: not a readable band file ("
    assert code == 2 and len(err) == 1 and err[0].startswith(prefix) and "expected " in err[0], err
    assert "Traceback" not in err[0] and not (tmp_path / "board").exists()

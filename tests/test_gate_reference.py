"""The committed reference and its band as a gate: it passes itself, and catches planted regressions.

The planted criterion regression is real: the CI subset's resnet8/taylor cells are run through
the real cell pipeline (dense training, pruning, recalibration, fine-tuning) with taylor's group
scores negated, so it removes the units it considers most important first.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from results_fixtures import write_store

from oba.criteria.base import Criterion
from oba.criteria.taylor import Taylor
from oba.report import check, load_results
from oba.report.band import BAND_FILE, GATED_METRICS, SETTING_KEYS, Band, setting_key
from oba.suite.cell import run_cell
from oba.suite.cells import expand
from oba.suite.config import load_suite

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference" / "smoke"
CI_SUITE = ROOT / "suites" / "ci.toml"


@pytest.fixture(scope="module")
def ci_cells() -> list:
    return expand(load_suite(CI_SUITE))


@pytest.fixture(scope="module")
def reference(ci_cells: list) -> pd.DataFrame:
    table = load_results(str(REFERENCE))
    return table[table["cell_id"].isin({c.cell_id for c in ci_cells})].reset_index(drop=True)


@pytest.fixture(scope="module")
def band() -> Band:
    return Band.read(REFERENCE / BAND_FILE)


def _settings(table: pd.DataFrame) -> list[tuple]:
    return sorted({setting_key(row) for _, row in table.iterrows()})


def test_reference_holds_every_ci_cell_with_a_measured_band(ci_cells: list, reference: pd.DataFrame, band: Band) -> None:
    assert len(reference) == len(ci_cells) and (reference["status"] == "ok").all()
    assert reference["pruned_acc"].notna().all() and reference["pruned_acc_raw"].notna().all()
    assert band.machines == ["native", "avx2", "sse41"]
    for key in _settings(reference):
        for metric in GATED_METRICS:
            measured = band.settings[key].metrics[metric]
            assert measured.machines == 3 and measured.band >= band.floor, (key, metric)


def test_settings_pruning_the_fixtures_have_tight_bands(band: Band) -> None:
    """From identical dense weights, a change of CPU moves only float noise: pruned accuracy within 1.5 points,
    fine-tuned within 1.0 (issue 23's goal). The iterative twin trains its dense model on each machine: not held."""
    pinned = [s for s in band.settings.values() if dict(zip(SETTING_KEYS, s.key))["dataset"] == "mnist5k"]
    assert len(pinned) == 56
    for setting in pinned:
        assert setting.metrics["pruned_acc"].band <= 1.5, setting
        assert setting.metrics["final_acc"].band <= 1.0, setting
        assert setting.metrics["fidelity"].machines == 3, setting


@pytest.mark.parametrize("points", [1, 3])
def test_reference_passes_itself_and_every_setting_lowered_alone_fails(reference: pd.DataFrame, band: Band,
                                                                       points: int) -> None:
    """A band wide enough to swallow a point is not a gate: lower each CI setting alone, every seed, one gated metric
    at a time, by 1 and by 3 points (fidelity: 0.01 and 0.03 of ρ)."""
    assert check(reference, reference, band=band).exit_code == 0
    for key in _settings(reference):
        target = reference.apply(lambda row: setting_key(row) == key, axis=1)
        for metric in GATED_METRICS:
            lowered = reference.copy()
            lowered.loc[target, metric] -= points / 100
            outcome = check(lowered, reference, band=band)
            assert outcome.exit_code == 1, f"a {points}-point drop of {key} {metric} passed:\n{outcome.render()}"
            assert {(c.key, c.metric) for c in outcome.regressions} == {(key, metric)}


@pytest.mark.slow
def test_negated_criterion_scores_fail_the_gate(ci_cells: list, reference: pd.DataFrame, band: Band,
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def negated(self, model, batches, loss_fn, groups):  # noqa: ANN001, ANN202 (the patched method's signature)
        return -Criterion.group_scores(self, model, batches, loss_fn, groups)

    monkeypatch.setattr(Taylor, "group_scores", negated)
    cells = [c for c in ci_cells if c.config["model"] == "vgg-tiny" and c.config["criterion"] == "taylor"]
    assert len(cells) == 3
    rows = [run_cell(cell, cache_dir=str(tmp_path / "cache")) for cell in cells]
    assert all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    outcome = check(write_store(tmp_path / "negated", rows), reference[reference["cell_id"].isin({c.cell_id for c in cells})],
                    band=band)
    assert outcome.exit_code == 1, outcome.render()
    assert ("vgg-tiny", "taylor", "pruned_acc") in {(c.key[0], c.key[2], c.metric) for c in outcome.regressions}

"""One typed, frozen record of how a model is pruned: its defaults are the only ones, and bad values are named."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from nets import vgg_style

import oba
from oba.pruning.settings import DEFAULTS, PruneSettings
from oba.suite.cells import expand
from oba.suite.config import load_suite
from oba.suite.grids import AXIS_DEFAULTS, PRUNE_DEFAULTS


def test_the_suite_defaults_are_the_settings_defaults() -> None:
    for key in ("steps", "layer_cap", "normalisation", "mode"):
        assert PRUNE_DEFAULTS[key] == getattr(DEFAULTS, key)
    assert AXIS_DEFAULTS == {"structures": [DEFAULTS.structure], "allocations": [DEFAULTS.allocation]}


def test_settings_are_frozen_and_changes_make_a_new_record() -> None:
    changed = PruneSettings.with_changes(DEFAULTS, {"ratio": 0.3, "steps": 2})
    assert (changed.ratio, changed.steps, changed.layer_cap) == (0.3, 2, DEFAULTS.layer_cap)
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.ratio = 0.4  # type: ignore[misc]


def test_an_unknown_setting_is_named_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown pruning setting 'ratios'; valid: ratio, structure, steps"):
        PruneSettings.with_changes(None, {"ratios": 0.3})


@pytest.mark.parametrize("changes, message", [
    ({"steps": 0}, "steps must be ≥ 1"), ({"layer_cap": 1.0}, "layer_cap must be in"),
    ({"ratio": -0.1}, "ratio must be in"), ({"normalisation": "median"}, "valid: criterion, "),
])
def test_bad_values_are_refused_when_the_record_is_made(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PruneSettings(**changes)


def test_the_criterion_normaliser_is_used_unless_one_is_named() -> None:
    assert PruneSettings().normaliser("max") == "max"
    assert PruneSettings(normalisation="mean").normaliser("max") == "mean"


def test_prune_takes_a_settings_record_and_keyword_changes_alike() -> None:
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))]
    torch.manual_seed(0)
    a = vgg_style()
    torch.manual_seed(0)
    b = vgg_style()
    _, by_record = oba.prune(a, torch.randn(1, 3, 32, 32), batches, torch.nn.functional.cross_entropy, "magnitude-l1",
                             PruneSettings(ratio=0.3, steps=1))
    _, by_keywords = oba.prune(b, torch.randn(1, 3, 32, 32), batches, torch.nn.functional.cross_entropy,
                               "magnitude-l1", ratio=0.3, steps=1)
    assert by_record.layer_widths == by_keywords.layer_widths and by_record.macs_pruned == by_keywords.macs_pruned


def test_a_cell_reads_its_settings_from_its_config() -> None:
    cell = next(c for c in expand(load_suite("suites/smoke.toml")) if len(c.stage_ratios) == 1)
    settings = cell.prune_settings(cell.config["ratio"])
    prune = cell.config["prune"]
    assert (settings.steps, settings.layer_cap, settings.normalisation, settings.mode) == (
        prune["steps"], prune["layer_cap"], prune["normalisation"], prune["mode"])
    assert (settings.structure, settings.allocation, settings.ratio) == (
        cell.config["structure"], cell.config["allocation"], cell.config["ratio"])

"""Packing cells into trials, and pruning that traces the graph and counts MACs only after the model changed (no Ray)."""
from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from nets import SmallResNet, tiny_vit
from torch import nn

import oba
from oba.core.measure import count_macs, macs_by_module
from oba.pruning import structure, structured
from oba.suite.cells import expand
from oba.suite.config import load_suite
from oba.suite.packing import pack, trial_count
from oba.suite.resources import trial_slots
from suites import tiny_suite

LOSS = nn.functional.cross_entropy


def test_cells_are_packed_by_dense_context_into_at_most_max_trials(tmp_path: Path) -> None:
    cells = expand(load_suite(tiny_suite(tmp_path, criteria=("taylor", "magnitude-l1", "random"), seeds=(0, 1))))
    label = {c.cell_id: f"{c.config['criterion']}/{c.config['seed']}" for c in cells}
    assert [label[c.cell_id] for c in cells] == ["taylor/0", "taylor/1", "magnitude-l1/0", "magnitude-l1/1", "random/0", "random/1"]

    def labels(max_trials: int, slots: int = 2) -> list[list[str]]:
        return [[label[c.cell_id] for c in trial] for trial in pack(cells, max_trials, slots)]

    assert labels(2) == [["taylor/0", "magnitude-l1/0", "random/0"], ["taylor/1", "magnitude-l1/1", "random/1"]]
    assert labels(4) == [["taylor/0"], ["magnitude-l1/0", "random/0"], ["taylor/1"], ["magnitude-l1/1", "random/1"]]
    assert labels(1) == [["taylor/0", "magnitude-l1/0", "random/0", "taylor/1", "magnitude-l1/1", "random/1"]]
    assert labels(1000) == [[x] for x in ["taylor/0", "magnitude-l1/0", "random/0", "taylor/1", "magnitude-l1/1", "random/1"]]
    assert labels(1000, slots=1) == labels(4), "four trials per slot"
    with pytest.raises(ValueError, match="at least 1"):
        pack(cells, 0, 1)


@pytest.mark.parametrize("cells, max_trials, slots, trials", [
    (8, 1000, 2, 8),  # few cells: one per trial
    (1000, 1000, 2, 100),  # ten cells per trial share Tune's cost per trial
    (1000, 1000, 64, 256),  # but four trials per slot
    (10_000, 1000, 2, 1000),
    (100_000, 1000, 2, 1000),  # never more than max_trials
    (100_000, 50, 64, 50),
])
def test_the_number_of_trials_is_bounded_and_keeps_every_slot_busy(cells: int, max_trials: int, slots: int,
                                                                   trials: int) -> None:
    assert trial_count(cells, max_trials, slots) == trials


def _shape(model: nn.Module) -> tuple:
    return tuple(tuple(p.shape) for p in model.parameters())


def _recording(monkeypatch: pytest.MonkeyPatch) -> collections.defaultdict:
    """Record the model's shape at every dependency-graph trace and MAC count, and count the removal rounds."""
    seen: collections.defaultdict = collections.defaultdict(list)
    build, count, sync = tp.DependencyGraph.build_dependency, macs_by_module, structured.sync_attention_heads

    def traced(self, model, *args, **kwargs):
        seen["traces"].append(_shape(model))
        return build(self, model, *args, **kwargs)

    def counted(model, *args, **kwargs):
        seen["mac counts"].append(_shape(model))
        return count(model, *args, **kwargs)

    def changed(model):
        seen["changes"].append(_shape(model))
        return sync(model)

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", traced)
    monkeypatch.setattr(structure, "macs_by_module", counted)
    monkeypatch.setattr(structured, "sync_attention_heads", changed)
    return seen


@pytest.mark.parametrize("build, shape", [(SmallResNet, (3, 32, 32)), (lambda: tiny_vit(dim=32, depth=2, heads=4, image=16), (3, 16, 16))])
def test_structured_pruning_traces_and_counts_macs_once_per_change_of_the_model(monkeypatch, build, shape) -> None:
    model = build().eval()
    example = torch.randn(1, *shape)
    batches = [(torch.randn(8, *shape), torch.randint(0, 10, (8,)))]
    dense = macs_by_module(model, example)
    seen = _recording(monkeypatch)
    model, record = oba.prune(model, example, batches, LOSS, "magnitude-l1", ratio=0.5, steps=3, dense_macs=dense)
    changes = len(seen["changes"])
    assert changes >= 3, "every step removed units"
    assert len(set(seen["traces"])) == len(seen["traces"]) <= changes + 1, "never traced twice between two changes"
    assert len(set(seen["mac counts"])) == len(seen["mac counts"]) == changes, "counted once after each change"
    assert seen["traces"][0] not in seen["mac counts"], "the dense model's MACs were given, not counted"
    assert record.macs_dense == dense[""] == count_macs(build().eval(), example)
    assert record.macs_pruned == count_macs(model, example)


def test_unstructured_pruning_counts_no_macs_when_the_dense_count_is_given(monkeypatch) -> None:
    model = SmallResNet().eval()
    example = torch.randn(1, 3, 32, 32)
    batches = [(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))]
    dense = macs_by_module(model, example)
    seen = _recording(monkeypatch)
    model, record = oba.prune(model, example, batches, LOSS, "magnitude-l1", ratio=0.5, structure="unstructured",
                              steps=2, dense_macs=dense)
    assert not seen["mac counts"] and not seen["traces"]
    assert record.macs_pruned == record.macs_dense == count_macs(model, example), "masks change no shape"


@pytest.mark.parametrize("resources, cpu, gpu, max_concurrent, slots", [
    ({"CPU": 16.0, "GPU": 4.0}, 2, 1, None, 4),  # GPUs bind first
    ({"CPU": 16.0, "GPU": 4.0}, 2, 0, None, 8),
    ({"CPU": 16.0}, 2, 0, 3, 3),
    ({"CPU": 1.0}, 2, 0, None, 1),  # a trial that fits nowhere still counts as one slot
    ({"CPU": 4.0}, 0, 0, None, 1),
])
def test_trial_slots_are_the_trials_that_fit_at_once(resources, cpu, gpu, max_concurrent, slots) -> None:
    assert trial_slots(resources, cpu, gpu, max_concurrent) == slots

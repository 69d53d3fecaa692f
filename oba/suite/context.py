"""What every cell of one dense model shares, computed once per process and reused.

A :class:`DenseContext` holds what does not depend on the criterion: the data
splits, the dense model and where its weights came from (source and SHA-256), the calibration batches (scoring) and the
recalibration batches (batch-norm statistics after pruning), the example and
latency inputs, the dense latency, the time of one plain gradient pass of the dense model over the calibration
batches (the unit scoring time is reported in), the dense model's MACs per module, and
fidelity's ground truth — the actual loss change of removing each sampled unit
alone. The runner packs the cells of one dense model into the same trials
(:mod:`oba.suite.packing`) and Ray reuses trial actors, so they pay for this
once per trial process.
Cells must not modify ``context.model``: they prune a copy (:meth:`DenseContext.fresh_model`).
"""
from __future__ import annotations

import copy
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from oba import data as datasets
from oba.core.groups import Group, ParamSlice
from oba.core.measure import gradient_seconds, macs_by_module, measure_latency
from oba.core.model_calls import Batch, scoring_context
from oba.criteria.fidelity import loss_changes, sample_groups
from oba.pruning import find_groups
from oba.pruning.unstructured import maskable_weights
from oba.suite.cells import Cell
from oba.training.checkpoints import dense_checkpoint

LOSS = torch.nn.functional.cross_entropy
_CACHE_SIZE = 8
_contexts: OrderedDict[str, DenseContext] = OrderedDict()


@dataclass
class DenseContext:
    """The criterion-independent part of a cell (see the module docstring)."""

    splits: datasets.Splits
    model: nn.Module
    metadata: dict[str, Any]
    weights: str
    weights_sha256: str
    calibration: list[Batch]
    recalibration: list[Batch]
    example: Tensor
    latency_input: Tensor
    latency_dense_ms: float
    gradient_seconds: float
    fidelity_groups: list[Group]
    fidelity_index: Tensor
    fidelity_changes: Tensor
    dense_macs: dict[str, int]
    dense_widths: dict[str, int]

    def fresh_model(self) -> nn.Module:
        """A private copy of the dense model, to prune."""
        return copy.deepcopy(self.model)


def draw_batches(
    train: Dataset, counts: tuple[int, ...], batch_size: int, seed: int, device: torch.device
) -> list[list[Batch]]:
    """Disjoint runs of ``counts[k]`` batches from one seeded permutation of the train split.

    The k-th list takes the next ``counts[k] * batch_size`` indices of the
    permutation (wrapping around when the split is too small), so calibration and
    recalibration batches are fixed by ``seed`` and identical for every criterion.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=generator)
    torch.manual_seed(seed)
    out, offset = [], 0
    for count in counts:
        n = min(count * batch_size, len(train))
        index = order[(offset + torch.arange(n)) % len(train)].tolist()
        offset += n
        batches = []
        for start in range(0, n, batch_size):
            chunk = [train[i] for i in index[start : start + batch_size]]
            inputs = torch.stack([x for x, _ in chunk]).to(device)
            targets = torch.tensor([int(y) for _, y in chunk], device=device)
            batches.append((inputs, targets))
        out.append(batches)
    return out


def _unstructured_groups(model: nn.Module, sample: int, seed: int) -> list[Group]:
    """``sample`` single weights, drawn in proportion to each maskable layer's size."""
    generator = torch.Generator().manual_seed(seed)
    weights = maskable_weights(model)
    names = list(weights)
    sizes = torch.tensor([weights[n].numel() for n in names], dtype=torch.float64)
    picks = torch.multinomial(sizes / sizes.sum(), sample, replacement=True, generator=generator).tolist()
    groups = []
    for k, i in enumerate(picks):
        flat = int(torch.randint(weights[names[i]].numel(), (1,), generator=generator))
        groups.append(Group((ParamSlice(names[i], None, torch.tensor([flat])),), label=f"{names[i]}#{flat}#{k}"))
    return groups


def _key(cell: Cell, data_root: str | None, cache_dir: str | None, device: torch.device) -> str:
    return json.dumps([cell.context_key(), data_root, cache_dir, str(device)])


def _build(cell: Cell, data_root: str | None, download: bool, cache_dir: str | None, device: torch.device,
           num_workers: int | None) -> DenseContext:
    seed, measure, settings = cell.seed, cell.measure, cell.prune_settings(cell.stage_ratios[0])
    splits = datasets.load(cell.dataset, root=data_root, download=download, **cell.dataset_options)
    dense = dense_checkpoint(
        cell.model, cell.dataset, cell.dense, seed, cache_dir,
        dataset_options=cell.dataset_options, data=splits, device=device, num_workers=num_workers,
    )
    model = dense.model.eval()
    calibration, recalibration = draw_batches(
        splits.train, (cell.calibration.batches, cell.recalibration_batches), cell.calibration.batch_size, seed,
        device,
    )
    example = calibration[0][0][:1]
    latency_input = example.expand(measure.latency_batch_size, *example.shape[1:]).contiguous()
    dense_macs = macs_by_module(model, example)
    if settings.structure == "channels":
        _, groups = find_groups(model, example, macs=dense_macs)
        units = [u for g in groups for u in g.units]
        widths = {g.name: len(g) for g in groups}
    else:
        units = _unstructured_groups(model, measure.fidelity_sample, seed)
        widths = {}
    index = sample_groups(len(units), measure.fidelity_sample, seed)
    with scoring_context(model, settings.mode):
        changes = loss_changes(model, calibration, LOSS, [units[i] for i in index.tolist()])
    return DenseContext(
        splits=splits, model=model, metadata=dense.metadata, weights=dense.weights,
        weights_sha256=dense.weights_sha256, calibration=calibration, recalibration=recalibration,
        example=example, latency_input=latency_input,
        latency_dense_ms=measure_latency(model, latency_input, repeats=measure.latency_repeats),
        gradient_seconds=gradient_seconds(model, calibration, LOSS, settings.mode),
        fidelity_groups=units, fidelity_index=index, fidelity_changes=changes, dense_macs=dense_macs,
        dense_widths=widths,
    )


def dense_context(
    cell: Cell, data_root: str | None, download: bool, cache_dir: str | None, device: torch.device,
    num_workers: int | None = None,
) -> DenseContext:
    """The cell's :class:`DenseContext`: built on first use, then served from this process's cache.

    ``num_workers`` is passed to the loaders of a dense model trained here (it never changes the context).
    """
    key = _key(cell, data_root, cache_dir, device)
    if key in _contexts:
        _contexts.move_to_end(key)
        return _contexts[key]
    context = _build(cell, data_root, download, cache_dir, device, num_workers)
    _contexts[key] = context
    while len(_contexts) > _CACHE_SIZE:
        _contexts.popitem(last=False)
    return context

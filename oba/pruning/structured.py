"""Iterative structured pruning toward a target fraction of dense MACs removed.

Round k of ``steps`` aims at ``ratio * k / steps`` of the dense MACs removed:
score every unit with the criterion as step k (``criterion.reseed(k)``; timed after a warm-up gradient pass,
with the device synchronised around it: :mod:`oba.core.measure`), let the allocation policy pick
units from their estimated per-unit MACs, remove them physically, recount MACs
exactly with FlopCounterMode and repeat with the remaining scores until the
round's target is met within ``tolerance`` (per-unit estimates ignore that a
layer shrinking on both sides loses less than the sum of its parts, so the
first pick falls short; the last pick lands within half a unit of the target).
``global`` allocation normalises each group's scores once per round, from all
its units at the round's start; the correction picks of that round rank the
surviving units by those same normalised values.

With ``recalibration`` batches, every round after the first starts by
recomputing batch-norm statistics (:mod:`oba.core.recalibration`), so each round
scores a model whose statistics match its structure; the same for every criterion.

Before each removal the criterion's compensating update (``Criterion.compensation``,
e.g. kfac-obs's OBS update) is applied to the surviving parameters, given the
union of the chosen units' elements; its time counts as scoring time.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from oba.core.measure import timed, warm_up
from oba.core.model_calls import Batch, LossFn
from oba.core.recalibration import recalibrate_batchnorm
from oba.criteria.base import Criterion
from oba.pruning.allocation import (
    GroupState,
    allocate_global,
    allocate_uniform,
    normalise_groups,
)
from oba.pruning.compensation import compensate
from oba.pruning.dependency_groups import PrunableGroup, remove_units, sync_attention_heads
from oba.pruning.outcome import PruneOutcome
from oba.pruning.settings import PruneSettings
from oba.pruning.structure import ModelStructure


def _split(scores: Tensor, groups: Sequence[PrunableGroup]) -> dict[str, Tensor]:
    out, start = {}, 0
    for g in groups:
        out[g.name] = scores[start : start + len(g)].clone()
        start += len(g)
    return out


def removed_masks(model: nn.Module, groups: Sequence[PrunableGroup], chosen: dict[str, list[int]]) -> dict[str, Tensor]:
    """Union of the chosen units' elements, one boolean mask per parameter they touch."""
    shapes = {name: p.shape for name, p in model.named_parameters()}
    masks: dict[str, Tensor] = {}
    for g in groups:
        for u in chosen.get(g.name, []):
            for name, mask in g.units[u].masks(shapes).items():
                masks[name] = masks[name] | mask if name in masks else mask
    return masks


def prune_structured(
    model: nn.Module,
    example_inputs: Any,
    batches: Sequence[Batch],
    loss_fn: LossFn,
    criterion: Criterion,
    settings: PruneSettings,
    ignored_layers: Sequence[nn.Module] = (),
    recalibration: Sequence[Batch] | None = None,
    dense_macs: dict[str, int] | None = None,
    dense_widths: dict[str, int] | None = None,
    first_step: int = 1,
) -> PruneOutcome:
    """Prune ``model`` in place as ``settings`` say; return what was measured (:class:`PruneOutcome`).

    The dependency graph is traced and MACs are counted only when the model's
    structure changed since they were last known (:class:`~oba.pruning.structure.ModelStructure`);
    ``dense_macs``, the per-module MACs of ``model`` as given, saves counting them.
    ``dense_widths`` (group name → units) are the widths of the dense model when ``model`` is already pruned
    (an iterative stage): ``layer_cap`` and ``layer_widths``' dense counts then refer to them. The rounds
    score as steps ``first_step … first_step + steps − 1`` (a later stage draws other random numbers).
    The loop over rounds is one function (about 90 lines) because each round's picks feed the next through the
    shared scores, structure and MACs count.
    """
    ratio, steps, allocation, layer_cap = settings.ratio, settings.steps, settings.allocation, settings.layer_cap
    normalisation = settings.normaliser(criterion.normaliser)
    structure = ModelStructure(model, example_inputs, ignored_layers, dense_macs)
    macs_dense = structure.macs()
    dg, groups = structure.groups()
    dense_units = {g.name: len(g) for g in groups}
    dense_units.update({name: units for name, units in (dense_widths or {}).items() if name in dense_units})
    kinds = {g.name: g.kind for g in groups}
    scoring_seconds = dense_scoring_seconds = 0.0
    first_step_units_removed = 0
    dense_unit_scores = torch.zeros(0, dtype=torch.float64)
    device = next(model.parameters()).device
    for step in range(1, steps + 1):
        target_removed = ratio * step / steps * macs_dense
        if step > 1 and recalibration is not None:
            recalibrate_batchnorm(model, recalibration)
        dg, groups = structure.groups()
        criterion.reseed(first_step + step - 1)
        warm_up(model, batches, loss_fn, criterion.mode)
        with timed(device) as clock:
            all_scores = criterion.group_scores(model, batches, loss_fn, [u for g in groups for u in g.units])
        seconds = clock.seconds
        scoring_seconds += seconds
        all_scores = all_scores.double().cpu()
        if step == 1:
            dense_scoring_seconds, dense_unit_scores = seconds, all_scores
        scores = _split(all_scores, groups)
        if allocation == "global":
            scores = normalise_groups(scores, normalisation)
        for _ in range(settings.max_rounds):
            deficit = target_removed - (macs_dense - structure.macs())
            if deficit <= settings.tolerance * macs_dense:
                break
            dg, groups = structure.groups()
            for g in groups:
                if len(scores[g.name]) != len(g):
                    raise RuntimeError(f"group {g.name} changed shape unexpectedly during pruning")
            states = {
                g.name: GroupState(
                    scores=scores[g.name],
                    unit_macs=g.unit_macs,
                    dense_units=dense_units[g.name],
                    removable=len(g) - max(g.min_units, dense_units[g.name] - math.floor(layer_cap * dense_units[g.name])),
                )
                for g in groups
            }
            if allocation == "global":
                chosen = allocate_global(states, deficit)
            else:
                chosen = allocate_uniform(states, deficit)
            if not any(chosen.values()):
                break
            if step == 1:
                first_step_units_removed += sum(len(units) for units in chosen.values())
            with timed(device) as clock:
                compensate(model, criterion, batches, loss_fn, removed_masks(model, groups, chosen))
            scoring_seconds += clock.seconds
            for g in groups:
                units = chosen.get(g.name, [])
                remove_units(dg, g, units)
                keep = torch.ones(len(g), dtype=torch.bool)
                keep[units] = False
                scores[g.name] = scores[g.name][keep]
            sync_attention_heads(model)
            structure.changed()
    remaining = {g.name: len(scores[g.name]) for g in groups}
    position = {name: index for index, (name, _) in enumerate(model.named_modules())}
    in_model_order = sorted(dense_units, key=lambda name: position.get(name, len(position)))
    return PruneOutcome(
        macs_dense=macs_dense,
        macs_pruned=structure.macs(),
        scoring_seconds=scoring_seconds,
        dense_scoring_seconds=dense_scoring_seconds,
        first_step_units_removed=first_step_units_removed,
        layer_widths={
            name: {"kind": kinds[name], "dense": dense_units[name], "remaining": remaining.get(name, dense_units[name])}
            for name in in_model_order
        },
        dense_unit_scores=dense_unit_scores,
    )

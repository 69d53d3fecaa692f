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
            for piece in g.units[u].slices:
                if piece.name not in masks:
                    masks[piece.name] = torch.zeros(shapes[piece.name], dtype=torch.bool)
                piece.mark(masks[piece.name])
    return masks


def _score_units(model: nn.Module, structure: ModelStructure, scoring: tuple[Criterion, Sequence[Batch], LossFn],
                 step: int, device: torch.device) -> tuple[list[PrunableGroup], Tensor, float]:
    """The model's groups, every unit's score as pruning step ``step`` (float64, on the CPU), and the scoring's
    seconds (after a warm-up gradient pass, the device synchronised around it)."""
    criterion, batches, loss_fn = scoring
    _, groups = structure.groups()
    criterion.reseed(step)
    warm_up(model, batches, loss_fn, criterion.mode)
    with timed(device) as clock:
        scores = criterion.group_scores(model, batches, loss_fn, [u for g in groups for u in g.units])
    return groups, scores.double().cpu(), clock.seconds


def _pick_and_remove(model: nn.Module, structure: ModelStructure, scores: dict[str, Tensor], dense_units: dict[str, int],
                     settings: PruneSettings, deficit: float, scoring: tuple[Criterion, Sequence[Batch], LossFn],
                     device: torch.device) -> tuple[int, float]:
    """One pick of a round: the allocation chooses units worth ``deficit`` MACs among those the layer cap still
    allows, the criterion's compensation updates the survivors, and the chosen units are removed (their scores
    dropped from ``scores``). Returns the units removed (0: none could be) and the compensation's seconds."""
    criterion, batches, loss_fn = scoring
    dg, groups = structure.groups()
    for g in groups:
        if len(scores[g.name]) != len(g):
            raise RuntimeError(f"group {g.name} changed shape unexpectedly during pruning")
    cap = settings.layer_cap
    states = {
        g.name: GroupState(
            scores=scores[g.name],
            unit_macs=g.unit_macs,
            dense_units=dense_units[g.name],
            removable=len(g) - max(g.min_units, dense_units[g.name] - math.floor(cap * dense_units[g.name])),
        )
        for g in groups
    }
    chosen = allocate_global(states, deficit) if settings.allocation == "global" else allocate_uniform(states, deficit)
    if not any(chosen.values()):
        return 0, 0.0
    with timed(device) as clock:
        compensate(model, criterion, batches, loss_fn, removed_masks(model, groups, chosen))
    for g in groups:
        units = chosen.get(g.name, [])
        remove_units(dg, g, units)
        keep = torch.ones(len(g), dtype=torch.bool)
        keep[units] = False
        scores[g.name] = scores[g.name][keep]
    sync_attention_heads(model)
    structure.changed()
    return sum(len(units) for units in chosen.values()), clock.seconds


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
    """
    ratio, steps, allocation = settings.ratio, settings.steps, settings.allocation
    normalisation = settings.normaliser(criterion.normaliser)
    structure = ModelStructure(model, example_inputs, ignored_layers, dense_macs)
    macs_dense = structure.macs()
    _, groups = structure.groups()
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
        groups, all_scores, seconds = _score_units(model, structure, (criterion, batches, loss_fn),
                                                   first_step + step - 1, device)
        scoring_seconds += seconds
        if step == 1:
            dense_scoring_seconds, dense_unit_scores = seconds, all_scores
        scores = _split(all_scores, groups)
        if allocation == "global":
            scores = normalise_groups(scores, normalisation)
        for _ in range(settings.max_rounds):
            deficit = target_removed - (macs_dense - structure.macs())
            if deficit <= settings.tolerance * macs_dense:
                break
            removed, seconds = _pick_and_remove(model, structure, scores, dense_units, settings, deficit,
                                                (criterion, batches, loss_fn), device)
            if not removed:
                break
            scoring_seconds += seconds
            if step == 1:
                first_step_units_removed += removed
    return PruneOutcome(
        macs_dense=macs_dense,
        macs_pruned=structure.macs(),
        scoring_seconds=scoring_seconds,
        dense_scoring_seconds=dense_scoring_seconds,
        first_step_units_removed=first_step_units_removed,
        layer_widths=_layer_widths(model, kinds, dense_units, {name: len(left) for name, left in scores.items()}),
        dense_unit_scores=dense_unit_scores,
    )


def _layer_widths(model: nn.Module, kinds: dict[str, str], dense_units: dict[str, int],
                  remaining: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Group name → kind, dense and remaining units, in the order in which the model registers its modules."""
    position = {name: index for index, (name, _) in enumerate(model.named_modules())}
    in_model_order = sorted(dense_units, key=lambda name: position.get(name, len(position)))
    return {name: {"kind": kinds[name], "dense": dense_units[name], "remaining": remaining.get(name, dense_units[name])}
            for name in in_model_order}

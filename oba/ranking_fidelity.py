"""Fidelity: how well a criterion's group scores rank the real damage of removing each group.

``loss_changes`` measures the actual ``ΔL(G) = L(θ with G zeroed) − L(θ)`` (L = mean
of the batch losses) one group at a time; ``fidelity`` is the Spearman rank
correlation between given group scores and those signed loss changes on a seeded
sample of groups.
"""
from __future__ import annotations

from typing import Sequence

import torch
from scipy.stats import spearmanr
from torch import Tensor, nn

from .batches import Batch, LossFn, batch_loss, require_batches, scoring_context, trainable_parameters
from .groups import Group, check_groups


def _mean_loss(model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> float:
    return sum(float(batch_loss(model, batch, loss_fn)) for batch in batches) / len(batches)


def loss_changes(model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn, groups: Sequence[Group]) -> Tensor:
    """Actual ``ΔL`` of removing each group alone (float64 CPU tensor, one entry per group).

    Each group's elements are zeroed, the mean batch loss measured and the
    parameters restored. Runs in the model's current mode under ``torch.no_grad``;
    parameters, buffers (e.g. batch-norm statistics) and modes are restored exactly.
    """
    require_batches(batches)
    named = trainable_parameters(model)
    groups = check_groups(groups, named)
    shapes = {name: p.shape for name, p in named.items()}
    changes = torch.zeros(len(groups), dtype=torch.float64)
    with torch.no_grad(), scoring_context(model):
        base = _mean_loss(model, batches, loss_fn)
        for i, group in enumerate(groups):
            masks = group.masks(shapes, next(model.parameters()).device)
            saved = {name: named[name][mask].clone() for name, mask in masks.items()}
            for name, mask in masks.items():
                named[name][mask] = 0
            changes[i] = _mean_loss(model, batches, loss_fn) - base
            for name, mask in masks.items():
                named[name][mask] = saved[name]
    return changes


def sample_groups(count: int, sample: int, seed: int) -> Tensor:
    """Sorted indices of ``sample`` of ``count`` groups, drawn without replacement with ``seed`` (all when fewer)."""
    if count > sample:
        return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:sample].sort().values
    return torch.arange(count)


def rank_correlation(scores: Tensor | Sequence[float], changes: Tensor | Sequence[float]) -> float:
    """Spearman correlation of group scores with loss changes (NaN when either side is constant)."""
    scores = torch.as_tensor(scores, dtype=torch.float64).cpu()
    changes = torch.as_tensor(changes, dtype=torch.float64).cpu()
    return float(spearmanr(scores.numpy(), changes.numpy()).statistic)


def fidelity(
    model: nn.Module,
    batches: Sequence[Batch],
    loss_fn: LossFn,
    groups: Sequence[Group],
    scores: Tensor | Sequence[float],
    sample: int = 64,
    seed: int = 0,
) -> float:
    """Spearman correlation between ``scores[g]`` and the actual ``ΔL`` of removing group g alone.

    ``sample`` groups are drawn without replacement by a generator seeded with
    ``seed`` (all groups when there are no more than ``sample``). NaN when either
    side is constant on the sample.
    """
    scores = torch.as_tensor(scores, dtype=torch.float64).cpu()
    if scores.shape != (len(groups),):
        raise ValueError(f"need one score per group: {len(groups)} groups, scores of shape {tuple(scores.shape)}")
    if len(groups) < 2:
        raise ValueError("fidelity needs at least two groups")
    chosen = sample_groups(len(groups), sample, seed)
    actual = loss_changes(model, batches, loss_fn, [groups[i] for i in chosen.tolist()])
    return rank_correlation(scores[chosen], actual)

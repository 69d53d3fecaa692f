"""Fidelity: how well a criterion's group scores rank the real damage of removing each group.

``loss_changes`` measures the actual ``ΔL(G) = L(θ with G zeroed) − L(θ)`` (L = mean
of the batch losses) one group at a time; ``fidelity`` is the Spearman rank
correlation between given group scores and those signed loss changes on a seeded
sample of groups. :func:`rank_fidelity` reports all three views of
docs/criteria.md ("Fidelity") on such a sample (a :class:`FidelityResult`):

- ``signed``: Spearman ρ(score, ΔL) — what pruning should follow (lowest first,
  so a unit whose removal lowers the loss goes first);
- ``abs``: Spearman ρ(score, |ΔL|) — what ``|Σ s|`` criteria estimate;
- ``precision``: P@k, the share of the k lowest-scored units that are among the
  k truly cheapest (lowest signed ΔL), with k from :func:`first_step_k`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from scipy.stats import spearmanr
from torch import Tensor, nn

from oba.core.groups import Group, check_groups
from oba.core.model_calls import Batch, LossFn, batch_loss, require_batches, scoring_context, trainable_parameters


def _mean_loss(model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> float:
    return sum(float(batch_loss(model, batch, loss_fn)) for batch in batches) / len(batches)


def loss_changes(model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn, groups: Sequence[Group]) -> Tensor:
    """Actual ``ΔL`` of removing each group alone (float64 CPU tensor, one entry per group).

    Each group's elements are zeroed, the mean batch loss measured and the
    parameters restored. Runs in the model's current mode under ``torch.no_grad``,
    in true fp32 (:func:`oba.core.model_calls.scoring_context`); parameters, buffers (e.g. batch-norm statistics) and modes are restored exactly.
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


@dataclass(frozen=True)
class FidelityResult:
    """Fidelity of scores on a sample of units: Spearman to signed and to absolute ΔL, and P@k."""

    signed: float
    abs: float
    precision: float
    k: int


def first_step_k(sample_size: int, removed: int, dense_units: int) -> int:
    """``k = max(1, round(sample_size × removed ÷ dense_units))``, halves rounded up.

    ``removed`` is the number of units the pruning's first step removed out of the
    ``dense_units`` units of the dense model: k is that share of the sample. Exact
    integer arithmetic, so k never depends on floating-point rounding.
    """
    if sample_size < 1 or dense_units < 1 or not 0 <= removed <= dense_units:
        raise ValueError(
            f"need sample_size ≥ 1 and 0 ≤ removed ≤ dense_units ≥ 1, got {sample_size}, {removed}, {dense_units}"
        )
    return max(1, (2 * sample_size * removed + dense_units) // (2 * dense_units))


def lowest_k_membership(values: Tensor, k: int) -> Tensor:
    """Probability that each entry is among the ``k`` lowest when ties are ordered uniformly at random.

    1 below the k-th lowest value, 0 above it, and ``(k − #below) ÷ #tied`` for the
    entries equal to it: the k places are shared equally among the tied entries.
    """
    kth = values.sort().values[k - 1]
    below = values < kth
    tied = values == kth
    return below.double() + tied.double() * (k - int(below.sum())) / int(tied.sum())


def precision_at_k(scores: Tensor | Sequence[float], changes: Tensor | Sequence[float], k: int) -> float:
    """``|A ∩ B| ÷ k`` for A the k lowest scores and B the k lowest (signed) loss changes.

    Ties are handled deterministically by their expectation over a uniformly random
    order of tied entries: ``Σ_i P(i ∈ A) · P(i ∈ B) ÷ k`` (see
    :func:`lowest_k_membership`); without ties this is the plain set overlap.
    NaN when either side holds a non-finite value.
    """
    scores = torch.as_tensor(scores, dtype=torch.float64).cpu()
    changes = torch.as_tensor(changes, dtype=torch.float64).cpu()
    if scores.shape != changes.shape or scores.dim() != 1:
        raise ValueError(f"need one score per loss change, got shapes {tuple(scores.shape)} and {tuple(changes.shape)}")
    if not 1 <= k <= len(scores):
        raise ValueError(f"k must be in [1, {len(scores)}], got {k}")
    if not (torch.isfinite(scores).all() and torch.isfinite(changes).all()):
        return math.nan
    return float((lowest_k_membership(scores, k) * lowest_k_membership(changes, k)).sum()) / k


def rank_fidelity(scores: Tensor | Sequence[float], changes: Tensor | Sequence[float], k: int) -> FidelityResult:
    """:class:`FidelityResult` of ``scores`` against the actual ``changes`` (ΔL) of the same sampled units."""
    changes = torch.as_tensor(changes, dtype=torch.float64).cpu()
    return FidelityResult(
        signed=rank_correlation(scores, changes),
        abs=rank_correlation(scores, changes.abs()),
        precision=precision_at_k(scores, changes, k),
        k=k,
    )

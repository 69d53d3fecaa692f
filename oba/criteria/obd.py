"""Optimal Brain Damage with a diagonal curvature: ``s_i = ½ D_ii θ_i²``.

obd:            D = empirical Fisher diagonal, ``F_ii = (1/N) Σ_n g_{n,i}²`` over ALL
                N calibration samples (per-sample gradients by ``torch.func`` vmap,
                chunked under a memory budget).
obd-hutchinson: D = Hutchinson's Hessian diagonal, ``mean_b mean_z z ⊙ (H_b z)``
                over k Rademacher probes z per batch (all k share one gradient graph),
                drawn from the pruning step's seed (:class:`~oba.criteria.base.SeededCriterion`).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from oba.core.curvature import fisher_diagonal_sums, gradient_and_hvp_map, rademacher_like
from oba.criteria.base import (
    AdditiveCriterion,
    Batch,
    BatchSums,
    LossFn,
    SeededCriterion,
    require_batches,
    scoring_context,
    trainable_parameters,
)
from oba.criteria.registry import register


@register("obd")
class OBD(AdditiveCriterion):
    """``s_i = ½ F_ii θ_i²`` with the empirical Fisher diagonal averaged over every sample.

    Each sample's loss is ``loss_fn`` on a batch of one. ``chunk_size`` samples go
    through one vmap call; when None, the chunk is the largest whose per-sample
    gradients fit ``memory_budget`` bytes. Batch norm in train mode couples the
    samples, so scoring such a model in train mode raises ``ValueError``.
    """

    def __init__(self, chunk_size: int | None = None, memory_budget: int = 1 << 29, mode: str | None = None,
                 reduction: str | None = None, normaliser: str | None = None) -> None:
        super().__init__(mode, reduction=reduction, normaliser=normaliser)
        self.chunk_size = chunk_size
        self.memory_budget = memory_budget

    def batch_sums(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> BatchSums:
        """``Σ_n g_{n,i}²`` per parameter, counted in samples."""
        require_batches(batches)
        named = trainable_parameters(model)
        with scoring_context(model, self.mode):
            totals, count = fisher_diagonal_sums(model, batches, loss_fn, list(named), self.chunk_size, self.memory_budget)
        return BatchSums(totals, count)

    def scores_from_sums(self, model: nn.Module, sums: BatchSums) -> dict[str, Tensor]:
        """``½ F_ii θ_i²`` with ``F_ii`` the mean of the summed squares."""
        named = trainable_parameters(model)
        return {name: 0.5 * (sums.tensors[name] / sums.count) * p.detach().square() for name, p in named.items()}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "chunk_size": self.chunk_size, "memory_budget": self.memory_budget}


@register("obd-hutchinson")
class OBDHutchinson(SeededCriterion):
    """``s_i = ½ D_ii θ_i²``, ``D = mean_b (1/k) Σ_z z ⊙ H_b z`` (z Rademacher from the step's generator)."""

    def __init__(self, k: int = 8, seed: int = 0, mode: str | None = None, reduction: str | None = None,
                 normaliser: str | None = None) -> None:
        super().__init__(seed, mode, reduction=reduction, normaliser=normaliser)
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        self.k = k

    def parameter_scores(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> dict[str, Tensor]:
        require_batches(batches)
        named = trainable_parameters(model)
        params = list(named.values())
        diagonal = [torch.zeros_like(p, requires_grad=False) for p in params]
        generator = self.generator(params[0].device if params else "cpu")

        def accumulate(z: Sequence[Tensor], hz: list[Tensor]) -> None:
            for d, zi, hzi in zip(diagonal, z, hz):
                d.add_(zi * hzi)

        with scoring_context(model, self.mode):
            for batch in batches:
                probes = (rademacher_like(params, generator) for _ in range(self.k))
                gradient_and_hvp_map(model, batch, loss_fn, params, probes, accumulate)
        scale = 0.5 / (self.k * len(batches))
        return {name: scale * d * p.detach().square() for (name, p), d in zip(named.items(), diagonal)}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "k": self.k}

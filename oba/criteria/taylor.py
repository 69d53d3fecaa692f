"""First-order Taylor criterion: ``s_i = mean_b(−g_{b,i} θ_i)``; group score ``|Σ s_i|`` (``Σ s_i`` when signed)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from oba.core.curvature import gradient
from oba.criteria.base import (
    AdditiveCriterion,
    Batch,
    BatchSums,
    LossFn,
    require_batches,
    scoring_context,
    trainable_parameters,
)
from oba.criteria.registry import register


@register("taylor")
class Taylor(AdditiveCriterion):
    """The first-order term of the loss change of removing each parameter."""

    signed_estimate = True

    def batch_sums(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> BatchSums:
        """``Σ_b −g_{b,i} θ_i`` per parameter, counted in batches."""
        require_batches(batches)
        named = trainable_parameters(model)
        params = list(named.values())
        totals = [torch.zeros_like(p, requires_grad=False) for p in params]
        with scoring_context(model, self.mode):
            for batch in batches:
                _, grads = gradient(model, batch, loss_fn, params)
                for total, p, g in zip(totals, params, grads):
                    total.sub_(g * p.detach())
        return BatchSums(dict(zip(named, totals)), len(batches))

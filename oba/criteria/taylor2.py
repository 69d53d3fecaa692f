"""taylor2: each parameter's share of the exact second-order Taylor expansion of the loss.

For calibration batches b with gradient g_b and Hessian H_b (every inter-layer
block included), removing parameter set S changes the loss by
ΔL ≈ gᵀδ + ½ δᵀHδ with δ = −θ on S. taylor2 attributes it per parameter:

    s_i = mean_b [ −g_{b,i} θ_i + ½ θ_i (H_b θ)_i ]

One exact Hessian-vector product per batch (double backward), which also
yields g_b from the same graph. Σ_i s_i is the whole second-order ΔL of
removing every parameter, so the criterion has a signed group estimate
(``signed=True`` ranks groups by ``Σ s`` instead of ``|Σ s|``). This was this
project's ``oba`` before the OBA criteria followed the paper and the released
code (``docs/criteria.md``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from oba.core.curvature import gradient_and_hvps
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


def theta_hvp_sums(model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn, mode: str | None,
                   term: Callable[[Tensor, Tensor, Tensor], Tensor]) -> BatchSums:
    """``Σ_b term(θ, g_b, H_b θ)`` per trainable parameter, counted in batches: one exact HVP per batch."""
    require_batches(batches)
    named = trainable_parameters(model)
    params = list(named.values())
    totals = [torch.zeros_like(p, requires_grad=False) for p in params]
    with scoring_context(model, mode):
        theta = [p.detach().clone() for p in params]
        for batch in batches:
            _, grads, (h_theta,) = gradient_and_hvps(model, batch, loss_fn, params, [theta])
            for total, t, g, ht in zip(totals, theta, grads, h_theta):
                total.add_(term(t, g, ht))
    return BatchSums(dict(zip(named, totals)), len(batches))


@register("taylor2")
class Taylor2(AdditiveCriterion):
    """``s_i = mean_b[−g_{b,i} θ_i + ½ θ_i (H_b θ)_i]`` with the exact Hessian."""

    signed_estimate = True

    def batch_sums(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> BatchSums:
        """``Σ_b [−g_{b,i} θ_i + ½ θ_i (H_b θ)_i]`` per parameter, counted in batches."""
        return theta_hvp_sums(model, batches, loss_fn, self.mode, lambda t, g, ht: 0.5 * t * ht - g * t)

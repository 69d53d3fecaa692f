"""Optimal Brain Apoptosis: per-parameter share of the exact second-order expansion.

For calibration batches b with gradient g_b and Hessian H_b (every inter-layer
block included), removing parameter set S changes the loss by
ΔL ≈ gᵀδ + ½ δᵀHδ with δ = −θ on S. OBA attributes it per parameter:

    oba:     s_i = mean_b [ −g_{b,i} θ_i + ½ θ_i (H_b θ)_i ]
    oba-hvp: s_i = mean_b [ ½ θ_i (H_b θ)_i ]

One exact Hessian-vector product per batch (double backward), which also
yields g_b from the same graph. Σ_i s_i is the whole second-order ΔL of
removing every parameter, so both criteria have a signed group estimate
(``signed=True`` ranks groups by ``Σ s`` instead of ``|Σ s|``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..curvature import gradient_and_hvps
from .base import AdditiveCriterion, Batch, BatchSums, LossFn, require_batches, scoring_context, trainable_parameters
from .registry import register


@register("oba")
class OBA(AdditiveCriterion):
    """``s_i = mean_b[−g_{b,i} θ_i + ½ θ_i (H_b θ)_i]`` with the exact Hessian."""

    first_order = True
    signed_estimate = True

    def batch_sums(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> BatchSums:
        """``Σ_b [−g_{b,i} θ_i + ½ θ_i (H_b θ)_i]`` per parameter, counted in batches."""
        require_batches(batches)
        named = trainable_parameters(model)
        params = list(named.values())
        totals = [torch.zeros_like(p, requires_grad=False) for p in params]
        with scoring_context(model, self.mode):
            theta = [p.detach().clone() for p in params]
            for batch in batches:
                grads, h_theta = self.gradient_and_curvature_product(model, batch, loss_fn, params, theta)
                for total, t, g, ht in zip(totals, theta, grads, h_theta):
                    term = 0.5 * t * ht
                    if self.first_order:
                        term = term - g * t
                    total.add_(term)
        return BatchSums(dict(zip(named, totals)), len(batches))

    def gradient_and_curvature_product(
        self, model: nn.Module, batch: Batch, loss_fn: LossFn, params: list[Tensor], theta: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """``(g_b, H_b θ)`` for one batch: the gradient and the exact Hessian-vector product."""
        _, grads, (h_theta,) = gradient_and_hvps(model, batch, loss_fn, params, [theta])
        return grads, h_theta


@register("oba-hvp")
class OBAHessianOnly(OBA):
    """``s_i = mean_b[½ θ_i (H_b θ)_i]``: the second-order term alone."""

    first_order = False

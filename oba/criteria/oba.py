"""Optimal Brain Apoptosis (Sun et al., ICLR 2025): each parameter's Hessian-vector product term.

OBA scores a parameter-layer (Linear, Conv) weight or bias θ_i by the second-order term of
removing every such parameter, ``r_i = mean_b θ_i (H_b θ)_i``, with the Hessian H_b that its
layer-wise decomposition computes (:mod:`oba.core.connectivity`): the curvature carried by the
network's bilinear products (series connectivity between a layer and the layers upstream of
its input, parallel connectivity between the two factors of an attention product), each
layer's output gradient held fixed. Norm-layer γ/β are neither perturbed nor scored.

    oba           the paper's equations: exact tangents, every layer counted once
    oba-released  the released scorer as its scripts run it, slips included
                  (``linearisation="tangent"``, ``repeat_after_residual``)
    fastoba       ``mean_b θ_i (H_b θ)_i`` with the exact Hessian (every parameter), the
                  released FastOBA
    taylor-depth  the upward terms alone, ``θ_i Σ_l ∂⟨c_l, y_l⟩/∂θ_i`` over the layers l
                  downstream of θ_i: what oba-released computes in train mode with batch
                  norm (its tangents vanish there); on a chain, (layers downstream) × g_i θ_i

``delta`` adds the released code's first-order term ``δ g_i θ_i`` (0 in its scripts).
Group scores default to the released reduction and each layer's scores to division by its
maximum (``normaliser = "max"``; ``"released-max"``, max + 1e-6, for the two released scorers).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from oba.core.connectivity import connectivity_products
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
from oba.criteria.taylor2 import theta_hvp_sums


class _Published(AdditiveCriterion):
    """Shared options of the OBA variants: ``delta``, the released reduction and the max normaliser."""

    default_reduction = "released"
    default_normaliser = "max"

    def __init__(self, delta: float = 0.0, mode: str | None = None, signed: bool = False, reduction: str | None = None,
                 normaliser: str | None = None) -> None:
        super().__init__(mode, signed, reduction, normaliser)
        self.delta = float(delta)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "delta": self.delta}


@register("oba")
class OBA(_Published):
    """``r_i = mean_b [θ_i (H_P θ)_i + δ g_i θ_i]`` on parameter layers, H_P as the paper defines it."""

    linearisation = "activation"
    repeat_after_residual = False
    downward = True

    def batch_sums(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> BatchSums:
        """``Σ_b [θ ⊙ H_P θ + δ g ⊙ θ]`` on parameter layers, zero on every other parameter, counted in batches."""
        require_batches(batches)
        named = trainable_parameters(model)
        totals = {name: torch.zeros_like(p, requires_grad=False) for name, p in named.items()}
        with scoring_context(model, self.mode):
            for batch in batches:
                grads, products = connectivity_products(model, batch, loss_fn, self.linearisation,
                                                        self.repeat_after_residual, self.downward)
                for name, hv in products.items():
                    theta = named[name].detach()
                    totals[name].add_(theta * hv + self.delta * grads[name] * theta)
        return BatchSums(totals, len(batches))


@register("oba-released")
class OBAReleased(OBA):
    """The released scorer: tangents linearised at themselves past non-parameter layers, and every layer after
    the first residual addition counted twice in the downward pass (``docs/criteria.md``); each layer divided by
    its maximum plus 1e-6, as the released normaliser does."""

    default_normaliser = "released-max"

    linearisation = "tangent"
    repeat_after_residual = True


@register("taylor-depth")
class TaylorDepth(OBA):
    """``r_i = mean_b θ_i Σ_l ∂⟨c_l, y_l⟩/∂θ_i`` over the parameter layers l downstream of θ_i (module docstring)."""

    downward = False


@register("fastoba")
class FastOBA(_Published):
    """``r_i = mean_b [θ_i (H_b θ)_i + δ g_i θ_i]`` over every parameter, the exact Hessian (double backward)."""

    default_reduction = "released-weights"
    default_normaliser = "released-max"

    def batch_sums(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> BatchSums:
        """``Σ_b [θ ⊙ H_b θ + δ g ⊙ θ]`` per parameter, counted in batches."""
        return theta_hvp_sums(model, batches, loss_fn, self.mode, lambda t, g, ht: t * ht + self.delta * g * t)

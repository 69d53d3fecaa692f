"""Shared curvature machinery: gradients and exact Hessian-vector products.

Every second-order criterion borrows from here. An HVP is Pearlmutter's trick by
double backward: ``Hv = ∇_θ (∇_θ L · v)``; it costs a small constant times one
gradient and is exact (no per-layer passes, no per-sample loops).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .criteria.base import Batch, LossFn, batch_loss


def _zeros_for_none(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> list[Tensor]:
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def gradient(model: torch.nn.Module, batch: Batch, loss_fn: LossFn, params: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """Batch-mean loss and its gradient ``g = ∇L`` with respect to ``params``."""
    loss = batch_loss(model, batch, loss_fn)
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return loss.detach(), _zeros_for_none(grads, params)


def gradient_and_hvps(
    model: torch.nn.Module,
    batch: Batch,
    loss_fn: LossFn,
    params: Sequence[Tensor],
    vectors: Sequence[Sequence[Tensor]],
) -> tuple[Tensor, list[Tensor], list[list[Tensor]]]:
    """Loss, gradient and ``H v`` for each ``v`` in ``vectors``, from one forward/backward graph.

    ``vectors[k]`` holds one tensor per parameter. The gradient graph is built
    once (``create_graph=True``) and each HVP is one extra backward through it.
    """
    params = list(params)
    loss = batch_loss(model, batch, loss_fn)
    grads = _zeros_for_none(torch.autograd.grad(loss, params, create_graph=True, allow_unused=True), params)
    differentiable = [i for i, g in enumerate(grads) if g.requires_grad]
    products: list[list[Tensor]] = []
    for k, vector in enumerate(vectors):
        if not differentiable:
            products.append([torch.zeros_like(p) for p in params])
            continue
        dot = sum((grads[i] * vector[i].detach()).sum() for i in differentiable)
        hv = torch.autograd.grad(
            dot, params, retain_graph=k < len(vectors) - 1, allow_unused=True
        )
        products.append([h.detach() for h in _zeros_for_none(hv, params)])
    return loss.detach(), [g.detach() for g in grads], products


def hvp(model: torch.nn.Module, batch: Batch, loss_fn: LossFn, params: Sequence[Tensor], vector: Sequence[Tensor]) -> list[Tensor]:
    """Exact Hessian-vector product ``H_b v`` of the batch-mean loss."""
    return gradient_and_hvps(model, batch, loss_fn, params, [vector])[2][0]


def rademacher_like(params: Sequence[Tensor], generator: torch.Generator) -> list[Tensor]:
    """Independent ±1 entries shaped like each parameter (drawn on CPU for reproducibility)."""
    return [
        (torch.randint(0, 2, p.shape, generator=generator, dtype=torch.int8).to(p.dtype) * 2 - 1).to(p.device)
        for p in params
    ]

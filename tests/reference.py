"""Independent ground truth: explicit gradients and full Hessians of a small model's loss.

The loss is written as a function of one flat parameter vector through
``torch.func.functional_call``; ``torch.autograd.functional.hessian`` then
builds the whole Hessian matrix, so every HVP used in a test is ``H @ v`` with
an explicit ``H``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel


def flat_parameters(model: nn.Module) -> tuple[list[str], list[torch.Size], Tensor]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p.shape for _, p in named], torch.cat([p.detach().reshape(-1) for _, p in named])


def unflatten(flat: Tensor, names: list[str], shapes: list[torch.Size]) -> dict[str, Tensor]:
    out, start = {}, 0
    for n, s in zip(names, shapes):
        size = int(torch.Size(s).numel())
        out[n] = flat[start : start + size].reshape(s)
        start += size
    return out


def loss_function(model: nn.Module, batch: tuple[Tensor, Tensor], loss_fn: Callable) -> Callable[[Tensor], Tensor]:
    names, shapes, _ = flat_parameters(model)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    x, y = batch

    def f(flat: Tensor) -> Tensor:
        with sdpa_kernel([SDPBackend.MATH]):
            return loss_fn(functional_call(model, ({**unflatten(flat, names, shapes), **buffers},), (x,)), y)

    return f


def gradient_and_hessian(model: nn.Module, batch, loss_fn) -> tuple[Tensor, Tensor]:
    """Explicit g_b and H_b of the batch-mean loss at the current parameters."""
    _, _, theta = flat_parameters(model)
    f = loss_function(model, batch, loss_fn)
    theta = theta.clone().requires_grad_(True)
    g = torch.autograd.grad(f(theta), theta)[0]
    h = torch.autograd.functional.hessian(f, theta.detach(), vectorize=True)
    return g.detach(), h.detach()


def per_batch_terms(model: nn.Module, batches: Sequence, loss_fn) -> list[tuple[Tensor, Tensor]]:
    return [gradient_and_hessian(model, b, loss_fn) for b in batches]


def as_dict(model: nn.Module, flat: Tensor) -> dict[str, Tensor]:
    names, shapes, _ = flat_parameters(model)
    return unflatten(flat, names, shapes)

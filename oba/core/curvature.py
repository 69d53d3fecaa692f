"""Shared curvature machinery: gradients and exact Hessian-vector products.

Every second-order criterion borrows from here. An HVP is Pearlmutter's trick by
double backward: ``Hv = ∇_θ (∇_θ L · v)``; it costs a small constant times one
gradient and is exact (no per-layer passes, no per-sample loops). Per-sample
gradients, which only the Fisher-diagonal baselines need, come from ``torch.func``
(``vmap(grad)``) in memory-bounded chunks.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from oba.core.model_calls import Batch, LossFn, batch_loss, forward

_R = TypeVar("_R")


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
    return gradient_and_hvp_map(model, batch, loss_fn, params, vectors, lambda _v, hv: hv)


def hvp(model: torch.nn.Module, batch: Batch, loss_fn: LossFn, params: Sequence[Tensor], vector: Sequence[Tensor]) -> list[Tensor]:
    """Exact Hessian-vector product ``H_b v`` of the batch-mean loss."""
    return gradient_and_hvps(model, batch, loss_fn, params, [vector])[2][0]


def gradient_and_functional_hvp(
    model: torch.nn.Module, batch: Batch, loss_fn: LossFn, params: Sequence[Tensor], vector: Sequence[Tensor]
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Loss, gradient ``g = ∇L`` and ``H̃ v``, the Hessian-vector product without the Gauss–Newton part.

    With network output z and ``c = ∂L/∂z`` held fixed, ``H̃ = Σ_k c_k ∇²_θ z_k =
    ∇²_θ ⟨c, z(θ)⟩ = H − Jᵀ (∂²L/∂z²) J``. The scalar ``⟨stop_grad(c), z(θ)⟩`` has
    gradient ``Jᵀc = g``, so one forward, one backward to z, one backward with a
    graph and one double backward give both.
    """
    params = list(params)
    inputs, targets = batch
    outputs = forward(model, inputs)
    loss = loss_fn(outputs, targets.to(outputs.device))
    (output_grad,) = torch.autograd.grad(loss, outputs, retain_graph=True)
    surrogate = (outputs * output_grad.detach()).sum()
    grads = _zeros_for_none(torch.autograd.grad(surrogate, params, create_graph=True, allow_unused=True), params)
    differentiable = [i for i, g in enumerate(grads) if g.requires_grad]
    if differentiable:
        dot = sum((grads[i] * vector[i].detach()).sum() for i in differentiable)
        hv = _zeros_for_none(torch.autograd.grad(dot, params, allow_unused=True), params)
    else:
        hv = [torch.zeros_like(p) for p in params]
    return loss.detach(), [g.detach() for g in grads], [h.detach() for h in hv]


def rademacher_like(params: Sequence[Tensor], generator: torch.Generator) -> list[Tensor]:
    """Independent ±1 entries shaped like each parameter, drawn on ``generator``'s device."""
    return [
        (torch.randint(0, 2, p.shape, generator=generator, dtype=torch.int8, device=generator.device).to(p.dtype) * 2 - 1)
        .to(p.device)
        for p in params
    ]


def gradient_and_hvp_map(
    model: torch.nn.Module,
    batch: Batch,
    loss_fn: LossFn,
    params: Sequence[Tensor],
    vectors: Iterable[Sequence[Tensor]],
    reduce: Callable[[Sequence[Tensor], list[Tensor]], _R],
) -> tuple[Tensor, list[Tensor], list[_R]]:
    """Like :func:`gradient_and_hvps`, but streams: each ``H v`` goes to ``reduce(v, Hv)`` at once.

    One gradient graph serves every vector; only the reductions are kept, so
    memory does not grow with the number of vectors (``vectors`` may be a generator).
    """
    params = list(params)
    loss = batch_loss(model, batch, loss_fn)
    grads = _zeros_for_none(torch.autograd.grad(loss, params, create_graph=True, allow_unused=True), params)
    differentiable = [i for i, g in enumerate(grads) if g.requires_grad]
    results: list[_R] = []
    for vector in vectors:
        if differentiable:
            dot = sum((grads[i] * vector[i].detach()).sum() for i in differentiable)
            hv = _zeros_for_none(torch.autograd.grad(dot, params, retain_graph=True, allow_unused=True), params)
        else:
            hv = [torch.zeros_like(p) for p in params]
        results.append(reduce(vector, [h.detach() for h in hv]))
    return loss.detach(), [g.detach() for g in grads], results


def _check_per_sample_splittable(model: torch.nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(
                f"per-sample gradients are undefined for batch norm in train mode ({name or 'model'}): "
                "its batch statistics couple the samples; score in eval mode"
            )


def per_sample_gradients(
    model: torch.nn.Module, batch: Batch, loss_fn: LossFn, names: Sequence[str], chunk_size: int
) -> Iterator[dict[str, Tensor]]:
    """Per-sample gradients ``∇_θ ℓ_n`` of the parameters ``names``, ``chunk_size`` samples at a time.

    ``ℓ_n = loss_fn(model(x_n), y_n)`` on a batch of one sample. Computed with
    ``torch.func`` (``functional_call`` + ``vmap(grad)``); each yielded dict maps a
    name to a tensor shaped ``(chunk, *param.shape)``. Modules run in their current
    mode; batch norm in train mode raises ``ValueError`` (samples are coupled).
    The yielded tensors may share storage (vmap can return one parameter's
    gradient as a view of another's): read them, never modify them in place.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    _check_per_sample_splittable(model)
    device = next(model.parameters()).device
    inputs, targets = batch
    xs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    xs = tuple(x.to(device) for x in xs)
    targets = targets.to(device)
    named = dict(model.named_parameters())
    wrt = {n: named[n].detach() for n in names}
    frozen = {n: p.detach() for n, p in named.items() if n not in wrt}
    buffers = dict(model.named_buffers())

    def sample_loss(params: dict[str, Tensor], sample: tuple[Tensor, ...], target: Tensor) -> Tensor:
        output = functional_call(model, (params, frozen, buffers), tuple(x.unsqueeze(0) for x in sample))
        return loss_fn(output, target.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0), randomness="different")
    for start in range(0, targets.shape[0], chunk_size):
        chunk = slice(start, start + chunk_size)
        yield per_sample(wrt, tuple(x[chunk] for x in xs), targets[chunk])


def fisher_diagonal_sums(
    model: torch.nn.Module,
    batches: Sequence[Batch],
    loss_fn: LossFn,
    names: Sequence[str],
    chunk_size: int | None = None,
    memory_budget: int = 1 << 29,
) -> tuple[dict[str, Tensor], int]:
    """``(Σ_n g_{n,i}², N)`` over ALL N samples of ``batches``: the empirical Fisher diagonal is their ratio.

    ``g_n`` are per-sample gradients (:func:`per_sample_gradients`). Samples are
    processed ``chunk_size`` at a time; when None it is the largest chunk whose
    per-sample gradients fit ``memory_budget`` bytes (at least one sample).
    The per-sample gradients are never modified in place: vmap may return one
    parameter's gradient as a view of another's (timm ViT: ``cls_token`` of ``pos_embed``).
    """
    named = dict(model.named_parameters())
    if chunk_size is None:
        per_sample_bytes = sum(named[n].numel() * named[n].element_size() for n in names)
        chunk_size = max(1, memory_budget // max(1, per_sample_bytes))
    totals = {n: torch.zeros_like(named[n], requires_grad=False) for n in names}
    count = 0
    for batch in batches:
        for grads in per_sample_gradients(model, batch, loss_fn, names, chunk_size):
            for n, g in grads.items():
                totals[n].add_(g.square().sum(0))
        count += batch[1].shape[0]
    return totals, count


"""K-FAC's Kronecker factors of a model's Linear and Conv2d layers, from curvlinops.

For a layer with (bias-augmented) input activations ``a`` and output gradients ``g``, the Fisher block is
approximated by ``A ⊗ G`` with ``A = E[a aᵀ]`` and ``G = E[g gᵀ]``; the gradients are those of labels sampled from
the model's own predictive distribution (the true Fisher) or of the targets (the empirical Fisher). The criteria
built on them are in :mod:`oba.criteria.kfac`.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from curvlinops import KFACLinearOperator  # its dependency linear_operator still calls torch.jit.script

from oba.core.model_calls import Batch, LossFn, forward

FISHER_TYPES = ("true", "empirical")

SUPPORTED_LOSSES = (nn.CrossEntropyLoss, nn.MSELoss, nn.BCEWithLogitsLoss)
FUNCTIONAL_LOSSES = {
    F.cross_entropy: nn.CrossEntropyLoss,
    F.mse_loss: nn.MSELoss,
    F.binary_cross_entropy_with_logits: nn.BCEWithLogitsLoss,
}
LabelledBatch = tuple[Tensor, Tensor, Tensor]
"""A calibration batch with the labels K-FAC's gradients use: (inputs, targets, labels)."""


def factored_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Conv2d/Linear modules whose weight is trainable, by module name."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.requires_grad
    }


def has_bias(module: nn.Module) -> bool:
    return module.bias is not None and module.bias.requires_grad


def sample_labels(outputs: Tensor, loss_module: nn.Module, generator: torch.Generator) -> Tensor:
    """One label per prediction from the predictive distribution that ``loss_module`` is the NLL of.

    Cross-entropy: Categorical(softmax over dim 1); BCE: Bernoulli(sigmoid z);
    MSE: z + N(0, ½) noise (``(y − z)²`` is the Gaussian NLL with variance ½).
    Drawn on CPU from ``generator`` (reproducible across devices), returned on ``outputs``' device.
    """
    z = outputs.detach().cpu()
    if isinstance(loss_module, nn.CrossEntropyLoss):
        probs = z.movedim(1, -1).softmax(-1)
        draws = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
        labels = draws.reshape(probs.shape[:-1])
    elif isinstance(loss_module, nn.BCEWithLogitsLoss):
        labels = torch.bernoulli(z.sigmoid(), generator=generator)
    else:
        labels = z + math.sqrt(0.5) * torch.randn(z.shape, generator=generator, dtype=z.dtype)
    return labels.to(outputs.device)


def true_fisher_labels(
    model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn, seed: int
) -> list[Tensor]:
    """One label per sample of every batch, drawn by :func:`sample_labels` from one CPU generator seeded with
    ``seed``, batch by batch in order (a no-grad forward each), in the model's current mode."""
    loss_module = _loss_module(loss_fn)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return [sample_labels(forward(model, inputs), loss_module, generator) for inputs, _ in batches]


def kronecker_factor_sums(
    model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn
) -> tuple[dict[str, tuple[Tensor, Tensor]], int]:
    """``(N·A, N·G)`` per factored module over the N samples of ``batches``, whose targets are the labels the
    gradients use, and N (see the module docstring); in the model's current mode.

    Sums, so that the factors of a union of shards are the shards' sums over their total N. ``A`` is
    ``(d_in + 1, d_in + 1)`` when the module has a trainable bias (homogeneous coordinate last),
    ``(d_in, d_in)`` otherwise; ``G`` is ``(d_out, d_out)``.
    """
    loss_module = _loss_module(loss_fn)
    if any(not isinstance(inputs, Tensor) for inputs, _ in batches):
        raise ValueError("K-FAC criteria need each batch's inputs to be a single tensor")
    count = sum(int(targets.shape[0]) for _, targets in batches)
    modules = factored_modules(model)
    if not modules:
        return {}, count
    params = [p for m in modules.values() for p in ([m.weight, m.bias] if has_bias(m) else [m.weight])]
    operator = KFACLinearOperator(
        model,
        loss_module,
        params,
        list(batches),
        check_deterministic=False,
        fisher_type="empirical",
        kfac_approx="expand",
        separate_weight_and_bias=False,
        num_data=count,
    )
    operator.compute_kronecker_factors()
    state = operator.state_dict()
    return {name: (state["input_covariances"][name] * count, state["gradient_covariances"][name] * count)
            for name in modules}, count


def kronecker_factors(
    model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn, fisher: str = "true", seed: int = 0
) -> dict[str, tuple[Tensor, Tensor]]:
    """``(A, G)`` per factored module (see the module docstring), in the model's current mode.

    ``fisher="true"`` computes G from labels drawn by :func:`true_fisher_labels` with a
    CPU generator seeded with ``seed``; ``"empirical"`` from the batches' targets.
    """
    if fisher not in FISHER_TYPES:
        raise ValueError(f"fisher must be one of {FISHER_TYPES}, got {fisher!r}")
    if fisher == "true":
        batches = [(inputs, labels) for (inputs, _), labels in zip(batches, true_fisher_labels(model, batches, loss_fn, seed))]
    sums, count = kronecker_factor_sums(model, batches, loss_fn)
    return {name: (a / count, g / count) for name, (a, g) in sums.items()}


def _loss_module(loss_fn: LossFn) -> nn.Module:
    if isinstance(loss_fn, SUPPORTED_LOSSES):
        return loss_fn
    if loss_fn in FUNCTIONAL_LOSSES:
        return FUNCTIONAL_LOSSES[loss_fn]()
    raise ValueError(
        f"K-FAC criteria need loss_fn to be one of {[c.__name__ for c in SUPPORTED_LOSSES]} or its functional "
        f"form with default arguments (curvlinops derives the factors from the loss), got {loss_fn!r}"
    )


def augmented_weight(module: nn.Module) -> Tensor:
    weight = module.weight.detach().reshape(module.weight.shape[0], -1)
    if has_bias(module):
        weight = torch.cat([weight, module.bias.detach().unsqueeze(1)], dim=1)
    return weight

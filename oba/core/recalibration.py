"""Batch-norm recalibration ("adaptive BN"): running statistics recomputed for a pruned model.

Removing channels changes the inputs every later batch-norm layer sees, so its
stored running mean and variance no longer describe them; evaluated in eval
mode, a pruned network is then judged mostly on stale statistics. Recalibration
resets every batch-norm layer's running statistics and recomputes them as the
plain average over a fixed set of batches (``momentum=None``: cumulative
average), with every other module in eval mode (dropout off) and no gradient.
Only batch-norm buffers change; parameters, train/eval flags and the memory
format are restored. The forward passes run in the model's preferred memory
format (channels-last for 2-d convolutions: :mod:`oba.core.memory_format`).

With equal-sized batches b = 1..B, each layer ends with
``running_mean = mean_b μ_b`` and ``running_var = mean_b σ²_b`` where μ_b and σ²_b
are the per-channel mean and unbiased variance of that layer's input on batch b.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from oba.core.memory_format import as_memory_format, in_memory_format, preferred_memory_format
from oba.core.model_calls import forward


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """Every batch-norm layer that tracks running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Sequence[tuple[Any, Tensor]],
                          channels_last: str | bool = "auto") -> int:
    """Recompute every batch-norm layer's running statistics on ``batches``; return how many layers changed.

    A model without batch-norm layers is left untouched (returns 0). ``channels_last``: as for
    :func:`~oba.core.memory_format.preferred_memory_format`.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    if len(batches) == 0:
        raise ValueError("batch-norm recalibration needs at least one batch")
    flags = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in layers]
    memory_format = preferred_memory_format(model, channels_last)
    try:
        model.eval()
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None
            layer.train()
        with in_memory_format(model, memory_format):
            for inputs, _ in batches:
                forward(model, as_memory_format(inputs, memory_format))
    finally:
        for layer, momentum in momenta:
            layer.momentum = momentum
        for module, training in flags:
            module.training = training
    return len(layers)

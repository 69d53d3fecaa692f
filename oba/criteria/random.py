"""Random control: uniform noise per parameter, seeded per pruning step (ignores model and data)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from oba.criteria.base import Batch, LossFn, SeededCriterion, trainable_parameters
from oba.criteria.registry import register


@register("random")
class Random(SeededCriterion):
    """``s_i ~ U[0, 1)`` i.i.d., drawn on the parameters' device in parameter order from the step's generator."""

    def parameter_scores(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> dict[str, Tensor]:
        named = trainable_parameters(model)
        generator = self.generator(next(iter(named.values())).device if named else "cpu")
        return {
            name: torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device)
            for name, p in named.items()
        }

"""Random control: uniform noise per parameter, seeded per pruning step (ignores model and data)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from oba.criteria.base import Batch, LossFn, SeededCriterion, trainable_parameters
from oba.criteria.registry import register


@register("random")
class Random(SeededCriterion):
    """``s_i ~ U[0, 1)`` i.i.d., drawn on CPU in parameter order from the step's generator."""

    def parameter_scores(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> dict[str, Tensor]:
        generator = self.generator()
        return {
            name: torch.rand(p.shape, generator=generator, dtype=p.dtype).to(p.device)
            for name, p in trainable_parameters(model).items()
        }

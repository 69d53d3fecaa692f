"""Random control: seeded uniform noise per parameter (ignores model and data)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from oba.criteria.base import Batch, Criterion, LossFn, trainable_parameters
from oba.criteria.registry import register


@register("random")
class Random(Criterion):
    """``s_i ~ U[0, 1)`` i.i.d., drawn on CPU from a generator seeded with ``seed``."""

    def __init__(self, seed: int = 0, mode: str | None = None) -> None:
        super().__init__(mode)
        self.seed = seed

    def parameter_scores(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> dict[str, Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        return {
            name: torch.rand(p.shape, generator=generator, dtype=p.dtype).to(p.device)
            for name, p in trainable_parameters(model).items()
        }

    def config(self) -> dict[str, Any]:
        return {**super().config(), "seed": self.seed}

"""Magnitude criteria: ``|θ_i|`` (magnitude-l1) and ``θ_i²`` (magnitude-l2); data-free."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from oba.criteria.base import Batch, Criterion, LossFn, trainable_parameters
from oba.criteria.registry import register


@register("magnitude-l1")
class MagnitudeL1(Criterion):
    """``s_i = |θ_i|``."""

    def parameter_scores(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> dict[str, Tensor]:
        return {name: p.detach().abs() for name, p in trainable_parameters(model).items()}


@register("magnitude-l2")
class MagnitudeL2(Criterion):
    """``s_i = θ_i²``."""

    def parameter_scores(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> dict[str, Tensor]:
        return {name: p.detach().square() for name, p in trainable_parameters(model).items()}

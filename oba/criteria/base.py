"""The criterion interface every importance score implements.

``parameter_scores`` returns the *signed* per-parameter quantity of DESIGN.md
2.1/2.2, averaged over calibration batches; ``group_scores`` reduces it to one
score per :class:`~oba.groups.Group`, by default ``|Σ_{i∈G} s_i|``.
``compensation`` is an optional hook: the additive update of the surviving
parameters that a criterion pairs with a removal (OBS); the pruning code applies
it before the removed elements are removed or masked. By default there is none.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..batches import Batch, LossFn, batch_loss, forward, require_batches, scoring_context, trainable_parameters
from ..groups import Group, check_groups

__all__ = [
    "Batch", "LossFn", "Criterion", "batch_loss", "forward", "reduce_groups", "require_batches", "scoring_context",
    "trainable_parameters",
]


class Criterion(ABC):
    """Base class of every pruning criterion.

    Subclasses implement :meth:`parameter_scores`. ``mode`` selects the model
    mode used while scoring (None keeps the model's own mode).
    """

    name: str = ""

    def __init__(self, mode: str | None = None) -> None:
        self.mode = mode

    @abstractmethod
    def parameter_scores(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> dict[str, Tensor]:
        """Signed per-parameter quantity, one tensor per trainable parameter, averaged over batches."""

    def group_scores(
        self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn, groups: Sequence[Group]
    ) -> Tensor:
        """One score per group: ``|Σ_{i∈G} s_i|`` of the per-parameter scores."""
        groups = check_groups(groups, trainable_parameters(model))
        scores = self.parameter_scores(model, batches, loss_fn)
        return reduce_groups(scores, groups)

    def compensation(
        self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn, removed: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Additive update of the parameters that survive removing ``removed``; none by default.

        ``removed`` maps parameter names to boolean masks (parameter-shaped) of every
        element that does not survive (already-zero masked elements included; absent
        names lose nothing). The result maps parameter names to updates shaped like
        the parameters, zero on removed elements; names absent are not updated.
        """
        return {}

    def config(self) -> dict[str, Any]:
        """The options that determine this criterion's scores (recorded with results)."""
        return {"name": self.name, "mode": self.mode}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({opts})"


def reduce_groups(scores: dict[str, Tensor], groups: Sequence[Group]) -> Tensor:
    """``|Σ_{i∈G} s_i|`` for each group, as a float64 CPU tensor."""
    if not groups:
        return torch.zeros(0, dtype=torch.float64)
    return torch.stack([g.sum(scores).detach().double().cpu() for g in groups]).abs()

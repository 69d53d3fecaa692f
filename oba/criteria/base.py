"""The criterion interface every importance score implements.

``parameter_scores`` returns the *signed* per-parameter quantity of DESIGN.md
2.1/2.2, averaged over calibration batches; ``group_scores`` reduces it to one
score per :class:`~oba.groups.Group`, by default ``|Σ_{i∈G} s_i|``. Criteria whose
``Σ s`` estimates the signed loss change of removing a group
(``signed_estimate = True``) may be built with ``signed=True``: their group score
is then ``Σ_{i∈G} s_i`` itself, so a group whose removal is estimated to lower the
loss is pruned first.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

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
    mode used while scoring (None keeps the model's own mode). ``signed`` keeps the
    sign of the group sum (allowed only when ``signed_estimate`` is true).
    """

    name: str = ""
    signed_estimate: bool = False
    """Whether ``Σ_{i∈G} s_i`` is a signed estimate of the loss change of removing G."""

    def __init__(self, mode: str | None = None, signed: bool = False) -> None:
        if signed and not self.signed_estimate:
            raise ValueError(
                f"criterion {self.name or type(self).__name__!r} has no signed loss-change estimate: signed=True "
                "applies only to criteria whose group sum Σ s estimates ΔL (oba, oba-hvp, oba-group, taylor)"
            )
        self.mode = mode
        self.signed = signed

    @abstractmethod
    def parameter_scores(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> dict[str, Tensor]:
        """Signed per-parameter quantity, one tensor per trainable parameter, averaged over batches."""

    def group_scores(
        self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn, groups: Sequence[Group]
    ) -> Tensor:
        """One score per group: ``|Σ_{i∈G} s_i|`` of the per-parameter scores (``Σ_{i∈G} s_i`` when signed)."""
        groups = check_groups(groups, trainable_parameters(model))
        scores = self.parameter_scores(model, batches, loss_fn)
        return reduce_groups(scores, groups, self.signed)

    def score_from_sums(self, sums: Tensor) -> Tensor:
        """The score of units whose per-parameter scores sum to ``sums``: ``Σ s`` when signed, else ``|Σ s|``."""
        return sums if self.signed else sums.abs()

    def config(self) -> dict[str, Any]:
        """The options that determine this criterion's scores (recorded with results)."""
        return {"name": self.name, "mode": self.mode, "signed": self.signed}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({opts})"


def reduce_groups(scores: dict[str, Tensor], groups: Sequence[Group], signed: bool = False) -> Tensor:
    """``|Σ_{i∈G} s_i|`` for each group (``Σ_{i∈G} s_i`` when ``signed``), as a float64 CPU tensor."""
    if not groups:
        return torch.zeros(0, dtype=torch.float64)
    sums = torch.stack([g.sum(scores).detach().double().cpu() for g in groups])
    return sums if signed else sums.abs()

"""The criterion interface every importance score implements.

``parameter_scores`` returns the *signed* per-parameter quantity of DESIGN.md
2.1/2.2, averaged over calibration batches; ``group_scores`` reduces it to one
score per :class:`~oba.groups.Group`, by default ``|Σ_{i∈G} s_i|``.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..groups import Group, check_groups

Batch = tuple[Any, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Trainable parameters in ``named_parameters()`` order."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def forward(model: nn.Module, inputs: Any) -> Tensor:
    """Run ``model`` on ``inputs`` moved to the model's device (tuples are unpacked)."""
    device = next(model.parameters()).device
    if isinstance(inputs, (tuple, list)):
        return model(*(x.to(device) for x in inputs))
    return model(inputs.to(device))


def batch_loss(model: nn.Module, batch: Batch, loss_fn: LossFn) -> Tensor:
    """The batch-mean loss ``loss_fn(model(inputs), targets)``."""
    inputs, targets = batch
    outputs = forward(model, inputs)
    return loss_fn(outputs, targets.to(outputs.device))


@contextlib.contextmanager
def scoring_context(model: nn.Module, mode: str | None = None) -> Iterator[None]:
    """Score without side effects.

    Inside: the model is in ``mode`` ("eval", "train", or None for its current
    mode), attention runs through the math SDPA kernel (the only one with a
    double backward). On exit every parameter, buffer and module's train flag is
    restored exactly.
    """
    if mode not in (None, "eval", "train"):
        raise ValueError(f"mode must be 'eval', 'train' or None, got {mode!r}")
    flags = [(m, m.training) for m in model.modules()]
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    if mode is not None:
        model.train(mode == "train")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        with torch.no_grad():
            for key, tensor in model.state_dict(keep_vars=True).items():
                if key in saved:
                    tensor.copy_(saved[key])
        for module, training in flags:
            module.training = training
        model.zero_grad(set_to_none=True)


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


def require_batches(batches: Sequence[Batch]) -> Sequence[Batch]:
    """Reject an empty calibration set with a clear message."""
    if len(batches) == 0:
        raise ValueError("scoring needs at least one calibration batch of (inputs, targets)")
    return batches

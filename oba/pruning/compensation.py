"""Applying a criterion's compensating update (the ``Criterion.compensation`` hook) during pruning.

Structured and unstructured pruning call :func:`compensate` once per removal,
with every element that does not survive, before the units are physically
removed or the weights masked; a criterion without the hook changes nothing.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from oba.core.model_calls import Batch, LossFn
from oba.criteria.base import Criterion


def compensate(
    model: nn.Module, criterion: Criterion, batches: Sequence[Batch], loss_fn: LossFn, removed: Mapping[str, Tensor]
) -> None:
    """Add ``criterion.compensation(...)`` to the surviving elements of ``model``'s parameters, in place."""
    updates = criterion.compensation(model, batches, loss_fn, removed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, delta in updates.items():
            param = params[name]
            if name in removed:
                delta = delta.masked_fill(removed[name].to(param.device), 0)
            param.add_(delta.to(param.dtype))

"""The memory format a model runs in: channels-last for 2-d convolutions, where CPU and GPU kernels are faster.

Fine-tuning, evaluation, batch-norm recalibration and latency all run a model in
:func:`preferred_memory_format` and hand it back in the format it came in
(:func:`in_memory_format`); results differ from the contiguous format only by
float rounding (the order in which a kernel sums). Scoring keeps the model's own
format, so that a criterion's scores do not depend on this choice.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def preferred_memory_format(model: nn.Module, channels_last: str | bool = "auto") -> torch.memory_format:
    """The memory format to run ``model`` in.

    ``channels_last="auto"``: channels-last for a model with 2-d convolutions
    (faster kernels), else the default format; true or false force either.
    """
    if channels_last == "auto":
        channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return torch.channels_last if channels_last else torch.contiguous_format


def as_memory_format(inputs: Any, memory_format: torch.memory_format) -> Any:
    """``inputs`` with a 4-d tensor (an image batch) laid out in ``memory_format``; anything else as it is."""
    if isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
        return inputs.contiguous(memory_format=memory_format)
    return inputs


@contextmanager
def in_memory_format(model: nn.Module, memory_format: torch.memory_format) -> Iterator[None]:
    """Run the block with the model's 4-d parameters and buffers in ``memory_format``, then restore.

    Models that came in the default contiguous format go back to it (also when
    the block raises); others are left in ``memory_format``.
    """
    four_d = [t for t in (*model.parameters(), *model.buffers()) if t.dim() == 4]
    was_contiguous = all(t.is_contiguous() for t in four_d)
    model.to(memory_format=memory_format)
    try:
        yield
    finally:
        if was_contiguous:
            model.to(memory_format=torch.contiguous_format)

"""Where and how tensors run: the default device, deterministic kernels on CUDA, the memory format a model
trains in, and mixed precision (the knobs :mod:`oba.training.train` and the suite's trials set around their work)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("fp32", *AUTOCAST_DTYPES)


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def deterministic_cublas() -> None:
    """Ask cuBLAS for its deterministic workspace (``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless already set).

    cuBLAS reads it once, when it first runs in a process: call this before a
    process's first CUDA matrix product.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@contextmanager
def reproducible(device: torch.device) -> Iterator[None]:
    """On CUDA, deterministic kernels inside; elsewhere nothing changes (CPU training is deterministic as it is).

    Inside, on CUDA: cuDNN deterministic with benchmarking off, and
    ``torch.use_deterministic_algorithms(True, warn_only=True)`` (an op with no
    deterministic kernel warns instead of failing), and :func:`deterministic_cublas`
    (effective only if cuBLAS has not run yet in this process). The previous
    settings are restored on exit.
    """
    if device.type != "cuda":
        yield
        return
    deterministic_cublas()
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (the CPU for a model without parameters)."""
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def mixed_precision(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """``torch.autocast`` to ``precision``'s dtype on ``device``'s type; a context that does nothing for "fp32"."""
    if precision == "fp32":
        return nullcontext()
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISIONS)}")
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])



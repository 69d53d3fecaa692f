"""A trial process's accelerator: share caps, recovery after a failed cell, and whether it is still usable.

A CUDA error such as an illegal memory access or a device-side assert is
sticky: every later CUDA call in the process fails with it. A reused Ray actor
would then fail every cell it is given, so after a failed cell the trial asks
:func:`device_usable`, and a process whose device is unusable gives itself up
(:class:`DeviceUnusable`) for a fresh one. An out-of-memory error is not sticky:
:func:`release_cached_memory` hands the failed cell's cached blocks back.
"""
from __future__ import annotations

import torch


class DeviceUnusable(RuntimeError):
    """The process's accelerator fails every call; only a new process can use the device again."""


def device_usable(device: torch.device | str) -> bool:
    """Whether a tiny computation on ``device`` still completes (always true on the CPU)."""
    device = torch.device(device)
    if device.type != "cuda":
        return True
    try:
        torch.cuda.synchronize(device)
        return bool((torch.ones(1, device=device) + 1).item() == 2)
    except RuntimeError:
        return False


def release_cached_memory(device: torch.device | str) -> None:
    """Return the caching allocator's free blocks on ``device`` to the driver (no-op off CUDA)."""
    if torch.device(device).type == "cuda" and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def cap_memory_share(device: torch.device | str, share: float) -> None:
    """Limit this process to ``share`` of the GPU's memory when trials share one (``0 < share < 1``).

    Ray only counts fractional GPUs; without a cap, one trial's allocator can
    take the memory its neighbours were promised. Beyond the cap an allocation
    raises out-of-memory in this process instead of in a neighbour.
    """
    device = torch.device(device)
    if device.type == "cuda" and 0 < share < 1:
        torch.cuda.set_per_process_memory_fraction(share, device)

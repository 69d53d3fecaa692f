"""Cost measurements: MACs (FlopCounterMode), parameter counts, latency.

MACs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (which sees
functional matmuls and attention) under the math SDPA kernel, so attention's
matrix products are counted as the ``bmm`` calls they are; one MAC = 2 FLOPs.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .batches import forward


@contextlib.contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in flags:
            module.training = training


def macs_by_module(model: nn.Module, example_inputs: Any) -> dict[str, int]:
    """MACs of one forward, per module name (a module's count includes its children; "" is the total)."""
    with _inference(model), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        forward(model, example_inputs)
    counts: dict[str, int] = {}
    for key, per_op in counter.get_flop_counts().items():
        if key == "Global":
            name = ""
        else:
            _, _, name = key.partition(".")
        counts[name] = max(counts.get(name, 0), int(sum(per_op.values())) // 2)
    counts.setdefault("", int(counter.get_total_flops()) // 2)
    return counts


def count_macs(model: nn.Module, example_inputs: Any) -> int:
    """Multiply-accumulates of one forward pass on ``example_inputs`` (eval mode)."""
    return macs_by_module(model, example_inputs)[""]


def count_params(model: nn.Module, nonzero: bool = False) -> int:
    """Number of parameters (or of nonzero parameter entries when ``nonzero``)."""
    if nonzero:
        return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))
    return int(sum(p.numel() for p in model.parameters()))


def measure_latency(model: nn.Module, example_inputs: Any, warmup: int = 3, repeats: int = 15) -> float:
    """Median wall time of one forward in milliseconds, after ``warmup`` forwards.

    Runs on the model's device with the current thread count; CUDA is
    synchronised around every timed forward.
    """
    device = next(model.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: list[float] = []
    with _inference(model):
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            forward(model, example_inputs)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)

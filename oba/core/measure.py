"""Cost measurements: MACs (FlopCounterMode), parameter counts, latency, and timing helpers.

MACs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (which sees
functional matmuls and attention) under the math SDPA kernel, so attention's
matrix products are counted as the ``bmm`` calls they are; one MAC = 2 FLOPs.

Timed sections (gradient pass, scoring) follow one rule: :func:`warm_up` first
(kernel loading, library handles and allocator growth are not charged to what
is measured), then :func:`timed`, which synchronises CUDA before the clock
starts and before it stops (queued GPU work is charged to the section that
queued it).
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from oba.core.memory_format import as_memory_format, in_memory_format, preferred_memory_format
from oba.core.model_calls import Batch, LossFn, batch_loss, forward, require_batches, scoring_context


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for a while; every module's training flag is restored after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in flags:
            module.training = training


@contextlib.contextmanager
def _parameters_frozen(model: nn.Module) -> Iterator[None]:
    """Parameters not requiring grad for a while: FlopCounterMode's module tracker hooks the gradients of every module
    input that requires grad, and fails on a parameter passed to a module as an input (timm's PiT and CaiT pass their
    class token so); nothing is differentiated while MACs are counted."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, required in flags:
            p.requires_grad_(required)


def macs_by_module(model: nn.Module, example_inputs: Any) -> dict[str, int]:
    """MACs of one forward, per module name (a module's count includes its children; "" is the total)."""
    with (evaluating(model), _parameters_frozen(model), sdpa_kernel([SDPBackend.MATH]),
          FlopCounterMode(display=False) as counter):
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


def synchronize(device: torch.device) -> None:
    """Wait until ``device`` has finished its queued work (CUDA); other devices run synchronously."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Stopwatch:
    """The wall time of a :func:`timed` block, in seconds (set when the block ends)."""

    seconds: float = 0.0


@contextlib.contextmanager
def timed(device: torch.device) -> Iterator[Stopwatch]:
    """Time the block: ``device`` is synchronised before the clock starts and before it stops."""
    watch = Stopwatch()
    synchronize(device)
    start = time.perf_counter()
    yield watch
    synchronize(device)
    watch.seconds = time.perf_counter() - start


def warm_up(model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn, mode: str | None = None) -> None:
    """One plain gradient pass on the first batch, in ``mode``, that leaves no trace.

    Parameters, buffers (batch-norm statistics) and module modes are restored by
    :func:`~oba.core.model_calls.scoring_context`, and the random number generators of the
    CPU and the model's CUDA device are forked, so what runs after it computes
    exactly what it would have computed without it.
    """
    batch = require_batches(batches)[0]
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), scoring_context(model, mode):
        torch.autograd.grad(batch_loss(model, batch, loss_fn), params, allow_unused=True)
    synchronize(device)


def measure_latency(model: nn.Module, example_inputs: Any, warmup: int = 3, repeats: int = 15,
                    channels_last: str | bool = "auto") -> float:
    """Median wall time of one forward in milliseconds, after ``warmup`` forwards.

    Runs on the model's device with the current thread count, in the model's preferred memory format
    (``channels_last``: :func:`~oba.core.memory_format.preferred_memory_format`; the format is restored after);
    CUDA is synchronised around every timed forward.
    """
    device = next(model.parameters()).device
    memory_format = preferred_memory_format(model, channels_last)
    inputs = as_memory_format(example_inputs, memory_format)
    times: list[float] = []
    with evaluating(model), in_memory_format(model, memory_format):
        for i in range(warmup + repeats):
            with timed(device) as clock:
                forward(model, inputs)
            if i >= warmup:
                times.append(clock.seconds * 1e3)
    return statistics.median(times)


def gradient_seconds(model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn, mode: str | None = None) -> float:
    """Wall time of one plain gradient pass over ``batches`` in ``mode`` (the unit scoring time is reported in).

    Measured after :func:`warm_up` and with the device synchronised around it (:func:`timed`); leaves the model as
    it was (:func:`~oba.core.model_calls.scoring_context`).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    warm_up(model, batches, loss_fn, mode)
    with scoring_context(model, mode), timed(params[0].device) as clock:
        for batch in batches:
            torch.autograd.grad(batch_loss(model, batch, loss_fn), params, allow_unused=True)
    return clock.seconds

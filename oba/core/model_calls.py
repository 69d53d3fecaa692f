"""The batch vocabulary shared by criteria and the machinery under them.

A calibration batch is ``(inputs, targets)``; a loss function maps
``(outputs, targets)`` to the batch-mean loss. :func:`scoring_context` is how
anything that differentiates a model does so without side effects.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from oba.core.activations import DoubleBackwardActivations

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
def full_fp32() -> Iterator[None]:
    """Float32 matrix products and cuDNN convolutions in true fp32 inside: no TF32 (nor bf16) shortcuts.

    Second-order scores and fidelity's loss changes are small differences of
    large numbers; TF32's 10-bit mantissa (on by default for cuDNN convolutions
    on Ampere and later GPUs) would round them away. A setting already at full
    precision is left untouched, the others are restored on exit, so the
    previous state comes back exactly. The switches are process-wide.
    """
    matmul = torch.get_float32_matmul_precision()
    cudnn = torch.backends.cudnn.allow_tf32
    if matmul != "highest":
        torch.set_float32_matmul_precision("highest")
    if cudnn:
        torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        if matmul != "highest":
            torch.set_float32_matmul_precision(matmul)
        if cudnn:
            torch.backends.cudnn.allow_tf32 = True


@contextlib.contextmanager
def scoring_context(model: nn.Module, mode: str | None = None) -> Iterator[None]:
    """Score without side effects.

    Inside: the model is in ``mode`` ("eval", "train", or None for its current
    mode), attention runs through the math SDPA kernel (the only one with a
    double backward), hard sigmoids through a bit-identical composition that has
    one (:class:`~oba.core.activations.DoubleBackwardActivations`) and float32 runs
    in true fp32 (:func:`full_fp32`). On exit
    every parameter, buffer and module's train flag is restored exactly.
    """
    if mode not in (None, "eval", "train"):
        raise ValueError(f"mode must be 'eval', 'train' or None, got {mode!r}")
    flags = [(m, m.training) for m in model.modules()]
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    if mode is not None:
        model.train(mode == "train")
    try:
        with sdpa_kernel([SDPBackend.MATH]), DoubleBackwardActivations(), full_fp32():
            yield
    finally:
        with torch.no_grad():
            for key, tensor in model.state_dict(keep_vars=True).items():
                if key in saved:
                    tensor.copy_(saved[key])
        for module, training in flags:
            module.training = training
        model.zero_grad(set_to_none=True)


def require_batches(batches: Sequence[Batch]) -> Sequence[Batch]:
    """Reject an empty calibration set with a clear message."""
    if len(batches) == 0:
        raise ValueError("scoring needs at least one calibration batch of (inputs, targets)")
    return batches

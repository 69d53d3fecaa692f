"""Activations rewritten so that second-order criteria can differentiate them twice.

PyTorch's ``hardsigmoid`` has no double backward (``hardsigmoid_backward`` has
no derivative), so a Hessian-vector product through any model with a hard
sigmoid (MobileNetV3's squeeze-excitation gates, timm's ``hard_sigmoid``
layers) fails. :class:`DoubleBackwardActivations` is a torch-function mode that
replaces it by a composition of primitives that do have one, with the native
kernel's values bit for bit and its first derivative everywhere (kinks
included), so its second derivative is the native one's, 0, wherever that exists.

Every other activation of torch 2.14 that models use (hardswish, relu6,
hardtanh, silu, gelu, elu, mish, ...) and timm's own and memory-efficient ones
already have a double backward and are left alone.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

_REDUCED = (torch.float16, torch.bfloat16)
# The kernels' slope (and CUDA's forward factor) is the float32 ``1.0f / 6.0f`` in every dtype, float64 included.
_ONE_SIXTH = float(torch.tensor(1.0 / 6.0, dtype=torch.float32))


def hardsigmoid(x: Tensor) -> Tensor:
    """``min(max(x + 3, 0), 6) / 6`` with derivative ``1/6`` on ``-3 < x < 3`` and 0 elsewhere, as the kernels round.

    Values and first derivatives are the native ones bit for bit: computed in
    float32 for half and bfloat16; on CUDA the value is a product with
    float32's ``1/6``, on the CPU a quotient by 6; the derivative is float32's
    ``1/6`` on both, so on the CPU it comes from a zero-valued
    ``sloped - sloped.detach()`` term.
    """
    t = x.float() if x.dtype in _REDUCED else x
    lifted = t + 3
    inside = (t > -3) & (t < 3)
    clamped = torch.where(inside, lifted, lifted.detach().clamp(0, 6))
    sloped = clamped * _ONE_SIXTH
    out = sloped if t.is_cuda else (clamped / 6).detach() + (sloped - sloped.detach())
    return out.to(x.dtype)


def hardsigmoid_(x: Tensor) -> Tensor:
    """In-place :func:`hardsigmoid`: ``x`` takes the values and the graph of the out-of-place result."""
    return x.copy_(hardsigmoid(x))


def _functional(input: Tensor, inplace: bool = False) -> Tensor:
    """``F.hardsigmoid``'s signature."""
    return hardsigmoid_(input) if inplace else hardsigmoid(input)


_REPLACEMENTS = {
    F.hardsigmoid: _functional,
    torch._C._nn.hardsigmoid: hardsigmoid,
    torch._C._nn.hardsigmoid_: hardsigmoid_,
}


class DoubleBackwardActivations(TorchFunctionMode):
    """Inside, calls to ``F.hardsigmoid`` (in place or not, so ``nn.Hardsigmoid`` too) run :func:`hardsigmoid`."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        replacement = _REPLACEMENTS.get(func) if "out" not in kwargs else None
        return (replacement or func)(*args, **kwargs)

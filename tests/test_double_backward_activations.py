"""Second-order criteria differentiate every activation twice, with the native values and derivatives.

Only ``hardsigmoid`` lacks a double backward in torch 2.14; inside
``scoring_context`` it runs as :func:`oba.core.activations.hardsigmoid`, whose
values and first derivatives are bit-identical to the native kernel's. The
other activations (and timm's own, memory-efficient ones included) are checked
to differentiate twice natively, to the finite-difference second derivative.
"""
from __future__ import annotations

from typing import Callable

import pytest
import timm.layers.activations as timm_act
import timm.layers.activations_me as timm_me
import torch
import torchvision
from cheap_criteria import cheap
from timm.layers import create_act_layer, get_act_fn
from torch import Tensor, nn
from torch.nn import functional as F

import oba
from oba.core.activations import DoubleBackwardActivations, hardsigmoid
from oba.core.model_calls import scoring_context

Activation = Callable[[Tensor], Tensor]

KINKS: dict[str, tuple[float, ...]] = {
    "hardsigmoid": (-3.0, 3.0), "hardswish": (-3.0, 3.0), "relu6": (0.0, 6.0), "hardtanh": (-1.0, 1.0),
    "silu": (), "gelu": (), "gelu_tanh": (), "elu": (0.0,), "mish": (),
    "timm_hard_sigmoid": (-3.0, 3.0), "timm_hard_swish": (-3.0, 3.0), "timm_hard_mish": (-2.0, 0.0),
    "me_hard_sigmoid": (-3.0, 3.0), "me_hard_swish": (-3.0, 3.0), "me_hard_mish": (-2.0, 0.0),
    "me_swish": (), "me_mish": (),
}
ACTIVATIONS: dict[str, Activation] = {
    "hardsigmoid": F.hardsigmoid, "hardswish": F.hardswish, "relu6": F.relu6, "hardtanh": F.hardtanh,
    "silu": F.silu, "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "elu": F.elu, "mish": F.mish,
    "timm_hard_sigmoid": timm_act.hard_sigmoid, "timm_hard_swish": timm_act.hard_swish,
    "timm_hard_mish": timm_act.hard_mish, "me_hard_sigmoid": timm_me.hard_sigmoid_me,
    "me_hard_swish": timm_me.hard_swish_me, "me_hard_mish": timm_me.hard_mish_me,
    "me_swish": timm_me.swish_me, "me_mish": timm_me.mish_me,
}
FD_STEP = 1e-6


def points(kinks: tuple[float, ...], dtype: torch.dtype = torch.float64, gap: float = 1e-4) -> Tensor:
    """A grid over [-8, 8], random points, and kink ± {gap, 1e-3, 1e-2, 0.1}: never within ``gap`` of a kink."""
    generator = torch.Generator().manual_seed(0)
    base = torch.cat([torch.linspace(-8, 8, 1601, dtype=torch.float64), 5 * torch.randn(2000, generator=generator, dtype=torch.float64)])
    near = [k + s * d for k in kinks for s in (-1, 1) for d in (gap, 1e-3, 1e-2, 0.1)]
    x = torch.cat([base, torch.tensor(near, dtype=torch.float64)])
    away = torch.ones_like(x, dtype=torch.bool)
    for k in kinks:
        away &= (x - k).abs() >= gap
    return x[away].to(dtype)


def ulp_neighbours(kinks: tuple[float, ...], dtype: torch.dtype, count: int = 64) -> Tensor:
    """The ``count`` representable numbers on either side of each kink, the kink itself excluded."""
    out = []
    for k in kinks:
        for direction in (-1.0, 1.0):
            x = torch.tensor(k, dtype=dtype)
            for _ in range(count):
                x = torch.nextafter(x, torch.tensor(direction * 1e4, dtype=dtype))
                out.append(x.clone())
    return torch.stack(out)


def first_derivative(f: Activation, x: Tensor, upstream: Tensor | None = None) -> Tensor:
    """``upstream ⊙ f'(x)`` by one backward."""
    x = x.detach().requires_grad_()
    (g,) = torch.autograd.grad(f(x), x, torch.ones_like(x) if upstream is None else upstream)
    return g


def hessian_diagonal_of_half_square(f: Activation, x: Tensor) -> Tensor:
    """``d²/dx² ½f(x)² = f'(x)² + f(x) f''(x)`` by a double backward (the upstream gradient ``f`` requires grad, as in an HVP)."""
    x = x.detach().requires_grad_()
    (g,) = torch.autograd.grad(0.5 * f(x).square().sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x)
    return h


def double_backward_works(f: Activation, x: Tensor) -> bool:
    """Whether :func:`hessian_diagonal_of_half_square` runs (RuntimeError: no derivative for some backward)."""
    try:
        hessian_diagonal_of_half_square(f, x)
    except RuntimeError as error:
        assert "not implemented" in str(error)
        return False
    return True


def hardsigmoid_inputs(dtype: torch.dtype) -> Tensor:
    """Random, gridded, ±ulps around ±3, and the special values ±0, ±inf, nan."""
    specials = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan")], dtype=dtype)
    return torch.cat([points((-3.0, 3.0), dtype), ulp_neighbours((-3.0, 3.0), dtype), specials])


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_hardsigmoid_values_and_gradients_are_bit_identical(dtype: torch.dtype, device: str) -> None:
    x = hardsigmoid_inputs(dtype).to(device)
    ours, native = hardsigmoid(x), F.hardsigmoid(x)
    assert torch.equal(ours.isnan(), native.isnan())
    number = ~native.isnan()
    assert torch.equal(ours[number], native[number]) and torch.equal(ours[number].signbit(), native[number].signbit())
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).mul(1e3).to(dtype).to(device)
    assert torch.equal(first_derivative(hardsigmoid, x, upstream), first_derivative(F.hardsigmoid, x, upstream))


@pytest.mark.parametrize("inplace", [False, True])
def test_hardsigmoid_calls_are_replaced_inside_the_mode(inplace: bool) -> None:
    """``F.hardsigmoid``, ``nn.Hardsigmoid`` and timm's factories all differentiate twice in the mode, in place or not."""
    x = hardsigmoid_inputs(torch.float64)[:-3]
    layers: list[Activation] = [
        lambda t: F.hardsigmoid(t.clone(), inplace=inplace), nn.Hardsigmoid(inplace=inplace),
        lambda t: nn.Hardsigmoid(inplace=inplace)(t * 1.0), create_act_layer("hard_sigmoid", inplace=inplace),
        get_act_fn("hard_sigmoid"), lambda t: torch._C._nn.hardsigmoid_(t * 1.0),
    ]
    expected = first_derivative(F.hardsigmoid, x).square()
    for layer in layers:
        guarded = (lambda t, f=layer: f(t * 1.0)) if inplace else layer
        assert not double_backward_works(guarded, x)
        with DoubleBackwardActivations():
            assert torch.equal(guarded(x), F.hardsigmoid(x))
            assert torch.equal(first_derivative(guarded, x), first_derivative(F.hardsigmoid, x))
            torch.testing.assert_close(hessian_diagonal_of_half_square(guarded, x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_second_derivatives_match_finite_differences(name: str) -> None:
    """Inside the context every activation's ``f'² + f f''`` matches the native ``f'`` and finite differences of it."""
    f, x = ACTIVATIONS[name], points(KINKS[name])
    value, first = f(x), first_derivative(f, x)
    second = (first_derivative(f, x + FD_STEP) - first_derivative(f, x - FD_STEP)) / (2 * FD_STEP)
    with scoring_context(nn.Linear(1, 1)):
        assert torch.equal(f(x), value)
        assert torch.equal(first_derivative(f, x), first)
        hessian = hessian_diagonal_of_half_square(f, x)
    torch.testing.assert_close(hessian, first.square() + value * second, rtol=1e-6, atol=1e-8)


def test_only_hardsigmoid_lacks_a_native_double_backward() -> None:
    """The reason for the mode; if torch gains the derivative, the mode can go."""
    lacking = {name for name, f in ACTIVATIONS.items() if not double_backward_works(f, points(KINKS[name])[:64])}
    assert lacking == {"hardsigmoid"}


def test_scoring_context_turns_the_mode_off_on_exit() -> None:
    x = points(KINKS["hardsigmoid"])[:64]
    with pytest.raises(ValueError), scoring_context(nn.Linear(1, 1)):
        assert double_backward_works(F.hardsigmoid, x)
        raise ValueError("leave by an error")
    assert not double_backward_works(F.hardsigmoid, x)


def criterion_cases() -> list:
    """Every criterion on both MobileNetV3s (the large one's probed taylor2-group meets groups that select one
    parameter along two dims: its 1×1 convolutions from the residual stream to itself)."""
    return [pytest.param(name, arch) for name in oba.criteria.names() for arch in ("mobilenet_v3_small", "mobilenet_v3_large")]


@pytest.mark.slow
@pytest.mark.parametrize(("criterion", "arch"), criterion_cases())
def test_every_criterion_prunes_mobilenet_v3(criterion: str, arch: str) -> None:
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=10).eval()
    batches = [(torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,)))]
    pruned, _ = oba.prune(model, torch.randn(1, 3, 32, 32), batches, F.cross_entropy, cheap(criterion), ratio=0.2, steps=1,
                          structure="channels")
    out = pruned(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in pruned.parameters() if p.requires_grad)

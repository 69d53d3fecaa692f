"""``oba.core.curvature.gradient_and_functional_hvp`` against explicit float64 second derivatives of the network function.

The retired ``oba-functional`` criterion was built on it; the function stays in ``oba.core.curvature``.
Ground truth: with z(θ) the network output as a function of the flat parameter
vector, c = ∂L/∂z at θ, the functional Hessian is ∇²_θ⟨c, z(θ)⟩
(torch.autograd.functional.hessian); the Gauss–Newton part is Jᵀ (∂²L/∂z²) J from
an explicit Jacobian and output Hessian.
"""
from __future__ import annotations

import torch
from reference import flat_parameters, unflatten
from torch import Tensor, nn
from torch.func import functional_call

from oba.core.curvature import gradient_and_functional_hvp, gradient_and_hvps

LOSS = nn.CrossEntropyLoss()


def two_layer(activation: nn.Module, bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4, bias=bias), activation, nn.Linear(4, 2, bias=bias)).double()


def batches() -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(n, 3, generator=generator, dtype=torch.float64), torch.randint(0, 2, (n,), generator=generator))
        for n in (5, 7)
    ]


def explicit_terms(model: nn.Module, batch) -> tuple[Tensor, Tensor, Tensor]:
    """Gradient g, functional Hessian Σ_k c_k ∇²z_k and Gauss–Newton matrix Jᵀ H_z J of one batch."""
    names, shapes, theta = flat_parameters(model)
    x, y = batch

    def outputs(flat: Tensor) -> Tensor:
        return functional_call(model, unflatten(flat, names, shapes), (x,))

    z = outputs(theta)
    c = torch.autograd.functional.jacobian(lambda out: LOSS(out, y), z)
    functional = torch.autograd.functional.hessian(lambda flat: (c * outputs(flat)).sum(), theta)
    jacobian = torch.autograd.functional.jacobian(outputs, theta).reshape(z.numel(), -1)
    output_hessian = torch.autograd.functional.hessian(lambda out: LOSS(out.reshape(z.shape), y), z.reshape(-1))
    gradient = jacobian.T @ c.reshape(-1)
    return gradient, functional, jacobian.T @ output_hessian @ jacobian


def flat(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def test_functional_hvp_equals_explicit_functional_hessian_and_full_hvp_minus_it_is_gauss_newton() -> None:
    model = two_layer(nn.Tanh())
    names, shapes, theta = flat_parameters(model)
    params = list(model.parameters())
    vector = [t.clone() for t in unflatten(theta, names, shapes).values()]
    for batch in batches():
        g, h_functional, h_gauss_newton = explicit_terms(model, batch)
        loss, grads, h_theta = gradient_and_functional_hvp(model, batch, LOSS, params, vector)
        torch.testing.assert_close(loss, LOSS(model(batch[0]), batch[1]).detach(), rtol=1e-12, atol=0)
        torch.testing.assert_close(flat(grads), g, rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(flat(h_theta), h_functional @ theta, rtol=1e-10, atol=1e-13)
        _, _, (full,) = gradient_and_hvps(model, batch, LOSS, params, [vector])
        torch.testing.assert_close(flat(full) - flat(h_theta), h_gauss_newton @ theta, rtol=1e-9, atol=1e-13)


def test_bias_free_relu_network_functional_hvp_of_theta_is_depth_minus_one_times_gradient() -> None:
    # z = W2 relu(W1 x) is linear in W1 and in W2, so H̃θ = (D − 1) g with D = 2 layers.
    model = two_layer(nn.ReLU(), bias=False)
    params = list(model.parameters())
    vector = [p.detach().clone() for p in params]
    for batch in batches():
        _, grads, h_theta = gradient_and_functional_hvp(model, batch, LOSS, params, vector)
        torch.testing.assert_close(flat(h_theta), flat(grads), rtol=1e-10, atol=1e-14)

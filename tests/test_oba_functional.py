"""oba-functional against explicit float64 second derivatives of the network function.

Ground truth: with z(θ) the network output as a function of the flat parameter
vector, c = ∂L/∂z at θ, the functional Hessian is ∇²_θ⟨c, z(θ)⟩
(torch.autograd.functional.hessian); the Gauss–Newton part is Jᵀ (∂²L/∂z²) J from
an explicit Jacobian and output Hessian.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

import oba.criteria as criteria
from reference import as_dict, flat_parameters, unflatten

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


def test_oba_functional_equals_explicit_functional_hessian_and_oba_minus_it_is_gauss_newton() -> None:
    model, data = two_layer(nn.Tanh()), batches()
    _, _, theta = flat_parameters(model)
    functional = criteria.get("oba-functional").parameter_scores(model, data, LOSS)
    exact = criteria.get("oba").parameter_scores(model, data, LOSS)
    expected, gauss_newton = torch.zeros_like(theta), torch.zeros_like(theta)
    for batch in data:
        g, h_functional, h_gauss_newton = explicit_terms(model, batch)
        expected += (-g * theta + 0.5 * theta * (h_functional @ theta)) / len(data)
        gauss_newton += 0.5 * theta * (h_gauss_newton @ theta) / len(data)
    for name, value in as_dict(model, expected).items():
        torch.testing.assert_close(functional[name], value, rtol=1e-10, atol=1e-13)
    for name, value in as_dict(model, gauss_newton).items():
        torch.testing.assert_close(exact[name] - functional[name], value, rtol=1e-9, atol=1e-13)


def test_bias_free_relu_network_reduces_to_a_scaled_taylor_score() -> None:
    # z = W2 relu(W1 x) is linear in W1 and in W2, so H̃θ = (D − 1) g with D = 2 layers: s = −½ g θ.
    model, data = two_layer(nn.ReLU(), bias=False), batches()
    functional = criteria.get("oba-functional").parameter_scores(model, data, LOSS)
    taylor = criteria.get("taylor").parameter_scores(model, data, LOSS)
    for name, value in taylor.items():
        torch.testing.assert_close(functional[name], 0.5 * value, rtol=1e-10, atol=1e-14)

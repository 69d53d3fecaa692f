"""oba-functional: the released OBA code's formulation, for comparison with the exact ``oba``.

The loss Hessian splits, with network output (logits) z = z(θ) and c = ∂L_b/∂z,

    H_b = Jᵀ (∂²L_b/∂z²) J  +  Σ_k c_k ∂²z_k/∂θ²          (J = ∂z/∂θ)
          Gauss–Newton part    functional (residual) part H̃_b

The released OBA scorer computes its Hessian-vector products with the output
gradients held fixed, i.e. with H̃_b alone; this criterion does the same on the
network output:

    s_i = mean_b [ −g_{b,i} θ_i + ½ θ_i (H̃_b θ)_i ],   H̃_b θ = ∇_θ ⟨ ∇_θ⟨stop_grad(c), z(θ)⟩ , θ ⟩

So ``oba − oba-functional = mean_b ½ θ ⊙ (Jᵀ (∂²L_b/∂z²) J θ)``: the Gauss–Newton
term, which this criterion drops. What is left is mostly first order: in a bias-free
ReLU network of D layers z is linear in each layer's weights, so H̃_b θ = (D − 1) g_b
and s_i = (D − 3)/2 · mean_b g_{b,i} θ_i (DESIGN.md 2.1 reports a depth-weighted
first-order Taylor score for the released code on batch-norm CNNs in train mode).
The released code computes its products layer by layer; this criterion holds the
gradient at the network output fixed and takes one product for the whole network
(the definition this project adopts; it has not been compared with the released
scorer number for number). Per batch: one
forward, one backward to z, one backward with a graph and one double backward
(:func:`oba.curvature.gradient_and_functional_hvp`) — the cost of ``oba``.
"""
from __future__ import annotations


from torch import Tensor, nn

from ..curvature import gradient_and_functional_hvp
from .base import Batch, LossFn
from .oba import OBA
from .registry import register


@register("oba-functional")
class OBAFunctional(OBA):
    """``s_i = mean_b[−g_{b,i} θ_i + ½ θ_i (H̃_b θ)_i]``, H̃_b the Hessian without its Gauss–Newton part (module docstring)."""

    signed_estimate = False

    def gradient_and_curvature_product(
        self, model: nn.Module, batch: Batch, loss_fn: LossFn, params: list[Tensor], theta: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """``(g_b, H̃_b θ)``: the gradient and the Hessian-vector product without the Gauss–Newton part."""
        _, grads, h_theta = gradient_and_functional_hvp(model, batch, loss_fn, params, theta)
        return grads, h_theta

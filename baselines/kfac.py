"""EigenDamage-style Kronecker-factored criteria: kfac-obd and kfac-obs.

For every ``Conv2d``/``Linear`` module with a trainable weight, K-FAC approximates
the layer's empirical Fisher by ``A ⊗ G``:

    A = E[ã ãᵀ]   ã = input activation (unfolded patch for a conv, averaged over
                  output positions), with a homogeneous coordinate 1 appended when
                  the layer has a trainable bias, so the bias is the last input column;
    G = E[g gᵀ]   g = gradient of a sample's loss with respect to the layer output
                  (summed over output positions for a conv, tokens for a Linear
                  on sequences; A averages over them).

E is the mean over all calibration samples, and the gradients use the data's
targets (empirical Fisher, as obd), not labels sampled from the model. The factors
come from curvlinops' ``KFACLinearOperator`` (``fisher_type="empirical"``,
``kfac_approx="expand"``), so ``loss_fn`` must be a ``CrossEntropyLoss``,
``MSELoss`` or ``BCEWithLogitsLoss`` module or ``F.cross_entropy``, ``F.mse_loss``,
``F.binary_cross_entropy_with_logits`` (default arguments), and inputs must be
single tensors. For cross-entropy G is exactly the per-sample-loss expectation
above (curvlinops rescales mean-reduced MSE/BCE by the output width).

With ``W̃ = [W.reshape(out, -1) | b]``, element (o, i):

    kfac-obd: s = ½ W̃_oi² A_ii G_oo                        (diagonal of A ⊗ G)
    kfac-obs: s = W̃_oi² / (2 [(A ⊗ G + λI)⁻¹]_(oi),(oi))     (OBS saliency)

The inverse diagonal comes from the eigendecompositions A = Q_A Λ_A Q_Aᵀ and
G = Q_G Λ_G Q_Gᵀ: ``[(A⊗G+λI)⁻¹]_(oi),(oi) = Σ_{g,a} Q_G[o,g]² Q_A[i,a]² / (λ_g λ_a + λ)``,
with ``λ = damping · mean(diag A) · mean(diag G)`` (damping relative to the
layer's mean curvature, so one value fits every layer).

Parameters outside Conv2d/Linear (batch/layer norm, embeddings, tokens) have no
Kronecker factors: ``fallback="obd"`` scores them ``½ F_ii θ_i²`` with the
empirical Fisher diagonal (per-sample gradients, as obd; not available for batch
norm in train mode), ``fallback="zero"`` scores them 0.
"""
from __future__ import annotations

from abc import abstractmethod
import warnings
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from curvlinops import KFACLinearOperator  # its dependency linear_operator still calls torch.jit.script

from oba.criteria.base import Batch, Criterion, LossFn, require_batches, scoring_context, trainable_parameters
from oba.criteria.registry import register
from oba.curvature import fisher_diagonal

SUPPORTED_LOSSES = (nn.CrossEntropyLoss, nn.MSELoss, nn.BCEWithLogitsLoss)
FUNCTIONAL_LOSSES = {
    F.cross_entropy: nn.CrossEntropyLoss,
    F.mse_loss: nn.MSELoss,
    F.binary_cross_entropy_with_logits: nn.BCEWithLogitsLoss,
}
FALLBACKS = ("obd", "zero")


def factored_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Conv2d/Linear modules whose weight is trainable, by module name."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.requires_grad
    }


def _has_bias(module: nn.Module) -> bool:
    return module.bias is not None and module.bias.requires_grad


def kronecker_factors(
    model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn
) -> dict[str, tuple[Tensor, Tensor]]:
    """``(A, G)`` per factored module (see the module docstring), in the model's current mode.

    ``A`` is ``(d_in + 1, d_in + 1)`` when the module has a trainable bias (homogeneous
    coordinate last), ``(d_in, d_in)`` otherwise; ``G`` is ``(d_out, d_out)``.
    """
    loss_module = _loss_module(loss_fn)
    if any(not isinstance(inputs, Tensor) for inputs, _ in batches):
        raise ValueError("K-FAC criteria need each batch's inputs to be a single tensor")
    modules = factored_modules(model)
    if not modules:
        return {}
    params = [p for m in modules.values() for p in ([m.weight, m.bias] if _has_bias(m) else [m.weight])]
    operator = KFACLinearOperator(
        model,
        loss_module,
        params,
        list(batches),
        check_deterministic=False,
        fisher_type="empirical",
        kfac_approx="expand",
        separate_weight_and_bias=False,
        num_data=sum(int(targets.shape[0]) for _, targets in batches),
    )
    operator.compute_kronecker_factors()
    state = operator.state_dict()
    return {name: (state["input_covariances"][name], state["gradient_covariances"][name]) for name in modules}


def _loss_module(loss_fn: LossFn) -> nn.Module:
    if isinstance(loss_fn, SUPPORTED_LOSSES):
        return loss_fn
    if loss_fn in FUNCTIONAL_LOSSES:
        return FUNCTIONAL_LOSSES[loss_fn]()
    raise ValueError(
        f"K-FAC criteria need loss_fn to be one of {[c.__name__ for c in SUPPORTED_LOSSES]} or its functional "
        f"form with default arguments (curvlinops derives the factors from the loss), got {loss_fn!r}"
    )


def _augmented_weight(module: nn.Module) -> Tensor:
    weight = module.weight.detach().reshape(module.weight.shape[0], -1)
    if _has_bias(module):
        weight = torch.cat([weight, module.bias.detach().unsqueeze(1)], dim=1)
    return weight


def kfac_obd_saliency(weight: Tensor, a: Tensor, g: Tensor) -> Tensor:
    """``½ W_oi² A_ii G_oo`` for an ``(out, in)`` matrix ``weight``."""
    return 0.5 * weight.square() * torch.outer(g.diagonal(), a.diagonal())


def kfac_obs_saliency(weight: Tensor, a: Tensor, g: Tensor, damping: float) -> Tensor:
    """``W_oi² / (2 [(A⊗G + λI)⁻¹]_(oi),(oi))`` with ``λ = damping · mean(diag A) · mean(diag G)``."""
    lam = damping * a.diagonal().mean() * g.diagonal().mean()
    eval_a, evec_a = torch.linalg.eigh(a)
    eval_g, evec_g = torch.linalg.eigh(g)
    inverse = 1.0 / (torch.outer(eval_g.clamp(min=0), eval_a.clamp(min=0)) + lam)
    inverse_diagonal = evec_g.square() @ inverse @ evec_a.square().T
    return weight.square() / (2.0 * inverse_diagonal)


class _KFAC(Criterion):
    def __init__(self, fallback: str = "obd", chunk_size: int | None = None, mode: str | None = None) -> None:
        super().__init__(mode)
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        self.fallback = fallback
        self.chunk_size = chunk_size

    @abstractmethod
    def saliency(self, weight: Tensor, a: Tensor, g: Tensor) -> Tensor:
        """Per-element score of the augmented ``(out, in[+1])`` weight from the layer's factors."""

    def parameter_scores(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> dict[str, Tensor]:
        require_batches(batches)
        named = trainable_parameters(model)
        scores: dict[str, Tensor] = {}
        with scoring_context(model, self.mode):
            modules = factored_modules(model)
            for name, (a, g) in kronecker_factors(model, batches, loss_fn).items():
                module = modules[name]
                saliency = self.saliency(_augmented_weight(module), a, g)
                prefix = f"{name}." if name else ""
                scores[prefix + "weight"] = saliency[:, : saliency.shape[1] - _has_bias(module)].reshape(
                    module.weight.shape
                )
                if _has_bias(module):
                    scores[prefix + "bias"] = saliency[:, -1]
            rest = [n for n in named if n not in scores]
            if rest and self.fallback == "obd":
                fisher = fisher_diagonal(model, batches, loss_fn, rest, self.chunk_size)
                scores.update({n: 0.5 * fisher[n] * named[n].detach().square() for n in rest})
        return {n: scores.get(n, torch.zeros_like(p, requires_grad=False)) for n, p in named.items()}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "fallback": self.fallback, "chunk_size": self.chunk_size}


@register("kfac-obd")
class KFACOBD(_KFAC):
    """``s = ½ W̃_oi² A_ii G_oo`` per Conv2d/Linear element; fallback for the rest (module docstring)."""

    def saliency(self, weight: Tensor, a: Tensor, g: Tensor) -> Tensor:
        return kfac_obd_saliency(weight, a, g)


@register("kfac-obs")
class KFACOBS(_KFAC):
    """``s = W̃_oi² / (2 [(A⊗G + λI)⁻¹]_ii)`` per Conv2d/Linear element; fallback for the rest."""

    def __init__(
        self, damping: float = 1e-3, fallback: str = "obd", chunk_size: int | None = None, mode: str | None = None
    ) -> None:
        super().__init__(fallback, chunk_size, mode)
        self.damping = damping

    def saliency(self, weight: Tensor, a: Tensor, g: Tensor) -> Tensor:
        return kfac_obs_saliency(weight, a, g, self.damping)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "damping": self.damping}

"""EigenDamage-style Kronecker-factored criteria: kfac-obd and kfac-obs.

For every ``Conv2d``/``Linear`` module with a trainable weight, K-FAC approximates
the layer's Fisher by ``A ⊗ G``:

    A = E[ã ãᵀ]   ã = input activation (unfolded patch for a conv, averaged over
                  output positions), with a homogeneous coordinate 1 appended when
                  the layer has a trainable bias, so the bias is the last input column;
    G = E[g gᵀ]   g = gradient of a sample's loss with respect to the layer output
                  (summed over output positions for a conv, tokens for a Linear
                  on sequences; A averages over them).

E is the mean over all calibration samples. ``fisher`` says which labels the
gradients use: ``"true"`` (default, as EigenDamage) draws one label per sample
from the model's predictive distribution implied by the loss — Categorical(softmax z)
for cross-entropy, Bernoulli(sigmoid z) for BCE, N(z, ½I) for MSE — on CPU from a
``torch.Generator`` seeded with the pruning step's seed (``step_seed(seed, step)``,
as every randomised criterion: :class:`oba.criteria.base.SeededCriterion`), batch by
batch in order (one extra no-grad forward per batch); ``"empirical"`` uses the data's targets. The factors
come from curvlinops' ``KFACLinearOperator`` (``kfac_approx="expand"``) fed with
those labels, so ``loss_fn`` must be a ``CrossEntropyLoss``, ``MSELoss`` or
``BCEWithLogitsLoss`` module or ``F.cross_entropy``, ``F.mse_loss``,
``F.binary_cross_entropy_with_logits`` (default arguments), and inputs must be
single tensors. For cross-entropy G is exactly the per-sample-loss expectation
above (curvlinops rescales mean-reduced MSE/BCE by the output width).

With ``W̃ = [W.reshape(out, -1) | b]`` and row-major ``vec``, the layer's curvature
is ``H = G ⊗ A + λI`` and, for element (o, i):

    kfac-obd: s = ½ W̃_oi² A_ii G_oo                        (diagonal of G ⊗ A)
    kfac-obs: s = W̃_oi² / (2 [H⁻¹]_(oi),(oi))               (OBS saliency)

The inverse diagonal comes from the eigendecompositions A = Q_A Λ_A Q_Aᵀ and
G = Q_G Λ_G Q_Gᵀ: ``[H⁻¹]_(oi),(oi) = Σ_{g,a} Q_G[o,g]² Q_A[i,a]² / (λ_g λ_a + λ)``,
with ``λ = damping · mean(diag A) · mean(diag G)`` (damping relative to the
layer's mean curvature, so one value fits every layer).

kfac-obs with ``obs_update=True`` (default) also gives the OBS compensating update
(:meth:`KFACOBS.compensation`): when the elements S of W̃ are removed, the kept
elements K move by the minimiser of the quadratic model ``½ δᵀHδ`` subject to
``δ_S = −w_S``,

    δ_K = H_KK⁻¹ H_KS w_S   (= −[H⁻¹_{:,S} (H⁻¹_SS)⁻¹ w_S]_K, the OBS update of a set).

When K is a rectangle (structured pruning removes whole rows — output channels,
neurons, head rows — and whole input columns), ``H_KK = G_RR ⊗ A_CC + λI`` is
Kronecker again and is inverted exactly in the eigenbases of ``G_RR`` and
``A_CC``. For any other K (unstructured masks) the same system is solved by
conjugate gradients with Kronecker matrix-vector products, preconditioned by
``[H⁻¹]_KK`` (exact in at most |S| + 1 steps in exact arithmetic). No dense
inverse is formed.

Parameters outside Conv2d/Linear (batch/layer norm, embeddings, tokens) have no
Kronecker factors: ``fallback="obd"`` scores them ``½ F_ii θ_i²`` with the
empirical Fisher diagonal (per-sample gradients, as obd; not available for batch
norm in train mode), ``fallback="zero"`` scores them 0; they get no update.
"""
from __future__ import annotations

import warnings
from abc import abstractmethod
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

from oba.core.curvature import fisher_diagonal_sums
from oba.core.kronecker_factors import (
    FISHER_TYPES,
    LabelledBatch,
    augmented_weight,
    factored_modules,
    has_bias,
    kronecker_factor_sums,
    true_fisher_labels,
)
from oba.criteria.base import (
    AdditiveCriterion,
    Batch,
    BatchSums,
    LossFn,
    SeededCriterion,
    require_batches,
    scoring_context,
    trainable_parameters,
)
from oba.criteria.registry import register

FALLBACKS = ("obd", "zero")
CG_MAX_STEPS = 500


def damping_value(a: Tensor, g: Tensor, damping: float) -> Tensor:
    """``λ = damping · mean(diag A) · mean(diag G)``."""
    return damping * a.diagonal().mean() * g.diagonal().mean()


def _eigh(m: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.linalg.eigh(m)``, redone in float64 where the solver fails to converge (e.g. on a factor of
    subnormal entries beside a bias entry of 1: dead channels of MobileNetV3 at small inputs) or returns non-finite
    values without saying so (float32, a 400×400 output-gradient factor of RegNet whose eigenvalues span 10⁻¹³ to
    10⁻⁵ at 32 pixels)."""
    try:
        values, vectors = torch.linalg.eigh(m)
        if bool(values.isfinite().all()) and bool(vectors.isfinite().all()):
            return values, vectors
    except torch.linalg.LinAlgError:
        pass
    values, vectors = torch.linalg.eigh(m.double())
    return values.to(m.dtype), vectors.to(m.dtype)


def _eigen(a: Tensor, g: Tensor, lam: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(Q_G, Q_A, D)`` with ``D[g, a] = λ_g λ_a + λ`` (eigenvalues clamped at 0)."""
    eval_a, evec_a = _eigh(a)
    eval_g, evec_g = _eigh(g)
    return evec_g, evec_a, torch.outer(eval_g.clamp(min=0), eval_a.clamp(min=0)) + lam


def _inverse_apply(v: Tensor, evec_g: Tensor, evec_a: Tensor, denominator: Tensor) -> Tensor:
    """``(G ⊗ A + λI)⁻¹ vec(V)`` as a matrix: ``Q_G [(Q_Gᵀ V Q_A) / D] Q_Aᵀ``."""
    return evec_g @ ((evec_g.T @ v @ evec_a) / denominator) @ evec_a.T


def kfac_obd_saliency(weight: Tensor, a: Tensor, g: Tensor) -> Tensor:
    """``½ W_oi² A_ii G_oo`` for an ``(out, in)`` matrix ``weight``."""
    return 0.5 * weight.square() * torch.outer(g.diagonal(), a.diagonal())


def kfac_obs_saliency(weight: Tensor, a: Tensor, g: Tensor, damping: float) -> Tensor:
    """``W_oi² / (2 [(G⊗A + λI)⁻¹]_(oi),(oi))`` with ``λ = damping · mean(diag A) · mean(diag G)``."""
    evec_g, evec_a, denominator = _eigen(a, g, damping_value(a, g, damping))
    inverse_diagonal = evec_g.square() @ (1.0 / denominator) @ evec_a.square().T
    return weight.square() / (2.0 * inverse_diagonal)


def obs_update(weight: Tensor, a: Tensor, g: Tensor, damping: float, removed: Tensor) -> Tensor:
    """OBS update ``δ`` of an ``(out, in)`` matrix when the elements ``removed`` (a boolean mask) go.

    ``δ_K = H_KK⁻¹ H_KS w_S`` on the kept elements K, 0 on S, with ``H = G ⊗ A + λI``
    (module docstring): exact Kronecker solve when K is a rectangle, preconditioned
    conjugate gradients otherwise. Where λ = 0, G or A is zero (both are PSD: a zero trace is a zero matrix), so
    H = 0 and ``δ = 0`` (the least-norm solution; a layer whose outputs get no gradient, its channels dead).
    """
    keep = ~removed
    delta = torch.zeros_like(weight)
    lam = damping_value(a, g, damping)
    if not bool(removed.any()) or not bool(keep.any()) or not bool(lam > 0):
        return delta
    coupling = g @ weight.masked_fill(keep, 0) @ a  # H_KS w_S on K (λI does not couple K and S)
    rows, cols = keep.any(1), keep.any(0)
    if torch.equal(keep, rows[:, None] & cols[None, :]):
        evec_g, evec_a, denominator = _eigen(a[cols][:, cols], g[rows][:, rows], lam)
        delta[rows.nonzero()[:, 0][:, None], cols.nonzero()[:, 0][None, :]] = _inverse_apply(
            coupling[rows][:, cols], evec_g, evec_a, denominator
        )
        return delta
    evec_g, evec_a, denominator = _eigen(a, g, lam)
    return _conjugate_gradients(
        lambda x: (g @ x @ a + lam * x).masked_fill(removed, 0),
        lambda r: _inverse_apply(r, evec_g, evec_a, denominator).masked_fill(removed, 0),
        coupling.masked_fill(removed, 0),
    )


def _conjugate_gradients(matvec: Callable[[Tensor], Tensor], precondition: Callable[[Tensor], Tensor], rhs: Tensor) -> Tensor:
    """Preconditioned CG for ``matvec(x) = rhs`` (SPD): relative residual ``max(1e-12, 100 ε)`` or ``CG_MAX_STEPS`` steps."""
    tolerance = max(1e-12, 100 * torch.finfo(rhs.dtype).eps) * rhs.norm()
    x = torch.zeros_like(rhs)
    residual = rhs.clone()
    z = precondition(residual)
    direction = z
    rz = (residual * z).sum()
    for _ in range(CG_MAX_STEPS):
        if residual.norm() <= tolerance:
            break
        product = matvec(direction)
        step = rz / (direction * product).sum()
        x = x + step * direction
        residual = residual - step * product
        z = precondition(residual)
        rz, previous = (residual * z).sum(), rz
        direction = z + (rz / previous) * direction
    return x


class _KFAC(SeededCriterion, AdditiveCriterion):
    """Scores from summed Kronecker factors (and the fallback's Fisher sums), so shards of the calibration
    batches can be scored apart: :meth:`prepare` draws the true-Fisher labels of every batch in order (one
    stream, as one process draws them), then each shard sums its factors (:meth:`batch_sums`)."""

    def __init__(
        self,
        fallback: str = "obd",
        chunk_size: int | None = None,
        fisher: str = "true",
        seed: int = 0,
        mode: str | None = None,
        reduction: str | None = None,
        normaliser: str | None = None,
    ) -> None:
        super().__init__(seed, mode, reduction=reduction, normaliser=normaliser)
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        if fisher not in FISHER_TYPES:
            raise ValueError(f"fisher must be one of {FISHER_TYPES}, got {fisher!r}")
        self.fallback = fallback
        self.chunk_size = chunk_size
        self.fisher = fisher

    @abstractmethod
    def saliency(self, weight: Tensor, a: Tensor, g: Tensor) -> Tensor:
        """Per-element score of the augmented ``(out, in[+1])`` weight from the layer's factors."""

    def prepare(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> list[LabelledBatch]:
        """Each batch with the labels its factor gradients use: drawn from the step's seed over all batches in
        order for the true Fisher (:func:`true_fisher_labels`), the targets for the empirical one."""
        if self.fisher == "empirical":
            return [(inputs, targets, targets) for inputs, targets in batches]
        with scoring_context(model, self.mode):
            labels = true_fisher_labels(model, batches, loss_fn, self.current_seed())
        return [(inputs, targets, drawn) for (inputs, targets), drawn in zip(batches, labels)]

    def _factor_sums(self, model: nn.Module, batches: Sequence[LabelledBatch], loss_fn: LossFn) -> BatchSums:
        """``N·A`` and ``N·G`` per factored module (keys ``<module>#A``, ``<module>#G``), with N samples."""
        with scoring_context(model, self.mode):
            sums, count = kronecker_factor_sums(model, [(inputs, labels) for inputs, _, labels in batches], loss_fn)
        return BatchSums({f"{name}#{kind}": factor for name, pair in sums.items() for kind, factor in zip("AG", pair)},
                         count)

    def batch_sums(self, model: nn.Module, batches: Sequence[LabelledBatch], loss_fn: LossFn) -> BatchSums:
        """The factor sums (:meth:`_factor_sums`) and, with the obd fallback, the Fisher diagonal sums of the other
        parameters (from the data's targets)."""
        named = trainable_parameters(model)
        factor_sums = self._factor_sums(model, batches, loss_fn)
        tensors = dict(factor_sums.tensors)
        with scoring_context(model, self.mode):
            factored = {n for name, module in factored_modules(model).items()
                        for n in _split_augmented(name, module, augmented_weight(module))}
            rest = [n for n in named if n not in factored]
            if rest and self.fallback == "obd":
                fisher, _ = fisher_diagonal_sums(model, [(inputs, targets) for inputs, targets, _ in batches],
                                                 loss_fn, rest, self.chunk_size)
                tensors.update(fisher)
        return BatchSums(tensors, factor_sums.count)

    def factors_from_sums(self, model: nn.Module, sums: BatchSums) -> dict[str, tuple[Tensor, Tensor]]:
        """``(A, G)`` per factored module: the summed factors over the samples' count."""
        return {name: (sums.tensors[f"{name}#A"] / sums.count, sums.tensors[f"{name}#G"] / sums.count)
                for name in factored_modules(model)}

    def factors(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> dict[str, tuple[Tensor, Tensor]]:
        """This criterion's ``(A, G)`` per factored module (its ``fisher``; sampled labels from the step's seed)."""
        prepared = self.prepare(model, batches, loss_fn)
        return self.factors_from_sums(model, self._factor_sums(model, prepared, loss_fn))

    def scores_from_sums(self, model: nn.Module, sums: BatchSums) -> dict[str, Tensor]:
        named = trainable_parameters(model)
        modules = factored_modules(model)
        scores: dict[str, Tensor] = {}
        for name, (a, g) in self.factors_from_sums(model, sums).items():
            module = modules[name]
            scores.update(_split_augmented(name, module, self.saliency(augmented_weight(module), a, g)))
        if self.fallback == "obd":
            scores.update({n: 0.5 * (sums.tensors[n] / sums.count) * named[n].detach().square()
                           for n in named if n not in scores})
        return {n: scores.get(n, torch.zeros_like(p, requires_grad=False)) for n, p in named.items()}

    def config(self) -> dict[str, Any]:
        return {
            **super().config(), "fallback": self.fallback, "chunk_size": self.chunk_size, "fisher": self.fisher,
        }


def _prefix(name: str) -> str:
    return f"{name}." if name else ""


def _split_augmented(name: str, module: nn.Module, augmented: Tensor) -> dict[str, Tensor]:
    """An ``(out, in[+1])`` tensor back to the module's ``weight`` (and ``bias``) shapes."""
    out = {_prefix(name) + "weight": augmented[:, : augmented.shape[1] - has_bias(module)].reshape(module.weight.shape)}
    if has_bias(module):
        out[_prefix(name) + "bias"] = augmented[:, -1]
    return out


def _augmented_mask(name: str, module: nn.Module, removed: Mapping[str, Tensor]) -> Tensor:
    """The removed-elements mask of ``W̃`` (elements absent from ``removed`` are kept)."""
    weight = module.weight
    mask = removed.get(_prefix(name) + "weight", torch.zeros(weight.shape, dtype=torch.bool))
    mask = mask.to(weight.device).reshape(weight.shape[0], -1)
    if has_bias(module):
        bias = removed.get(_prefix(name) + "bias", torch.zeros(weight.shape[0], dtype=torch.bool))
        mask = torch.cat([mask, bias.to(weight.device).unsqueeze(1)], dim=1)
    return mask


@register("kfac-obd")
class KFACOBD(_KFAC):
    """``s = ½ W̃_oi² A_ii G_oo`` per Conv2d/Linear element; fallback for the rest (module docstring). No update."""

    def saliency(self, weight: Tensor, a: Tensor, g: Tensor) -> Tensor:
        return kfac_obd_saliency(weight, a, g)


@register("kfac-obs")
class KFACOBS(_KFAC):
    """``s = W̃_oi² / (2 [(G⊗A + λI)⁻¹]_ii)`` per Conv2d/Linear element, and the OBS update (module docstring)."""

    def __init__(
        self,
        damping: float = 1e-3,
        fallback: str = "obd",
        chunk_size: int | None = None,
        fisher: str = "true",
        seed: int = 0,
        obs_update: bool = True,
        mode: str | None = None,
        reduction: str | None = None,
        normaliser: str | None = None,
    ) -> None:
        super().__init__(fallback, chunk_size, fisher, seed, mode, reduction, normaliser)
        self.damping = damping
        self.obs_update = obs_update

    def saliency(self, weight: Tensor, a: Tensor, g: Tensor) -> Tensor:
        return kfac_obs_saliency(weight, a, g, self.damping)

    def compensation(
        self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn, removed: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Per layer, the OBS update :func:`obs_update` of the kept elements, with factors of the current model.

        The factors are recomputed (same ``fisher`` and step seed as scoring) because
        the model may have changed shape since it was scored. Empty when
        ``obs_update`` is false or no factored element is removed.
        """
        if not self.obs_update:
            return {}
        modules = factored_modules(model)
        masks = {name: _augmented_mask(name, m, removed) for name, m in modules.items()}
        masks = {name: mask for name, mask in masks.items() if bool(mask.any())}
        if not masks:
            return {}
        require_batches(batches)
        with scoring_context(model, self.mode):
            factors = self.factors(model, batches, loss_fn)
        updates: dict[str, Tensor] = {}
        for name, mask in masks.items():
            a, g = factors[name]
            delta = obs_update(augmented_weight(modules[name]), a, g, self.damping, mask)
            updates.update(_split_augmented(name, modules[name], delta))
        return updates

    def config(self) -> dict[str, Any]:
        return {**super().config(), "damping": self.damping, "obs_update": self.obs_update}

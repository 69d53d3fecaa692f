"""taylor2-group: the exact second-order loss change of removing each group alone.

For a group G with parameter elements S and calibration batches b,

    ΔL̂(G) = mean_b [ −g_{b,S}ᵀ θ_S + ½ θ_Sᵀ H_{b,SS} θ_S ],   score(G) = |ΔL̂(G)|  (ΔL̂(G) when signed)

— the block quadratic form with the whole within-group Hessian block, where
``taylor2`` keeps only each element's share ``θ_i (Hθ)_i`` of the full product.

``probes=None`` (exact): one HVP per group per batch with ``v = θ ⊙ 1_S``, all
through one gradient graph per batch; groups may overlap.
``probes=k``: k random-sign probes per batch (drawn from the pruning step's
seed, :class:`~oba.criteria.base.SeededCriterion`), ``v = Σ_G ε_G θ_G`` with ε_G = ±1
and θ_G = θ on G's elements (zero elsewhere); ``ε_G θ_Gᵀ H v`` estimates
``θ_Gᵀ H_GG θ_G`` without bias, since ``E[ε_G ε_G'] = δ_GG'``. That holds for
overlapping groups too (Torch-Pruning's channel units overlap: W[o, i] belongs to
output channel o and input channel i), so disjointness is not required; a group
must select each parameter along a single dim. The variance per probe is
``Σ_{G'≠G} (θ_Gᵀ H θ_{G'})²``, shrinking as 1/k.

``parameter_scores`` returns the per-parameter ``taylor2`` quantity; the group form
(:meth:`Taylor2Group.group_scores`) is where this criterion differs from ``taylor2``.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from oba.core.curvature import gradient_and_hvp_map
from oba.core.groups import Group, GroupLayout, along, check_groups, layout_of
from oba.criteria.base import Batch, LossFn, SeededCriterion, require_batches, scoring_context, trainable_parameters
from oba.criteria.registry import register
from oba.criteria.taylor2 import Taylor2


def sign_probe(layout: GroupLayout, signs: Tensor, theta: dict[str, Tensor]) -> dict[str, Tensor]:
    """``v = Σ_G ε_G θ_G`` (θ_G: θ on G's elements, zero elsewhere), keyed by parameter name."""
    coefficients: dict[str, Tensor] = {}
    for (name, dim), (index, gid) in layout.members.items():
        shape = theta[name].shape
        size = shape.numel() if dim is None else shape[dim]
        coefficient = torch.zeros(size, dtype=torch.float64, device=signs.device).index_add_(0, index, signs[gid])
        term = along(coefficient.to(theta[name]), shape, dim)
        coefficients[name] = coefficients[name] + term if name in coefficients else term
    return {name: theta[name] * c for name, c in coefficients.items()}


@register("taylor2-group")
class Taylor2Group(SeededCriterion, Taylor2):
    """Group score ``|ΔL̂(G)|`` (``ΔL̂(G)`` when ``signed``); exact, or estimated with ``probes`` sign probes.

    ``seed`` is the probes' base seed (each pruning step draws from its own seed, see ``SeededCriterion``).
    """

    def __init__(self, probes: int | None = None, seed: int = 0, mode: str | None = None, signed: bool = False,
                 reduction: str | None = None, normaliser: str | None = None) -> None:
        super().__init__(seed, mode, signed, reduction, normaliser)
        if self.reduction != "abs-sum":
            raise ValueError(f"taylor2-group scores each group's loss change whole: its reduction is 'abs-sum', "
                             f"not {self.reduction!r}")
        if probes is not None and probes < 1:
            raise ValueError(f"probes must be None (exact) or positive, got {probes}")
        self.probes = probes

    def group_scores(
        self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn, groups: Sequence[Group]
    ) -> Tensor:
        """``|ΔL̂(G)|`` per group (``ΔL̂(G)`` when signed), as a float64 CPU tensor."""
        return self.score_from_sums(self.group_loss_changes(model, batches, loss_fn, groups))

    def group_loss_changes(
        self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn, groups: Sequence[Group]
    ) -> Tensor:
        """The signed predicted loss change ``ΔL̂(G)`` of removing each group alone (float64, CPU)."""
        require_batches(batches)
        named = trainable_parameters(model)
        groups = check_groups(groups, named)
        if not groups:
            return torch.zeros(0, dtype=torch.float64)
        with scoring_context(model, self.mode):
            theta = {name: p.detach().clone() for name, p in named.items()}
            device = next(iter(theta.values())).device
            total = torch.zeros(len(groups), dtype=torch.float64, device=device)
            if self.probes is None:
                for batch in batches:
                    total += self._exact(model, batch, loss_fn, named, theta, groups)
            else:
                layout = layout_of(groups, {name: t.shape for name, t in theta.items()}, device)
                generator = self.generator(device)
                for batch in batches:
                    total += self._probed(model, batch, loss_fn, named, theta, layout, generator)
        return (total / len(batches)).cpu()

    def _exact(
        self,
        model: nn.Module,
        batch: Batch,
        loss_fn: LossFn,
        named: dict[str, nn.Parameter],
        theta: dict[str, Tensor],
        groups: Sequence[Group],
    ) -> Tensor:
        shapes = {name: t.shape for name, t in theta.items()}
        device = next(iter(theta.values())).device

        def vectors() -> Iterator[list[Tensor]]:
            for group in groups:
                masks = group.masks(shapes, device)
                yield [theta[n] * masks[n] if n in masks else torch.zeros_like(theta[n]) for n in named]

        def quadratic(v: Sequence[Tensor], hv: list[Tensor]) -> Tensor:
            return torch.stack([(vi * hvi).sum() for vi, hvi in zip(v, hv)]).sum().double()

        _, grads, quads = gradient_and_hvp_map(model, batch, loss_fn, list(named.values()), vectors(), quadratic)
        minus_g_theta = {n: -g * theta[n] for n, g in zip(named, grads)}
        linear = []
        for group in groups:
            masks = group.masks(shapes, device)
            linear.append(torch.stack([minus_g_theta[n][m].sum() for n, m in masks.items()]).sum().double())
        return torch.stack(linear) + 0.5 * torch.stack(quads)

    def _probed(
        self,
        model: nn.Module,
        batch: Batch,
        loss_fn: LossFn,
        named: dict[str, nn.Parameter],
        theta: dict[str, Tensor],
        layout: GroupLayout,
        generator: torch.Generator,
    ) -> Tensor:
        members = layout.names()
        device = generator.device
        signs_of_probe: list[Tensor] = []

        def vectors() -> Iterator[list[Tensor]]:
            for _ in range(self.probes):
                signs = torch.randint(0, 2, (layout.num_groups,), generator=generator, device=device).double() * 2 - 1
                signs_of_probe.append(signs)
                v = sign_probe(layout, signs, theta)
                yield [v[n] if n in v else torch.zeros_like(theta[n]) for n in named]

        def quadratic(v: Sequence[Tensor], hv: list[Tensor]) -> Tensor:
            return layout.sums({n: theta[n] * h for n, h in zip(named, hv) if n in members})

        _, grads, sums = gradient_and_hvp_map(model, batch, loss_fn, list(named.values()), vectors(), quadratic)
        linear = layout.sums({n: -g * theta[n] for n, g in zip(named, grads) if n in members})
        estimates = torch.stack([signs * total for signs, total in zip(signs_of_probe, sums)])
        return linear + 0.5 * estimates.mean(0)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "probes": self.probes}

"""Unstructured pruning: global weight masks from per-parameter scores.

The weights of every Conv/Linear layer compete globally on ``|s_i|`` (the
per-element case of the group score ``|Σ s_i|``; ``s_i`` itself for a criterion
built with ``signed=True``). Round k of ``steps`` scores as step k
(``criterion.reseed(k)``; timed after a warm-up gradient pass, with the device
synchronised around it: :mod:`oba.core.measure`) and masks ``ratio * k / steps`` of those weights;
masked weights stay masked. Masked weights are zeroed and a gradient hook keeps
them at zero during fine-tuning.
With ``recalibration`` batches, batch-norm statistics are recomputed before
every round after the first (as in structured pruning). Before each round's
masking the criterion's compensating update (``Criterion.compensation``) is
applied to the unmasked weights, given every masked weight; its time counts as
scoring time.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from oba.core.measure import timed, warm_up
from oba.core.model_calls import Batch, LossFn
from oba.core.recalibration import recalibrate_batchnorm
from oba.criteria.base import Criterion
from oba.pruning.compensation import compensate
from oba.pruning.outcome import PruneOutcome
from oba.pruning.settings import PruneSettings


def maskable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weights of every Conv/Linear layer, keyed by parameter name."""
    return {
        f"{name}.weight" if name else "weight": module.weight
        for name, module in model.named_modules()
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and module.weight.requires_grad
    }


def apply_masks(model: nn.Module, masks: dict[str, Tensor]) -> list[torch.utils.hooks.RemovableHandle]:
    """Zero masked weights and keep their gradients at zero; return the hook handles."""
    params = dict(model.named_parameters())
    handles = []
    for name, mask in masks.items():
        param = params[name]
        keep = mask.to(param.device, param.dtype)
        with torch.no_grad():
            param.mul_(keep)
        handles.append(param.register_hook(lambda grad, keep=keep: grad * keep))
    return handles


def _lowest_masked(weights: dict[str, Tensor], masks: dict[str, Tensor], scores: dict[str, Tensor],
                   count: int) -> dict[str, Tensor]:
    """Masks (True: kept) that remove the ``count`` lowest-scored weights, the weights already masked counting as
    lowest (their score is −∞), ties broken by position."""
    flat = torch.cat([torch.where(masks[n], scores[n], -math.inf).reshape(-1).cpu() for n in weights])
    keep = torch.ones(len(flat), dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[:count]] = False
    out, offset = {}, 0
    for name, w in weights.items():
        out[name] = keep[offset : offset + w.numel()].reshape(w.shape).to(w.device)
        offset += w.numel()
    return out


def prune_unstructured(
    model: nn.Module,
    batches: Sequence[Batch],
    loss_fn: LossFn,
    criterion: Criterion,
    settings: PruneSettings,
    macs: int,
    recalibration: Sequence[Batch] | None = None,
) -> PruneOutcome:
    """Mask ``settings.ratio`` of the Conv/Linear weights, lowest ``|s_i|`` first (``s_i`` when signed), in
    ``settings.steps`` rounds; masks change no shape, so the model's ``macs`` stay what they were.

    ``scoring_seconds`` covers every round, compensation included; ``dense_scoring_seconds``
    is the first round's scoring time (on the dense model); ``first_step_units_removed``
    the number of weights the first round masked.
    """
    ratio, steps = settings.ratio, settings.steps
    weights = maskable_weights(model)
    masks = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    scoring_seconds = dense_scoring_seconds = 0.0
    first_step_units_removed = 0
    device = next(model.parameters()).device
    for step in range(1, steps + 1):
        if step > 1 and recalibration is not None:
            recalibrate_batchnorm(model, recalibration)
        criterion.reseed(step)
        warm_up(model, batches, loss_fn, criterion.mode)
        with timed(device) as clock:
            scores = criterion.parameter_scores(model, batches, loss_fn)
        seconds = clock.seconds
        scoring_seconds += seconds
        if step == 1:
            dense_scoring_seconds = seconds
        n_masked = int(round(ratio * step / steps * total))
        if step == 1:
            first_step_units_removed = n_masked
        masks = _lowest_masked(weights, masks, {n: criterion.score_from_sums(scores[n].double()) for n in weights},
                               n_masked)
        with timed(device) as clock:
            compensate(model, criterion, batches, loss_fn, {name: ~mask for name, mask in masks.items()})
        scoring_seconds += clock.seconds
        with torch.no_grad():
            for name, w in weights.items():
                w.mul_(masks[name].to(w.dtype))
    apply_masks(model, masks)
    return PruneOutcome(
        macs_dense=macs,
        macs_pruned=macs,
        scoring_seconds=scoring_seconds,
        dense_scoring_seconds=dense_scoring_seconds,
        first_step_units_removed=first_step_units_removed,
        layer_widths={
            name: {"kind": "weights", "dense": int(m.numel()), "remaining": int(m.sum())} for name, m in masks.items()
        },
        masks=masks,
    )

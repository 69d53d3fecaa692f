"""The criterion interface every importance score implements.

``parameter_scores`` returns the *signed* per-parameter quantity of
docs/criteria.md (each criterion's section), averaged over calibration batches; ``group_scores`` reduces it to one
score per :class:`~oba.core.groups.Group` with the criterion's ``reduction``
(:mod:`oba.criteria.reduction`; ``abs-sum``, ``|Σ_{i∈G} s_i|``, unless its authors
reduce otherwise). ``normaliser`` is how its authors divide each layer's unit
scores before ranking them across layers (a suite may impose another). Criteria whose
``Σ s`` estimates the signed loss change of removing a group
(``signed_estimate = True``) may be built with ``signed=True``: their group score
is then ``Σ_{i∈G} s_i`` itself, so a group whose removal is estimated to lower the
loss is pruned first.

A pruning loop calls :meth:`Criterion.reseed` with the step it is about to
score (1, 2, ...; a criterion never told a step scores as step 0). A criterion
that draws random numbers derives from :class:`SeededCriterion`: it takes a base
``seed`` and draws each step's numbers from :meth:`SeededCriterion.generator`,
seeded with :func:`step_seed` of (base seed, step) and recorded in its config.

``compensation`` is an optional hook: the additive update of the surviving
parameters that a criterion pairs with a removal (OBS); the pruning code applies
it before the removed elements are removed or masked. By default there is none.

An :class:`AdditiveCriterion` computes its scores from :class:`BatchSums`:
tensors summed over the calibration batches (or their samples) and the count
that averages them. Sums of disjoint shards of the batches add up to the sums of
all of them, so such a criterion can be scored by several workers, each on its
shard (:mod:`oba.training.data_parallel`).
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from oba.core.groups import Group, check_groups
from oba.core.model_calls import (
    Batch,
    LossFn,
    batch_loss,
    forward,
    require_batches,
    scoring_context,
    trainable_parameters,
)
from oba.criteria.reduction import REDUCTIONS, reduce_groups

__all__ = [
    "AdditiveCriterion", "Batch", "BatchSums", "LossFn", "Criterion", "SeededCriterion", "batch_loss", "forward", "reduce_groups", "require_batches",
    "scoring_context", "step_seed", "trainable_parameters",
]


class Criterion(ABC):
    """Base class of every pruning criterion.

    Subclasses implement :meth:`parameter_scores`. ``mode`` selects the model
    mode used while scoring (None keeps the model's own mode); ``step`` is the
    pruning step being scored (0 until :meth:`reseed` says otherwise). ``signed``
    keeps the sign of the group sum (allowed only when ``signed_estimate`` is true).
    """

    name: str = ""
    step: int = 0
    signed_estimate: bool = False
    """Whether ``Σ_{i∈G} s_i`` is a signed estimate of the loss change of removing G."""
    default_reduction: str = "abs-sum"
    """The group reduction its authors use (:mod:`oba.criteria.reduction`)."""
    default_normaliser: str = "mean"
    """How its authors normalise each layer's unit scores (``oba.pruning.allocation.NORMALISERS``)."""

    def __init__(self, mode: str | None = None, signed: bool = False, reduction: str | None = None,
                 normaliser: str | None = None) -> None:
        if signed and not self.signed_estimate:
            raise ValueError(
                f"criterion {self.name or type(self).__name__!r} has no signed loss-change estimate: signed=True "
                "applies only to criteria whose group sum Σ s estimates ΔL (taylor, taylor2, taylor2-group)"
            )
        self.mode = mode
        self.signed = signed
        self.reduction = reduction or self.default_reduction
        REDUCTIONS.get(self.reduction)  # an unknown name raises here, listing the valid ones
        self.normaliser = normaliser or self.default_normaliser

    def reseed(self, step: int) -> None:
        """Score as pruning step ``step`` from now on (a criterion that draws random numbers reseeds from it)."""
        self.step = step

    @abstractmethod
    def parameter_scores(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> dict[str, Tensor]:
        """Signed per-parameter quantity, one tensor per trainable parameter, averaged over batches."""

    def group_scores(
        self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn, groups: Sequence[Group]
    ) -> Tensor:
        """One score per group: the per-parameter scores reduced by ``self.reduction`` (float64, CPU)."""
        groups = check_groups(groups, trainable_parameters(model))
        scores = self.parameter_scores(model, batches, loss_fn)
        return REDUCTIONS.get(self.reduction)(model, scores, groups, self.signed)

    def score_from_sums(self, sums: Tensor) -> Tensor:
        """The score of units whose per-parameter scores sum to ``sums``: ``Σ s`` when signed, else ``|Σ s|``."""
        return sums if self.signed else sums.abs()

    @contextlib.contextmanager
    def scoring_in(self, mode: str | None) -> Iterator[Criterion]:
        """Inside, the criterion scores in ``mode``; its own mode is restored on exit."""
        own = self.mode
        self.mode = mode
        try:
            yield self
        finally:
            self.mode = own

    def compensation(
        self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn, removed: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Additive update of the parameters that survive removing ``removed``; none by default.

        ``removed`` maps parameter names to boolean masks (parameter-shaped) of every
        element that does not survive (already-zero masked elements included; absent
        names lose nothing). The result maps parameter names to updates shaped like
        the parameters, zero on removed elements; names absent are not updated.
        """
        return {}

    def config(self) -> dict[str, Any]:
        """The options that determine this criterion's scores (recorded with results)."""
        return {"name": self.name, "mode": self.mode, "signed": self.signed, "reduction": self.reduction,
                "normaliser": self.normaliser}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({opts})"


@dataclass
class BatchSums:
    """Statistics summed over some calibration batches (or their samples), and the count that averages them."""

    tensors: dict[str, Tensor]
    count: float


class AdditiveCriterion(Criterion):
    """A criterion whose scores are a function of :class:`BatchSums` of its calibration batches.

    ``parameter_scores(batches) = scores_from_sums(batch_sums(prepare(batches)))``,
    and for disjoint shards of the prepared batches the sums of the union are the
    element-wise sums of the shards' sums (tensors and count alike).
    """

    def prepare(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> Sequence[Any]:
        """What :meth:`batch_sums` sums over, one entry per batch, made from ALL the batches before any is sharded:
        by default the batches themselves; a criterion that draws random numbers per sample draws them here, as
        one stream over the batches in order, so any shard sums what one process would."""
        return batches

    @abstractmethod
    def batch_sums(self, model: nn.Module, batches: Sequence[Any], loss_fn: LossFn) -> BatchSums:
        """The statistics of (prepared) ``batches`` (scored in the criterion's mode), summed."""

    def scores_from_sums(self, model: nn.Module, sums: BatchSums) -> dict[str, Tensor]:
        """Per-parameter scores from the summed statistics of all calibration batches: by default their mean."""
        return {name: total / sums.count for name, total in sums.tensors.items()}

    def parameter_scores(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> dict[str, Tensor]:
        require_batches(batches)
        return self.scores_from_sums(model, self.batch_sums(model, self.prepare(model, batches, loss_fn), loss_fn))


def step_seed(seed: int, step: int) -> int:
    """The seed of pruning step ``step`` under base ``seed``: a 63-bit word of NumPy's SeedSequence.

    ``SeedSequence(seed, spawn_key=(step,)).generate_state(1, uint64)[0] >> 1``:
    deterministic, independent across steps and base seeds, and fits a signed 64-bit column.
    """
    return int(np.random.SeedSequence(seed, spawn_key=(step,)).generate_state(1, dtype=np.uint64)[0]) >> 1


class SeededCriterion(Criterion):
    """A criterion that draws random numbers, seeded per pruning step from a base ``seed``.

    Step k draws from a generator seeded with ``step_seed(seed, k)``; every
    seed actually drawn from is kept in ``step_seeds`` (step → seed) and recorded
    by :meth:`config`, so the numbers of any step can be drawn again.
    """

    def __init__(self, seed: int = 0, mode: str | None = None, signed: bool = False, reduction: str | None = None,
                 normaliser: str | None = None) -> None:
        super().__init__(mode, signed, reduction, normaliser)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = seed
        self.step_seeds: dict[int, int] = {}

    def current_seed(self) -> int:
        """The seed of the current step, recorded as drawn from."""
        seed = step_seed(self.seed, self.step)
        self.step_seeds[self.step] = seed
        return seed

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """A fresh generator on ``device`` seeded for the current step (the seed is recorded).

        Numbers are drawn where they are used, so no probe crosses the host-device
        link; a CUDA generator draws a different (equally reproducible) stream
        than the CPU one for the same seed.
        """
        return torch.Generator(device=device).manual_seed(self.current_seed())

    def config(self) -> dict[str, Any]:
        """The base seed and, per step drawn from (as a string key), the seed used."""
        return {
            **super().config(),
            "seed": self.seed,
            "step_seeds": {str(step): seed for step, seed in sorted(self.step_seeds.items())},
        }


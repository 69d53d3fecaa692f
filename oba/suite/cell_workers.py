"""A cell's Ray Train workers (``[resources] workers = N``): who scores each pruning round and who fine-tunes.

With N > 1, a criterion that can be scored on shards of the calibration
batches (:func:`oba.training.data_parallel.check_shardable`) is wrapped in a
:class:`ShardedCriterion`, whose per-parameter scores come from N Ray Train
workers (:func:`oba.training.data_parallel.score_with_workers`), so pruning, which asks
the criterion for scores, is unchanged; any other criterion scores in the
trial's own process. Each stage's fine-tuning runs as N data-parallel replicas
(:func:`oba.training.data_parallel.fine_tune_with_workers`) on that stage's pruned
model. Everything else (evaluation, latency, batch-norm recalibration) stays in
the trial's process. With N = 1 nothing changes: the criterion is the cell's
and the cell fine-tunes with :func:`oba.training.train.fine_tune` in its process.

Each worker asks Ray for the trial's CPUs (``cpus_per_worker``, also its torch
threads and data-loader workers) and, on a CUDA trial, one GPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from oba.core.model_calls import Batch, LossFn
from oba.criteria.base import AdditiveCriterion, Criterion
from oba.data import Splits
from oba.training.data_parallel import check_shardable, fine_tune_with_workers, score_with_workers
from oba.training.train import Recipe, TrainResult, fine_tune


class ShardedCriterion(Criterion):
    """``inner``'s scores, computed by ``workers`` Ray Train workers on shards of the calibration batches.

    Name, sign, mode, step and recorded config are ``inner``'s (the mode the
    pruning loop sets on the wrapper is the one ``inner`` scores in); the scores
    come back on the model's device; compensation is ``inner``'s, in this process.
    """

    def __init__(self, inner: AdditiveCriterion, workers: int, use_gpu: bool, cpus_per_worker: float) -> None:
        self.name, self.signed_estimate = inner.name, inner.signed_estimate
        super().__init__(inner.mode, inner.signed, inner.reduction, inner.normaliser)
        self.inner, self.workers, self.use_gpu, self.cpus_per_worker = inner, workers, use_gpu, cpus_per_worker

    def reseed(self, step: int) -> None:
        super().reseed(step)
        self.inner.reseed(step)

    def parameter_scores(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> dict[str, Tensor]:
        device = next(model.parameters()).device
        with self.inner.scoring_in(self.mode):
            scores = score_with_workers(self.inner, model, batches, loss_fn, self.workers, use_gpu=self.use_gpu,
                                        cpus_per_worker=self.cpus_per_worker)
        return {name: t.to(device) for name, t in scores.items()}

    def compensation(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn,
                     removed: Mapping[str, Tensor]) -> dict[str, Tensor]:
        with self.inner.scoring_in(self.mode):
            return self.inner.compensation(model, batches, loss_fn, removed)

    def config(self) -> dict[str, Any]:
        return self.inner.config()


@dataclass(frozen=True)
class CellWorkers:
    """How many Ray Train workers a cell uses, and what each asks Ray for (``count`` 1: none, all in-process)."""

    count: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1

    @classmethod
    def of(cls, count: int, device: torch.device, threads: int | None) -> CellWorkers:
        """``count`` workers of a cell whose trial runs on ``device`` with ``threads`` CPUs (None: 1)."""
        return cls(count, device.type == "cuda", max(1, threads or 1))

    def scoring(self, criterion: Criterion, calibration_batches: int) -> tuple[Criterion, int]:
        """The criterion to prune with and how many processes score it: ``count`` workers when it can be scored
        on shards of ``calibration_batches`` batches (at least one per worker), else 1 (this process)."""
        if self.count == 1:
            return criterion, 1
        try:
            additive = check_shardable(criterion, calibration_batches, self.count)
        except ValueError:
            return criterion, 1
        return ShardedCriterion(additive, self.count, self.use_gpu, self.cpus_per_worker), self.count

    def fine_tune(self, model: nn.Module, splits: Splits, recipe: Recipe, device: torch.device,
                  num_workers: int | None) -> TrainResult:
        """:func:`oba.training.train.fine_tune` in this process on ``device`` (its data loaders with ``num_workers``) when
        ``count`` is 1, else as ``count`` data-parallel replicas; ``model`` ends with the kept state."""
        if self.count == 1:
            return fine_tune(model, splits, recipe, device=device, num_workers=num_workers)
        return fine_tune_with_workers(model, splits, recipe, self.count, use_gpu=self.use_gpu,
                                      cpus_per_worker=self.cpus_per_worker)

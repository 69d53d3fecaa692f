"""Scoring with several workers: each sums its shard of the calibration batches, an all-reduce adds them.

For an :class:`~oba.criteria.base.AdditiveCriterion` the scores are a function of
sums over batches (or samples): every worker prepares all the batches
(:meth:`~oba.criteria.base.AdditiveCriterion.prepare`: K-FAC draws its
true-Fisher labels there, as one stream in batch order), worker ``r`` of ``W``
sums the prepared ``batches[r::W]``
(:meth:`~oba.criteria.base.AdditiveCriterion.batch_sums`), the sums and counts
are all-reduced, and every worker finishes the same scores from the totals.
The result equals one process's scores up to the order of floating-point
additions. :func:`score_with_workers` runs this on Ray Train workers
(``TorchTrainer``: gloo on CPUs, NCCL on GPUs), and :func:`fine_tune_with_workers`
fine-tunes as data-parallel replicas (``DistributedDataParallel``, see
:func:`oba.training.train.train`).

Not shardable (they raise ``ValueError``): criteria that are not additive, and
criteria with their own group scores (``taylor2-group``), and ``obd-hutchinson``,
whose probes (k per batch, each the size of the model) are drawn as one stream
over the batches.
"""
from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from oba._lazy import lazy_module
from oba.core.model_calls import Batch, LossFn
from oba.criteria.base import AdditiveCriterion, BatchSums, Criterion, SeededCriterion
from oba.data import Splits
from oba.training.train import Recipe, TrainResult, fine_tune

ray = lazy_module("ray")
ray_train = lazy_module("ray.train")
ray_train_torch = lazy_module("ray.train.torch")

SCORES_FILE, SEEDS_FILE, STATE_FILE, RESULT_FILE = "scores.pt", "seeds.pt", "state.pt", "result.pt"
SHIPPED = ("model", "batches", "criterion", "data")
"""Configuration entries sent to the workers through Ray's object store (put once, read by every worker)."""


def shard(batches: Sequence[Batch], rank: int, world: int) -> list[Batch]:
    """Worker ``rank``'s batches: every ``world``-th batch starting at ``rank``."""
    return list(batches[rank::world])


def check_shardable(criterion: Criterion, batches: int, workers: int) -> AdditiveCriterion:
    """``criterion`` if ``workers`` workers can score it on ``batches`` batches, else ``ValueError`` saying why."""
    name = criterion.name or type(criterion).__name__
    if not isinstance(criterion, AdditiveCriterion):
        raise ValueError(f"criterion {name!r} cannot be scored on shards: its scores are not sums over batches")
    if type(criterion).group_scores is not Criterion.group_scores:
        raise ValueError(f"criterion {name!r} cannot be scored on shards: its group scores are not sums of its parameter scores")
    if batches < workers:
        raise ValueError(f"{workers} workers need at least {workers} calibration batches, got {batches}")
    return criterion


def all_reduce_sums(sums: BatchSums) -> BatchSums:
    """The element-wise sum of every worker's ``sums`` (torch.distributed must be initialised)."""
    tensors = {}
    for name in sorted(sums.tensors):
        total = sums.tensors[name].clone()
        dist.all_reduce(total)
        tensors[name] = total
    count = torch.tensor([float(sums.count)], dtype=torch.float64, device=next(iter(tensors.values())).device)
    dist.all_reduce(count)
    return BatchSums(tensors, count.item())


def sharded_parameter_scores(
    criterion: Criterion, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn
) -> dict[str, Tensor]:
    """This worker's share of :meth:`Criterion.parameter_scores`, combined over the process group; same on every worker."""
    rank, world = dist.get_rank(), dist.get_world_size()
    additive = check_shardable(criterion, len(batches), world)
    local = additive.batch_sums(model, shard(additive.prepare(model, batches, loss_fn), rank, world), loss_fn)
    return additive.scores_from_sums(model, all_reduce_sums(local))


def _score_on_worker(config: dict[str, Any]) -> None:
    """Ray Train loop: score this worker's shard; rank 0 saves the combined scores and the step seeds the criterion
    drew from (a seeded criterion's ``step_seeds``, else none) as the run's checkpoint."""
    device = _worker_device(config)
    model = ray.get(config["model"]).to(device)
    batches = [tuple(t.to(device) for t in batch) for batch in ray.get(config["batches"])]
    criterion = ray.get(config["criterion"])
    scores = sharded_parameter_scores(criterion, model, batches, config["loss_fn"])
    _report_from_rank_zero({SCORES_FILE: {name: t.cpu() for name, t in scores.items()},
                            SEEDS_FILE: dict(getattr(criterion, "step_seeds", {}))})


def _fine_tune_on_worker(config: dict[str, Any]) -> None:
    """Ray Train loop: one replica of a data-parallel fine-tune; rank 0 saves the kept state and the metrics."""
    device = _worker_device(config)
    context = ray_train.get_context()
    model = ray.get(config["model"])
    result = fine_tune(model, ray.get(config["data"]), config["recipe"], device=device, num_workers=config["threads"],
                       replica=(context.get_world_rank(), context.get_world_size()))
    state = {name: t.detach().cpu() for name, t in model.state_dict().items()}
    _report_from_rank_zero({STATE_FILE: state, RESULT_FILE: result.to_dict()})


def _worker_device(config: dict[str, Any]) -> torch.device:
    torch.set_num_threads(max(1, int(config["threads"])))
    return ray_train_torch.get_device()


def _report_from_rank_zero(files: dict[str, Any]) -> None:
    """Every worker reports (Ray Train's barrier); rank 0 attaches ``files`` (torch-saved) as the checkpoint."""
    if ray_train.get_context().get_world_rank() != 0:
        ray_train.report({}, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as folder:
        for name, value in files.items():
            torch.save(value, Path(folder) / name)
        ray_train.report({}, checkpoint=ray_train.Checkpoint.from_directory(folder))


def _run_workers(loop: Any, config: dict[str, Any], workers: int, use_gpu: bool, cpus_per_worker: float,
                 files: Sequence[str]) -> dict[str, Any]:
    """Run ``loop`` on ``workers`` Ray Train workers; return rank 0's checkpoint ``files``, loaded."""
    refs = {key: ray.put(value) for key, value in config.items() if key in SHIPPED}
    with tempfile.TemporaryDirectory(prefix="oba-workers-") as storage:
        trainer = ray_train_torch.TorchTrainer(
            loop,
            train_loop_config={**config, **refs, "threads": cpus_per_worker},
            scaling_config=ray_train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": cpus_per_worker}),
            run_config=ray_train.RunConfig(storage_path=storage, name=f"oba-{uuid.uuid4().hex[:12]}"),
        )
        result = trainer.fit()
        with result.checkpoint.as_directory() as folder:
            return {name: torch.load(Path(folder) / name, weights_only=True) for name in files}


def score_with_workers(
    criterion: Criterion,
    model: nn.Module,
    batches: Sequence[Batch],
    loss_fn: LossFn,
    workers: int,
    *,
    use_gpu: bool = False,
    cpus_per_worker: float = 1,
) -> dict[str, Tensor]:
    """:meth:`Criterion.parameter_scores` computed by ``workers`` Ray Train workers; CPU tensors.

    Needs a running Ray (``ray.init``). The model, batches and criterion travel
    through the object store; each worker scores its shard on its device (its
    CPUs, or one GPU each with ``use_gpu``). A seeded criterion
    (:class:`~oba.criteria.base.SeededCriterion`) records in its ``step_seeds``
    the seeds its workers drew from, as it would scoring in this process.
    """
    check_shardable(criterion, len(batches), workers)
    config = {"model": model, "batches": list(batches), "criterion": criterion, "loss_fn": loss_fn}
    files = _run_workers(_score_on_worker, config, workers, use_gpu, cpus_per_worker, [SCORES_FILE, SEEDS_FILE])
    if isinstance(criterion, SeededCriterion):
        criterion.step_seeds.update(files[SEEDS_FILE])
    return files[SCORES_FILE]


def fine_tune_with_workers(
    model: nn.Module,
    data: Splits,
    recipe: Recipe,
    workers: int,
    *,
    use_gpu: bool = False,
    cpus_per_worker: float = 1,
) -> TrainResult:
    """:func:`oba.training.train.fine_tune` as ``workers`` data-parallel replicas on Ray Train (DDP; gloo on CPUs).

    ``model`` gets the kept state (loaded in place, on its own device). Needs a
    running Ray; each worker uses ``cpus_per_worker`` CPUs as torch threads.
    """
    config = {"model": model, "data": data, "recipe": recipe}
    files = _run_workers(_fine_tune_on_worker, config, workers, use_gpu, cpus_per_worker, [STATE_FILE, RESULT_FILE])
    model.load_state_dict(files[STATE_FILE])
    return TrainResult(**files[RESULT_FILE])

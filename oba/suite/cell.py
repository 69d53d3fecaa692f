"""One cell's pipeline: dense context → score → prune → recalibrate BN → measure → fine-tune → evaluate.

The criterion-independent part (data, dense model, batches, dense latency,
fidelity's ground truth) comes from :mod:`oba.suite.context`, computed once per
dense model and process. ``pruned_acc_raw`` is the test accuracy right after
pruning; ``pruned_acc`` the same after batch-norm statistics were recomputed on
the context's fixed recalibration batches (identical for every criterion; equal
to the raw accuracy when the suite sets ``recalibration_batches = 0`` or the
model has no batch norm). Fine-tuning starts from the recalibrated model.

A criterion that draws random numbers takes the cell's seed as its base seed
(:func:`cell_criterion`); ``criterion_config`` records its options, with the
seed of every pruning step it drew from.

``dense_weights`` is where the dense model's weights came from — ``"trained"``
by the suite's recipe, or the pretrained weights' canonical source (e.g.
``torchvision:ResNet50_Weights.IMAGENET1K_V2``) — and ``dense_weights_sha256``
the SHA-256 of the cached checkpoint file for a trained model, of the weights
file for pretrained ones.

``scoring_seconds`` is the criterion's time over every pruning round;
``scoring_seconds_per_grad`` is the first round (on the dense model) divided by
one plain gradient pass on the same model and calibration batches. Fidelity
compares the dense model's unit scores (the first round's, or for unstructured
cells the sampled weights scored before pruning) with the actual loss change ΔL
of removing each sampled unit alone: ``fidelity`` is Spearman ρ(score, ΔL),
``fidelity_abs`` ρ(score, |ΔL|), and ``fidelity_precision`` the precision of the
``fidelity_k`` lowest-scored sampled units against the ``fidelity_k`` cheapest,
``fidelity_k = max(1, round(sample size × units removed by the first pruning
step ÷ dense units))`` (:func:`oba.ranking_fidelity.first_step_k`).

:func:`run_cell` never raises for a failure inside the cell: it returns a row
with ``status="error"`` and the message, so a failed cell is kept, visible,
and retried on the next run.
"""
from __future__ import annotations

import datetime as dt
import platform
import socket
import time
import traceback
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from .. import criteria as criteria_registry
from ..batches import scoring_context
from ..criteria.base import Criterion, SeededCriterion
from ..ranking_fidelity import FidelityResult, first_step_k, rank_fidelity
from ..measure import measure_latency, timed, warm_up
from ..pruning import PruneRecord, prune
from ..recalibration import recalibrate_batchnorm
from ..train import Recipe, default_device, evaluate, fine_tune
from ..versions import package_versions
from .context import LOSS, DenseContext, dense_context
from .grid import Cell
from .pipelines import PIPELINES


def device_name(device: torch.device) -> str:
    """A human-readable name of the device a cell ran on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu:{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def ray_node() -> str:
    """The Ray node id when running inside Ray, else the host name."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    return socket.gethostname()


def gradient_seconds(model: nn.Module, batches: list[tuple[Tensor, Tensor]], mode: str) -> float:
    """Wall time of one plain gradient pass over ``batches`` (the unit scoring time is reported in).

    Measured after a warm-up pass and with the device synchronised around it
    (:func:`oba.measure.warm_up`, :func:`oba.measure.timed`); leaves the model as it was.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    warm_up(model, batches, LOSS, mode)
    with scoring_context(model, mode), timed(params[0].device) as clock:
        for x, y in batches:
            torch.autograd.grad(LOSS(model(x), y), params)
    return clock.seconds


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def cell_criterion(config: dict[str, Any]) -> Criterion:
    """The cell's criterion, scoring in the cell's mode; one that draws random numbers gets the cell's seed as base seed."""
    criterion = criteria_registry.get(config["criterion"], mode=config["prune"]["mode"], **config["criterion_options"])
    if isinstance(criterion, SeededCriterion):
        criterion.seed = config["seed"]
    return criterion


def _sampled_unit_scores(context: DenseContext, unit_scores: Tensor) -> Tensor:
    """The first pruning round's scores of the units sampled for fidelity."""
    if len(unit_scores) != len(context.fidelity_groups):
        raise RuntimeError(f"pruning scored {len(unit_scores)} units but the dense model has {len(context.fidelity_groups)}")
    return unit_scores[context.fidelity_index]


def _score_sampled_units(context: DenseContext, model: nn.Module, criterion: Criterion, mode: str) -> Tensor:
    """The criterion's scores of the units sampled for fidelity, scored now on ``model``.

    Scored as the first pruning step will score them (step 1, the same random draws).
    """
    sampled = [context.fidelity_groups[i] for i in context.fidelity_index.tolist()]
    criterion.reseed(1)
    with scoring_context(model, mode):
        return criterion.group_scores(model, context.calibration, LOSS, sampled)


def _fidelity(context: DenseContext, sampled_scores: Tensor, record: PruneRecord) -> FidelityResult:
    """Fidelity of the sampled units' scores, with k scaled from the units the first pruning step removed."""
    k = first_step_k(len(context.fidelity_changes), record.first_step_units_removed, record.dense_units)
    return rank_fidelity(sampled_scores, context.fidelity_changes, k)


def _measure(cell: Cell, data_root: str | None, download: bool, cache_dir: str | None, device: torch.device,
             num_workers: int | None) -> dict[str, Any]:
    c = cell.config
    context = dense_context(cell, data_root, download, cache_dir, device, num_workers)
    model = context.fresh_model()
    mode = c["prune"]["mode"]
    criterion = cell_criterion(c)
    grad_seconds = gradient_seconds(model, context.calibration, mode)
    structured = c["structure"] == "channels"
    dense_scores = None if structured else _score_sampled_units(context, model, criterion, mode)
    recalibration = context.recalibration if context.recalibration else None
    pruned, record = prune(
        model, context.example, context.calibration, LOSS, criterion, ratio=c["ratio"], structure=c["structure"],
        steps=c["prune"]["steps"], allocation=c["allocation"], normalisation=c["prune"]["normalisation"],
        layer_cap=c["prune"]["layer_cap"], mode=mode, recalibration=recalibration, dense_macs=context.dense_macs,
    )
    sampled_scores = _sampled_unit_scores(context, record.dense_unit_scores) if structured else dense_scores
    fidelity = _fidelity(context, sampled_scores, record)
    recipe = replace(Recipe.from_dict(c["finetune"]), seed=c["seed"])
    settings = {"precision": recipe.precision, "channels_last": recipe.channels_last, "num_workers": num_workers}
    raw = evaluate(pruned, context.splits.test, **settings)
    recalibrated = raw
    if recalibration is not None and recalibrate_batchnorm(pruned, recalibration):
        recalibrated = evaluate(pruned, context.splits.test, **settings)
    latency_pruned = measure_latency(pruned, context.latency_input, repeats=c["measure"]["latency_repeats"])
    tuned = fine_tune(pruned, context.splits, recipe, device=device, num_workers=num_workers)
    return {
        "dense_weights": context.weights,
        "dense_weights_sha256": context.weights_sha256,
        "dense_acc": context.metadata["test"]["top1"],
        "dense_top5": context.metadata["test"].get("top5"),
        "pruned_acc_raw": raw["top1"],
        "pruned_acc": recalibrated["top1"],
        "final_acc": tuned.test["top1"],
        "final_top5": tuned.test.get("top5"),
        "macs_dense": record.macs_dense,
        "macs_pruned": record.macs_pruned,
        "params_dense": record.params_dense,
        "params_pruned": record.params_pruned,
        "macs_speedup": record.macs_speedup,
        "latency_dense_ms": context.latency_dense_ms,
        "latency_pruned_ms": latency_pruned,
        "latency_speedup": context.latency_dense_ms / latency_pruned,
        "scoring_seconds": record.scoring_seconds,
        "gradient_seconds": grad_seconds,
        "scoring_seconds_per_grad": record.dense_scoring_seconds / grad_seconds,
        "fidelity": fidelity.signed,
        "fidelity_abs": fidelity.abs,
        "fidelity_precision": fidelity.precision,
        "fidelity_k": fidelity.k,
        "layer_widths": record.layer_widths,
        "criterion_config": record.criterion_config,
    }


def run_cell(
    cell: Cell,
    *,
    data_root: str | None = None,
    download: bool = False,
    cache_dir: str | None = None,
    git_sha: str = "unknown",
    device: torch.device | str | None = None,
    num_workers: int | None = None,
) -> dict[str, Any]:
    """Run one cell end to end and return its result row (status "ok" or "error").

    ``num_workers`` (the trial's CPUs) is passed to every data loader the cell makes.
    """
    device = torch.device(device) if device is not None else default_device()
    row = {**cell.identity(), "started_at": _now(), "git_sha": git_sha, "package_versions": package_versions(),
           "device": device_name(device), "ray_node": ray_node()}
    start = time.perf_counter()
    try:
        row.update(_measure(cell, data_root, download, cache_dir, device, num_workers))
        row["status"] = "ok"
    except Exception as err:  # a failed cell is stored, never lost
        row["status"] = "error"
        row["error"] = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-4)}"
    row["compute_seconds"] = time.perf_counter() - start
    row["finished_at"] = _now()
    return row


@PIPELINES.register("full")
class FullPipeline:
    """The benchmark: every cell computed end to end (:func:`run_cell`) from its prepared dense checkpoint."""

    needs_dense = True
    run = staticmethod(run_cell)

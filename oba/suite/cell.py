"""One cell's pipeline: dense context, then per stage score → prune → recalibrate BN → measure → fine-tune → evaluate.

A one-shot cell is one stage, to its ratio. An iterative cell (``[prune]
stages = [s1, …, sK]``, sK its ratio) runs K stages: stage k prunes the
previous stage's fine-tuned model until s_k of the dense MACs are removed
(removing r_k = 1 − (1 − s_k)·M_dense / M_{k−1} of what it starts with), its
layer cap relative to the dense widths and its pruning steps numbered after the
earlier stages' (a randomised criterion draws new numbers). Each stage stores a
row as it ends (:meth:`~oba.suite.cells.Cell.row_id`: the last stage's row is
the cell's), after keeping its fine-tuned model in the checkpoint cache
(:mod:`oba.suite.stage_models`), so an interrupted cell resumes after its last
stage stored "ok". A stage row's accuracies, MACs, latency, scoring time and
layer widths are that stage's; ``macs_dense``/``params_dense`` the dense
model's; fidelity is measured on the dense model (stage 1's first round) and
repeated on every stage's row; ``compute_seconds`` is the stage's own time.

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
step ÷ dense units))`` (:func:`oba.criteria.fidelity.first_step_k`).

A cell with ``workers`` N > 1 (``[resources] workers``) scores a shardable
criterion on N Ray Train workers and fine-tunes each stage as N data-parallel
replicas (:mod:`oba.suite.cell_workers`); its ``criterion_config`` adds
``scored_by_workers``: N, or 1 for a criterion scored in the trial's process.

:func:`run_cell` never raises for a failure inside the cell: it returns a row
with ``status="error"`` and the message, so a failed cell is kept, visible,
and retried on the next run.
"""
from __future__ import annotations

import datetime as dt
import logging
import platform
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from oba import criteria as criteria_registry
from oba._versions import package_versions
from oba.core.measure import count_macs, count_params, gradient_seconds, measure_latency
from oba.core.model_calls import scoring_context
from oba.core.recalibration import recalibrate_batchnorm
from oba.criteria.base import Criterion, SeededCriterion
from oba.criteria.fidelity import FidelityResult, first_step_k, rank_fidelity
from oba.pruning import PruneRecord, prune
from oba.suite.cell_workers import CellWorkers
from oba.suite.cells import Cell
from oba.suite.context import LOSS, DenseContext, dense_context
from oba.suite.pipelines import PIPELINES
from oba.suite.stage_models import StageModelUnusable, load_stage_model, save_stage_model
from oba.training.execution import default_device
from oba.training.train import evaluate


def device_name(device: torch.device) -> str:
    """A human-readable name of the device a cell ran on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu:{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def ray_node() -> str:
    """The Ray node id when running inside Ray, else the host name (a process that has not imported Ray is not
    inside Ray: Ray is not imported for this)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()
    return socket.gethostname()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def cell_criterion(cell: Cell) -> Criterion:
    """The cell's criterion, scoring in the cell's mode, with the suite's reduction and normaliser where it imposes
    them; one that draws random numbers gets the cell's seed as base seed."""
    criterion = criteria_registry.get(cell.criterion, mode=cell.scoring_mode, **cell.criterion_options)
    if isinstance(criterion, SeededCriterion):
        criterion.seed = cell.seed
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


@dataclass
class StageStart:
    """Where a cell's stages begin: ``stage`` on ``model`` (the dense copy for stage 1, else the previous
    stage's fine-tuned model) and, when resuming, the fidelity columns stage 1 measured."""

    stage: int
    model: nn.Module
    fidelity: dict[str, Any] | None = None


FIDELITY_COLUMNS = ("fidelity", "fidelity_abs", "fidelity_precision", "fidelity_k")


def resume_point(cell: Cell, context: DenseContext, cache_dir: str | None, device: torch.device,
                 stored: Callable[[str], dict[str, Any] | None] | None) -> StageStart:
    """After the last earlier stage stored "ok" whose model is kept (:mod:`oba.suite.stage_models`), else stage 1.

    A kept model that cannot be read or does not fit the dense model counts as not kept, with a warning naming it.
    """
    for stage in range(len(cell.stage_ratios) - 1, 0, -1):
        row = stored(cell.row_id(stage)) if stored is not None else None
        if row is None or row.get("status") != "ok":
            continue
        try:
            model = load_stage_model(cache_dir, cell.row_id(stage), context.fresh_model(), device)
        except StageModelUnusable as err:
            logging.getLogger(__name__).warning("stage %d's kept model is not used, the stage runs again: %s",
                                                stage, err)
            continue
        if model is not None:
            return StageStart(stage + 1, model, {k: row[k] for k in FIDELITY_COLUMNS})
    return StageStart(1, context.fresh_model())


def stage_ratio_of_current(dense_macs: int, current_macs: int, target: float) -> float:
    """The fraction of the current model's MACs to remove so that ``target`` of the dense MACs are removed:
    r = 1 − (1 − target) · M_dense / M_current."""
    return 1.0 - (1.0 - target) * dense_macs / current_macs


def _dense_columns(context: DenseContext) -> dict[str, Any]:
    """The columns every row of a dense model shares: where its weights came from, its accuracy and its costs."""
    return {
        "dense_weights": context.weights,
        "dense_weights_sha256": context.weights_sha256,
        "dense_acc": context.metadata["test"]["top1"],
        "dense_top5": context.metadata["test"].get("top5"),
        "macs_dense": context.dense_macs[""],
        "params_dense": count_params(context.model),
        "latency_dense_ms": context.latency_dense_ms,
    }


def _cost_columns(dense: dict[str, Any], record: PruneRecord, latency_pruned: float) -> dict[str, Any]:
    """What the pruned model costs, next to the dense model's costs: MACs, parameters, latency, scoring time, and
    the widths left per layer."""
    return {
        "macs_pruned": record.macs_pruned,
        "params_pruned": record.params_pruned,
        "macs_speedup": dense["macs_dense"] / max(record.macs_pruned, 1),
        "latency_pruned_ms": latency_pruned,
        "latency_speedup": dense["latency_dense_ms"] / latency_pruned,
        "scoring_seconds": record.scoring_seconds,
        "layer_widths": record.layer_widths,
    }


def measure_stages(cell: Cell, data_root: str | None, download: bool, cache_dir: str | None, device: torch.device,
                   num_workers: int | None, stored: Callable[[str], dict[str, Any] | None] | None = None,
                   ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each remaining stage's number and result columns, as the stage ends.

    Stage k prunes its starting model until ``stage_ratios[k-1]`` of the dense
    MACs are gone (its pruning steps numbered after the earlier stages', the
    layer cap relative to the dense widths), recalibrates batch norm, measures,
    fine-tunes with the suite's recipe and evaluates. Before yielding an
    iterative cell's earlier stage, its fine-tuned model is kept in the
    checkpoint cache. Fidelity is measured on the dense model (stage 1's
    first-round scores) and repeated on every stage's row.
    """
    stages = cell.stage_ratios
    first = cell.prune_settings(stages[0])
    if len(stages) > 1 and first.structure != "channels":
        raise ValueError(f"iterative stages apply to structured pruning only, not {first.structure!r}")
    context = dense_context(cell, data_root, download, cache_dir, device, num_workers)
    start = resume_point(cell, context, cache_dir, device, stored)
    model, fidelity_columns = start.model, start.fidelity
    mode = first.mode
    structured = first.structure == "channels"
    recalibration = context.recalibration if context.recalibration else None
    recipe = cell.finetune
    evaluation = {"precision": recipe.precision, "channels_last": recipe.channels_last, "num_workers": num_workers}
    workers = CellWorkers.of(cell.workers, device, num_workers)
    dense_columns = _dense_columns(context)
    macs_dense = dense_columns["macs_dense"]
    for stage in range(start.stage, len(stages) + 1):
        criterion, scored_by = workers.scoring(cell_criterion(cell), len(context.calibration))
        grad_seconds = context.gradient_seconds if stage == 1 else gradient_seconds(model, context.calibration, LOSS, mode)
        dense_scores = None if structured or stage > 1 else _score_sampled_units(context, model, criterion, mode)
        prune_settings = first if stage == 1 else cell.prune_settings(
            stage_ratio_of_current(macs_dense, count_macs(model, context.example), stages[stage - 1]))
        pruned, record = prune(
            model, context.example, context.calibration, LOSS, criterion, prune_settings, recalibration=recalibration,
            dense_macs=context.dense_macs if stage == 1 else None, dense_widths=context.dense_widths if stage > 1 else None,
            first_step=(stage - 1) * prune_settings.steps + 1,
        )
        if fidelity_columns is None:
            sampled_scores = _sampled_unit_scores(context, record.dense_unit_scores) if structured else dense_scores
            fidelity = _fidelity(context, sampled_scores, record)
            fidelity_columns = {"fidelity": fidelity.signed, "fidelity_abs": fidelity.abs,
                                "fidelity_precision": fidelity.precision, "fidelity_k": fidelity.k}
        raw = evaluate(pruned, context.splits.test, **evaluation)
        recalibrated = raw
        if recalibration is not None and recalibrate_batchnorm(pruned, recalibration):
            recalibrated = evaluate(pruned, context.splits.test, **evaluation)
        latency_pruned = measure_latency(pruned, context.latency_input, repeats=cell.measure.latency_repeats)
        tuned = workers.fine_tune(pruned, context.splits, recipe, device, num_workers)
        if stage < len(stages):
            save_stage_model(cache_dir, cell.row_id(stage), pruned)
        yield stage, {
            **dense_columns,
            **_cost_columns(dense_columns, record, latency_pruned),
            "pruned_acc_raw": raw["top1"],
            "pruned_acc": recalibrated["top1"],
            "final_acc": tuned.test["top1"],
            "final_top5": tuned.test.get("top5"),
            "gradient_seconds": grad_seconds,
            "scoring_seconds_per_grad": record.dense_scoring_seconds / grad_seconds,
            **fidelity_columns,
            "criterion_config": record.criterion_config if workers.count == 1
            else {**record.criterion_config, "scored_by_workers": scored_by},
        }
        model = pruned


def run_cell(
    cell: Cell,
    *,
    data_root: str | None = None,
    download: bool = False,
    cache_dir: str | None = None,
    git_sha: str = "unknown",
    device: torch.device | str | None = None,
    num_workers: int | None = None,
    write: Callable[[dict[str, Any]], None] | None = None,
    stored: Callable[[str], dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Run one cell end to end and return its last stage's row (status "ok" or "error").

    ``num_workers`` (the trial's CPUs) is passed to every data loader the cell
    makes. An iterative cell hands each earlier stage's row to ``write`` as the
    stage ends, and resumes after the last earlier stage that ``stored`` (row id
    → stored row or None) says is "ok". A failure at any stage returns the
    cell's row with status "error" and the stage named in the message.
    """
    device = torch.device(device) if device is not None else default_device()
    provenance = {"git_sha": git_sha, "package_versions": package_versions(), "device": device_name(device),
                  "ray_node": ray_node()}
    stage, started = len(cell.stage_ratios), _now()
    clock = time.perf_counter()
    try:
        for stage, columns in measure_stages(cell, data_root, download, cache_dir, device, num_workers, stored):
            row = {**cell.identity(stage), "started_at": started, **provenance, **columns, "status": "ok",
                   "compute_seconds": time.perf_counter() - clock, "finished_at": _now()}
            if stage == len(cell.stage_ratios):
                return row
            if write is not None:
                write(row)
            stage, started, clock = stage + 1, _now(), time.perf_counter()
        raise RuntimeError("the cell ended without its last stage")
    except Exception as err:  # a failed cell is stored, never lost
        where = f"stage {stage}/{len(cell.stage_ratios)}: " if len(cell.stage_ratios) > 1 else ""
        return {**cell.identity(), "started_at": started, **provenance, "status": "error",
                "error": f"{where}{type(err).__name__}: {err}\n{traceback.format_exc(limit=-4)}",
                "compute_seconds": time.perf_counter() - clock, "finished_at": _now()}


@PIPELINES.register("full")
class FullPipeline:
    """The benchmark: every cell computed end to end (:func:`run_cell`) from its prepared dense checkpoint."""

    needs_dense = True
    run = staticmethod(run_cell)

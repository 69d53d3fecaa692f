"""The trial side of a run: what executes inside Ray's workers, one trial (a pack of cells) or dense task at a time.

:func:`run_trial_cells` runs a trial's cells on its device, storing each row as
the cell ends (an iterative cell's earlier stages too) and skipping cells an
earlier attempt stored "ok" (read from their loose part, else from their
partition's compacted files: :class:`~oba.store.results.StoredRows`); :func:`_trial` is
the Ray Tune trainable around it; :func:`_prepare_dense` trains or finds one
dense checkpoint.
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa
import torch

from oba._lazy import lazy_module
from oba.store.results import ResultStore, StoredRows
from oba.suite.cells import Cell
from oba.suite.config import Suite
from oba.suite.pipelines import PIPELINES
from oba.training.checkpoints import dense_checkpoint, dense_source
from oba.training.device_health import DeviceUnusable, cap_memory_share, device_usable, release_cached_memory
from oba.training.execution import deterministic_cublas

ray = lazy_module("ray")
tune = lazy_module("ray.tune")


def trial_device(gpu: float) -> str:
    """The device of a trial or dense task given ``gpu`` GPUs: "cuda" when it has some, else "cpu".

    Explicit because a worker given no GPU may still see CUDA: Ray ≥ 2.49 no
    longer blanks ``CUDA_VISIBLE_DEVICES`` for it.
    """
    return "cuda" if gpu > 0 else "cpu"


def _set_up_process(device: str, gpu: float, threads: int) -> None:
    """Before a trial's or dense task's first computation: on CUDA, cuBLAS's deterministic workspace and the
    process capped at its ``gpu`` share of the GPU's memory; ``threads`` (at least 1) torch threads."""
    if device == "cuda":
        deterministic_cublas()
        cap_memory_share(device, gpu)
    torch.set_num_threads(max(1, threads))


def _stored_row(rows: StoredRows, cell: Cell, row_id: str) -> dict[str, Any] | None:
    """The row stored as ``row_id`` (``cell``, or one of its earlier stages), loose or compacted, or None."""
    try:
        return rows.get(row_id, (cell.suite, cell.model, cell.dataset))
    except (OSError, ValueError, pa.ArrowException):
        return None


def _stored_ok(rows: StoredRows, cell: Cell) -> bool:
    """Whether ``cell`` is stored with status "ok" (what a retried trial skips)."""
    row = _stored_row(rows, cell, cell.cell_id)
    return row is not None and row["status"] == "ok"


def _trial(config: dict[str, Any], trials: list[Any]) -> None:
    """Ray Tune trainable: run the cells of trial ``config["trial"]`` (:func:`run_trial_cells`), then report.

    ``trials`` holds one object reference per trial, to its list of cells.
    """
    ran, ok = run_trial_cells(config, ray.get(trials[config["trial"]]))
    tune.report({"cells_run": ran, "cells_ok": ok})


def run_trial_cells(config: dict[str, Any], cells: list[Cell]) -> tuple[int, int]:
    """Run ``cells`` on ``config["device"]``, storing each row as it ends; return (cells run, cells ok).

    Cells already stored "ok" (by an earlier attempt of this trial) are skipped; an iterative cell stores each
    stage's row as the stage ends and resumes after its last stage stored "ok".
    After a failed cell the device's cached memory is released, and if the
    device is no longer usable :class:`~oba.training.device_health.DeviceUnusable` ends
    the trial, so that Ray replaces its process.
    """
    _set_up_process(config["device"], config["gpu"], int(config["threads"]))
    pipeline = PIPELINES.get(config["pipeline"])
    store = ResultStore(config["results"])
    rows = StoredRows(store)
    ran = ok = 0
    for cell in cells:
        if _stored_ok(rows, cell):
            continue
        row = pipeline.run(cell, data_root=config["data_root"], download=config["download"],
                           cache_dir=config["cache_dir"], git_sha=config["git_sha"], num_workers=config["threads"],
                           device=config["device"], write=store.write,
                           stored=lambda row_id, cell=cell: _stored_row(rows, cell, row_id))
        store.write(row)
        ran += 1
        ok += row["status"] == "ok"
        if row["status"] != "ok":
            release_cached_memory(config["device"])
            if not device_usable(config["device"]):
                raise DeviceUnusable(f"{config['device']} is unusable after the cell failed; this actor is replaced")
    return ran, ok


def _prepare_dense(model: str, dataset: str, seed: int, suite: Suite, cache_dir: str, data_root: str | None,
                   threads: int, device: str) -> str:
    """Ray task: train (or find cached) one dense checkpoint on ``device``; return its path."""
    _set_up_process(device, suite.resources["gpu"], threads)
    ckpt = dense_checkpoint(
        model, dataset, dense_source(suite.dense_for(model, dataset, seed)), seed, cache_dir, dataset_options=suite.data.get("options", {}),
        data_root=data_root, download=suite.data.get("download", False), num_workers=threads, device=device,
    )
    return str(ckpt.path)

"""One trial's pipeline: dense checkpoint → score → prune → measure → fine-tune → evaluate → fidelity.

``scoring_seconds`` is the criterion's time over every pruning round;
``scoring_seconds_per_grad`` is one scoring pass on the dense model divided by
one plain gradient pass on the same model and calibration batches.

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
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .. import criteria as criteria_registry
from .. import data as datasets
from ..checkpoints import dense_checkpoint
from ..criteria.base import scoring_context
from ..fidelity import fidelity
from ..groups import Group, ParamSlice
from ..measure import measure_latency
from ..pruning import find_groups, prune
from ..pruning.unstructured import maskable_weights
from ..train import Recipe, default_device, evaluate, fine_tune
from .grid import Cell

LOSS = nn.functional.cross_entropy
PACKAGES = ("torch", "torchvision", "timm", "torch-pruning", "ray", "numpy", "curvlinops-for-pytorch", "oba-bench")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape a result."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


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


def calibration_batches(train: Dataset, batches: int, batch_size: int, seed: int, device: torch.device) -> list[tuple[Tensor, Tensor]]:
    """``batches`` batches drawn without replacement from the train split, fixed by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    n = min(len(train), batches * batch_size)
    order = torch.randperm(len(train), generator=generator)[:n].tolist()
    torch.manual_seed(seed)
    items = [train[i] for i in order]
    out = []
    for start in range(0, n, batch_size):
        chunk = items[start : start + batch_size]
        inputs = torch.stack([x for x, _ in chunk]).to(device)
        targets = torch.tensor([int(y) for _, y in chunk], device=device)
        out.append((inputs, targets))
    return out


def gradient_seconds(model: nn.Module, batches: list[tuple[Tensor, Tensor]], mode: str) -> float:
    """Wall time of one plain gradient pass over ``batches`` (the unit scoring time is reported in)."""
    params = [p for p in model.parameters() if p.requires_grad]
    with scoring_context(model, mode):
        sync = torch.cuda.synchronize if params[0].is_cuda else (lambda: None)
        sync()
        start = time.perf_counter()
        for x, y in batches:
            torch.autograd.grad(LOSS(model(x), y), params)
        sync()
        return time.perf_counter() - start


def fidelity_groups(model: nn.Module, example: Tensor, structure: str, sample: int, seed: int) -> list[Group]:
    """The groups fidelity is measured on: structured units, or single weights for masks."""
    if structure == "channels":
        _, groups = find_groups(model, example)
        return [u for g in groups for u in g.units]
    generator = torch.Generator().manual_seed(seed)
    weights = maskable_weights(model)
    names = list(weights)
    sizes = torch.tensor([weights[n].numel() for n in names], dtype=torch.float64)
    picks = torch.multinomial(sizes / sizes.sum(), sample, replacement=True, generator=generator).tolist()
    groups = []
    for k, i in enumerate(picks):
        flat = int(torch.randint(weights[names[i]].numel(), (1,), generator=generator))
        groups.append(Group((ParamSlice(names[i], None, torch.tensor([flat])),), label=f"{names[i]}#{flat}#{k}"))
    return groups


def _identity(cell: Cell) -> dict[str, Any]:
    c = cell.config
    return {
        "suite": cell.suite,
        "cell_id": cell.cell_id,
        "model": c["model"],
        "dataset": c["dataset"],
        "criterion": c["criterion"],
        "structure": c["structure"],
        "allocation": c["allocation"],
        "ratio": c["ratio"],
        "seed": c["seed"],
        "config": c,
    }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _measure(cell: Cell, data_root: str | None, download: bool, cache_dir: str | None, device: torch.device) -> dict[str, Any]:
    c = cell.config
    seed = c["seed"]
    splits = datasets.load(c["dataset"], root=data_root, download=download, **c["dataset_options"])
    dense = dense_checkpoint(
        c["model"], c["dataset"], Recipe.from_dict(c["dense"]), seed, cache_dir,
        dataset_options=c["dataset_options"], data=splits, device=device,
    )
    model = dense.model.eval()
    calib = calibration_batches(splits.train, c["calibration"]["batches"], c["calibration"]["batch_size"], seed, device)
    example = calib[0][0][:1]
    latency_input = calib[0][0][:1].expand(c["measure"]["latency_batch_size"], *example.shape[1:]).contiguous()
    mode = c["prune"]["mode"]
    criterion = criteria_registry.get(c["criterion"], mode=mode, **c["criterion_options"])

    grad_seconds = gradient_seconds(model, calib, mode)
    groups = fidelity_groups(model, example, c["structure"], c["measure"]["fidelity_sample"], seed)
    with scoring_context(model, mode):
        start = time.perf_counter()
        group_scores = criterion.group_scores(model, calib, LOSS, groups)
        dense_scoring_seconds = time.perf_counter() - start
        score_fidelity = fidelity(model, calib, LOSS, groups, group_scores, sample=c["measure"]["fidelity_sample"], seed=seed)
    latency_dense = measure_latency(model, latency_input, repeats=c["measure"]["latency_repeats"])

    pruned, record = prune(
        model, example, calib, LOSS, criterion, ratio=c["ratio"], structure=c["structure"], steps=c["prune"]["steps"],
        allocation=c["allocation"], normalisation=c["prune"]["normalisation"], layer_cap=c["prune"]["layer_cap"], mode=mode,
    )
    pruned_metrics = evaluate(pruned, splits.test)
    latency_pruned = measure_latency(pruned, latency_input, repeats=c["measure"]["latency_repeats"])
    tuned = fine_tune(pruned, splits, replace(Recipe.from_dict(c["finetune"]), seed=seed), device=device)
    return {
        "dense_acc": dense.metadata["test"]["top1"],
        "dense_top5": dense.metadata["test"].get("top5"),
        "pruned_acc": pruned_metrics["top1"],
        "final_acc": tuned.test["top1"],
        "final_top5": tuned.test.get("top5"),
        "macs_dense": record.macs_dense,
        "macs_pruned": record.macs_pruned,
        "params_dense": record.params_dense,
        "params_pruned": record.params_pruned,
        "macs_speedup": record.macs_speedup,
        "latency_dense_ms": latency_dense,
        "latency_pruned_ms": latency_pruned,
        "latency_speedup": latency_dense / latency_pruned,
        "scoring_seconds": record.scoring_seconds,
        "gradient_seconds": grad_seconds,
        "scoring_seconds_per_grad": dense_scoring_seconds / grad_seconds,
        "fidelity": score_fidelity,
        "layer_widths": record.layer_widths,
    }


def run_cell(
    cell: Cell,
    *,
    data_root: str | None = None,
    download: bool = False,
    cache_dir: str | None = None,
    git_sha: str = "unknown",
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Run one cell end to end and return its result row (status "ok" or "error")."""
    device = torch.device(device) if device is not None else default_device()
    row = {**_identity(cell), "started_at": _now(), "git_sha": git_sha, "package_versions": package_versions(),
           "device": device_name(device), "ray_node": ray_node()}
    start = time.perf_counter()
    try:
        row.update(_measure(cell, data_root, download, cache_dir, device))
        row["status"] = "ok"
    except Exception as err:  # a failed cell is stored, never lost
        row["status"] = "error"
        row["error"] = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-4)}"
    row["compute_seconds"] = time.perf_counter() - start
    row["finished_at"] = _now()
    return row

"""Small hand-made results tables, written as real Parquet parts through ResultStore."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from oba.store.results import ResultStore

PACKAGES = {"oba-bench": "0.1.0", "torch": "2.14.1", "torch-pruning": "1.6.1"}
START = datetime(2026, 11, 29, 8, 0, tzinfo=timezone.utc)


def cell_id(fields: dict[str, Any]) -> str:
    """A stable id from the identity fields, standing in for the runner's config hash (an iterative cell's
    schedule is part of its identity; a one-shot cell's id is the same with or without the stage columns)."""
    identity = {k: fields.get(k) for k in ("suite", "model", "dataset", "criterion", "structure", "allocation", "ratio", "seed")}
    if fields.get("schedule") not in (None, "one-shot"):
        identity["schedule"] = fields["schedule"]
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def row(**fields: Any) -> dict[str, Any]:
    """A complete ok row; ``fields`` override the defaults (cell_id follows the identity)."""
    base: dict[str, Any] = {
        "suite": "fixture",
        "model": "cnn",
        "dataset": "digits",
        "criterion": "oba",
        "structure": "structured",
        "allocation": "global",
        "ratio": 0.5,
        "seed": 0,
        "status": "ok",
        "error": None,
        "dense_acc": 0.95,
        "pruned_acc": 0.60,
        "final_acc": 0.90,
        "macs_dense": 1_000_000,
        "macs_pruned": 500_000,
        "params_dense": 10_000,
        "params_pruned": 5_000,
        "macs_speedup": 2.0,
        "latency_dense_ms": 2.0,
        "latency_pruned_ms": 1.25,
        "latency_speedup": 1.6,
        "scoring_seconds": 0.4,
        "gradient_seconds": 0.1,
        "scoring_seconds_per_grad": 4.0,
        "fidelity": 0.7,
        "fidelity_abs": 0.8,
        "fidelity_precision": 0.5,
        "fidelity_k": 2,
        "layer_widths": None,
        "compute_seconds": 30.0,
        "git_sha": "0123456789abcdef0123456789abcdef01234567",
        "package_versions": PACKAGES,
        "device": "cpu (2 threads)",
        "ray_node": "node-a",
        "started_at": START,
        "finished_at": START + timedelta(minutes=1),
    }
    base.update(fields)
    base["config"] = {k: base[k] for k in ("model", "dataset", "criterion", "structure", "allocation", "ratio", "seed")}
    if not base.get("cell_id"):
        base["cell_id"] = cell_id(base)
    return base


def error_row(**fields: Any) -> dict[str, Any]:
    """A failed cell: metrics null, status error, a message."""
    failed = row(**fields)
    for name in (
        "pruned_acc", "final_acc", "macs_pruned", "params_pruned", "macs_speedup", "latency_pruned_ms",
        "latency_speedup", "scoring_seconds", "scoring_seconds_per_grad", "fidelity", "fidelity_abs",
        "fidelity_precision", "fidelity_k", "layer_widths",
    ):
        failed[name] = None
    failed["status"] = "error"
    failed["error"] = fields.get("error", "RuntimeError: CUDA out of memory while scoring")
    return failed


def write_store(directory: str | Path, rows: Iterable[dict[str, Any]]) -> str:
    """Write ``rows`` as Parquet parts under ``directory``; return the location."""
    store = ResultStore(str(directory))
    for item in rows:
        store.write(item)
    return str(directory)


_CNN_LAYERS = {"conv1": 16, "layer1.conv": 32, "layer2.conv": 64, "layer3.conv": 64, "fc1": 128}
_VIT_LAYERS = {"blocks.0.attn": 4, "blocks.0.mlp": 192, "blocks.1.attn": 4, "blocks.1.mlp": 192}
# Per criterion, how strongly it prefers removing deep (late) layers: shapes the allocation heatmap.
_DEPTH_BIAS = {"magnitude-l2": 0.2, "oba": 0.9, "taylor": 0.55}


def _widths(layers: dict[str, int], kind_of: dict[str, str], ratio: float, bias: float) -> dict[str, Any]:
    count = len(layers)
    widths = {}
    for index, (name, dense) in enumerate(layers.items()):
        depth = index / max(count - 1, 1)
        share = min(0.9, max(0.0, ratio * (1 - bias + 2 * bias * depth)))
        widths[name] = {"kind": kind_of[name], "dense": dense, "remaining": round(dense * (1 - share))}
    return widths


def report_rows() -> list[dict[str, Any]]:
    """Two settings (a CNN on channels, a ViT on heads/neurons) × 3 criteria × 2 ratios × 2 seeds, one error cell."""
    rows = []
    settings = [
        ("cnn", "digits", _CNN_LAYERS, {name: ("neurons" if name.startswith("fc") else "channels") for name in _CNN_LAYERS}),
        ("vit", "mnist", _VIT_LAYERS, {name: ("heads" if name.endswith("attn") else "neurons") for name in _VIT_LAYERS}),
    ]
    quality = {"magnitude-l2": 0.0, "oba": 0.02, "taylor": 0.012}
    cost = {"magnitude-l2": (0.01, 0.1), "oba": (0.9, 3.2), "taylor": (0.3, 1.05)}
    for model_index, (model, dataset, layers, kinds) in enumerate(settings):
        for criterion in ("magnitude-l2", "oba", "taylor"):
            for ratio in (0.3, 0.6):
                for seed in (0, 1):
                    identity = {"model": model, "dataset": dataset, "criterion": criterion, "ratio": ratio, "seed": seed}
                    if (model, criterion, ratio, seed) == ("cnn", "taylor", 0.6, 1):
                        rows.append(error_row(**identity, error="RuntimeError: scoring diverged (NaN in Hessian-vector product)"))
                        continue
                    noise = 0.004 * (1 if seed else -1)
                    speedup = 1 / (1 - ratio) * (1 + 0.03 * seed)
                    seconds, per_grad = cost[criterion]
                    rows.append(
                        row(
                            **identity,
                            dense_acc=0.962 - 0.01 * model_index + 0.002 * seed,
                            pruned_acc=0.85 - ratio * 0.9 + 3 * quality[criterion] + noise,
                            final_acc=0.955 - 0.12 * ratio ** 2 + quality[criterion] * ratio - 0.01 * model_index + noise,
                            macs_speedup=speedup,
                            latency_speedup=1 + (speedup - 1) * (0.55 + 0.1 * quality[criterion] / 0.02),
                            scoring_seconds=seconds * (1 + ratio) * (1 + 0.1 * seed),
                            gradient_seconds=seconds * (1 + ratio) / per_grad,
                            scoring_seconds_per_grad=per_grad * (1 + 0.05 * seed),
                            fidelity=0.35 + 20 * quality[criterion] + 0.03 * seed,
                            fidelity_abs=0.5 + 10 * quality[criterion] - 0.02 * seed,
                            fidelity_precision=0.2 + ratio / 2 + 5 * quality[criterion] + 0.05 * seed,
                            fidelity_k=round(10 * ratio),
                            layer_widths=json.dumps(_widths(layers, kinds, ratio, _DEPTH_BIAS[criterion])),
                            started_at=START + timedelta(minutes=len(rows)),
                            finished_at=START + timedelta(minutes=len(rows) + 1),
                        )
                    )
    return rows


STAGES = (0.1, 0.2, 0.3)
SCHEDULE = "iterative 0.1/0.2/0.3"
ITERATIVE_CRITERIA = ("magnitude-l2", "oba", "taylor")
_ITERATIVE_QUALITY = {"magnitude-l2": 0.0, "oba": 0.02, "taylor": 0.01}
_SEED_NOISE = {0: -0.004, 1: 0.001, 2: 0.006}


def stage_row(stage: int, **fields: Any) -> dict[str, Any]:
    """Stage ``stage`` (1-based) of an iterative cell pruned through :data:`STAGES`: ``ratio`` the last stage's,
    ``cell_id`` the cell's on the last stage and ``<cell_id>-stage<k>`` before (as ``Cell.row_id`` names them)."""
    cell = row(ratio=STAGES[-1], schedule=SCHEDULE, **fields)
    cell.update(stage=stage, stages=len(STAGES), stage_ratio=STAGES[stage - 1])
    if stage < len(STAGES):
        cell["cell_id"] = f"{cell['cell_id']}-stage{stage}"
    return cell


def iterative_rows() -> list[dict[str, Any]]:
    """cnn/digits, 3 criteria × 3 seeds: pruned iteratively through :data:`STAGES` (one row per stage), and one-shot
    to 0.3 and 0.6. Taylor's seed 2 fails in its last stage (its stages 1 and 2 are ok).

    Stage k of criterion c, seed s: pruned_acc = 0.93 − 0.5·s_k + 2·q_c + e_s and final_acc = 0.955 − 0.1·s_k
    + q_c + e_s, macs_speedup = 1/(1 − s_k); a one-shot cell at ratio r: pruned_acc = 0.85 − 0.9·r + 3·q_c + e_s and
    final_acc = 0.94 − 0.12·r + q_c + e_s (so the one-shot 0.3 cells differ from the iterative ones' last stage).
    Dense accuracy 0.96 + 0.002·s.
    """
    rows = []
    for criterion, quality in _ITERATIVE_QUALITY.items():
        for seed, noise in _SEED_NOISE.items():
            common = {"criterion": criterion, "seed": seed, "dense_acc": 0.96 + 0.002 * seed}
            for stage, share in enumerate(STAGES, start=1):
                if (criterion, seed, stage) == ("taylor", 2, len(STAGES)):
                    failed = error_row(ratio=STAGES[-1], schedule=SCHEDULE, error="RuntimeError: stage 3 diverged",
                                       **common)
                    rows.append({**failed, "stage": stage, "stages": len(STAGES), "stage_ratio": share})
                    continue
                rows.append(stage_row(stage, **common, pruned_acc=0.93 - 0.5 * share + 2 * quality + noise,
                                      final_acc=0.955 - 0.1 * share + quality + noise, macs_speedup=1 / (1 - share)))
            for ratio in (0.3, 0.6):
                rows.append(row(ratio=ratio, **common, pruned_acc=0.85 - 0.9 * ratio + 3 * quality + noise,
                                final_acc=0.94 - 0.12 * ratio + quality + noise, macs_speedup=1 / (1 - ratio)))
    return rows

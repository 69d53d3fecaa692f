"""The grid: a suite expanded into cells, each with a stable ``cell_id``.

``cell_id`` is the SHA-256 (first 20 hex digits) of the canonical JSON of the
cell's full resolved config: everything that can change its result (model,
dataset and its options, criterion and its options, structure, allocation,
ratio, seed, the pruning protocol, calibration, dense recipe or pretrained
weights (source and SHA-256 pin), fine-tuning recipe, measurement settings). The suite's name is not part of it.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

from .config import Suite


@dataclass(frozen=True)
class Cell:
    """One model × dataset × criterion × structure × allocation × ratio × seed trial."""

    suite: str
    cell_id: str
    config: dict[str, Any]

    def label(self) -> str:
        c = self.config
        return f"{c['model']}/{c['dataset']}/{c['criterion']}/{c['structure']}/{c['allocation']}/r={c['ratio']:g}/s={c['seed']}"

    def identity(self) -> dict[str, Any]:
        """The identity columns of this cell's result row (suite, cell_id, the grid axes and the config)."""
        c = self.config
        axes = ("model", "dataset", "criterion", "structure", "allocation", "ratio", "seed")
        return {"suite": self.suite, "cell_id": self.cell_id, **{k: c[k] for k in axes}, "config": c}

    def context_key(self) -> str:
        """What this cell shares with the other cells of its dense context (:mod:`oba.suite.context`): equal keys,
        equal dense model, calibration and recalibration batches, groups and fidelity ground truth."""
        c = self.config
        shared = {k: c[k] for k in ("model", "dataset", "dataset_options", "seed", "structure", "calibration", "dense", "measure")}
        shared.update(mode=c["prune"]["mode"], recalibration=c["prune"]["recalibration_batches"])
        return json.dumps(shared, sort_keys=True)


def cell_id(config: dict[str, Any]) -> str:
    """Stable identity of a resolved cell config."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def dense_config(settings: dict[str, Any]) -> dict[str, Any]:
    """A model's resolved ``[dense]`` settings as a cell records them: without ``weights_download``,
    which decides only whether a missing weights file may be fetched, never the result."""
    return {k: v for k, v in settings.items() if k != "weights_download"}


def expand(suite: Suite) -> list[Cell]:
    """Every cell of the suite, in a deterministic order (models outermost, seeds innermost)."""
    cells = []
    for model, dataset, criterion, structure, allocation, ratio, seed in itertools.product(
        suite.models, suite.datasets, suite.criteria, suite.structures, suite.allocations, suite.ratios, suite.seeds
    ):
        if structure == "unstructured" and allocation != suite.allocations[0]:
            continue
        config = {
            "model": model,
            "dataset": dataset,
            "dataset_options": suite.data.get("options", {}),
            "criterion": criterion,
            "criterion_options": suite.criterion_options.get(criterion, {}),
            "structure": structure,
            "allocation": allocation if structure == "channels" else "global",
            "ratio": ratio,
            "seed": seed,
            "prune": suite.prune,
            "calibration": suite.calibration,
            "dense": dense_config(suite.dense[model]),
            "finetune": suite.finetune[model],
            "measure": suite.measure,
        }
        cells.append(Cell(suite.name, cell_id(config), config))
    return cells


def dense_keys(cells: list[Cell]) -> list[tuple[str, str, int]]:
    """The distinct (model, dataset, seed) dense checkpoints the cells need, in first-use order."""
    seen: dict[tuple[str, str, int], None] = {}
    for cell in cells:
        seen.setdefault((cell.config["model"], cell.config["dataset"], cell.config["seed"]), None)
    return list(seen)

"""The grid: a suite expanded into cells, each with a stable ``cell_id``.

A suite's cells are its main grid's, then each sub-grid's in file order; a
cell that two grids both hold (the same resolved config, so the same id) is
kept once, where it first appears.

``cell_id`` is the SHA-256 (first 20 hex digits) of the canonical JSON of the
cell's full resolved config: everything that can change its result (model,
dataset and its options, criterion and its options, structure, allocation,
ratio, seed, the pruning protocol, calibration, dense recipe or pretrained
weights (source and SHA-256 pin), fine-tuning recipe, measurement settings, and ``workers`` when ``[resources]
workers`` is above 1: replicas fine-tune with batch-norm statistics of their share of each batch, so the result
depends on it). The suite's name is not part of it; a one-worker cell's config has no ``workers`` key, so its id is
what it was before the key existed.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, replace
from typing import Any

from oba.models.weights import Weights
from oba.pruning.settings import PruneSettings
from oba.store.results import EARLIER_STAGE
from oba.suite.config import Suite
from oba.suite.grids import Grid, imposed_options
from oba.training.checkpoints import dense_source
from oba.training.train import Recipe


@dataclass(frozen=True)
class CalibrationSettings:
    """``[calibration]``: the fixed train batches every criterion scores on."""

    batches: int
    batch_size: int


@dataclass(frozen=True)
class MeasureSettings:
    """``[measure]``: the latency input's batch size and repeats, and how many units fidelity samples."""

    latency_batch_size: int
    latency_repeats: int
    fidelity_sample: int


@dataclass(frozen=True)
class Cell:
    """One model × dataset × criterion × structure × allocation × ratio × seed trial.

    ``config`` is the resolved config that ``cell_id`` hashes and every row stores (plain JSON data); stages read it
    through the typed views below (:meth:`prune_settings`, :attr:`finetune`, :attr:`calibration`, :attr:`measure`,
    :attr:`dense`...).
    """

    suite: str
    cell_id: str
    config: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.config["model"])

    @property
    def dataset(self) -> str:
        return str(self.config["dataset"])

    @property
    def criterion(self) -> str:
        return str(self.config["criterion"])

    @property
    def criterion_options(self) -> dict[str, Any]:
        """The criterion's keyword options: the suite's ``[criterion_options]`` for it, then the reduction and
        normaliser the suite's ``[prune]`` imposes on every criterion (where it names one)."""
        return {**self.config["criterion_options"], **imposed_options(self.config["prune"])}

    @property
    def scoring_mode(self) -> str:
        """``[prune] mode``: the train/eval mode criteria score in."""
        return str(self.config["prune"]["mode"])

    @property
    def structure(self) -> str:
        return str(self.config["structure"])

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def dataset_options(self) -> dict[str, Any]:
        """``[data] options``: keywords of the dataset's loader."""
        return dict(self.config["dataset_options"])

    @property
    def dense(self) -> Recipe | Weights:
        """How the dense model is made: trained with a :class:`Recipe`, or loaded from :class:`Weights`."""
        return dense_source(self.config["dense"])

    @property
    def calibration(self) -> CalibrationSettings:
        return CalibrationSettings(**self.config["calibration"])

    @property
    def measure(self) -> MeasureSettings:
        return MeasureSettings(**self.config["measure"])

    @property
    def recalibration_batches(self) -> int:
        """``[prune] recalibration_batches``: batches batch-norm statistics are recomputed on (0: off)."""
        return int(self.config["prune"]["recalibration_batches"])

    @property
    def finetune(self) -> Recipe:
        """The ``[finetune]`` recipe, seeded with the cell's seed."""
        return replace(Recipe.from_dict(self.config["finetune"]), seed=self.seed)

    def label(self) -> str:
        c = self.config
        stages = f" ({len(self.stage_ratios)} stages)" if len(self.stage_ratios) > 1 else ""
        workers = f"/workers={self.workers}" if self.workers > 1 else ""
        return (f"{c['model']}/{c['dataset']}/{c['criterion']}/{c['structure']}/{c['allocation']}/r={c['ratio']:g}"
                f"{stages}/s={c['seed']}{workers}")

    @property
    def workers(self) -> int:
        """Ray Train workers that score (shardable criteria) and fine-tune each stage (``[resources] workers``)."""
        return int(self.config.get("workers", 1))

    @property
    def stage_ratios(self) -> tuple[float, ...]:
        """The fractions of dense MACs removed after each stage: ``[prune] stages`` for an iterative cell, else
        just the cell's ratio (a one-shot cell is one stage)."""
        return tuple(self.config.get("prune", {}).get("stages") or (self.config["ratio"],))

    def schedule(self) -> str:
        """"one-shot", or "iterative " and the stage ratios joined by "/" (e.g. "iterative 0.1/0.2/0.3")."""
        stages = self.stage_ratios
        return "one-shot" if len(stages) == 1 else "iterative " + "/".join(f"{s:g}" for s in stages)

    def row_id(self, stage: int) -> str:
        """The stored id of stage ``stage``'s row (1-based): the last stage's row is the cell's own ``cell_id``
        (so a cell is finished when its last stage is stored "ok"), an earlier one ``<cell_id>-stage<k>``."""
        if not 1 <= stage <= len(self.stage_ratios):
            raise ValueError(f"stage {stage} outside 1..{len(self.stage_ratios)}")
        return self.cell_id if stage == len(self.stage_ratios) else f"{self.cell_id}{EARLIER_STAGE}{stage}"

    def prune_settings(self, ratio: float) -> PruneSettings:
        """The pruning settings of a stage that removes ``ratio`` of the MACs of the model it starts from."""
        c, prune = self.config, self.config["prune"]
        return PruneSettings(ratio=ratio, structure=c["structure"], steps=prune["steps"], allocation=c["allocation"],
                             normalisation=prune["normalisation"], layer_cap=prune["layer_cap"], mode=prune["mode"])

    def row_ids(self) -> list[str]:
        """The ids of every row the cell stores, one per stage (:meth:`row_id`)."""
        return [self.row_id(stage) for stage in range(1, len(self.stage_ratios) + 1)]

    def identity(self, stage: int | None = None) -> dict[str, Any]:
        """The identity columns of the result row of stage ``stage`` (the last when None): suite, the row's id,
        the grid axes, the stage, its ratio and the schedule, and the config."""
        c = self.config
        stages = self.stage_ratios
        stage = len(stages) if stage is None else stage
        axes = ("model", "dataset", "criterion", "structure", "allocation", "ratio", "seed")
        return {"suite": self.suite, "cell_id": self.row_id(stage), **{k: c[k] for k in axes}, "stage": stage,
                "stages": len(stages), "stage_ratio": stages[stage - 1], "schedule": self.schedule(), "config": c}

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


def expand_grid(suite: Suite, grid: Grid) -> list[Cell]:
    """Every cell of one of the suite's grids, in a deterministic order (models outermost, seeds innermost)."""
    cells = []
    for model, dataset, criterion, structure, allocation, ratio, seed in itertools.product(
        grid.models, grid.datasets, grid.criteria, grid.structures, grid.allocations, grid.ratios, grid.seeds
    ):
        if structure == "unstructured" and allocation != grid.allocations[0]:
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
            "prune": grid.prune,
            "calibration": suite.calibration,
            "dense": dense_config(suite.dense_for(model, dataset, seed)),
            "finetune": suite.finetune[model],
            "measure": suite.measure,
        }
        if suite.resources.get("workers", 1) > 1:
            config["workers"] = suite.resources["workers"]
        cells.append(Cell(suite.name, cell_id(config), config))
    return cells


def expand(suite: Suite) -> list[Cell]:
    """Every cell of the suite: each grid's (:func:`expand_grid`) in turn, a cell id seen before left out."""
    cells: dict[str, Cell] = {}
    for grid in suite.grids:
        for cell in expand_grid(suite, grid):
            cells.setdefault(cell.cell_id, cell)
    return list(cells.values())


def dense_keys(cells: list[Cell]) -> list[tuple[str, str, int]]:
    """The distinct (model, dataset, seed) dense checkpoints the cells need, in first-use order."""
    seen: dict[tuple[str, str, int], None] = {}
    for cell in cells:
        seen.setdefault((cell.model, cell.dataset, cell.seed), None)
    return list(seen)

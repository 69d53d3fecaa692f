"""Score snapshots: every criterion's scores on committed fixtures, compared with a committed snapshot.

Accuracy cannot see a change of a criterion that keeps quality, and pruning
outcomes carry fine-tuning noise; scores on fixed inputs carry only float noise.
A snapshot holds, for each fixture (a golden dense model, :mod:`oba.training.dense_fixtures`,
and its fixed calibration batches: the suite's number of batches, of
:data:`BATCH_SIZE` samples, drawn by the suite's code with the fixture's seed) and each criterion:

* ``param``: the per-parameter scores (:meth:`Criterion.parameter_scores`) of
  :data:`PER_TENSOR` evenly spaced elements of every parameter tensor;
* ``units``: the per-unit group scores, with the criterion's own reduction
  (:meth:`Criterion.group_scores`), over every prunable unit of the dense model;
* ``normalised``: each layer's unit scores divided by the criterion's own
  normaliser, the values the ``global`` allocation ranks together;
* ``lowest``: the k = ⌈10 %⌉ units those values rank lowest;
* ``compensation``: the update the criterion makes to the surviving weights
  when those k units go (K-FAC OBS; absent for criteria without one), sampled
  as ``param``.
* ``pruned``: one real pruning step (:func:`oba.prune`) of a copy of the model
  to 10 % of the MACs removed — global allocation, the criterion's normaliser,
  layer cap 0.5, batch-norm recalibration on fixed batches, the criterion's
  update of the survivors — as the widths left per layer and the pruned
  model's loss on the calibration batches. It covers the machinery between
  scores and a pruned model, which accuracy alone sees only through noise.

Everything is computed in float64, on the CPU, in the suite's scoring mode,
seeded as the first pruning step (a randomised criterion's base seed is the
fixture's seed). :func:`oba.report.snapshot_check.check_snapshot` recomputes them and compares each
tensor with the snapshot: Spearman ρ ≥ 1 − ε and relative L2 ‖a − b‖/‖b‖ ≤ τ;
the k lowest units and the pruned widths must be the same. ε and τ (:data:`TOLERANCES`) are
set from the float noise measured across emulated CPUs (``benchmarks/README.md``,
"Score snapshots"). The calibration batches are drawn by the suite's own code;
their SHA-256 is part of the snapshot, so a change of that code is named too.

Files (a folder): ``snapshot.json`` (format, fixtures, criteria and their
options and configs, tolerances, unit labels) and ``scores.safetensors`` (every
tensor, keyed ``<fixture>/<criterion>/<quantity>[/<parameter>]``). Neither
format can run code.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from oba import criteria as registry
from oba import data, models
from oba.core.model_calls import scoring_context
from oba.core.recalibration import recalibrate_batchnorm
from oba.criteria.base import Criterion, SeededCriterion
from oba.criteria.registry import CRITERIA
from oba.models.weights import Weights, load_weights
from oba.pruning import prune
from oba.pruning.allocation import normalise
from oba.pruning.dependency_groups import PrunableGroup, find_groups
from oba.pruning.structured import removed_masks
from oba.suite.cells import dense_keys, expand
from oba.suite.context import draw_batches

LOSS = torch.nn.functional.cross_entropy

SNAPSHOT_JSON = "snapshot.json"
SCORES_FILE = "scores.safetensors"
DEFAULT_FOLDER = "results/reference/snapshot"
FORMAT = 1
LOWEST_FRACTION = 0.1
PRUNE_LAYER_CAP = 0.5
REQUIRED = ("units", "normalised", "lowest", "pruned/widths", "pruned/loss")
"""The quantities every criterion has in a snapshot (``param`` and ``compensation`` are per parameter)."""
BATCH_SIZE = 16
PER_TENSOR = 128
RESOLUTION = 1e-10
"""Ranks are compared at this fraction of a quantity's largest magnitude (:func:`_spearman`)."""
"""Per-parameter scores kept per parameter tensor (evenly spaced elements; every unit's score aggregates them all)."""
"""Samples per calibration batch of a snapshot (the suite's number of batches, each this small: seconds, not minutes)."""
TOLERANCES = {"spearman": 1e-8, "rel_l2": 1e-8}
"""ε (1 − Spearman ρ) and τ (relative L2): the largest float64 noise measured across four CPU kernel mixes was
1.1e-16 and 6.1e-12 (``benchmarks/README.md``, "Score snapshots"); τ is 1,600 times that, far below what any mutant moved."""


@dataclass(frozen=True)
class SnapshotFixture:
    """A golden dense model and how its calibration batches are drawn."""

    name: str
    model: str
    dataset: str
    dataset_options: dict[str, Any]
    weights: str
    weights_sha256: str
    seed: int
    batches: int
    batch_size: int
    mode: str


@dataclass
class Prepared:
    """A fixture ready to score: its float64 model, batches, prunable groups and the batches' SHA-256."""

    model: nn.Module
    batches: list[tuple[Tensor, Tensor]]
    recalibration: list[tuple[Tensor, Tensor]]
    groups: list[PrunableGroup]
    batches_sha256: str

    @property
    def labels(self) -> list[str]:
        return [u.label for g in self.groups for u in g.units]


def fixtures_of_suite(suite: Any) -> list[SnapshotFixture]:
    """One fixture per (model, dataset) of the suite whose dense model is pinned: its lowest seed's."""
    out: dict[tuple[str, str], SnapshotFixture] = {}
    for model, dataset, seed in sorted(dense_keys(expand(suite)), key=lambda k: k[2]):
        settings = suite.dense_for(model, dataset, seed)
        if (model, dataset) in out or "weights" not in settings or not settings.get("weights_sha256"):
            continue
        out[(model, dataset)] = SnapshotFixture(
            name=f"{model}-{dataset}", model=model, dataset=dataset, dataset_options=suite.data.get("options", {}),
            weights=settings["weights"], weights_sha256=settings["weights_sha256"], seed=seed,
            batches=suite.calibration["batches"], batch_size=BATCH_SIZE,
            mode=suite.grids[0].prune["mode"])
    return list(out.values())


def _batches_digest(batches: Sequence[tuple[Tensor, Tensor]]) -> str:
    digest = hashlib.sha256()
    for x, y in batches:
        digest.update(x.to(torch.float32).contiguous().numpy().tobytes())
        digest.update(y.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def prepare(fixture: SnapshotFixture) -> Prepared:
    """Load the fixture's pinned weights (SHA-256 checked) into a float64 model on the CPU and draw its calibration
    and recalibration batches with the suite's code (:func:`oba.suite.context.draw_batches`)."""
    splits = data.load(fixture.dataset, **fixture.dataset_options)
    info = splits.info
    model = models.create(fixture.model, info.num_classes, info.in_chans, info.image_size)
    load_weights(model, fixture.model, Weights(fixture.weights, fixture.weights_sha256), f"fixture {fixture.name}")
    model = model.double().eval()
    drawn = draw_batches(splits.train, (fixture.batches, fixture.batches), fixture.batch_size, fixture.seed,
                         torch.device("cpu"))
    digest = _batches_digest(drawn[0] + drawn[1])
    batches, recalibration = ([(x.double(), y) for x, y in run] for run in drawn)
    _, groups = find_groups(model, batches[0][0][:1])
    return Prepared(model, batches, recalibration, groups, digest)


def build_criterion(name: str, options: dict[str, Any], fixture: SnapshotFixture) -> Criterion:
    """The criterion as the first pruning step of a cell with the fixture's seed builds it."""
    criterion = registry.get(name, mode=fixture.mode, **options)
    if isinstance(criterion, SeededCriterion):
        criterion.seed = fixture.seed
    criterion.reseed(1)
    return criterion


def _normalised(criterion: Criterion, unit_scores: Tensor, groups: Sequence[PrunableGroup]) -> Tensor:
    """Each layer's unit scores divided by the criterion's own normaliser: what the global allocation ranks."""
    sizes = [len(g) for g in groups]
    return torch.cat([normalise(chunk.double(), criterion.normaliser) for chunk in torch.split(unit_scores, sizes)])


def _lowest(flat: Tensor, groups: Sequence[PrunableGroup]) -> tuple[Tensor, dict[str, list[int]]]:
    """The indices (into all units) of the k lowest normalised unit scores ``flat``, and the same per group."""
    sizes = [len(g) for g in groups]
    k = max(1, math.ceil(LOWEST_FRACTION * len(flat)))
    lowest = torch.sort(torch.sort(flat, stable=True).indices[:k]).values
    ends = torch.tensor(sizes).cumsum(0)
    chosen: dict[str, list[int]] = {}
    for index in lowest.tolist():
        g = int(torch.searchsorted(ends, index, right=True))
        chosen.setdefault(groups[g].name, []).append(index - int(ends[g]) + sizes[g])
    return lowest, chosen


def score_fixture(criterion: Criterion, prepared: Prepared) -> dict[str, Tensor]:
    """Every snapshot quantity of ``criterion`` on a prepared fixture (float64, CPU), keyed ``<quantity>[/<param>]``."""
    model, batches = prepared.model, prepared.batches
    units = [u for g in prepared.groups for u in g.units]
    with scoring_context(model, criterion.mode):
        params = criterion.parameter_scores(model, batches, LOSS)
    criterion.reseed(1)
    criterion.parameter_scores = lambda *_: params  # group_scores reduces these instead of scoring again
    try:
        with scoring_context(model, criterion.mode):
            unit_scores = criterion.group_scores(model, batches, LOSS, units).double().cpu()
    finally:
        del criterion.parameter_scores
    normalised = _normalised(criterion, unit_scores, prepared.groups)
    lowest, chosen = _lowest(normalised, prepared.groups)
    criterion.reseed(1)
    with scoring_context(model, criterion.mode):
        update = criterion.compensation(model, batches, LOSS, removed_masks(model, prepared.groups, chosen))
    out = {f"param/{name}": _sampled(s) for name, s in params.items()}
    out["units"] = unit_scores.contiguous()
    out["normalised"] = normalised.contiguous()
    out["lowest"] = lowest.to(torch.int64)
    out.update({f"compensation/{name}": _sampled(u) for name, u in update.items()})
    out.update(_pruned(criterion, prepared, unit_scores))
    return out


def _pruned(criterion: Criterion, prepared: Prepared, unit_scores: Tensor) -> dict[str, Tensor]:
    """One real pruning step of a copy of the model (:func:`oba.prune`: ``global`` allocation, the criterion's own
    normaliser, the criterion's update of the survivors) to :data:`LOWEST_FRACTION` of the MACs removed, then
    batch-norm recalibration as a cell does: the widths left per layer, and the pruned model's loss on the
    calibration batches.

    The step's scores are ``unit_scores`` (what it would compute again: same model, batches and seed)."""
    pruned = copy.deepcopy(prepared.model)
    criterion.reseed(1)
    criterion.group_scores = lambda *_: unit_scores
    try:
        pruned, record = prune(pruned, prepared.batches[0][0][:1], prepared.batches, LOSS, criterion,
                               ratio=LOWEST_FRACTION, steps=1, layer_cap=PRUNE_LAYER_CAP, mode=criterion.mode,
                               recalibration=prepared.recalibration)
    finally:
        del criterion.group_scores
    recalibrate_batchnorm(pruned, prepared.recalibration)
    with torch.no_grad(), scoring_context(pruned, "eval"):
        loss = sum(float(LOSS(pruned(x), y)) for x, y in prepared.batches) / len(prepared.batches)
    widths = [int(record.layer_widths[name]["remaining"]) for name in sorted(record.layer_widths)]
    return {"pruned/widths": torch.tensor(widths, dtype=torch.int64),
            "pruned/loss": torch.tensor([loss], dtype=torch.float64)}


def _sampled(values: Tensor) -> Tensor:
    """At most :data:`PER_TENSOR` elements of ``values``, evenly spaced over its flat index (float64, CPU)."""
    flat = values.detach().double().cpu().flatten()
    if flat.numel() <= PER_TENSOR:
        return flat.contiguous()
    return flat[torch.linspace(0, flat.numel() - 1, PER_TENSOR, dtype=torch.float64).round().long()].contiguous()


def default_criteria() -> list[str]:
    """The built-in criteria (plugins are snapshotted on request, by name)."""
    return sorted(CRITERIA.builtins())


def write_snapshot(suite: Any, folder: str | Path, names: Sequence[str] | None = None) -> Path:
    """Score every criterion in ``names`` (default: every built-in) on the suite's pinned fixtures, write the folder."""
    fixtures = fixtures_of_suite(suite)
    if not fixtures:
        raise ValueError(f"suite {suite.name} pins no dense model ([dense] fixtures): a snapshot needs fixed weights")
    names = list(names) if names else default_criteria()
    tensors: dict[str, Tensor] = {}
    payload: dict[str, Any] = {"format": FORMAT, "torch": torch.__version__, "tolerances": TOLERANCES,
                               "lowest_fraction": LOWEST_FRACTION, "fixtures": [], "criteria": {}}
    for name in names:
        options = dict(suite.criterion_options.get(name, {}))
        payload["criteria"][name] = {"options": options}
    for fixture in fixtures:
        prepared = prepare(fixture)
        payload["fixtures"].append({**asdict(fixture), "batches_sha256": prepared.batches_sha256,
                                    "units": prepared.labels})
        for name in names:
            criterion = build_criterion(name, payload["criteria"][name]["options"], fixture)
            payload["criteria"][name]["config"] = plain(criterion.config())
            for key, value in score_fixture(criterion, prepared).items():
                tensors[f"{fixture.name}/{name}/{key}"] = value
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target / SCORES_FILE))
    (target / SNAPSHOT_JSON).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return target


def plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples as lists), so configs compare equal after a round trip."""
    return json.loads(json.dumps(value))

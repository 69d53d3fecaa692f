"""``oba.prune``: one call from a dense model to a pruned one, with a record of what it cost."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from torch import Tensor, nn

from oba import criteria as criteria_registry
from oba.core.measure import count_macs, count_params
from oba.core.model_calls import Batch, LossFn
from oba.criteria.base import Criterion
from oba.pruning.settings import PruneSettings
from oba.pruning.structured import prune_structured
from oba.pruning.unstructured import prune_unstructured


@dataclass
class PruneRecord:
    """What a pruning run did: costs before and after, and where capacity was removed.

    ``first_step_units_removed`` counts the units (channels, neurons, heads; or
    weights when unstructured) removed by the first pruning step, on the dense model.
    """

    criterion: str
    structure: str
    ratio: float
    steps: int
    allocation: str
    normalisation: str
    layer_cap: float
    mode: str
    macs_dense: int
    macs_pruned: int
    params_dense: int
    params_pruned: int
    scoring_seconds: float
    dense_scoring_seconds: float = 0.0
    first_step_units_removed: int = 0
    recalibration_batches: int = 0
    layer_widths: dict[str, dict[str, Any]] = field(default_factory=dict)
    criterion_config: dict[str, Any] = field(default_factory=dict)
    masks: dict[str, Tensor] | None = field(default=None, repr=False)
    dense_unit_scores: Tensor | None = field(default=None, repr=False)

    @property
    def macs_speedup(self) -> float:
        """Dense MACs ÷ pruned MACs."""
        return self.macs_dense / max(self.macs_pruned, 1)

    @property
    def dense_units(self) -> int:
        """Units of the dense model: the sum of ``layer_widths``' dense counts."""
        return sum(int(width["dense"]) for width in self.layer_widths.values())

    @property
    def macs_removed(self) -> float:
        """Fraction of dense MACs removed."""
        return 1.0 - self.macs_pruned / self.macs_dense

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (masks and unit scores left out)."""
        out = asdict(self)
        out.pop("masks")
        out.pop("dense_unit_scores")
        out["macs_speedup"] = self.macs_speedup
        return out


def prune(
    model: nn.Module,
    example_inputs: Any,
    batches: Sequence[Batch],
    loss_fn: LossFn,
    criterion: str | Criterion = "oba",
    settings: PruneSettings | None = None,
    *,
    ignored_layers: Sequence[nn.Module] = (),
    criterion_options: dict[str, Any] | None = None,
    recalibration: Sequence[Batch] | None = None,
    dense_macs: dict[str, int] | None = None,
    dense_widths: dict[str, int] | None = None,
    first_step: int = 1,
    **changes: Any,
) -> tuple[nn.Module, PruneRecord]:
    """Prune ``model`` **in place** as ``settings`` say and return it with a :class:`PruneRecord`.

    ``settings`` (:class:`~oba.pruning.settings.PruneSettings`, default: its defaults) with ``changes`` applied,
    e.g. ``prune(..., ratio=0.3, steps=2)``. ``structure="channels"`` removes channels, MLP neurons and attention
    heads (coupled groups from Torch-Pruning's dependency graph) until ``ratio`` of the dense MACs is gone;
    ``"unstructured"`` masks ``ratio`` of Conv/Linear weights. ``normalisation="criterion"`` divides each layer's
    unit scores the way the criterion's authors do (``criterion.normaliser``); another name imposes that
    normaliser. Scoring runs in ``mode`` ("eval" or "train") on ``batches``, also for a criterion passed as an
    instance (its own mode is restored afterwards). ``recalibration`` batches, when given, recompute batch-norm
    statistics before every round after the first (the statistics after the last round are left to the caller:
    see :func:`oba.core.recalibration.recalibrate_batchnorm`). ``dense_macs``,
    :func:`oba.core.measure.macs_by_module` of ``model`` as given, saves counting them when the caller has them.
    MACs are counted only where the structure changed: masks change no shape, so an unstructured run's pruned
    MACs are its dense MACs. For an iterative stage on an already pruned model (structured only),
    ``dense_widths`` keeps ``layer_cap`` relative to the dense model's widths and ``first_step`` numbers the
    stage's pruning steps after the earlier stages' (:func:`~oba.pruning.structured.prune_structured`).
    """
    settings = PruneSettings.with_changes(settings, changes)
    if isinstance(criterion, str):
        criterion = criteria_registry.get(criterion, mode=settings.mode, **(criterion_options or {}))
    elif criterion_options:
        raise ValueError("criterion_options apply only when the criterion is given by name")
    params_dense = count_params(model)
    with criterion.scoring_in(settings.mode):
        if settings.structure == "channels":
            outcome = prune_structured(
                model, example_inputs, batches, loss_fn, criterion, settings, ignored_layers=ignored_layers,
                recalibration=recalibration, dense_macs=dense_macs, dense_widths=dense_widths, first_step=first_step,
            )
            params_pruned = count_params(model)
        else:
            if dense_widths is not None or first_step != 1:
                raise ValueError("iterative stages apply to structured pruning only")
            macs = dense_macs[""] if dense_macs is not None else count_macs(model, example_inputs)
            outcome = prune_unstructured(model, batches, loss_fn, criterion, settings, macs, recalibration=recalibration)
            params_pruned = count_params(model, nonzero=True)
        criterion_config = criterion.config()
    return model, PruneRecord(
        criterion=criterion.name,
        structure=settings.structure,
        ratio=settings.ratio,
        steps=settings.steps,
        allocation=settings.allocation,
        normalisation=settings.normaliser(criterion.normaliser),
        layer_cap=settings.layer_cap,
        mode=settings.mode,
        macs_dense=outcome.macs_dense,
        macs_pruned=outcome.macs_pruned,
        params_dense=params_dense,
        params_pruned=params_pruned,
        scoring_seconds=outcome.scoring_seconds,
        dense_scoring_seconds=outcome.dense_scoring_seconds,
        first_step_units_removed=outcome.first_step_units_removed,
        recalibration_batches=len(recalibration) if recalibration is not None else 0,
        layer_widths=outcome.layer_widths,
        criterion_config=criterion_config,
        masks=outcome.masks,
        dense_unit_scores=outcome.dense_unit_scores,
    )

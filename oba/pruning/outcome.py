"""What one pruning run measured, as structured and unstructured pruning both return it to :func:`oba.prune`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class PruneOutcome:
    """MACs before and after; ``scoring_seconds`` over every round (compensation included) and
    ``dense_scoring_seconds`` of the first (on the dense model); the units (or weights) the first round removed;
    ``layer_widths``: group name → kind, dense and remaining units, in the model's module order. Structured runs
    keep the first round's unit scores (``dense_unit_scores``, one per unit of the dense model's groups, in their
    order), unstructured ones their ``masks`` (True: kept)."""

    macs_dense: int
    macs_pruned: int
    scoring_seconds: float
    dense_scoring_seconds: float
    first_step_units_removed: int
    layer_widths: dict[str, dict[str, Any]]
    dense_unit_scores: Tensor | None = field(default=None, repr=False)
    masks: dict[str, Tensor] | None = field(default=None, repr=False)

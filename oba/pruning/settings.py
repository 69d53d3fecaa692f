"""How a model is pruned, as one frozen record: everything but the criterion, the data and the model.

The defaults below are the only ones: :func:`oba.prune` and the suite files (``[prune]``, :mod:`oba.suite.grids`)
read them from here.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from oba.pruning.allocation import NORMALISERS

STRUCTURES = ("channels", "unstructured")
ALLOCATIONS = ("global", "uniform")


@dataclass(frozen=True)
class PruneSettings:
    """Remove ``ratio`` of the dense MACs (channels) or of the Conv/Linear weights (unstructured) in ``steps``
    scoring rounds.

    ``allocation`` spreads a round's removals over layers (``global``: lowest normalised scores anywhere;
    ``uniform``: the same fraction per layer); ``normalisation`` divides each layer's scores before a global
    comparison (``criterion``: as the criterion's authors do); no layer loses more than ``layer_cap`` of its dense
    units; scoring runs in ``mode``. A structured round stops within ``tolerance`` of its MACs target after at most
    ``max_rounds`` picks. Invalid values raise ``ValueError`` naming the valid ones.
    """

    ratio: float = 0.5
    structure: str = "channels"
    steps: int = 5
    allocation: str = "global"
    normalisation: str = "criterion"
    layer_cap: float = 0.9
    mode: str = "eval"
    tolerance: float = 0.005
    max_rounds: int = 8

    def __post_init__(self) -> None:
        if self.structure not in STRUCTURES:
            raise ValueError(f"unknown structure {self.structure!r}; valid: {', '.join(STRUCTURES)}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"unknown allocation {self.allocation!r}; valid: {', '.join(ALLOCATIONS)}")
        if self.normalisation != "criterion" and self.normalisation not in NORMALISERS:
            raise ValueError(f"unknown normalisation {self.normalisation!r}; "
                             f"valid: criterion, {', '.join(sorted(NORMALISERS))}")
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"ratio must be in [0, 1), got {self.ratio}")
        if not 0.0 < self.layer_cap < 1.0:
            raise ValueError(f"layer_cap must be in (0, 1), got {self.layer_cap}")
        if self.steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {self.steps}")

    @classmethod
    def with_changes(cls, base: PruneSettings | None, changes: dict[str, Any]) -> PruneSettings:
        """``base`` (default: the defaults) with ``changes`` applied; an unknown name raises ``ValueError``."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise ValueError(f"unknown pruning setting {unknown[0]!r}; valid: {', '.join(names)}")
        return cls(**{**{name: getattr(base or cls(), name) for name in names}, **changes})

    def normaliser(self, criterion_normaliser: str) -> str:
        """The normaliser this run divides by: the criterion's own for ``"criterion"``, else the one named."""
        return criterion_normaliser if self.normalisation == "criterion" else self.normalisation


DEFAULTS = PruneSettings()
"""The default settings (their fields are the defaults of :func:`oba.prune` and of a suite's ``[prune]``)."""

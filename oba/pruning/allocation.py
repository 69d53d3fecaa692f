"""How many units each group loses in one pruning round.

Both policies see, per group, the current unit scores, the estimated MACs each
unit removes, and how many units the group may still lose (the per-layer cap);
they return the unit indices to remove so that the estimated MACs removed come
as close to ``budget`` as whole units allow.

- ``global``: units of every group ranked together by *normalised* score
  (``score / normaliser(|group scores|)``), lowest removed first. The normaliser
  sees magnitudes, so signed scores keep their sign and order (for the usual
  non-negative scores ``|s| = s``). The caller normalises once per pruning step
  (:func:`normalise_groups`, from every unit's score at the step's start) and
  hands the same normalised values to every correction round of that step, so
  the exchange rate between groups is fixed within a step (normalising the
  survivors again would move it).
- ``uniform``: every group's removed fraction of dense width rises together;
  the lowest-scored units within each group go.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

NORMALISERS: dict[str, Callable[[Tensor], Tensor]] = {
    "none": lambda s: torch.ones((), dtype=s.dtype),
    "mean": lambda s: s.mean(),
    "max": lambda s: s.max(),
    "sum": lambda s: s.sum(),
    "l2": lambda s: s.norm(),
    "released-max": lambda s: s.max() + 1e-6,
}
"""``released-max`` is the released OBA code's ``max`` normaliser: the maximum plus 1e-6."""


@dataclass
class GroupState:
    """What the allocator knows about one group this round.

    ``scores`` are the remaining units' scores as the policy ranks them: for
    ``global``, normalised at the start of the step (:func:`normalise_groups`).
    """

    scores: Tensor
    unit_macs: Tensor
    dense_units: int
    removable: int


def normalise(scores: Tensor, how: str) -> Tensor:
    """``scores / normaliser(|scores|)`` (a zero normaliser leaves scores unchanged)."""
    if how not in NORMALISERS:
        raise ValueError(f"unknown normalisation {how!r}; valid: {', '.join(sorted(NORMALISERS))}")
    if scores.numel() == 0:
        return scores
    denom = NORMALISERS[how](scores.abs())
    return scores / denom if float(denom) > 0 else scores


def normalise_groups(scores: dict[str, Tensor], how: str) -> dict[str, Tensor]:
    """Each group's scores divided by its normaliser: ``s_u / normaliser(s_G)`` over all of G's units."""
    return {name: normalise(s.double(), how) for name, s in scores.items()}


def allocate_global(states: dict[str, GroupState], budget: float) -> dict[str, list[int]]:
    """Lowest (already normalised) scores across all groups until the estimated MACs reach ``budget``."""
    candidates: list[tuple[float, str, int]] = []
    for name, st in states.items():
        candidates += [(float(st.scores[i]), name, i) for i in range(len(st.scores))]
    candidates.sort()
    return _take(candidates, states, budget)


def _take(candidates: list[tuple[float, str, int]], states: dict[str, GroupState], budget: float) -> dict[str, list[int]]:
    """Take candidates in order, within each group's cap, while that brings the estimate closer to ``budget``.

    Stops at the first candidate whose cost would overshoot the budget by more
    than the shortfall of stopping; no candidate is skipped for being large.
    """
    chosen: dict[str, list[int]] = {name: [] for name in states}
    removed = 0.0
    for _, name, unit in candidates:
        if len(chosen[name]) >= states[name].removable:
            continue
        cost = float(states[name].unit_macs[unit])
        if removed + cost - budget > budget - removed:
            break
        chosen[name].append(unit)
        removed += cost
    return chosen


def allocate_uniform(states: dict[str, GroupState], budget: float) -> dict[str, list[int]]:
    """Raise every group's removed fraction of dense width together until the estimated MACs reach ``budget``.

    The r-th lowest-scored remaining unit of a group is keyed by the fraction of
    dense width removed once it goes, ``(already + r + 1) / dense``; units are
    taken in key order, so all groups advance in step and, within a group, the
    lowest scores go first.
    """
    candidates: list[tuple[float, str, int]] = []
    for name, st in states.items():
        already = st.dense_units - len(st.scores)
        order = torch.argsort(st.scores, stable=True)[: st.removable].tolist()
        candidates += [((already + rank + 1) / st.dense_units, name, unit) for rank, unit in enumerate(order)]
    candidates.sort()
    return _take(candidates, states, budget)

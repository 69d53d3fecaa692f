"""Board statistics: criteria ranked per setting, with statistical ties (rendering lives in :mod:`.leaderboard`).

A *board* is one (model, dataset, structure, allocation, ratio, schedule) and
one metric; allocation is part of the key because global and uniform allocation
are different experiments, the schedule because an iterative setting ending at a
ratio is not the one-shot setting at that ratio. A board compares each cell's
final row (:func:`.stages.final_rows`: an iterative cell's last stage). Two metrics get boards (:data:`BOARD_METRICS`): the
accuracy after fine-tuning, and the accuracy right after pruning with
batch-norm statistics recalibrated (before any fine-tuning: the purest signal of
a criterion). On a board, each criterion's accuracy is summarised over its
``ok`` seeds; the board also shows the dense models' accuracy, and says in words
when it has fewer than :data:`MIN_SEEDS` seeds or cannot separate any criterion.

Tie method (deterministic, no resampling):

* Criteria are compared **paired by seed**: every criterion of a board starts
  from the same dense checkpoint per seed (docs/protocol.md), so the per-seed
  difference removes checkpoint-to-checkpoint variation.
* With n ≥ 2 seeds that both criteria completed, A and B are **tied** when the
  two-sided 95 % Student-t interval of the mean paired difference,
  d̄ ± t(0.975, n−1) · s_d / √n, contains 0, or when |d̄| is below ``MARGIN``
  (0.5 percentage points): with few seeds and accuracies on a finite test set,
  per-seed differences can coincide (s_d = 0) and collapse the interval onto a
  difference of one or two test images, which is no evidence of an order. The t interval is used rather than
  a bootstrap because suites have few seeds (2–5): a percentile bootstrap over
  2–3 pairs has only a handful of distinct resamples and under-covers, while the
  t interval is exact under normal differences and widens honestly as n shrinks.
* With a measured noise band (the reference's ``band.json``: per setting σ, the
  spread of its seed mean across CPUs, :mod:`oba.report.band`), A and B are also
  tied when |d̄| < ``NOISE_Z`` · √(σ_A² + σ_B²): a difference that a change of
  CPU could produce is not an order, and boards that ignore it rank differently
  on another machine.
* With fewer than 2 shared seeds there is no estimate of seed noise: A and B are
  tied when their difference is less than ``MARGIN`` (0.5 percentage points) —
  the paired difference on the one shared seed, or with no shared seed the
  difference of their means.
* Ranking: criteria are sorted by mean accuracy (descending, name breaks
  exact equality). Groups are formed from the top: the best criterion not yet
  placed leads a group, and *every* criterion not yet placed that is tied with
  that leader joins it, wherever it sits in the order (a criterion is tied with
  the board's leader exactly when its interval to the leader contains 0 or is
  within the margin; a clearly separated criterion between them does not break
  that). Comparing with the leader rather than the previous criterion keeps
  chains (A≈B, B≈C, but A clearly above C) from merging criteria that are
  distinguishable. Every member of a group gets the competition rank
  1 + (number of criteria in earlier groups); a group of two or more is shown as ``=r``.
* Criteria with no ``ok`` seed on a board are listed without a rank.
* :func:`overall`: per criterion, the mean of its competition ranks over the
  boards where it was ranked, with the number of such boards and of the boards
  it led *alone* (a tie for first is not a win). The leaderboard shows these
  counts beside the ranks across boards of :mod:`.across` (mean rank of the
  exact means, Friedman test, Nemenyi's critical difference), and the mean
  competition rank only for criteria that :mod:`.across` leaves out.
* Each criterion's mean also carries a 95 % percentile bootstrap interval over
  its seeds (:func:`bootstrap_interval`); with 2–3 seeds it has only a handful of
  distinct resamples and is shown for reference, not used for ties.

Beside the ranking, a board shows each criterion's fidelity on the dense model,
means over its ``ok`` seeds: Spearman ρ of its scores with the signed loss change
of removing each sampled unit, with its absolute value, and P@k (precision of the
k lowest-scored units against the k truly cheapest) with the k used.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from oba.report.band import Band, setting_key
from oba.report.stages import ONE_SHOT, final_rows, schedule_suffix

BOARD_KEYS = ("model", "dataset", "structure", "allocation", "ratio", "schedule")
BOARD_METRICS = {
    "final_acc": "after fine-tuning",
    "pruned_acc": "after pruning, batch-norm recalibrated, before fine-tuning",
}
CONFIDENCE = 0.95
MARGIN = 0.005
NOISE_Z = 2.0
MIN_SEEDS = 3
BOARD_COLUMNS = (
    "criterion", "seed", "status", "dense_acc", "macs_speedup", "latency_speedup", "scoring_seconds",
    "scoring_seconds_per_grad", "fidelity", "fidelity_abs", "fidelity_precision", "fidelity_k",
)
"""The columns a board reads besides its keys and its metric."""
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Comparison:
    """Paired comparison of two criteria's final accuracy (fractions; a − b)."""

    n_pairs: int
    difference: float
    low: float
    high: float
    tied: bool


def compare(a: pd.Series, b: pd.Series, margin: float = MARGIN) -> Comparison:
    """Compare accuracies (fractions) indexed by seed, ``a − b``; tied per the module's rule.

    ``margin`` (a fraction, at least :data:`MARGIN`) is the difference below which
    the two are tied whatever their interval says.
    """
    shared = a.index.intersection(b.index)
    if len(shared) >= 2:
        differences = (a.loc[shared] - b.loc[shared]).astype(float)
        n = len(differences)
        mean = float(differences.mean())
        half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * float(differences.std(ddof=1)) / math.sqrt(n)
        return Comparison(n, mean, mean - half, mean + half, mean - half <= 0.0 <= mean + half or abs(mean) < margin)
    if len(shared) == 1:
        difference = float(a.loc[shared[0]] - b.loc[shared[0]])
    else:
        difference = float(a.mean() - b.mean())
    return Comparison(len(shared), difference, math.nan, math.nan, abs(difference) < margin)


@dataclass(frozen=True)
class Entry:
    """One criterion on one board. ``rank`` is None when the criterion has no ok seed."""

    criterion: str
    rank: int | None
    tied: bool
    mean: float
    std: float
    seeds: int
    interval: tuple[float, float]
    failed: int
    to_leader: Comparison | None
    macs_speedup: float
    latency_speedup: float
    scoring_seconds: float
    scoring_per_grad: float
    fidelity: float
    fidelity_abs: float
    fidelity_precision: float
    fidelity_k: tuple[int, ...]

    @property
    def rank_label(self) -> str:
        """``"3"``, ``"=2"`` for a tie, ``"–"`` when unranked."""
        if self.rank is None:
            return "–"
        return f"={self.rank}" if self.tied else str(self.rank)


@dataclass(frozen=True)
class Board:
    """The ranked criteria of one (model, dataset, structure, allocation, ratio, schedule) on one metric."""

    model: str
    dataset: str
    structure: str
    allocation: str
    ratio: float
    entries: list[Entry]
    metric: str = "final_acc"
    dense_mean: float = math.nan
    dense_std: float = math.nan
    dense_seeds: int = 0
    schedule: str = ONE_SHOT

    @property
    def notes(self) -> list[str]:
        """What the board cannot tell, in words (empty when its order is evidence)."""
        ranked = [e for e in self.entries if e.rank is not None]
        out = []
        seeds = max((e.seeds for e in ranked), default=0)
        if ranked and seeds < MIN_SEEDS:
            out.append(f"Only {seeds} seed(s): too few to estimate seed noise well; read this order as anecdote.")
        if len(ranked) > 1 and all(e.rank == 1 for e in ranked):
            out.append("Every criterion is tied with the leader: the seeds cannot separate any of them on this board.")
        return out

    @property
    def dense_label(self) -> str:
        """The dense models' accuracy over seeds, e.g. ``dense 96.53 ± 0.31 % (3 seeds)``."""
        if math.isnan(self.dense_mean):
            return "dense accuracy unknown"
        spread = "" if math.isnan(self.dense_std) else f" ± {self.dense_std * 100:.2f}"
        return f"dense {self.dense_mean * 100:.2f}{spread} % ({self.dense_seeds} seed{'s' if self.dense_seeds != 1 else ''})"

    @property
    def key(self) -> tuple[str, str, str, str, float, str]:
        """``(model, dataset, structure, allocation, ratio, schedule)``."""
        return (self.model, self.dataset, self.structure, self.allocation, self.ratio, self.schedule)

    @property
    def title(self) -> str:
        """``model · dataset · structure · allocation allocation · ratio r%[, iterative s1/…/sK]``."""
        parts = [self.model, self.dataset, self.structure]
        if self.allocation:
            parts.append(f"{self.allocation} allocation")
        parts.append(f"ratio {self.ratio * 100:g}%{schedule_suffix(self.schedule)}")
        return " · ".join(p for p in parts if p)


Margin = Callable[[str, str], float]
"""The tie margin (a fraction) of two criteria on one board."""


def fixed_margin(a: str, b: str) -> float:
    """:data:`MARGIN` for every pair (no measured noise band)."""
    return MARGIN


def noise_margin(band: Band, board_key: tuple, metric: str) -> Margin:
    """``max(MARGIN, NOISE_Z · √(σ_a² + σ_b²))`` with σ from ``band`` (a criterion without one counts σ = 0)."""

    def sigma(criterion: str) -> float:
        model, dataset, structure, allocation, ratio, schedule = board_key
        key = setting_key({"model": model, "dataset": dataset, "criterion": criterion, "structure": structure,
                           "allocation": allocation, "ratio": ratio, "schedule": schedule, "stage_ratio": ratio})
        value = band.sigma(key, metric)
        return 0.0 if value is None else value / 100.0

    return lambda a, b: max(MARGIN, NOISE_Z * math.hypot(sigma(a), sigma(b)))


def rank(accuracies: dict[str, pd.Series], margin: Margin = fixed_margin) -> dict[str, tuple[int, bool]]:
    """``criterion → (competition rank, tied)`` from per-seed accuracies, by the module's rule."""
    remaining = sorted(accuracies, key=lambda name: (-float(accuracies[name].mean()), name))
    ranks: dict[str, tuple[int, bool]] = {}
    placed = 0
    while remaining:
        leader = accuracies[remaining[0]]
        group = [remaining[0]] + [
            name for name in remaining[1:] if compare(leader, accuracies[name], margin(remaining[0], name)).tied
        ]
        for name in group:
            ranks[name] = (placed + 1, len(group) > 1)
        placed += len(group)
        remaining = [name for name in remaining if name not in group]
    return ranks


def bootstrap_interval(values: pd.Series, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (seeded: the same on every run); NaNs below 2 values."""
    data = np.asarray(values, dtype=float)
    if len(data) < 2:
        return (math.nan, math.nan)
    if np.all(data == data[0]):
        return (float(data[0]), float(data[0]))
    result = stats.bootstrap(
        (data,), np.mean, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    return (float(result.confidence_interval.low), float(result.confidence_interval.high))


def _mean(rows: pd.DataFrame, column: str) -> float:
    values = rows[column].dropna()
    return float(values.mean()) if not values.empty else math.nan


def _board(key: tuple, rows: pd.DataFrame, metric: str, band: Band | None) -> Board:
    ok = rows[(rows["status"] == "ok") & rows[metric].notna()]
    accuracies = {
        name: group.groupby("seed")[metric].mean() for name, group in ok.groupby("criterion", sort=True)
    }
    margin = noise_margin(band, key, metric) if band is not None else fixed_margin
    ranks = rank(accuracies, margin)
    leader = min(ranks, key=lambda name: (ranks[name][0], -float(accuracies[name].mean()), name)) if ranks else None
    entries = []
    for criterion, group in rows.groupby("criterion", sort=True):
        done = ok[ok["criterion"] == criterion]
        seeds = accuracies.get(criterion)
        position = ranks.get(criterion)
        entries.append(
            Entry(
                criterion=criterion,
                rank=position[0] if position else None,
                tied=position[1] if position else False,
                mean=float(seeds.mean()) if seeds is not None else math.nan,
                std=float(seeds.std(ddof=1)) if seeds is not None and len(seeds) > 1 else math.nan,
                seeds=len(seeds) if seeds is not None else 0,
                interval=bootstrap_interval(seeds) if seeds is not None else (math.nan, math.nan),
                failed=int(len(group) - len(done)),
                to_leader=compare(seeds, accuracies[leader], margin(criterion, leader))
                if seeds is not None and criterion != leader else None,
                macs_speedup=_mean(done, "macs_speedup"),
                latency_speedup=_mean(done, "latency_speedup"),
                scoring_seconds=_mean(done, "scoring_seconds"),
                scoring_per_grad=_mean(done, "scoring_seconds_per_grad"),
                fidelity=_mean(done, "fidelity"),
                fidelity_abs=_mean(done, "fidelity_abs"),
                fidelity_precision=_mean(done, "fidelity_precision"),
                fidelity_k=tuple(sorted({int(k) for k in done["fidelity_k"].dropna()})),
            )
        )
    entries.sort(key=lambda e: (e.rank is None, e.rank or 0, -e.mean if not math.isnan(e.mean) else 0.0, e.criterion))
    model, dataset, structure, allocation, ratio, schedule = key
    dense = rows[rows["dense_acc"].notna()].groupby("seed")["dense_acc"].mean()
    return Board(
        str(model), str(dataset), str(structure), str(allocation), float(ratio), entries, metric=metric,
        dense_mean=float(dense.mean()) if len(dense) else math.nan,
        dense_std=float(dense.std(ddof=1)) if len(dense) > 1 else math.nan, dense_seeds=len(dense),
        schedule=str(schedule),
    )


def boards(results: pd.DataFrame, metric: str = "final_acc", band: Band | None = None) -> list[Board]:
    """Every board of a normalised results table for ``metric`` (a key of :data:`BOARD_METRICS`), in key order.

    Only each cell's final row counts (an iterative cell's last stage). Boards on
    which no cell has the metric (e.g. recalibrated accuracy in results older than
    schema version 2) are left out. With ``band`` (the measured noise
    of the suite's reference), ties also absorb machine noise (module docstring).
    """
    if metric not in BOARD_METRICS:
        raise ValueError(f"unknown board metric {metric!r}; valid: {', '.join(BOARD_METRICS)}")
    used = [*BOARD_KEYS, *BOARD_COLUMNS, metric]
    out = []
    for key, rows in final_rows(results)[list(dict.fromkeys(used))].groupby(list(BOARD_KEYS), sort=True, dropna=False):
        if rows[metric].notna().any() or not (rows["status"] == "ok").any():
            out.append(_board(key, rows, metric, band))
    return out


def overall(ranked: list[Board]) -> pd.DataFrame:
    """Per criterion: mean rank over the boards it was ranked on, boards ranked, boards led alone, failed cells."""
    records: dict[str, dict[str, list | int]] = {}
    for board in ranked:
        for entry in board.entries:
            record = records.setdefault(entry.criterion, {"ranks": [], "wins": 0, "failed": 0})
            if entry.rank is not None:
                record["ranks"].append(entry.rank)
                record["wins"] += entry.rank == 1 and not entry.tied
            record["failed"] += entry.failed
    table = pd.DataFrame(
        [
            {
                "criterion": name,
                "mean_rank": float(sum(r["ranks"]) / len(r["ranks"])) if r["ranks"] else math.nan,
                "boards": len(r["ranks"]),
                "sole_first_places": r["wins"],
                "failed_cells": r["failed"],
            }
            for name, r in records.items()
        ],
        columns=["criterion", "mean_rank", "boards", "sole_first_places", "failed_cells"],
    )
    return table.sort_values(["mean_rank", "criterion"], na_position="last").reset_index(drop=True)



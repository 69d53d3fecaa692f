"""Leaderboard: criteria ranked per setting, with statistical ties, as HTML and Markdown.

A *board* is one (model, dataset, structure, allocation, ratio) and one metric;
allocation is part of the key because global and uniform allocation are
different experiments. Two metrics get boards (:data:`BOARD_METRICS`): the
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
* Overall table: per criterion, the mean of its competition ranks over the
  boards where it was ranked, with the number of such boards.

Beside the ranking, a board shows each criterion's fidelity on the dense model,
means over its ``ok`` seeds: Spearman ρ of its scores with the signed loss change
of removing each sampled unit, with its absolute value, and P@k (precision of the
k lowest-scored units against the k truly cheapest) with the k used.
"""
from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
from scipy import stats

from .band import Band, setting_key
from .load import load_results
from .provenance import provenance

BOARD_KEYS = ("model", "dataset", "structure", "allocation", "ratio")
BOARD_METRICS = {
    "final_acc": "after fine-tuning",
    "pruned_acc": "after pruning, batch-norm recalibrated, before fine-tuning",
}
CONFIDENCE = 0.95
MARGIN = 0.005
NOISE_Z = 2.0
MIN_SEEDS = 3

METHOD = (
    "Ranked by mean top-1 test accuracy over seeds, on two kinds of boards: after fine-tuning, and right after "
    "pruning with batch-norm statistics recalibrated (before any fine-tuning). Two criteria are tied when the "
    "95% paired Student-t interval of their per-seed accuracy difference contains 0 (pairs are seeds that "
    "both completed; every criterion of a seed starts from the same dense checkpoint), or when their mean "
    f"difference is below {MARGIN * 100:.1f} percentage points. With fewer than 2 shared "
    f"seeds there is no noise estimate: criteria are tied when they differ by less than {MARGIN * 100:.1f} "
    "percentage points (on the one shared seed, or in their means when they share none). Groups are "
    "formed from the top: every criterion tied with the best criterion not yet placed joins its group, wherever it "
    "sits in the order. Ranks are competition ranks (1, =2, =2, 4); '=r' marks a tie. "
    "When the results come with a measured noise band (the reference's band.json), two criteria are also tied "
    f"when their mean difference is below {NOISE_Z:g}·√(σ_A² + σ_B²), σ being each setting's measured spread of its "
    "seed mean across CPUs: a difference a change of machine could produce is not an order. "
    "'Δ to #1' is the paired mean difference to the board's leader with its 95% interval, in percentage points. "
    "The overall rank is the mean rank over the boards where a criterion was ranked. "
    "Fidelity columns (means over seeds, on the dense model's sampled units): Spearman ρ of the score with the "
    "signed loss change of removing the unit alone, ρ with its absolute value, and P@k, the share of the k "
    "lowest-scored units among the k truly cheapest (k: the share of units the first pruning step removed, "
    "applied to the sample). "
    f"A board with fewer than {MIN_SEEDS} seeds, or on which every criterion is tied, says so: its order is not evidence."
)


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
    """The ranked criteria of one (model, dataset, structure, allocation, ratio) on one metric."""

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
    def title(self) -> str:
        """``model · dataset · structure · allocation allocation · ratio r%``."""
        parts = [self.model, self.dataset, self.structure]
        if self.allocation:
            parts.append(f"{self.allocation} allocation")
        parts.append(f"ratio {self.ratio * 100:g}%")
        return " · ".join(p for p in parts if p)


Margin = Callable[[str, str], float]
"""The tie margin (a fraction) of two criteria on one board."""


def fixed_margin(a: str, b: str) -> float:
    """:data:`MARGIN` for every pair (no measured noise band)."""
    return MARGIN


def noise_margin(band: Band, board_key: tuple, metric: str) -> Margin:
    """``max(MARGIN, NOISE_Z · √(σ_a² + σ_b²))`` with σ from ``band`` (a criterion without one counts σ = 0)."""

    def sigma(criterion: str) -> float:
        model, dataset, structure, allocation, ratio = board_key
        key = setting_key({"model": model, "dataset": dataset, "criterion": criterion, "structure": structure,
                           "allocation": allocation, "ratio": ratio})
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
    model, dataset, structure, allocation, ratio = key
    dense = rows[rows["dense_acc"].notna()].groupby("seed")["dense_acc"].mean()
    return Board(
        str(model), str(dataset), str(structure), str(allocation), float(ratio), entries, metric=metric,
        dense_mean=float(dense.mean()) if len(dense) else math.nan,
        dense_std=float(dense.std(ddof=1)) if len(dense) > 1 else math.nan, dense_seeds=len(dense),
    )


def boards(results: pd.DataFrame, metric: str = "final_acc", band: Band | None = None) -> list[Board]:
    """Every board of a normalised results table for ``metric`` (a key of :data:`BOARD_METRICS`), in key order.

    Boards on which no cell has the metric (e.g. recalibrated accuracy in results
    older than schema version 2) are left out. With ``band`` (the measured noise
    of the suite's reference), ties also absorb machine noise (module docstring).
    """
    if metric not in BOARD_METRICS:
        raise ValueError(f"unknown board metric {metric!r}; valid: {', '.join(BOARD_METRICS)}")
    out = []
    for key, rows in results.groupby(list(BOARD_KEYS), sort=True, dropna=False):
        if rows[metric].notna().any() or not (rows["status"] == "ok").any():
            out.append(_board(key, rows, metric, band))
    return out


def overall(ranked: list[Board]) -> pd.DataFrame:
    """Per criterion: mean rank over the boards it was ranked on, boards ranked, boards won, failed cells."""
    records: dict[str, dict[str, list | int]] = {}
    for board in ranked:
        for entry in board.entries:
            record = records.setdefault(entry.criterion, {"ranks": [], "failed": 0})
            if entry.rank is not None:
                record["ranks"].append(entry.rank)
            record["failed"] += entry.failed
    table = pd.DataFrame(
        [
            {
                "criterion": name,
                "mean_rank": float(sum(r["ranks"]) / len(r["ranks"])) if r["ranks"] else math.nan,
                "boards": len(r["ranks"]),
                "first_places": sum(1 for value in r["ranks"] if value == 1),
                "failed_cells": r["failed"],
            }
            for name, r in records.items()
        ],
        columns=["criterion", "mean_rank", "boards", "first_places", "failed_cells"],
    )
    return table.sort_values(["mean_rank", "criterion"], na_position="last").reset_index(drop=True)


def _num(value: float, spec: str, scale: float = 1.0) -> str:
    return "–" if value is None or math.isnan(value) else format(value * scale, spec)


def _accuracy(entry: Entry) -> str:
    if math.isnan(entry.mean):
        return "–"
    spread = "" if math.isnan(entry.std) else f" ± {entry.std * 100:.2f}"
    return f"{entry.mean * 100:.2f}{spread}"


def _delta(entry: Entry) -> str:
    comparison = entry.to_leader
    if comparison is None:
        return "leader" if entry.rank is not None else "–"
    interval = "" if math.isnan(comparison.low) else f" [{comparison.low * 100:+.2f}, {comparison.high * 100:+.2f}]"
    return f"{comparison.difference * 100:+.2f}{interval}"


def _precision(entry: Entry) -> str:
    """Mean P@k with the k used, e.g. ``0.667 (k=3)``; a range of k when seeds differ (``k=3–4``)."""
    if math.isnan(entry.fidelity_precision):
        return "–"
    ks = entry.fidelity_k
    k = "" if not ks else f" (k={ks[0]})" if len(ks) == 1 else f" (k={ks[0]}–{ks[-1]})"
    return f"{entry.fidelity_precision:.3f}{k}"


BOARD_HEADERS = [
    "rank",
    "criterion",
    "accuracy (%) mean ± std",
    "seeds",
    "failed",
    "Δ to #1 (pp) [95% CI]",
    "MACs speedup (×)",
    "latency speedup (×)",
    "scoring (s)",
    "scoring (× grad)",
    "fidelity ρ (signed ΔL)",
    "fidelity ρ (|ΔL|)",
    "P@k (k)",
]
OVERALL_HEADERS = ["criterion", "mean rank", "boards ranked", "first places", "failed cells"]


def board_rows(board: Board) -> list[list[str]]:
    """A board as table cells under :data:`BOARD_HEADERS`."""
    return [
        [
            e.rank_label,
            e.criterion,
            _accuracy(e),
            str(e.seeds),
            str(e.failed),
            _delta(e),
            _num(e.macs_speedup, ".2f"),
            _num(e.latency_speedup, ".2f"),
            _num(e.scoring_seconds, ".3g"),
            _num(e.scoring_per_grad, ".3g"),
            _num(e.fidelity, ".3f"),
            _num(e.fidelity_abs, ".3f"),
            _precision(e),
        ]
        for e in board.entries
    ]


def overall_rows(table: pd.DataFrame) -> list[list[str]]:
    """The overall table as cells under :data:`OVERALL_HEADERS`."""
    return [
        [r.criterion, _num(r.mean_rank, ".2f"), str(r.boards), str(r.first_places), str(r.failed_cells)]
        for r in table.itertuples(index=False)
    ]


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), "|" + "|".join("---" for _ in headers) + "|"] + [line(r) for r in rows])


def _html_table(headers: list[str], rows: list[list[str]], css: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return (
        f'<div class="scroll"><table class="{css}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _sections(results: pd.DataFrame, band: Band | None) -> list[tuple[str, str, list[Board]]]:
    """(metric, heading, boards) for every board metric that has boards, fine-tuned first."""
    out = []
    for metric, label in BOARD_METRICS.items():
        ranked = boards(results, metric, band)
        if ranked:
            out.append((metric, f"Accuracy {label}", ranked))
    return out


def _facts(results: pd.DataFrame, band: Band | None) -> list[tuple[str, str]]:
    """Provenance, and the noise band the ties use, as ``(label, value)`` pairs."""
    noise = (f"measured on {len(band.machines)} machines ({', '.join(band.machines)}), {band.created}; "
             f"ties within {NOISE_Z:g}·√(σ_A² + σ_B²)") if band is not None else "none (ties from seed noise only)"
    return [*provenance(results).items(), ("Noise band", noise)]


def render_markdown(results: pd.DataFrame, band: Band | None = None) -> str:
    """The leaderboard of a normalised results table as Markdown (ties absorb ``band``'s machine noise when given)."""
    lines = ["# Pruning criteria leaderboard", ""]
    lines += [f"- **{label}**: {value}" for label, value in _facts(results, band)]
    lines += ["", "## Method", "", METHOD, ""]
    for _, heading, ranked in _sections(results, band):
        lines += [f"## {heading}", "", "### Overall", ""]
        lines += [_markdown_table(OVERALL_HEADERS, overall_rows(overall(ranked))), ""]
        for board in ranked:
            lines += [f"### {board.title}", "", f"{board.dense_label}.", ""]
            lines += [f"> {note}" for note in board.notes] + ([""] if board.notes else [])
            lines += [_markdown_table(BOARD_HEADERS, board_rows(board)), ""]
    return "\n".join(lines)


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1300px; padding: 20px 24px; color: #222; }
h1 { font-size: 26px; } h2 { font-size: 19px; margin-top: 28px; border-bottom: 2px solid #d0d4da; padding-bottom: 3px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 3px 16px; font-size: 14px; }
dt { color: #666; } dd { margin: 0; font-family: ui-monospace, monospace; }
.method { background: #f6f7f9; border-left: 4px solid #4e79a7; padding: 8px 14px; font-size: 14px; line-height: 1.45; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border: 1px solid #dde1e6; padding: 4px 10px; text-align: right; white-space: nowrap; }
th { background: #eef1f5; }
td:nth-child(2), th:nth-child(2) { text-align: left; }
table.overall td:first-child, table.overall th:first-child { text-align: left; }
table.overall td:nth-child(2), table.overall th:nth-child(2) { text-align: right; }
.scroll { overflow-x: auto; }
.dense { color: #555; font-size: 14px; margin: 4px 0; }
.note { background: #fff6e5; border-left: 4px solid #e49444; padding: 4px 12px; font-size: 14px; margin: 6px 0; }
"""


def _html_board(board: Board) -> str:
    notes = "".join(f'<p class="note">{html.escape(note)}</p>' for note in board.notes)
    return (
        f"<section><h3>{html.escape(board.title)}</h3><p class=\"dense\">{html.escape(board.dense_label)}</p>{notes}"
        f"{_html_table(BOARD_HEADERS, board_rows(board), 'board')}</section>"
    )


def render_html(results: pd.DataFrame, band: Band | None = None) -> str:
    """The leaderboard of a normalised results table as a self-contained HTML page (see :func:`render_markdown`)."""
    facts = "".join(
        f"<dt>{html.escape(label)}</dt><dd>{html.escape(value)}</dd>" for label, value in _facts(results, band)
    )
    sections = "".join(
        f'<h2 id="{metric}">{html.escape(heading)}</h2><h3>Overall</h3>'
        f"{_html_table(OVERALL_HEADERS, overall_rows(overall(ranked)), 'overall')}"
        + "".join(_html_board(b) for b in ranked)
        for metric, heading, ranked in _sections(results, band)
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Pruning criteria leaderboard</title>'
        f"<style>{_STYLE}</style></head><body><h1>Pruning criteria leaderboard</h1><dl>{facts}</dl>"
        f'<h2>Method</h2><p class="method">{html.escape(METHOD)}</p>{sections}</body></html>'
    )


def write_leaderboard(
    results: str | os.PathLike[str] | pd.DataFrame, output_dir: str | os.PathLike[str], band: Band | None = None
) -> dict[str, Path]:
    """Write ``index.html`` and ``leaderboard.md`` for ``results`` into ``output_dir``.

    ``band``: the measured noise of the suite's reference (its ``band.json``);
    ties then also absorb machine noise. Returns ``{"html": path, "markdown": path}``.
    """
    table = load_results(results)
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    written = {"html": directory / "index.html", "markdown": directory / "leaderboard.md"}
    written["html"].write_text(render_html(table, band), encoding="utf-8")
    written["markdown"].write_text(render_markdown(table, band), encoding="utf-8")
    return written

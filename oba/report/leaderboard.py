"""The leaderboard pages: boards, ranks across boards, trade-off summaries and the raw rows, as HTML, Markdown and JSON.

The statistics live in :mod:`.ranking` (one board), :mod:`.across` (across
boards) and :mod:`.tradeoff` (accuracy against speedup); this module renders
them. The leaderboard folder holds ``index.html``, ``leaderboard.md``,
``board.json`` and every cell as ``cells.csv`` and ``cells.parquet``. Given the
report's path, each board and each of its criteria links to its cells there.
"""
from __future__ import annotations

import html
import json
import math
import urllib.parse
from dataclasses import asdict, dataclass

import pandas as pd

from oba.report.across import AcrossBoards, across_boards
from oba.report.aggregate import cells_anchor, panel_title, panels
from oba.report.band import Band
from oba.report.provenance import provenance
from oba.report.ranking import (
    BOARD_METRICS,
    MARGIN,
    MIN_SEEDS,
    NOISE_Z,
    Board,
    Entry,
    boards,
    overall,
)
from oba.report.rawrows import CSV_FILE, JSON_FILE, PARQUET_FILE
from oba.report.stages import final_rows
from oba.report.tradeoff import SPEEDUPS, tradeoff_summary

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
    "'Δ to #1' is the paired mean difference to the board's leader with its 95% interval, in percentage points; "
    "'vs dense' the difference of the mean to the dense models' mean. The bootstrap interval is the 95% percentile "
    "bootstrap of the mean over seeds (2,000 seeded resamples): with 3 seeds it spans about their range and is "
    "shown for reference, never used for ties. "
    "Fidelity columns (means over seeds, on the dense model's sampled units): Spearman ρ of the score with the "
    "signed loss change of removing the unit alone, ρ with its absolute value, and P@k, the share of the k "
    "lowest-scored units among the k truly cheapest (k: the share of units the first pruning step removed, "
    "applied to the sample). "
    f"A board with fewer than {MIN_SEEDS} seeds, or on which every criterion is tied, says so: its order is not evidence. "
    "An iterative schedule (pruned in stages, fine-tuned after each) has its own boards, named by its stage ratios, on "
    "the accuracy after its last stage; it never shares a board with one-shot pruning to the same ratio."
)
ACROSS_METHOD = (
    "Across boards (Demšar 2006): each board is a block; on it the criteria are ranked by mean accuracy (1 = best, "
    "equal means share the average rank). The Friedman test (scipy) asks whether all criteria have the same expected "
    "rank; Nemenyi's post-hoc test (scikit-posthocs) separates two criteria when their mean ranks differ by more than "
    "the critical difference CD = q_α/√2 · √(k(k+1)/(6N)) at α = 0.05, k criteria over N boards. The interval of a "
    "mean rank is ±CD/2: two criteria differ exactly when their intervals do not overlap. 'Sole first places' counts "
    "the boards a criterion led without a tie. Only criteria ranked on every board enter."
)
TRADEOFF_METHOD = (
    "Trade-off (per model · dataset · structure · allocation and schedule, accuracy after fine-tuning): AUC is the mean accuracy "
    "over the common log-speedup range of all criteria, the curve linearly interpolated in ln(speedup) between its "
    "ratios; 'on front' counts a criterion's points on the Pareto front of accuracy against speedup (no other point "
    "is both faster and more accurate). A common range that is empty (e.g. latency speedups that do not grow with "
    "the ratio) gives no AUC."
)
Cell = str | tuple[str, str]
"""A table cell: text, or ``(text, href)``."""


@dataclass(frozen=True)
class Contents:
    """Everything the leaderboard pages show, computed once: facts, one section per metric, trade-off tables."""

    facts: list[tuple[str, str]]
    sections: list[MetricSection]
    tradeoff: list[tuple[str, list[str], list[list[Cell]]]]


@dataclass(frozen=True)
class MetricSection:
    """One board metric: its boards and the comparison across them (None when too few boards or criteria)."""

    metric: str
    heading: str
    boards: list[Board]
    across: AcrossBoards | None


def _num(value: float, spec: str, scale: float = 1.0) -> str:
    return "–" if value is None or math.isnan(value) else format(value * scale, spec)


def _accuracy(entry: Entry) -> str:
    if math.isnan(entry.mean):
        return "–"
    spread = "" if math.isnan(entry.std) else f" ± {entry.std * 100:.2f}"
    return f"{entry.mean * 100:.2f}{spread}"


def _interval(low: float, high: float, spec: str = ".2f", scale: float = 100.0) -> str:
    return "–" if math.isnan(low) else f"[{low * scale:{spec}}, {high * scale:{spec}}]"


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


def _scoring(entry: Entry) -> str:
    if math.isnan(entry.scoring_seconds):
        return "–"
    return f"{entry.scoring_seconds:.3g} ({_num(entry.scoring_per_grad, '.3g')}×)"


BOARD_HEADERS = [
    "rank",
    "criterion",
    "accuracy (%) mean ± std",
    "95% bootstrap CI (%)",
    "Δ to #1 (pp) [95% CI]",
    "vs dense (pp)",
    "seeds (failed)",
    "MACs speedup (×)",
    "latency speedup (×)",
    "scoring s (× grad)",
    "ρ signed ΔL",
    "ρ |ΔL|",
    "P@k (k)",
]
ACROSS_HEADERS = ["criterion", "mean rank", "interval ± CD/2", "boards ranked", "sole first places", "failed cells"]


def _link(text: str, report: str | None, anchor: str) -> Cell:
    return (text, f"{report}#{anchor}") if report else text


def board_rows(board: Board, report: str | None = None) -> list[list[Cell]]:
    """A board as table cells under :data:`BOARD_HEADERS`; criteria link to their cells in ``report`` when given."""
    return [
        [
            e.rank_label,
            _link(e.criterion, report, cells_anchor(board.key, e.criterion)),
            _accuracy(e),
            _interval(*e.interval),
            _delta(e),
            _num(e.mean - board.dense_mean, "+.2f", 100.0),
            f"{e.seeds} ({e.failed})",
            _num(e.macs_speedup, ".2f"),
            _num(e.latency_speedup, ".2f"),
            _scoring(e),
            _num(e.fidelity, ".3f"),
            _num(e.fidelity_abs, ".3f"),
            _precision(e),
        ]
        for e in board.entries
    ]


def across_rows(section: MetricSection) -> list[list[Cell]]:
    """Per criterion, best mean rank first: its Nemenyi interval, boards ranked, sole first places, failed cells."""
    table = overall(section.boards).set_index("criterion")
    across = section.across
    names = list(across.criteria) + [n for n in table.index if n not in across.criteria] if across else list(table.index)
    rows: list[list[Cell]] = []
    for name in names:
        record = table.loc[name]
        if across and name in across.criteria:
            value = across.mean_ranks[across.criteria.index(name)]
            shown, interval = f"{value:.2f}", _interval(*across.interval(name), spec=".2f", scale=1.0)
        else:
            shown, interval = _num(record["mean_rank"], ".2f"), "–"
        counts = [str(int(record[c])) for c in ("boards", "sole_first_places", "failed_cells")]
        rows.append([name, shown, interval, *counts])
    return rows


def across_summary(section: MetricSection) -> str:
    """One sentence: Friedman's statistic and p, N, k and the critical difference (or why there is none)."""
    across = section.across
    if across is None:
        return ("No Friedman test: it needs at least 2 boards, 3 criteria ranked on every board, and a board on which "
                "their means differ.")
    left = f" Left out (not ranked on every board): {', '.join(across.left_out)}." if across.left_out else ""
    verdict = "the criteria's ranks differ" if across.p_value < across.alpha else "no evidence that the criteria's ranks differ"
    return (
        f"Friedman χ² = {across.statistic:.2f}, p = {across.p_value:.3g} over N = {across.boards} boards and "
        f"k = {len(across.criteria)} criteria ({verdict} at α = {across.alpha:g}); Nemenyi critical difference "
        f"CD = {across.critical_difference:.2f} ranks.{left}"
    )


def tradeoff_tables(results: pd.DataFrame) -> list[tuple[str, list[str], list[list[Cell]]]]:
    """Per panel with fine-tuned accuracy: ``(title, headers, rows)`` of its criteria's AUC and front points (each
    cell's final row)."""
    out = []
    for key, rows in panels(final_rows(results)):
        summary = tradeoff_summary(rows)
        if summary.empty:
            continue
        headers, columns = ["criterion"], []
        for speedup, label in SPEEDUPS.items():
            if f"auc_{speedup}" not in summary:
                continue
            low, high = summary[f"range_{speedup}"].iloc[0]
            span = f"{low:.3g}–{high:.3g}×" if low < high else "no common range"
            headers += [f"AUC vs {label} (%), {span}", f"on front ({label})"]
            columns.append(speedup)
        ordered = summary.sort_values([f"auc_{columns[0]}", "criterion"], ascending=[False, True], na_position="last")
        table = [
            [r["criterion"]] + [c for s in columns for c in (_num(r[f"auc_{s}"], ".2f"), str(int(r[f"front_{s}"])))]
            for _, r in ordered.iterrows()
        ]
        out.append((panel_title(key), headers, table))
    return out


def sections(results: pd.DataFrame, band: Band | None) -> list[MetricSection]:
    """Every board metric that has boards, fine-tuned first."""
    out = []
    for metric, label in BOARD_METRICS.items():
        ranked = boards(results, metric, band)
        if ranked:
            out.append(MetricSection(metric, f"Accuracy {label}", ranked, across_boards(ranked)))
    return out


def reductions(results: pd.DataFrame) -> str:
    """Each criterion's group reduction and normaliser as its rows record them, e.g. ``oba: released, mean``."""
    seen: dict[str, set[str]] = {}
    for criterion, config in zip(results["criterion"], results["criterion_config"]):
        options = json.loads(config) if isinstance(config, str) and config else {}
        if "reduction" in options:
            seen.setdefault(criterion, set()).add(f"{options['reduction']}, {options.get('normaliser', '?')}")
    return "; ".join(f"{name}: {' / '.join(sorted(values))}" for name, values in sorted(seen.items()))


def facts(results: pd.DataFrame, band: Band | None) -> list[tuple[str, str]]:
    """Provenance, each criterion's reduction and normaliser, and the noise band the ties use, as ``(label, value)``."""
    noise = (f"measured on {len(band.machines)} machines ({', '.join(band.machines)}), {band.created}; "
             f"ties within {NOISE_Z:g}·√(σ_A² + σ_B²)") if band is not None else "none (ties from seed noise only)"
    grouping = reductions(results) or "not recorded (rows before schema version 6: |Σ| for every criterion)"
    return [*provenance(results).items(), ("Group reduction, normaliser", grouping), ("Noise band", noise)]


def markdown_text(text: str) -> str:
    """``text`` (from the data) as inert inline Markdown: on one line, HTML's ``& < >`` as entities, backslashes
    and table-cell pipes escaped, and no link syntax (``](``) left, so that a renderer shows it as written."""
    flat = " ".join(text.splitlines()).replace("\\", "\\\\")
    return html.escape(flat, quote=False).replace("|", "\\|").replace("](", "]\\(")


def _markdown_link(text: str, href: str) -> str:
    """A Markdown link showing ``text`` as written (brackets escaped too), its target percent-encoded so that it stays
    one relative path (no spaces, parentheses or scheme colon left)."""
    label = markdown_text(text).replace("[", "\\[").replace("]", "\\]")
    return f"[{label}]({urllib.parse.quote(href, safe='/#')})"


def _markdown_cell(cell: Cell) -> str:
    return markdown_text(cell) if isinstance(cell, str) else _markdown_link(*cell)


def _markdown_table(headers: list[str], rows: list[list[Cell]]) -> str:
    def line(cells: list[Cell]) -> str:
        return "| " + " | ".join(_markdown_cell(c) for c in cells) + " |"

    return "\n".join([line(headers), "|" + "|".join("---" for _ in headers) + "|"] + [line(r) for r in rows])


def contents(results: pd.DataFrame, band: Band | None = None) -> Contents:
    """Compute what the pages show (ties absorb ``band``'s machine noise when given)."""
    return Contents(facts(results, band), sections(results, band), tradeoff_tables(results))


def render_markdown(results: pd.DataFrame | Contents, band: Band | None = None, report: str | None = None) -> str:
    """The leaderboard as Markdown (ties absorb ``band``'s machine noise; criteria link into ``report`` when given)."""
    shown = results if isinstance(results, Contents) else contents(results, band)
    lines = ["# Pruning criteria leaderboard", ""]
    lines += [f"- **{label}**: {markdown_text(value)}" for label, value in shown.facts]
    lines += [f"- **Raw rows**: [{CSV_FILE}]({CSV_FILE}), [{PARQUET_FILE}]({PARQUET_FILE}), boards: [{JSON_FILE}]({JSON_FILE})"]
    lines += [f"- **Report**: {_markdown_link(report, report)}"] if report else []
    lines += ["", "## Method", "", METHOD, "", ACROSS_METHOD, "", TRADEOFF_METHOD, ""]
    for section in shown.sections:
        lines += [f"## {section.heading}", "", "### Across boards", "", markdown_text(across_summary(section)), ""]
        lines += [_markdown_table(ACROSS_HEADERS, across_rows(section)), ""]
        for board in section.boards:
            lines += [f"### {markdown_text(board.title)}", "", f"{board.dense_label}.", ""]
            lines += [f"> {note}" for note in board.notes] + ([""] if board.notes else [])
            lines += [_markdown_table(BOARD_HEADERS, board_rows(board, report)), ""]
    if shown.tradeoff:
        lines += ["## Trade-off: accuracy after fine-tuning against speedup, across ratios", ""]
        for title, headers, rows in shown.tradeoff:
            lines += [f"### {markdown_text(title)}", "", _markdown_table(headers, rows), ""]
    return "\n".join(lines)


def board_document(shown: Contents) -> dict:
    """Everything the pages show, as plain data (what ``board.json`` holds)."""
    return {
        "facts": dict(shown.facts),
        "metrics": {
            s.metric: {
                "heading": s.heading,
                "across": None if s.across is None else {
                    **{k: v for k, v in asdict(s.across).items() if k != "pairwise_p"},
                    "pairwise_p": s.across.pairwise_p.to_dict(),
                },
                "boards": [{**asdict(b), "title": b.title, "notes": b.notes} for b in s.boards],
            }
            for s in shown.sections
        },
        "tradeoff": [{"panel": title, "headers": headers, "rows": rows} for title, headers, rows in shown.tradeoff],
    }

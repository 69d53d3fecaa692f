"""Criteria compared across boards: mean ranks, Friedman's test, Nemenyi's critical difference (Demšar 2006).

The boards of one metric are the blocks. On each board the criteria are ranked
by their mean accuracy over seeds (1 = best; equal means share the average
rank), and R_j is criterion j's mean rank over the N boards. With k criteria:

* Friedman's test (``scipy.stats.friedmanchisquare``) asks whether the k
  criteria are exchangeable, i.e. every R_j equals (k + 1) / 2 in expectation;
* Nemenyi's post-hoc test (``scikit_posthocs.posthoc_nemenyi_friedman``) calls
  two criteria different at level α when |R_i − R_j| exceeds the critical
  difference CD = q_α · √(k(k + 1) / (6N)), with q_α the studentized range
  quantile (k groups, infinite degrees of freedom) divided by √2;
* the interval of a mean rank is R_j ± CD/2: two criteria differ exactly when
  their intervals do not overlap.

Only criteria ranked on every board enter (a complete block design); the others
are named in :attr:`AcrossBoards.left_out`. The per-board ranks use the exact
means, not the board's tie groups: the Friedman test accounts for the noise
across boards, the tie rule for the noise within one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scikit_posthocs
from scipy import stats

from oba.report.ranking import Board

ALPHA = 0.05


@dataclass(frozen=True)
class AcrossBoards:
    """The across-board comparison of one metric; ``criteria`` sorted by mean rank (best first)."""

    boards: int
    criteria: list[str]
    mean_ranks: list[float]
    statistic: float
    p_value: float
    critical_difference: float
    alpha: float
    pairwise_p: pd.DataFrame
    groups: list[tuple[str, ...]]
    left_out: list[str]

    def interval(self, criterion: str) -> tuple[float, float]:
        """``R ± CD/2`` of ``criterion``."""
        value = self.mean_ranks[self.criteria.index(criterion)]
        return (value - self.critical_difference / 2, value + self.critical_difference / 2)


def critical_difference(criteria: int, boards: int, alpha: float = ALPHA) -> float:
    """Nemenyi's CD = q_α/√2 · √(k(k + 1) / (6N)) for k criteria over N boards."""
    q_alpha = float(stats.studentized_range.ppf(1 - alpha, criteria, np.inf)) / math.sqrt(2)
    return q_alpha * math.sqrt(criteria * (criteria + 1) / (6 * boards))


def mean_table(ranked: list[Board]) -> pd.DataFrame:
    """Boards × criteria of each ranked criterion's mean (NaN where a board does not rank it)."""
    records = {
        index: {e.criterion: e.mean for e in board.entries if e.rank is not None} for index, board in enumerate(ranked)
    }
    return pd.DataFrame.from_dict(records, orient="index").sort_index(axis=1)


def _groups(criteria: list[str], pairwise_p: pd.DataFrame, alpha: float) -> list[tuple[str, ...]]:
    """Maximal runs of criteria (in mean-rank order) whose two ends Nemenyi does not separate at ``alpha``."""
    out: list[tuple[str, ...]] = []
    reach = -1
    for start, name in enumerate(criteria):
        end = max(j for j in range(start, len(criteria)) if pairwise_p.loc[name, criteria[j]] >= alpha)
        if end > start and end > reach:
            out.append(tuple(criteria[start : end + 1]))
            reach = end
    return out


def across_boards(ranked: list[Board], alpha: float = ALPHA) -> AcrossBoards | None:
    """Friedman and Nemenyi over the boards of one metric.

    None with fewer than 2 boards, fewer than 3 criteria ranked on every board, or no board that orders them.
    """
    table = mean_table(ranked)
    complete = table.dropna(axis=1, how="any")
    left_out = sorted(set(table.columns) - set(complete.columns))
    boards, count = complete.shape
    if boards < 2 or count < 3:
        return None
    ranks = pd.DataFrame(stats.rankdata(-complete.to_numpy(), axis=1), columns=complete.columns)
    if (ranks.nunique(axis=1) == 1).all():
        return None
    mean_ranks = ranks.mean(axis=0)
    order = sorted(complete.columns, key=lambda name: (mean_ranks[name], name))
    statistic, p_value = stats.friedmanchisquare(*(complete[name].to_numpy() for name in complete.columns))
    pairwise = scikit_posthocs.posthoc_nemenyi_friedman(complete.to_numpy())
    pairwise.index = pairwise.columns = list(complete.columns)
    return AcrossBoards(
        boards=boards,
        criteria=order,
        mean_ranks=[float(mean_ranks[name]) for name in order],
        statistic=float(statistic),
        p_value=float(p_value),
        critical_difference=critical_difference(count, boards, alpha),
        alpha=alpha,
        pairwise_p=pairwise.loc[order, order],
        groups=_groups(order, pairwise, alpha),
        left_out=left_out,
    )

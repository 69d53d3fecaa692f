"""Ranks across boards, Friedman's test and Nemenyi's critical difference against values computed by hand.

Hand computation (Demšar 2006, section 3.2.2). Three criteria A, B, C; one seed per board, so a board's mean
is its one accuracy. Four boards (accuracy in %):

    board   A    B    C      ranks (1 = best)
    1       90   80   70     1 2 3
    2       90   70   80     1 3 2
    3       80   90   70     2 1 3
    4       90   80   75     1 2 3

Mean ranks R: A 1.25, B 2.00, C 2.75.
χ²_F = 12N / (k(k+1)) · (Σ R_j² − k(k+1)²/4) = 12·4/12 · (1.5625 + 4 + 7.5625 − 12) = 4.5 with k − 1 = 2
degrees of freedom; for 2 degrees of freedom the χ² survival function is exp(−x/2): p = exp(−2.25) = 0.105399.
Demšar's Table 5: q_0.05 = 2.343 for k = 3, so CD = 2.343 · √(3·4 / (6·4)) = 1.6568; A and C differ by 1.5 < CD.
The same four boards twice (N = 8): χ²_F = 8 · 1.125 = 9.0, p = exp(−4.5) = 0.011109, CD = 2.343 · √(12/48)
= 1.1715 < 1.5: A and C differ, A–B and B–C (0.75) do not.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest
from results_fixtures import row

from oba.report import load_results
from oba.report.across import across_boards, critical_difference
from oba.report.ranking import boards

BOARDS = [
    {"A": 90.0, "B": 80.0, "C": 70.0},
    {"A": 90.0, "B": 70.0, "C": 80.0},
    {"A": 80.0, "B": 90.0, "C": 70.0},
    {"A": 90.0, "B": 80.0, "C": 75.0},
]


def _ranked(per_board: list[dict[str, float]]):
    rows = [
        row(criterion=name, ratio=round(0.05 * (index + 1), 2), seed=0, final_acc=value / 100)
        for index, accuracies in enumerate(per_board)
        for name, value in accuracies.items()
    ]
    return boards(load_results(pd.DataFrame(rows)))


def test_critical_difference_matches_demsars_table() -> None:
    # Demšar's Table 5 (α = 0.05): q = 2.343 (k = 3), 2.569 (k = 4), 3.268 (k = 12); his example: k = 4, N = 14 → 1.25.
    assert critical_difference(3, 4) == pytest.approx(2.343 * math.sqrt(12 / 24), abs=1e-3)
    assert critical_difference(4, 14) == pytest.approx(2.569 * math.sqrt(20 / 84), abs=1e-3)
    assert critical_difference(12, 4) == pytest.approx(3.268 * math.sqrt(12 * 13 / 24), abs=1e-2)


def test_friedman_mean_ranks_and_critical_difference_on_four_boards() -> None:
    result = across_boards(_ranked(BOARDS))
    assert result.boards == 4
    assert result.criteria == ["A", "B", "C"]
    assert result.mean_ranks == pytest.approx([1.25, 2.0, 2.75])
    assert result.statistic == pytest.approx(4.5)
    assert result.p_value == pytest.approx(math.exp(-2.25))
    assert result.critical_difference == pytest.approx(1.6568, abs=1e-3)
    assert result.interval("A") == pytest.approx((1.25 - 0.8284, 1.25 + 0.8284), abs=1e-3)
    assert result.groups == [("A", "B", "C")], "1.5 < CD: Nemenyi separates no pair"
    assert (result.pairwise_p.to_numpy() >= 0.05).all()
    assert result.left_out == []


def test_eight_boards_separate_the_ends_but_not_the_neighbours() -> None:
    result = across_boards(_ranked(BOARDS + BOARDS))
    assert result.statistic == pytest.approx(9.0)
    assert result.p_value == pytest.approx(math.exp(-4.5))
    assert result.critical_difference == pytest.approx(1.1715, abs=1e-3)
    assert result.pairwise_p.loc["A", "C"] < 0.05 < result.pairwise_p.loc["A", "B"]
    assert result.pairwise_p.loc["B", "C"] > 0.05
    assert result.groups == [("A", "B"), ("B", "C")]


def test_a_criterion_missing_from_a_board_is_left_out_and_too_little_gives_none() -> None:
    with_d = [dict(board, D=85.0) for board in BOARDS[:3]] + [BOARDS[3]]
    result = across_boards(_ranked(with_d))
    assert result.left_out == ["D"] and result.criteria == ["A", "B", "C"]
    assert result.statistic == pytest.approx(4.5)
    assert across_boards(_ranked(BOARDS[:1])) is None, "one board"
    assert across_boards(_ranked([{"A": 90.0, "B": 80.0}] * 3)) is None, "two criteria"
    assert across_boards(_ranked([{"A": 90.0, "B": 90.0, "C": 90.0}] * 3)) is None, "no board orders them"

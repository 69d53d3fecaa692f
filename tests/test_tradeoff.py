"""Trade-off curves: the Pareto front against brute force, the area under the curve against hand values."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from results_fixtures import row

from oba.report import load_results
from oba.report.tradeoff import (
    area_under_curve,
    common_range,
    curve_points,
    pareto_front,
    tradeoff_summary,
)


def _brute_force_front(points: pd.DataFrame) -> list[bool]:
    """A point is on the front unless another is at least as fast and as accurate and strictly better in one."""
    xs, ys = points["x"].tolist(), points["y"].tolist()
    return [
        not any(xs[j] >= xs[i] and ys[j] >= ys[i] and (xs[j] > xs[i] or ys[j] > ys[i]) for j in range(len(xs)))
        for i in range(len(xs))
    ]


@pytest.mark.parametrize("seed", range(30))
def test_pareto_front_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 25))
    # Coarse values make ties and duplicate points common.
    points = pd.DataFrame({"x": rng.integers(1, 6, size) / 2, "y": rng.integers(80, 86, size).astype(float)})
    assert pareto_front(points).tolist() == _brute_force_front(points)


def test_pareto_front_on_a_small_table() -> None:
    points = pd.DataFrame({"x": [1.1, 1.2, 1.2, 1.5, 1.5, 1.4], "y": [97.0, 96.0, 96.5, 95.0, 95.0, 94.0]})
    # (1.2, 96.0) loses to (1.2, 96.5); (1.4, 94.0) loses to (1.5, 95.0); the two (1.5, 95.0) are both on it.
    assert pareto_front(points).tolist() == [True, False, True, True, True, False]


def test_area_under_the_curve_is_the_mean_accuracy_over_log_speedup() -> None:
    curve = pd.DataFrame({"x": [1.0, math.e], "y": [90.0, 80.0]})
    assert area_under_curve(curve, 1.0, math.e) == pytest.approx(85.0)
    # Over [1, e^0.5] the curve falls from 90 to 85 linearly in ln x: mean 87.5.
    assert area_under_curve(curve, 1.0, math.exp(0.5)) == pytest.approx(87.5)
    # A kink: (1, 90), (e, 90), (e², 70) over [1, e²] → (1·90 + 1·80) / 2 = 85.
    kinked = pd.DataFrame({"x": [math.e**2, 1.0, math.e], "y": [70.0, 90.0, 90.0]})
    assert area_under_curve(kinked, 1.0, math.e**2) == pytest.approx(85.0)
    assert math.isnan(area_under_curve(curve, 1.0, 3.0)), "the range must lie inside the curve"
    assert math.isnan(area_under_curve(curve, 2.0, 2.0)), "an empty range has no mean"


def test_summary_integrates_every_criterion_over_the_common_range() -> None:
    # A: speedups 1.25 and 2.0 (accuracies 95, 91); B: 1.25 and 1.6 (96, 92) → common range [1.25, 1.6].
    # Each has one seed per ratio; latency speedups equal the MACs ones here.
    rows = [
        row(criterion=name, ratio=ratio, seed=0, final_acc=acc / 100, macs_speedup=speedup, latency_speedup=speedup)
        for name, ratio, speedup, acc in [
            ("A", 0.2, 1.25, 95.0), ("A", 0.5, 2.0, 91.0), ("B", 0.2, 1.25, 96.0), ("B", 0.375, 1.6, 92.0),
        ]
    ]
    table = load_results(pd.DataFrame(rows))
    points = curve_points(table, "macs_speedup", "final_acc", 100.0)
    assert common_range(points) == pytest.approx((1.25, 1.6))
    summary = tradeoff_summary(table).set_index("criterion")
    # A on [1.25, 1.6]: y(1.6) = 95 − 4·ln(1.6/1.25)/ln(2/1.25) = 93.4747; mean (95 + 93.4747)/2 = 94.2374.
    at_16 = 95 - 4 * math.log(1.6 / 1.25) / math.log(2 / 1.25)
    assert summary.loc["A", "auc_macs_speedup"] == pytest.approx((95 + at_16) / 2)
    assert summary.loc["B", "auc_macs_speedup"] == pytest.approx(94.0)
    # Front: (2.0, 91) A, (1.6, 92) B, (1.25, 96) B; (1.25, 95) A loses to B's.
    assert summary.loc["A", "front_macs_speedup"] == 1 and summary.loc["B", "front_macs_speedup"] == 2


def test_curves_follow_the_ratios_even_when_speed_does_not() -> None:
    rows = [
        row(criterion="A", ratio=ratio, seed=0, final_acc=0.9, latency_speedup=speedup)
        for ratio, speedup in [(0.1, 1.3), (0.2, 1.1), (0.3, 1.5)]
    ]
    points = curve_points(load_results(pd.DataFrame(rows)), "latency_speedup", "final_acc")
    assert points["ratio"].tolist() == [0.1, 0.2, 0.3] and points["x"].tolist() == [1.3, 1.1, 1.5]

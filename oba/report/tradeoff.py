"""Accuracy against speedup across ratios: one curve per criterion, the Pareto front, the area under each curve.

A *point* is one (criterion, ratio) of a panel: x is the mean over ``ok`` seeds
of a speedup (MACs or measured latency, dense ÷ pruned), y the mean accuracy
after fine-tuning, each with its sample standard deviation over seeds. The
points are keyed by :data:`POINT_KEYS`; a criterion's curve joins its points in
increasing x. A panel's rows are its cells' final rows, one schedule per panel
(an iterative schedule's stages are joined in stage order by :mod:`.trajectory`).

* **Pareto front**: the points that no other point of the panel dominates (another
  point dominates when it is at least as fast and at least as accurate, and
  strictly better in one of the two).
* **Area under the curve**: the mean accuracy over the *common* log-speedup
  range of the panel, [max over criteria of their lowest x, min over criteria of
  their highest x], with the curve linearly interpolated in ln x:
  AUC = ∫ acc d ln x / (ln b − ln a). Every criterion is integrated over the same
  range, so the numbers compare; NaN when the range is empty or a single point.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from oba.report.aggregate import seed_summary

POINT_KEYS = ["criterion", "ratio"]
SPEEDUPS = {"macs_speedup": "MACs speedup", "latency_speedup": "latency speedup"}


def curve_points(rows: pd.DataFrame, x: str, y: str, y_scale: float = 1.0) -> pd.DataFrame:
    """Seed means of ``x`` and ``y × y_scale`` per point: columns POINT_KEYS, x, x_std, y, y_std, n, sorted."""
    columns = ["mean", "std", "n"]
    xs = seed_summary(rows, POINT_KEYS, x).rename(columns=dict(zip(columns, ["x", "x_std", "x_n"])))
    ys = seed_summary(rows, POINT_KEYS, y, y_scale).rename(columns=dict(zip(columns, ["y", "y_std", "n"])))
    points = xs.merge(ys, on=POINT_KEYS).drop(columns="x_n")
    return points.sort_values(POINT_KEYS).reset_index(drop=True)


def pareto_front(points: pd.DataFrame) -> pd.Series:
    """Whether each point (columns x, y; higher is better in both) is on the Pareto front."""
    order = points.sort_values(["x", "y"], ascending=False, kind="stable").index
    on_front = pd.Series(False, index=points.index)
    best_y = -math.inf
    previous: tuple[object, tuple[float, float]] | None = None
    for index in order:
        point = (float(points.at[index, "x"]), float(points.at[index, "y"]))
        same_as_previous = previous is not None and previous[1] == point
        on_front[index] = bool(on_front[previous[0]]) if same_as_previous else point[1] > best_y
        best_y = max(best_y, point[1])
        previous = (index, point)
    return on_front


def common_range(points: pd.DataFrame) -> tuple[float, float]:
    """``(max of each criterion's lowest x, min of each criterion's highest x)``."""
    by = points.groupby("criterion")["x"]
    return float(by.min().max()), float(by.max().min())


def area_under_curve(curve: pd.DataFrame, low: float, high: float) -> float:
    """Mean of y over ln x ∈ [ln low, ln high], the curve (x, y) linearly interpolated in ln x."""
    if not (0 < low < high) or curve.empty or curve["x"].min() > low or curve["x"].max() < high:
        return math.nan
    ordered = curve.sort_values("x")
    log_x, y = np.log(ordered["x"].to_numpy(float)), ordered["y"].to_numpy(float)
    grid = np.unique(np.concatenate([[math.log(low), math.log(high)], log_x]))
    grid = grid[(grid >= math.log(low)) & (grid <= math.log(high))]
    values = np.interp(grid, log_x, y)
    return float(np.trapezoid(values, grid) / (grid[-1] - grid[0]))


def tradeoff_summary(rows: pd.DataFrame, accuracy: str = "final_acc") -> pd.DataFrame:
    """Per criterion of one panel: AUC for each speedup in :data:`SPEEDUPS` (percent) and points on its front.

    Columns: criterion, then ``auc_<speedup>``, ``front_<speedup>`` and ``range_<speedup>`` (the common
    range as ``(low, high)``) per speedup column.
    """
    table: dict[str, dict[str, object]] = {}
    for speedup in SPEEDUPS:
        points = curve_points(rows, speedup, accuracy, 100.0)
        if points.empty:
            continue
        low, high = common_range(points)
        front = pareto_front(points)
        for criterion, curve in points.groupby("criterion", sort=True):
            record = table.setdefault(criterion, {"criterion": criterion})
            record[f"auc_{speedup}"] = area_under_curve(curve, low, high)
            record[f"front_{speedup}"] = int(front[curve.index].sum())
            record[f"range_{speedup}"] = (low, high)
    return pd.DataFrame(list(table.values()))

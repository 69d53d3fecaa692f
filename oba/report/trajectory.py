"""The iterative protocol's trajectory: each criterion's accuracy through the stages of an iterative setting.

An iterative setting is a panel (model · dataset · structure · allocation ·
schedule, :mod:`.aggregate`) whose schedule prunes in stages s1 < … < sK,
fine-tuning after each. Its figure has two panels, one line per criterion
through its stages:

* x: the stage's ratio ``stage_ratio`` s_k, the target share of the dense
  model's MACs (weights, when unstructured) removed after that stage, in percent;
* y, left: top-1 accuracy after that stage's fine-tuning (``final_acc`` of the stage row);
* y, right: accuracy right after that stage's pruning, batch-norm statistics
  recalibrated, before its fine-tuning (``pruned_acc`` of the stage row).

A point is the mean over the ``ok`` seeds of that (criterion, stage), the
shaded band ±1 sample standard deviation over them; the dashed line is the
dense models' accuracy (mean over seeds), which every trajectory starts from.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from oba.report.aggregate import seed_summary
from oba.report.figures import Style, add_bands, add_dense_reference, add_lines, finish_layout

PANELS = {
    "final_acc": "after the stage's fine-tuning",
    "pruned_acc": "right after the stage's pruning (BN-recalibrated)",
}
"""The metric of each panel, left to right, and its title."""
HOVER = "removed after the stage %{x:.0f}%<br>accuracy %{y:.2f}% ± %{customdata[1]:.2f}<br>seeds %{customdata[2]}"
AGGREGATION = "one line per criterion through its stages: mean over seeds, band ±1 std; dashed: dense"
GUIDE = (
    "<li><b>Iterative schedules</b> (pruned in stages, fine-tuned after each): per schedule, each criterion's "
    "accuracy after every stage's fine-tuning (left) and right after every stage's pruning with batch-norm statistics "
    "recalibrated (right), against the share of the dense model removed after the stage. The figures of the "
    "schedule's own section compare the cells after their last stage.</li>"
)
"""The report guide's entry for the trajectory section (shown only when there is one)."""


def stage_points(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (criterion, stage) of one iterative setting's ``rows``: x = ``stage_ratio`` in percent, y = mean of
    ``metric`` in percent over ok seeds.

    Columns: criterion, stage, ratio (the stage ratio, a fraction), x, y, y_std, n; sorted by criterion and stage.
    """
    summary = seed_summary(rows, ["criterion", "stage", "stage_ratio"], metric, 100.0)
    points = summary.rename(columns={"mean": "y", "std": "y_std", "stage_ratio": "ratio"})
    return points.assign(x=points["ratio"] * 100).sort_values(["criterion", "stage"]).reset_index(drop=True)


def _axis_label(structure: str) -> str:
    what = "weights" if structure == "unstructured" else "MACs"
    return f"dense {what} removed after the stage (%, target)"


def trajectory(rows: pd.DataFrame, style: Style, subtitle: str, structure: str) -> go.Figure | None:
    """The trajectory figure of one iterative setting's rows (every stage), or None when no stage has accuracy."""
    curves = {metric: stage_points(rows, metric) for metric in PANELS}
    curves = {metric: points for metric, points in curves.items() if not points.empty}
    if not curves:
        return None
    figure = make_subplots(rows=1, cols=len(curves), horizontal_spacing=0.1,
                           subplot_titles=[f"accuracy {PANELS[metric]}" for metric in curves])
    for column, (metric, points) in enumerate(curves.items(), start=1):
        cell = {"row": 1, "col": column}
        add_bands(figure, style, points, cell)
        add_lines(figure, style, points, HOVER, cell, legend=column == 1, bars=False)
        add_dense_reference(figure, rows, cell, note="")
        figure.update_xaxes(title_text=_axis_label(structure), ticksuffix="%", tickvals=sorted(set(points["x"])), **cell)
        figure.update_yaxes(title_text="top-1 accuracy (%)", **cell)
    return finish_layout(figure, "Accuracy through the stages", subtitle, AGGREGATION)

"""Plotly figures for one panel (model × dataset × structure × allocation) of results.

Each builder takes the panel's rows (all statuses; only ``ok`` rows are plotted)
and a :class:`Style` holding the report-wide colour and marker of every
criterion, and returns a figure, or ``None`` when the panel has no data for it.
Every figure says its aggregation in its title. Points per (criterion, ratio)
are means over seeds (:mod:`.tradeoff`); scoring cost and fidelity's Spearman
correlations are means over all of a criterion's cells in the panel, fidelity's
P@k a mean over seeds per ratio. Bars and bands are one sample standard
deviation over seeds (zero for a single value). Accuracies are in percent.

Axis conventions: every accuracy and latency figure has a speedup on x (MACs or
measured latency, log scale); only P@k, which depends on the ratio through k,
has the target ratio on x. Legends list every criterion: the figure grows to
hold them (:func:`legend_height`), so none is scrolled or clipped, in HTML or PNG.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from oba.report.aggregate import ok_rows, removed_fractions, seed_summary
from oba.report.tradeoff import SPEEDUPS, curve_points, pareto_front

FIGURE_HEIGHT = 430
LEGEND_ENTRY = 22
"""Pixels per legend entry (font 13, no gap between groups)."""
_MARGIN = {"l": 70, "r": 20, "t": 140, "b": 60}
_GRID = "#e5e5e5"


@dataclass(frozen=True)
class Style:
    """Report-wide look of each criterion: ``colours[name]`` and ``symbols[name]``."""

    colours: dict[str, str]
    symbols: dict[str, str]

    def swatch(self, criterion: str) -> str:
        """Criterion name prefixed with its marker colour (Plotly rich text)."""
        return f"<span style='color:{self.colours[criterion]}'>■</span> {criterion}"


def legend_height(entries: int, tick_space: int = 0) -> int:
    """The figure height whose plot area holds ``entries`` legend entries and a title without scrolling.

    Plotly limits a legend beside the plot to the plot area's height; ``tick_space`` is what long
    (rotated) tick labels take from it.
    """
    return _MARGIN["t"] + _MARGIN["b"] + tick_space + LEGEND_ENTRY * (entries + 1) + 20


def finish_layout(
    figure: go.Figure, title: str, subtitle: str, aggregation: str, height: int = FIGURE_HEIGHT, tick_space: int = 0
) -> go.Figure:
    """Common look; the subtitle names the panel and the aggregation; the height fits the legend."""
    entries = sum(1 for trace in figure.data if trace.showlegend is not False)
    figure.update_layout(
        title={"text": title, "subtitle": {"text": f"{subtitle}<br>{aggregation}"}, "x": 0.01, "xanchor": "left"},
        template="plotly_white",
        height=max(height, legend_height(entries, tick_space)),
        margin=_MARGIN,
        legend={"title": {"text": "criterion"}, "groupclick": "togglegroup", "tracegroupgap": 0},
        font={"size": 13},
        hoverlabel={"namelength": -1},
    )
    figure.update_xaxes(showline=True, linecolor="#888", gridcolor=_GRID, zeroline=False)
    figure.update_yaxes(showline=True, linecolor="#888", gridcolor=_GRID, zeroline=False)
    figure.update_annotations(yshift=8)
    return figure


def _ratio_label(structure: str) -> str:
    what = "weights" if structure == "unstructured" else "MACs"
    return f"target ratio: {what} removed (%)"


def _std(values: pd.Series) -> pd.Series:
    return values.fillna(0)


def add_lines(
    figure: go.Figure, style: Style, points: pd.DataFrame, hover: str, cell: dict, legend: bool = True, bars: bool = True
) -> None:
    """One line per criterion through ``points`` (columns x, y, y_std, optional x_std, ratio, n) in their order.

    With ``bars``, ±1 std error bars (x too where ``x_std`` is given).
    """
    for criterion, line in points.groupby("criterion", sort=True):
        colour = style.colours[criterion]
        error_x = {"type": "data", "array": _std(line["x_std"]), "thickness": 1} if bars and "x_std" in line else None
        error_y = {"type": "data", "array": _std(line["y_std"]), "thickness": 1.5} if bars else None
        figure.add_trace(
            go.Scatter(
                x=line["x"],
                y=line["y"],
                mode="lines+markers",
                name=criterion,
                legendgroup=criterion,
                showlegend=legend,
                line={"color": colour, "width": 2},
                marker={"color": colour, "symbol": style.symbols[criterion], "size": 9},
                error_x=error_x,
                error_y=error_y,
                customdata=list(zip(line["ratio"] * 100, _std(line["y_std"]), line["n"])),
                hovertemplate=hover + "<extra>" + criterion + "</extra>",
            ),
            **cell,
        )


def add_bands(figure: go.Figure, style: Style, points: pd.DataFrame, cell: dict) -> None:
    """Each criterion's seed band, mean ± one std along its curve, shaded in its colour."""
    for criterion, line in points.groupby("criterion", sort=True):
        if len(line) < 2:
            continue
        upper, lower = line["y"] + _std(line["y_std"]), line["y"] - _std(line["y_std"])
        figure.add_trace(
            go.Scatter(
                x=list(line["x"]) + list(line["x"])[::-1],
                y=list(upper) + list(lower)[::-1],
                fill="toself",
                fillcolor=style.colours[criterion],
                opacity=0.1,
                line={"width": 0},
                mode="lines",
                name=f"{criterion} ±1 std",
                legendgroup=criterion,
                showlegend=False,
                hoverinfo="skip",
            ),
            **cell,
        )


def _add_front(figure: go.Figure, points: pd.DataFrame, cell: dict, legend: bool) -> None:
    """Ring the Pareto-front points and join them in a dotted line."""
    front = points[pareto_front(points)].sort_values("x")
    figure.add_trace(
        go.Scatter(
            x=front["x"],
            y=front["y"],
            mode="lines+markers",
            name="Pareto front",
            legendgroup="Pareto front",
            showlegend=legend,
            line={"color": "#444", "width": 1, "dash": "dot"},
            marker={"symbol": "circle-open", "size": 17, "color": "#444", "line": {"width": 1.5}},
            hoverinfo="skip",
        ),
        **cell,
    )


def add_dense_reference(figure: go.Figure, rows: pd.DataFrame, cell: dict, note: str = " (1×)") -> None:
    """A dashed line at the dense models' accuracy (percent; mean over the seeds of the ok rows), labelled
    ``dense <accuracy>%<note>``."""
    dense = ok_rows(rows).drop_duplicates("seed")["dense_acc"].dropna()
    if dense.empty:
        return
    figure.add_hline(
        y=dense.mean() * 100,
        line={"dash": "dash", "color": "#555", "width": 1},
        annotation={"text": f"dense {dense.mean() * 100:.2f}%{note}", "font": {"color": "#555"}},
        annotation_position="top left",
        **cell,
    )


TRADEOFF_HOVER = (
    "ratio %{customdata[0]:.0f}%<br>{speedup} %{x:.3f}×<br>{accuracy} %{y:.2f}% ± %{customdata[1]:.2f}"
    "<br>seeds %{customdata[2]}"
)


def tradeoff(
    rows: pd.DataFrame, style: Style, subtitle: str, accuracy: str, label: str, speedups: tuple[str, ...]
) -> go.Figure | None:
    """``accuracy`` (percent) against each speedup in ``speedups`` across ratios: lines, seed bands, Pareto front, dense."""
    curves = {speedup: curve_points(rows, speedup, accuracy, 100.0) for speedup in speedups}
    curves = {speedup: points for speedup, points in curves.items() if not points.empty}
    if not curves:
        return None
    figure = make_subplots(
        rows=1, cols=len(curves), horizontal_spacing=0.1,
        subplot_titles=[f"vs {SPEEDUPS[speedup]}" for speedup in curves],
    )
    for column, (speedup, points) in enumerate(curves.items(), start=1):
        cell = {"row": 1, "col": column}
        add_bands(figure, style, points, cell)
        hover = TRADEOFF_HOVER.replace("{speedup}", SPEEDUPS[speedup]).replace("{accuracy}", label)
        add_lines(figure, style, points, hover, cell, legend=column == 1, bars=False)
        _add_front(figure, points, cell, legend=column == 1)
        add_dense_reference(figure, rows, cell)
        figure.update_xaxes(type="log", title_text=f"{SPEEDUPS[speedup]} (×, log scale)", **cell)
    figure.update_yaxes(title_text=f"top-1 accuracy {label} (%)")
    aggregation = "mean over seeds per target ratio, band ±1 std; ○ Pareto front; dashed: dense"
    return finish_layout(figure, f"Accuracy {label} vs speedup", subtitle, aggregation)


def _dot(style: Style, criterion: str, data: pd.Series, hover: str) -> go.Scatter:
    return go.Scatter(
        x=[criterion],
        y=[data["mean"]],
        mode="markers",
        name=criterion,
        showlegend=False,
        marker={"color": style.colours[criterion], "symbol": style.symbols[criterion], "size": 13},
        error_y={"type": "data", "array": [0 if pd.isna(data["std"]) else data["std"]], "thickness": 1.5},
        customdata=[[0 if pd.isna(data["std"]) else data["std"], data["n"]]],
        hovertemplate=hover + "<extra>" + criterion + "</extra>",
    )


def scoring_time(rows: pd.DataFrame, style: Style, subtitle: str) -> go.Figure | None:
    """Scoring time per criterion: absolute seconds and multiples of one gradient pass (log axes)."""
    seconds = seed_summary(rows, ["criterion"], "scoring_seconds")
    relative = seed_summary(rows, ["criterion"], "scoring_seconds_per_grad")
    if seconds.empty and relative.empty:
        return None
    figure = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("wall-clock seconds", "relative to one gradient pass"),
        horizontal_spacing=0.16,
    )
    for column, (summary, hover) in enumerate(
        (
            (seconds, "%{y:.3g} s ± %{customdata[0]:.2g}<br>cells %{customdata[1]}"),
            (relative, "%{y:.3g}× a gradient pass ± %{customdata[0]:.2g}<br>cells %{customdata[1]}"),
        ),
        start=1,
    ):
        for _, data in summary.iterrows():
            figure.add_trace(_dot(style, data["criterion"], data, hover), row=1, col=column)
        if not summary.empty and summary["mean"].max() >= 10 * summary["mean"].min() > 0:
            figure.update_yaxes(dtick=1, minor={"showgrid": True, "gridcolor": "#f3f3f3"}, row=1, col=column)
    figure.update_yaxes(type="log", title_text="seconds (log scale)", row=1, col=1)
    figure.update_yaxes(type="log", title_text="× one gradient pass (log scale)", row=1, col=2)
    figure.update_xaxes(title_text="criterion")
    return finish_layout(figure, "Scoring cost per criterion", subtitle, "mean ± std over all of its cells")


FIDELITY_AGGREGATION = "ρ: mean ± std over all cells; P@k: mean ± std over seeds per target ratio"
"""The fidelity panel's aggregation, stated in its subtitle."""


def fidelity(rows: pd.DataFrame, style: Style, subtitle: str, structure: str) -> go.Figure | None:
    """Fidelity per criterion: Spearman ρ to the signed and to the absolute ΔL, and P@k per target ratio.

    The two Spearman views are means ± std over all of a criterion's cells in the
    panel (every seed and ratio: the dense model's scores do not depend on the
    ratio); P@k depends on k, which follows the ratio, so it is one point per
    ratio, mean ± std over seeds.
    """
    views = [seed_summary(rows, ["criterion"], column) for column in ("fidelity", "fidelity_abs")]
    precision = seed_summary(rows, ["criterion", "ratio"], "fidelity_precision")
    if all(view.empty for view in views) and precision.empty:
        return None
    figure = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("ρ(score, signed ΔL)", "ρ(score, |ΔL|)", "P@k: k lowest scores vs k cheapest"),
        horizontal_spacing=0.09,
    )
    for column, (view, name) in enumerate(zip(views, ("signed ΔL", "|ΔL|")), start=1):
        hover = f"Spearman ρ to {name} %{{y:.3f}} ± %{{customdata[0]:.3f}}<br>cells %{{customdata[1]}}"
        for _, data in view.iterrows():
            figure.add_trace(_dot(style, data["criterion"], data, hover), row=1, col=column)
        figure.add_hline(y=0, line={"color": "#888", "width": 1}, row=1, col=column)
        figure.update_yaxes(title_text="Spearman ρ", range=[-1.05, 1.05], row=1, col=column)
        figure.update_xaxes(title_text="criterion", row=1, col=column)
    points = precision.rename(columns={"mean": "y", "std": "y_std"}).assign(x=precision["ratio"] * 100)
    hover = "ratio %{x:.0f}%<br>P@k %{y:.3f} ± %{customdata[1]:.3f}<br>seeds %{customdata[2]}"
    add_lines(figure, style, points, hover, {"row": 1, "col": 3})
    figure.update_yaxes(title_text="precision at k", range=[-0.05, 1.05], row=1, col=3)
    figure.update_xaxes(title_text=_ratio_label(structure), ticksuffix="%", row=1, col=3)
    names = max((len(name) for name in style.colours), default=0)
    return finish_layout(figure, "Fidelity on the dense model", subtitle, FIDELITY_AGGREGATION, tick_space=7 * names)


def latency_vs_macs(rows: pd.DataFrame, style: Style, subtitle: str) -> go.Figure | None:
    """Measured latency speedup against MACs speedup, with the y = x reference."""
    points = curve_points(rows, "macs_speedup", "latency_speedup")
    if points.empty:
        return None
    figure = go.Figure()
    low = min(1.0, points["x"].min(), points["y"].min())
    high = max(points["x"].max(), points["y"].max())
    figure.add_trace(
        go.Scatter(
            x=[low, high],
            y=[low, high],
            mode="lines",
            name="y = x (latency follows MACs)",
            line={"dash": "dash", "color": "#777", "width": 1},
            hoverinfo="skip",
        )
    )
    hover = "ratio %{customdata[0]:.0f}%<br>MACs speedup %{x:.3f}×<br>latency speedup %{y:.3f}× ± %{customdata[1]:.3f}<br>seeds %{customdata[2]}"
    add_lines(figure, style, points, hover, {})
    figure.update_xaxes(type="log", title_text="MACs speedup (×, log scale)")
    figure.update_yaxes(type="log", title_text="measured latency speedup (×, log scale)")
    return finish_layout(
        figure, "Measured latency speedup vs MACs speedup", subtitle, "mean over seeds per target ratio, bars ±1 std"
    )


def layer_allocation(rows: pd.DataFrame, style: Style, subtitle: str) -> go.Figure | None:
    """Heatmap of the share of each layer removed, criterion × layer, one facet per ratio.

    Long: every facet's trace shares the layer labels, the colour scale and the hover text built at the top."""
    fractions = removed_fractions(rows)
    if fractions.empty:
        return None
    layers = list(dict.fromkeys(fractions["layer"]))
    kinds = fractions.drop_duplicates("layer").set_index("layer")["kind"]
    criteria = sorted(fractions["criterion"].unique(), reverse=True)
    ratios = sorted(fractions["ratio"].unique())
    mean = fractions.groupby(["ratio", "criterion", "layer"], sort=False).agg(
        removed=("removed", "mean"), dense=("dense", "first"), remaining=("remaining", "mean"), n=("seed", "nunique")
    )
    per_facet = 46 + 30 * len(criteria)
    figure = make_subplots(
        rows=len(ratios),
        cols=1,
        shared_xaxes=True,
        subplot_titles=[f"target ratio {r * 100:.0f}%" for r in ratios],
        vertical_spacing=min(0.08, 0.5 / max(len(ratios), 1)),
    )
    label = {layer: f"{layer} ({kinds[layer]})" if kinds[layer] else layer for layer in layers}
    show_text = len(layers) * len(criteria) <= 240
    for index, ratio in enumerate(ratios, start=1):
        z, hover = [], []
        for criterion in criteria:
            z_row, hover_row = [], []
            for layer in layers:
                key = (ratio, criterion, layer)
                if key in mean.index:
                    cell = mean.loc[key]
                    z_row.append(cell["removed"] * 100)
                    hover_row.append(
                        f"{cell['remaining']:.1f} of {cell['dense']:.0f} {kinds[layer] or 'units'} kept, "
                        f"mean of {int(cell['n'])} seed(s)"
                    )
                else:
                    z_row.append(None)
                    hover_row.append("no data")
            z.append(z_row)
            hover.append(hover_row)
        figure.add_trace(
            go.Heatmap(
                z=z,
                x=[label[layer] for layer in layers],
                y=[style.swatch(c) for c in criteria],
                customdata=hover,
                coloraxis="coloraxis",
                xgap=2,
                ygap=2,
                texttemplate="%{z:.0f}" if show_text else None,
                hovertemplate="%{y}<br>%{x}<br>removed %{z:.1f}%<br>%{customdata}<extra></extra>",
            ),
            row=index,
            col=1,
        )
    figure.update_layout(
        coloraxis={"colorscale": "Blues", "cmin": 0, "cmax": 100, "colorbar": {"title": {"text": "removed (%)"}, "ticksuffix": "%"}}
    )
    figure.update_xaxes(title_text="layer (pruned unit)", tickangle=-35, row=len(ratios), col=1)
    figure.update_yaxes(title_text="criterion")
    height = 140 + per_facet * len(ratios) + 14 * max(len(label[layer]) for layer in layers) // 2
    finish_layout(figure, "Where each criterion removed capacity: % of each layer's units removed", subtitle,
            "mean over seeds; layers in the order the rows record them (the model's module order)", height)
    figure.update_layout(margin={"l": 140, "b": 40 + 5 * max(len(label[layer]) for layer in layers)})
    return figure


def panel_figures(rows: pd.DataFrame, style: Style, subtitle: str, structure: str) -> list[tuple[str, go.Figure]]:
    """All figures of one panel that have data, as ``(short name, figure)`` in display order."""
    built = [
        ("accuracy", tradeoff(rows, style, subtitle, "final_acc", "after fine-tuning", tuple(SPEEDUPS))),
        ("pruned-accuracy", tradeoff(rows, style, subtitle, "pruned_acc", "after pruning, BN-recalibrated",
                                     ("macs_speedup",))),
        ("latency", latency_vs_macs(rows, style, subtitle)),
        ("allocation", layer_allocation(rows, style, subtitle)),
        ("fidelity", fidelity(rows, style, subtitle, structure)),
        ("scoring-time", scoring_time(rows, style, subtitle)),
    ]
    return [(name, figure) for name, figure in built if figure is not None]

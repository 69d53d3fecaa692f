"""Plotly figures for one panel (model × dataset × structure × allocation) of results.

Each builder takes the panel's rows (all statuses; only ``ok`` rows are plotted)
and a :class:`Style` holding the report-wide colour and marker of every
criterion, and returns a figure, or ``None`` when the panel has no data for it.
Points per (criterion, ratio) are means over seeds; scoring cost and fidelity's
Spearman correlations are means over all of a criterion's cells in the panel,
fidelity's P@k a mean over seeds per ratio. Error bars are one
sample standard deviation (zero for a single value). Accuracies are in percent.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .aggregate import ok_rows, removed_fractions, seed_summary

FIGURE_HEIGHT = 430
_GRID = "#e5e5e5"


@dataclass(frozen=True)
class Style:
    """Report-wide look of each criterion: ``colours[name]`` and ``symbols[name]``."""

    colours: dict[str, str]
    symbols: dict[str, str]

    def swatch(self, criterion: str) -> str:
        """Criterion name prefixed with a square in its colour (Plotly rich text)."""
        return f"<span style='color:{self.colours[criterion]}'>■</span> {criterion}"


def _layout(figure: go.Figure, title: str, subtitle: str, height: int = FIGURE_HEIGHT) -> go.Figure:
    figure.update_layout(
        title={"text": title, "subtitle": {"text": subtitle}, "x": 0.01, "xanchor": "left"},
        template="plotly_white",
        height=height,
        margin={"l": 70, "r": 20, "t": 80, "b": 60},
        legend={"title": {"text": "criterion"}, "groupclick": "togglegroup"},
        font={"size": 13},
        hoverlabel={"namelength": -1},
    )
    figure.update_xaxes(showline=True, linecolor="#888", gridcolor=_GRID, zeroline=False)
    figure.update_yaxes(showline=True, linecolor="#888", gridcolor=_GRID, zeroline=False)
    return figure


def _ratio_label(structure: str) -> str:
    what = "weights" if structure == "unstructured" else "MACs"
    return f"target ratio: {what} removed (%)"


def _merge(x: pd.DataFrame, y: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return x.merge(y, on=keys, suffixes=("_x", "_y")).sort_values(keys)


def _line(style: Style, criterion: str, data: pd.DataFrame, x: str, y: str, hover: str, **kwargs: object) -> go.Scatter:
    return go.Scatter(
        x=data[x],
        y=data[y],
        mode="lines+markers",
        name=criterion,
        legendgroup=criterion,
        line={"color": style.colours[criterion], "width": 2},
        marker={"color": style.colours[criterion], "symbol": style.symbols[criterion], "size": 9},
        hovertemplate=hover + "<extra>" + criterion + "</extra>",
        **kwargs,
    )


def accuracy_vs_speedup(rows: pd.DataFrame, style: Style, subtitle: str) -> go.Figure | None:
    """Final (fine-tuned) accuracy against MACs speedup, one line per criterion over ratios."""
    keys = ["criterion", "ratio"]
    data = _merge(seed_summary(rows, keys, "macs_speedup"), seed_summary(rows, keys, "final_acc", 100.0), keys)
    if data.empty:
        return None
    figure = go.Figure()
    for criterion, line in data.groupby("criterion", sort=True):
        figure.add_trace(
            _line(
                style,
                criterion,
                line,
                "mean_x",
                "mean_y",
                "ratio %{customdata[0]:.0f}%<br>MACs speedup %{x:.2f}×<br>"
                "final accuracy %{y:.2f}% ± %{customdata[1]:.2f}<br>seeds %{customdata[2]}",
                error_x={"type": "data", "array": line["std_x"].fillna(0), "thickness": 1},
                error_y={"type": "data", "array": line["std_y"].fillna(0), "thickness": 1.5},
                customdata=list(zip(line["ratio"] * 100, line["std_y"].fillna(0), line["n_y"])),
            )
        )
    dense = ok_rows(rows).drop_duplicates("seed")["dense_acc"].dropna()
    if not dense.empty:
        figure.add_hline(
            y=dense.mean() * 100,
            line={"dash": "dash", "color": "#555", "width": 1},
            annotation={"text": f"dense {dense.mean() * 100:.2f}%", "font": {"color": "#555"}},
            annotation_position="top right",
        )
    figure.update_xaxes(title_text="MACs speedup (×, dense MACs ÷ pruned MACs)")
    figure.update_yaxes(title_text="top-1 accuracy after fine-tuning (%)")
    return _layout(figure, "Accuracy after fine-tuning vs MACs speedup", subtitle)


def pruned_accuracy_vs_ratio(rows: pd.DataFrame, style: Style, subtitle: str, structure: str) -> go.Figure | None:
    """Accuracy right after pruning, batch-norm recalibrated (before fine-tuning), against the target ratio."""
    data = seed_summary(rows, ["criterion", "ratio"], "pruned_acc", 100.0)
    if data.empty:
        return None
    figure = go.Figure()
    for criterion, line in data.groupby("criterion", sort=True):
        line = line.assign(ratio_pct=line["ratio"] * 100)
        figure.add_trace(
            _line(
                style,
                criterion,
                line,
                "ratio_pct",
                "mean",
                "ratio %{x:.0f}%<br>accuracy before fine-tuning (BN-recalibrated) %{y:.2f}% ± %{customdata[0]:.2f}<br>seeds %{customdata[1]}",
                error_y={"type": "data", "array": line["std"].fillna(0), "thickness": 1.5},
                customdata=list(zip(line["std"].fillna(0), line["n"])),
            )
        )
    figure.update_xaxes(title_text=_ratio_label(structure), ticksuffix="%")
    figure.update_yaxes(title_text="top-1 accuracy before fine-tuning, BN-recalibrated (%)")
    return _layout(figure, "Accuracy right after pruning, BN-recalibrated (no fine-tuning)", subtitle)


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
    _layout(figure, "Scoring cost per criterion (mean ± std over cells)", subtitle)
    figure.update_layout(margin={"t": 105})
    figure.update_annotations(yshift=8)
    return figure


FIDELITY_TITLE = "Fidelity on the dense model: Spearman ρ over all cells, P@k per target ratio (mean ± std)"
"""The fidelity panel's title: which aggregation each part shows."""


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
    for criterion, line in precision.groupby("criterion", sort=True):
        line = line.assign(ratio_pct=line["ratio"] * 100)
        figure.add_trace(
            _line(
                style,
                criterion,
                line,
                "ratio_pct",
                "mean",
                "ratio %{x:.0f}%<br>P@k %{y:.3f} ± %{customdata[0]:.3f}<br>seeds %{customdata[1]}",
                error_y={"type": "data", "array": line["std"].fillna(0), "thickness": 1.5},
                customdata=list(zip(line["std"].fillna(0), line["n"])),
            ),
            row=1,
            col=3,
        )
    figure.update_yaxes(title_text="precision at k", range=[-0.05, 1.05], row=1, col=3)
    figure.update_xaxes(title_text=_ratio_label(structure), ticksuffix="%", row=1, col=3)
    _layout(figure, FIDELITY_TITLE, subtitle)
    figure.update_layout(margin={"t": 105})
    figure.update_annotations(yshift=8)
    return figure


def latency_vs_macs(rows: pd.DataFrame, style: Style, subtitle: str) -> go.Figure | None:
    """Measured latency speedup against MACs speedup, with the y = x reference."""
    keys = ["criterion", "ratio"]
    data = _merge(seed_summary(rows, keys, "macs_speedup"), seed_summary(rows, keys, "latency_speedup"), keys)
    if data.empty:
        return None
    figure = go.Figure()
    low = min(1.0, data["mean_x"].min(), data["mean_y"].min())
    high = max(data["mean_x"].max(), data["mean_y"].max())
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
    for criterion, line in data.groupby("criterion", sort=True):
        figure.add_trace(
            _line(
                style,
                criterion,
                line,
                "mean_x",
                "mean_y",
                "ratio %{customdata[0]:.0f}%<br>MACs speedup %{x:.2f}×<br>latency speedup %{y:.2f}×<br>seeds %{customdata[1]}",
                error_x={"type": "data", "array": line["std_x"].fillna(0), "thickness": 1},
                error_y={"type": "data", "array": line["std_y"].fillna(0), "thickness": 1.5},
                customdata=list(zip(line["ratio"] * 100, line["n_y"])),
            )
        )
    figure.update_xaxes(title_text="MACs speedup (×)")
    figure.update_yaxes(title_text="measured latency speedup (×)")
    return _layout(figure, "Measured latency speedup vs MACs speedup", subtitle)


def layer_allocation(rows: pd.DataFrame, style: Style, subtitle: str) -> go.Figure | None:
    """Heatmap of the share of each layer removed, criterion × layer, one facet per ratio."""
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
    _layout(figure, "Where each criterion removed capacity (% of each layer's units removed)", subtitle, height)
    figure.update_layout(margin={"l": 140})
    return figure


def panel_figures(rows: pd.DataFrame, style: Style, subtitle: str, structure: str) -> list[tuple[str, go.Figure]]:
    """All figures of one panel that have data, as ``(short name, figure)`` in display order."""
    built = [
        ("accuracy", accuracy_vs_speedup(rows, style, subtitle)),
        ("pruned-accuracy", pruned_accuracy_vs_ratio(rows, style, subtitle, structure)),
        ("allocation", layer_allocation(rows, style, subtitle)),
        ("latency", latency_vs_macs(rows, style, subtitle)),
        ("fidelity", fidelity(rows, style, subtitle, structure)),
        ("scoring-time", scoring_time(rows, style, subtitle)),
    ]
    return [(name, figure) for name, figure in built if figure is not None]

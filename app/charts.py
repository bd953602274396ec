"""Altair charts the pages share. Data comes in as DataFrames from pipeline.analytics; these only
draw. Vega renders text with the browser's fonts, so every chart asks for a CJK-capable stack."""

from __future__ import annotations

import altair as alt
import pandas as pd

FONT = "Noto Sans CJK SC, Noto Sans SC, Microsoft YaHei, sans-serif"
STAR_COLORS = ["#d73027", "#fc8d59", "#fee08b", "#91cf60", "#1a9850"]  # 1 (red) .. 5 (green)
STAR_SCALE = alt.Scale(domain=[1, 2, 3, 4, 5], range=STAR_COLORS)
STAR_AXIS = alt.Axis(labelAngle=0)


def styled(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    return chart.configure(font=FONT).configure_axis(labelFont=FONT, titleFont=FONT)


def star_bars(counts: pd.DataFrame, value: str = "reviews", title: str = "") -> alt.Chart:
    """Bars per star (columns ``star`` and ``value``), coloured red to green."""
    return (
        alt.Chart(counts, title=title)
        .mark_bar()
        .encode(
            x=alt.X("star:O", title="star", axis=STAR_AXIS),
            y=alt.Y(f"{value}:Q", title=value),
            color=alt.Color("star:O", scale=STAR_SCALE, legend=None),
            tooltip=[alt.Tooltip("star:O"), alt.Tooltip(f"{value}:Q", format=",")],
        )
        .properties(height=220)
    )


def true_vs_predicted(dist: pd.DataFrame, title: str = "") -> alt.Chart:
    """Grouped bars: long frame with ``star``, ``which`` (true / predicted), ``share``."""
    return (
        alt.Chart(dist, title=title)
        .mark_bar()
        .encode(
            x=alt.X("star:O", title="star", axis=STAR_AXIS),
            xOffset="which:N",
            y=alt.Y("share:Q", title="share of reviews", axis=alt.Axis(format="%")),
            color=alt.Color(
                "which:N",
                title="",
                scale=alt.Scale(domain=["true", "predicted"], range=["#9e9e9e", "#2e7d32"]),
            ),
            tooltip=[
                "star:O",
                "which:N",
                alt.Tooltip("share:Q", format=".1%"),
                alt.Tooltip("reviews:Q", format=","),
            ],
        )
        .properties(height=220)
    )


def confusion_heatmap(matrix: pd.DataFrame, normalised: bool, title: str = "") -> alt.Chart:
    """5x5 heatmap, rows true star, columns predicted star (a ``confusion`` DataFrame)."""
    long = matrix.rename_axis(index="true", columns="predicted").stack().rename("value")
    long = long.reset_index()
    fmt = ".0%" if normalised else ","
    base = alt.Chart(long, title=title).encode(
        x=alt.X("predicted:O", title="predicted star", axis=STAR_AXIS),
        y=alt.Y("true:O", title="true star"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("value:Q", scale=alt.Scale(scheme="greens"), legend=None),
        tooltip=["true:O", "predicted:O", alt.Tooltip("value:Q", format=fmt)],
    )
    labels = base.mark_text(fontSize=11).encode(
        text=alt.Text("value:Q", format=fmt),
        color=alt.condition(
            alt.datum.value > long["value"].max() / 2, alt.value("white"), alt.value("black")
        ),
    )
    return (cells + labels).properties(width=270, height=250)


def grouped_metric_bars(table: pd.DataFrame, metrics: list[str], title: str = "") -> alt.Chart:
    """One bar per model and metric (e.g. exact vs off-by-one accuracy)."""
    long = table.melt(id_vars="model", value_vars=metrics, var_name="metric", value_name="value")
    return (
        alt.Chart(long, title=title)
        .mark_bar()
        .encode(
            y=alt.Y("model:N", sort=None, title=""),
            yOffset="metric:N",
            x=alt.X("value:Q", title="", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("metric:N", title=""),
            tooltip=["model:N", "metric:N", alt.Tooltip("value:Q", format=".1%")],
        )
        .properties(height=max(120, 30 * table["model"].nunique()))
    )


def reliability(table: pd.DataFrame) -> alt.LayerChart:
    """Reliability curve: accuracy vs mean confidence per bin, per model, with the diagonal."""
    diagonal = (
        alt.Chart(pd.DataFrame({"x": [0, 1], "y": [0, 1]}))
        .mark_line(strokeDash=[4, 4], color="#999999")
        .encode(x="x:Q", y="y:Q")
    )
    points = (
        alt.Chart(table[table["count"] > 0])
        .mark_line(point=True)
        .encode(
            x=alt.X("confidence:Q", title="mean confidence", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("model:N"),
            tooltip=[
                "model:N",
                alt.Tooltip("confidence:Q", format=".2f"),
                alt.Tooltip("accuracy:Q", format=".2f"),
                alt.Tooltip("count:Q", format=","),
            ],
        )
    )
    return (diagonal + points).properties(height=300)


def probability_bars(probs: list[float], predicted: int) -> alt.Chart:
    """The probability of each star for one review; the predicted star is outlined."""
    frame = pd.DataFrame({"star": [1, 2, 3, 4, 5], "probability": probs})
    frame["picked"] = frame["star"] == predicted
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("star:O", axis=STAR_AXIS),
            y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            color=alt.Color("star:O", scale=STAR_SCALE, legend=None),
            stroke=alt.condition(alt.datum.picked, alt.value("black"), alt.value(None)),
            strokeWidth=alt.value(2),
            tooltip=["star:O", alt.Tooltip("probability:Q", format=".1%")],
        )
        .properties(height=220)
    )


def month_bars(frame: pd.DataFrame, title: str = "") -> alt.Chart:
    """Reviews per month (``month`` as YYYY-MM, ``reviews``)."""
    return (
        alt.Chart(frame, title=title)
        .mark_bar(color="#9e9e9e")
        .encode(
            x=alt.X("yearmonth(month):T", title="month"),
            y=alt.Y("reviews:Q", title="reviews"),
            tooltip=[alt.Tooltip("month:N"), alt.Tooltip("reviews:Q", format=",")],
        )
        .properties(height=200)
    )


def film_league(table: pd.DataFrame, highlight: str) -> alt.LayerChart:
    """Each film's mean true star and the model's mean predicted star, joined by a rule;
    best-rated first, the chosen film in bold."""
    rated = table.dropna(subset=["mean_true"]).assign(chosen=lambda t: t["film"] == highlight)
    order = rated["film"].tolist()
    y = alt.Y("film:N", sort=order, title="", axis=alt.Axis(labelOverlap=False))
    rule = (
        alt.Chart(rated)
        .mark_rule(color="#bbbbbb")
        .encode(
            y=y,
            x=alt.X("mean_true:Q", title="mean star", scale=alt.Scale(domain=[1, 5])),
            x2="mean_pred:Q",
        )
    )
    long = rated.melt(
        id_vars=["film", "chosen", "evaluated"],
        value_vars=["mean_true", "mean_pred"],
        var_name="which",
        value_name="star",
    )
    long["which"] = long["which"].map({"mean_true": "true", "mean_pred": "predicted"})
    points = (
        alt.Chart(long)
        .mark_point(filled=True, size=90)
        .encode(
            y=y,
            x="star:Q",
            color=alt.Color(
                "which:N",
                title="",
                scale=alt.Scale(domain=["true", "predicted"], range=["#9e9e9e", "#2e7d32"]),
            ),
            shape=alt.Shape("which:N", title=""),
            opacity=alt.condition(alt.datum.chosen, alt.value(1.0), alt.value(0.55)),
            tooltip=[
                "film:N",
                "which:N",
                alt.Tooltip("star:Q", format=".2f"),
                alt.Tooltip("evaluated:Q", title="evaluated reviews"),
            ],
        )
    )
    return (rule + points).properties(height=alt.Step(26))


def line(
    frame: pd.DataFrame,
    x: str,
    y: str,
    title: str = "",
    color: str | None = None,
    y_format: str = "",
    y_domain: tuple[float, float] | None = None,
) -> alt.Chart:
    """A line with points and tooltips (trends over time, per-layer curves)."""
    scale = alt.Scale(domain=list(y_domain)) if y_domain else alt.Undefined
    enc = {
        "x": alt.X(x, title=x.split(":")[0], axis=alt.Axis(labelAngle=0)),
        "y": alt.Y(y, title=y.split(":")[0], axis=alt.Axis(format=y_format), scale=scale),
        "tooltip": [c for c in frame.columns if not c.startswith("_")],
    }
    if color:
        enc["color"] = alt.Color(color)
    return alt.Chart(frame, title=title).mark_line(point=True).encode(**enc).properties(height=260)


def hline(value: float) -> alt.Chart:
    """A dashed horizontal reference line (e.g. the majority-class accuracy)."""
    return (
        alt.Chart(pd.DataFrame({"y": [value]}))
        .mark_rule(strokeDash=[4, 4], color="#999999")
        .encode(y="y:Q")
    )


def tooltip(field: str, title: str) -> alt.Tooltip:
    return alt.Tooltip(field, title=title)


def scatter_map(points: pd.DataFrame, color: str, tooltip: list) -> alt.Chart:
    """2-d map (t-SNE, projections): hover a point to read its review."""
    star_titles = {"star": "true star", "pred_star": "predicted star"}
    color_enc = (
        alt.Color(f"{color}:O", scale=STAR_SCALE, title=star_titles[color])
        if color in star_titles
        else alt.Color(f"{color}:N")
    )
    return (
        alt.Chart(points)
        .mark_circle(size=40, opacity=0.75)
        .encode(
            x=alt.X("x:Q", axis=None),
            y=alt.Y("y:Q", axis=None),
            color=color_enc,
            tooltip=tooltip,
        )
        .properties(height=460)
        .interactive()
    )


def heatmap(
    frame: pd.DataFrame,
    x: str,
    y: str,
    value: str,
    title: str = "",
    scheme: str = "blues",
    fmt: str = ".2f",
    cell: int | None = None,
) -> alt.Chart:
    """Generic heatmap of a long frame (layer x head statistics, CKA matrices). With ``cell``
    every cell is that many pixels and every label is shown (token-by-token head views)."""
    axis = alt.Axis(labelOverlap=False, labelAngle=-60) if cell else alt.Axis(labelAngle=0)
    chart = (
        alt.Chart(frame, title=title)
        .mark_rect()
        .encode(
            x=alt.X(f"{x}:O", axis=axis, sort=None),
            y=alt.Y(f"{y}:O", axis=alt.Axis(labelOverlap=False) if cell else alt.Axis(), sort=None),
            color=alt.Color(f"{value}:Q", scale=alt.Scale(scheme=scheme)),
            tooltip=[f"{x}:O", f"{y}:O", alt.Tooltip(f"{value}:Q", format=fmt)],
        )
    )
    return chart.properties(width=alt.Step(cell), height=alt.Step(cell)) if cell else chart

"""The one chart system: Altair (Vega-Lite) definitions the app renders interactively and the HTML
reports embed as inline Vega-Lite with the vega/vega-lite/vega-embed JavaScript inlined (from
``vl-convert-python``), so a report opens offline with the same look as the app.

Data comes in as DataFrames from :mod:`pipeline.analytics`; these functions only draw. One
colour-blind-safe palette for stars (ColorBrewer RdBu with a grey middle, readable on white) and
one for models (Okabe-Ito). Vega draws text with the browser's fonts, so every chart asks for a
CJK-capable stack.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Iterable

import altair as alt
import pandas as pd

from pipeline.reports.names import model_name

FONT = "Noto Sans CJK SC, Noto Sans SC, Microsoft YaHei, sans-serif"
STARS = [1, 2, 3, 4, 5]
STAR_COLORS = ["#b2182b", "#ef8a62", "#878787", "#67a9cf", "#2166ac"]  # 1 (red) .. 5 (blue)
MODEL_COLORS = ["#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#000000",
                "#999999"]  # fmt: skip
TRUE_COLOR, PRED_COLOR = "#595959", "#d55e00"  # true vs predicted, everywhere
STAR_SCALE = alt.Scale(domain=STARS, range=STAR_COLORS)
WHICH_SCALE = alt.Scale(domain=["true", "predicted"], range=[TRUE_COLOR, PRED_COLOR])
STAR_AXIS = alt.Axis(labelAngle=0)
MIN_MONTH_REVIEWS = 5  # a month's mean from fewer reviews is not drawn as part of the trend
MIN_BIN_REVIEWS = 20  # calibration bins with fewer reviews are drawn faint


def model_scale(models: Iterable[str]) -> alt.Scale:
    """The model palette over display names, in a stable order (sorted ids)."""
    names = [model_name(m) for m in sorted(set(models))]
    colors = list(itertools.islice(itertools.cycle(MODEL_COLORS), len(names)))
    return alt.Scale(domain=names, range=colors)


def styled(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    """The shared look: CJK fonts for every text mark, axis and legend."""
    return (
        chart.configure(font=FONT)
        .configure_axis(labelFont=FONT, titleFont=FONT, labelLimit=260)
        .configure_legend(labelFont=FONT, titleFont=FONT, labelLimit=260)
        .configure_view(stroke=None)
    )


def star_bars(counts: pd.DataFrame, value: str = "reviews", title: str = "") -> alt.Chart:
    """Bars per star (columns ``star`` and ``value``), in the star palette."""
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
    """Grouped bars: long frame with ``star``, ``which`` (true / predicted), ``share``,
    ``reviews``."""
    return (
        alt.Chart(dist, title=title)
        .mark_bar()
        .encode(
            x=alt.X("star:O", title="star", axis=STAR_AXIS),
            xOffset=alt.XOffset("which:N", sort=["true", "predicted"]),
            y=alt.Y("share:Q", title="share of reviews", axis=alt.Axis(format="%")),
            color=alt.Color("which:N", title="", scale=WHICH_SCALE),
            tooltip=[
                "star:O",
                "which:N",
                alt.Tooltip("share:Q", format=".1%"),
                alt.Tooltip("reviews:Q", format=","),
            ],
        )
        .properties(height=220)
    )


def distribution_long(distribution: pd.DataFrame) -> pd.DataFrame:
    """``analytics.stars.star_distribution`` (index star) as the long frame of
    :func:`true_vs_predicted`."""
    dist = distribution.reset_index()
    parts = [
        dist.assign(which=which, share=dist[f"{which}_share"], reviews=dist[which])
        for which in ("true", "predicted")
    ]
    return pd.concat(parts)[["star", "which", "share", "reviews"]]


def confusion_heatmap(
    matrix: pd.DataFrame, normalised: bool, title: str = "", counts: pd.DataFrame | None = None
) -> alt.LayerChart:
    """5x5 heatmap, rows true star, columns predicted star (a ``confusion`` DataFrame); with
    ``counts`` the tooltip gives each cell's count too."""
    long = matrix.rename_axis(index="true", columns="predicted").stack().rename("value")
    long = long.reset_index()
    tooltip = ["true:O", "predicted:O", alt.Tooltip("value:Q", format=".0%" if normalised else ",")]
    if counts is not None:
        long["reviews"] = counts.to_numpy().ravel()
        tooltip.append(alt.Tooltip("reviews:Q", format=","))
    fmt = ".0%" if normalised else ","
    base = alt.Chart(long, title=title).encode(
        x=alt.X("predicted:O", title="predicted star", axis=STAR_AXIS),
        y=alt.Y("true:O", title="true star"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("value:Q", scale=alt.Scale(scheme="blues"), legend=None),
        tooltip=tooltip,
    )
    top = float(long["value"].max() or 1)
    labels = base.mark_text(fontSize=11).encode(
        text=alt.Text("value:Q", format=fmt),
        color=alt.condition(alt.datum.value > top / 2, alt.value("white"), alt.value("black")),
    )
    return (cells + labels).properties(width=270, height=250)


def grouped_metric_bars(table: pd.DataFrame, metrics: list[str], title: str = "") -> alt.Chart:
    """One bar per model and metric, models in the table's order (so the bars follow whatever
    the table is sorted by)."""
    frame = table.assign(name=table["model"].map(model_name))
    long = frame.melt(id_vars="name", value_vars=metrics, var_name="metric", value_name="value")
    return (
        alt.Chart(long, title=title)
        .mark_bar()
        .encode(
            y=alt.Y("name:N", sort=frame["name"].tolist(), title="", axis=alt.Axis(labelLimit=260)),
            yOffset="metric:N",
            x=alt.X("value:Q", title="", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("metric:N", title="", scale=alt.Scale(range=[PRED_COLOR, "#0072b2"])),
            tooltip=[
                alt.Tooltip("name:N", title="model"),
                "metric:N",
                alt.Tooltip("value:Q", format=".1%"),
            ],
        )
        .properties(height=max(120, 34 * len(frame)))
    )


def reliability(table: pd.DataFrame) -> alt.LayerChart:
    """Reliability curve per model: accuracy vs mean confidence per bin, with the diagonal;
    bins with fewer than ``MIN_BIN_REVIEWS`` reviews are drawn as faint points, not joined."""
    diagonal = (
        alt.Chart(pd.DataFrame({"x": [0, 1], "y": [0, 1]}))
        .mark_line(strokeDash=[4, 4], color="#999999")
        .encode(x="x:Q", y="y:Q")
    )
    data = table[table["count"] > 0].assign(name=lambda t: t["model"].map(model_name))
    data = data.assign(thin=data["count"] < MIN_BIN_REVIEWS)
    scale = model_scale(table["model"])
    enc = {
        "x": alt.X("confidence:Q", title="mean confidence", scale=alt.Scale(domain=[0, 1])),
        "y": alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
        "color": alt.Color("name:N", title="model", scale=scale),
        "tooltip": [
            alt.Tooltip("name:N", title="model"),
            alt.Tooltip("confidence:Q", format=".2f"),
            alt.Tooltip("accuracy:Q", format=".2f"),
            alt.Tooltip("count:Q", format=",", title="reviews in bin"),
        ],
    }
    full = alt.Chart(data[~data["thin"]]).mark_line(point=True).encode(**enc)
    thin = alt.Chart(data[data["thin"]]).mark_point(opacity=0.35).encode(**enc)
    return (diagonal + full + thin).properties(height=320)


def probability_bars(probs: list[float], predicted: int) -> alt.Chart:
    """The probability of each star for one review; the predicted star is outlined."""
    frame = pd.DataFrame({"star": STARS, "probability": probs})
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


def trend(table: pd.DataFrame, model: str | None = None) -> alt.VConcatChart:
    """Mean star per month (all reviews) and the model's mean prediction (evaluated reviews),
    only for months with at least ``MIN_MONTH_REVIEWS`` reviews behind the mean; reviews per
    month as bars below. The time axis shows years and stops at the data."""
    months = table.assign(date=pd.to_datetime(table["month"], format="%Y-%m"))
    series = [("mean_star", "reviews", "mean star (all reviews)")]
    if "mean_pred" in months.columns:
        series.append(("mean_pred", "evaluated", f"mean predicted ({model_name(model)})"))
    long = pd.concat(
        [
            months.assign(series=label, star=months[col], behind=months[count])[
                ["date", "month", "series", "star", "behind"]
            ]
            for col, count, label in series
        ]
    )
    long = long[long["behind"] >= MIN_MONTH_REVIEWS].dropna(subset=["star"])
    domain = [months["date"].min().isoformat(), months["date"].max().isoformat()]
    x = alt.X(
        "date:T",
        title="month",
        scale=alt.Scale(domain=domain),
        axis=alt.Axis(format="%Y-%m", labelAngle=0, labelOverlap=True),
    )
    colors = alt.Scale(domain=[s[2] for s in series], range=[TRUE_COLOR, PRED_COLOR][: len(series)])
    lines = (
        alt.Chart(long, title="mean star by month")
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("star:Q", title="mean star", scale=alt.Scale(domain=[1, 5])),
            color=alt.Color(
                "series:N", title="", scale=colors, legend=alt.Legend(orient="top", labelLimit=400)
            ),
            tooltip=[
                alt.Tooltip("month:N"),
                "series:N",
                alt.Tooltip("star:Q", format=".2f"),
                alt.Tooltip("behind:Q", title="reviews behind the mean", format=","),
            ],
        )
        .properties(height=240, width="container")
    )
    bars = (
        alt.Chart(months, title="reviews per month")
        .mark_bar(color="#bdbdbd")
        .encode(
            x=x,
            y=alt.Y("reviews:Q", title="reviews"),
            tooltip=[alt.Tooltip("month:N"), alt.Tooltip("reviews:Q", format=",")],
        )
        .properties(height=120, width="container")
    )
    return alt.vconcat(lines, bars)


def film_league(table: pd.DataFrame, highlight: str | None = None) -> alt.LayerChart:
    """Each film's mean true star and the model's mean predicted star over its evaluated
    reviews, joined by a rule; best-rated first, the chosen film opaque, others faded."""
    rated = table.dropna(subset=["mean_true"]).sort_values("mean_true", ascending=False)
    rated = rated.assign(
        chosen=rated["film"] == highlight if highlight is not None else True,
        label=[f"{f} ({n:,})" for f, n in zip(rated["film"], rated["evaluated"], strict=True)],
    )
    y = alt.Y("label:N", sort=rated["label"].tolist(), title="", axis=alt.Axis(labelLimit=300))
    rule = (
        alt.Chart(rated)
        .mark_rule(color="#bbbbbb")
        .encode(
            y=y,
            x=alt.X(
                "mean_true:Q", title="mean star (evaluated reviews)", scale=alt.Scale(domain=[1, 5])
            ),
            x2="mean_pred:Q",
        )
    )
    long = rated.melt(
        id_vars=["film", "label", "chosen", "evaluated"],
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
            color=alt.Color("which:N", title="", scale=WHICH_SCALE),
            # the shape's domain in the colour's order: one merged legend, not two that disagree
            shape=alt.Shape("which:N", title="", scale=alt.Scale(domain=WHICH_SCALE.domain)),
            opacity=alt.condition(alt.datum.chosen, alt.value(1.0), alt.value(0.4)),
            tooltip=[
                "film:N",
                "which:N",
                alt.Tooltip("star:Q", format=".2f"),
                alt.Tooltip("evaluated:Q", title="evaluated reviews", format=","),
            ],
        )
    )
    return (rule + points).properties(height=alt.Step(24), width="container")


def aspect_bars(table: pd.DataFrame) -> alt.Chart:
    """Praise (right) and complaint (left) per aspect: the shares of its clauses that read
    positive and negative (``analytics.aspects.film_aspects``), most mentioned aspect on top."""
    labels = [f"{n} {e} ({c:,})" for n, e, c in
              zip(table["name"], table["english"], table["clauses"], strict=True)]  # fmt: skip
    long = pd.concat([
        pd.DataFrame({"aspect": labels, "side": "praise", "share": table["praise"]}),
        pd.DataFrame({"aspect": labels, "side": "complaint", "share": -table["complaint"]}),
    ])  # fmt: skip
    scale = alt.Scale(domain=["complaint", "praise"], range=["#d62728", "#2ca02c"])
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            y=alt.Y("aspect:N", sort=labels, title="", axis=alt.Axis(labelLimit=300)),
            x=alt.X(
                "share:Q",
                title="share of the aspect's clauses (complaint | praise)",
                axis=alt.Axis(format="%", labelExpr="abs(datum.value) * 100 + '%'"),
            ),
            color=alt.Color("side:N", title="", scale=scale),
            tooltip=[
                "aspect:N",
                "side:N",
                alt.Tooltip("share:Q", title="share (negative: complaint)", format=".0%"),
            ],
        )
        .properties(height=alt.Step(26), width="container")
    )


def scatter_map(points: pd.DataFrame, color: str = "star", by_film: bool = False) -> alt.Chart:
    """2-d map (t-SNE, projections): hover a point to read its review. ``points`` has ``x, y``,
    ``star`` and the review as ``text`` (or ``review``); ``pred_star`` (<NA> for reviews the
    model trained on) and ``film`` are shown when present."""
    data = points.copy()
    if "text" in data.columns:
        data["review"] = data.pop("text").astype(str).str.slice(0, 140)
    tooltip = [alt.Tooltip("review:N", title="review")]
    if by_film:
        tooltip.append(alt.Tooltip("film:N", title="film"))
    tooltip.append(alt.Tooltip("star:O", title="true star"))
    if "pred_star" in data.columns:
        data["predicted"] = data["pred_star"].astype("string").fillna("- (training review)")
        tooltip.append(alt.Tooltip("predicted:N", title="predicted star"))
    titles = {"star": "true star", "pred_star": "predicted star"}
    color_enc = (
        alt.Color(f"{color}:O", scale=STAR_SCALE, title=titles[color])
        if color in titles
        else alt.Color(f"{color}:N", title=color)
    )
    return (
        alt.Chart(data)
        .mark_circle(size=45, opacity=0.75)
        .encode(
            x=alt.X("x:Q", axis=None), y=alt.Y("y:Q", axis=None), color=color_enc, tooltip=tooltip
        )
        .properties(height=460, width="container")
        .interactive()
    )


def line(
    frame: pd.DataFrame,
    x: str,
    y: str,
    title: str = "",
    color: str | None = None,
    y_format: str = "",
    y_domain: tuple[float, float] | None = None,
) -> alt.Chart:
    """A line with points and tooltips (per-layer curves of the lab)."""
    scale = alt.Scale(domain=list(y_domain)) if y_domain else alt.Undefined
    enc = {
        "x": alt.X(x, title=x.split(":")[0], axis=alt.Axis(labelAngle=0)),
        "y": alt.Y(y, title=y.split(":")[0], axis=alt.Axis(format=y_format), scale=scale),
        "tooltip": [c for c in frame.columns if not c.startswith("_")],
    }
    if color:
        enc["color"] = alt.Color(color, scale=alt.Scale(range=MODEL_COLORS))
    return alt.Chart(frame, title=title).mark_line(point=True).encode(**enc).properties(height=260)


def hline(value: float) -> alt.Chart:
    """A dashed horizontal reference line (e.g. the majority-class accuracy)."""
    return (
        alt.Chart(pd.DataFrame({"y": [value]}))
        .mark_rule(strokeDash=[4, 4], color="#999999")
        .encode(y="y:Q")
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


# ------------------------------------------------------------------------ HTML (the reports)


@functools.cache
def vega_javascript() -> str:
    """vega, vega-lite and vega-embed as one inline script (about 0.9 MB), from vl-convert."""
    import vl_convert

    return vl_convert.javascript_bundle()


def spec_json(chart: alt.TopLevelMixin) -> str:
    """The chart's Vega-Lite spec as JSON that is safe inside a ``<script>`` element (review text
    in the data cannot close the element or open a comment)."""
    text = json.dumps(styled(chart).to_dict(), ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")

"""Matplotlib figures for the static HTML reports, drawn from the analytics' DataFrames.

Every function returns a :class:`~matplotlib.figure.Figure` built without pyplot (no global
state, nothing left open); :func:`figure_to_data_uri` embeds one in HTML as a base64 PNG.
Chinese text is drawn with the CJK font from :mod:`pipeline.fonts`.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from pipeline.analytics.stars import STARS
from pipeline.fonts import use_cjk_font

STAR_COLOURS = {1: "#d7301f", 2: "#fc8d59", 3: "#e6b800", 4: "#91cf60", 5: "#1a9850"}
TRUE_COLOUR, PRED_COLOUR = "#4c72b0", "#dd8452"
DPI = 100


def _figure(width: float, height: float) -> Figure:
    use_cjk_font()
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def figure_to_data_uri(fig: Figure) -> str:
    """``data:image/png;base64,...`` of the figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_to_data_uri(image: np.ndarray) -> str:
    """``data:image/png;base64,...`` of an RGB array (e.g. a word cloud)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def star_distribution_figure(distribution: pd.DataFrame) -> Figure:
    """Grouped bars: share of reviews per star, true vs predicted (counts on top)."""
    fig = _figure(6, 3.2)
    ax = fig.add_subplot()
    x = np.arange(len(STARS))
    for offset, column, colour, label in (
        (-0.2, "true", TRUE_COLOUR, "true"),
        (0.2, "predicted", PRED_COLOUR, "predicted"),
    ):
        shares = distribution[f"{column}_share"].to_numpy()
        bars = ax.bar(x + offset, shares, width=0.4, color=colour, label=label)
        ax.bar_label(bars, labels=[str(c) for c in distribution[column]], fontsize=8)
    ax.set_xticks(x, [f"{s}★" for s in STARS])
    ax.set_ylabel("share of reviews")
    ax.set_ylim(
        0, max(distribution[["true_share", "predicted_share"]].to_numpy().max(), 0.01) * 1.2
    )
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def confusion_figure(normalised: pd.DataFrame, counts: pd.DataFrame) -> Figure:
    """Heatmap of the row-normalised confusion matrix, each cell labelled share and count."""
    fig = _figure(4.6, 4)
    ax = fig.add_subplot()
    values = normalised.to_numpy(dtype=float)
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            colour = "white" if values[i, j] > 0.55 else "black"
            text = f"{values[i, j]:.0%}\n{int(counts.iat[i, j])}"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=8)
    labels = [f"{s}★" for s in STARS]
    ax.set_xticks(range(len(STARS)), labels)
    ax.set_yticks(range(len(STARS)), labels)
    ax.set_xlabel("predicted star")
    ax.set_ylabel("true star")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the row")
    return fig


def tsne_figure(points: pd.DataFrame) -> Figure:
    """t-SNE scatter, one colour per true star."""
    fig = _figure(6, 5)
    ax = fig.add_subplot()
    for star in STARS:
        rows = points[points["star"] == star]
        ax.scatter(
            rows["x"],
            rows["y"],
            s=8,
            alpha=0.7,
            color=STAR_COLOURS[star],
            label=f"{star}★",
            linewidths=0,
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(title="true star", markerscale=2, frameon=False, loc="best")
    return fig


def trend_figure(trend: pd.DataFrame, min_reviews: int = 5) -> Figure:
    """Mean true and predicted star per month, with the number of reviews as grey bars. A mean
    is drawn only for months with at least ``min_reviews`` reviews behind it (one review's star
    is not a trend)."""
    fig = _figure(8, 3.4)
    ax = fig.add_subplot()
    x = np.arange(len(trend))
    counts = ax.twinx()
    counts.bar(x, trend["reviews"], color="#dddddd", width=0.8)
    counts.set_ylabel("reviews per month", color="#888888")
    ax.set_zorder(counts.get_zorder() + 1)
    ax.patch.set_visible(False)
    mean_star = trend["mean_star"].where(trend["reviews"] >= min_reviews)
    ax.plot(x, mean_star, marker="o", ms=3, color=TRUE_COLOUR, label="mean star (all reviews)")
    if "mean_pred" in trend.columns:
        mean_pred = trend["mean_pred"].where(trend["evaluated"] >= min_reviews)
        ax.plot(x, mean_pred, marker="s", ms=3, color=PRED_COLOUR, linestyle="--",
                label="mean predicted star (evaluated reviews)")  # fmt: skip
    ax.set_ylim(1, 5)
    ax.set_ylabel("mean star")
    step = max(1, len(trend) // 12)
    ax.set_xticks(x[::step], trend["month"].iloc[::step], rotation=45, ha="right")
    ax.legend(frameon=False, loc="lower left")
    return fig


def league_figure(league: pd.DataFrame, highlight: str | None = None) -> Figure:
    """Every film's mean true star (dot) and mean predicted star (cross) over its evaluated
    reviews (their number in brackets), best-rated at the top; the ``highlight`` film's name is
    red (the CJK font has no bold face)."""
    rows = league.dropna(subset=["mean_true"]).sort_values("mean_true")
    fig = _figure(7, max(2.5, 0.28 * len(rows) + 1))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    ax.hlines(y, rows["mean_true"], rows["mean_pred"], color="#bbbbbb")
    ax.scatter(rows["mean_true"], y, color=TRUE_COLOUR, label="mean true star", zorder=3)
    ax.scatter(
        rows["mean_pred"], y, color=PRED_COLOUR, marker="x", label="mean predicted star", zorder=3
    )
    ax.set_yticks(y, [f"{f} ({n})" for f, n in zip(rows["film"], rows["evaluated"], strict=True)])
    for label, film in zip(ax.get_yticklabels(), rows["film"], strict=True):
        if film == highlight:
            label.set_color("#d7301f")
    ax.set_xlim(1, 5)
    ax.set_xlabel("mean star over evaluated reviews")
    ax.legend(frameon=False, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return fig


def word_clouds_figure(images: dict[str, np.ndarray], columns: int = 3) -> Figure:
    """Word-cloud images (from :func:`pipeline.analytics.words.word_cloud`) in a grid, each
    titled by its key."""
    rows = max(1, -(-len(images) // columns))
    fig = _figure(4 * min(columns, max(len(images), 1)), 2.3 * rows)
    for i, (title, image) in enumerate(images.items()):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(image, interpolation="bilinear")
        ax.set_title(title)
        ax.axis("off")
    return fig

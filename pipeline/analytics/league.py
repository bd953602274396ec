"""Film league table: does the model rank the films the way the reviewers do?"""

from __future__ import annotations

import pandas as pd

MIN_RANKED = 5  # evaluated reviews a film needs for a rank: one review's 5 stars is no rating


def league_table(reviews: pd.DataFrame, preds: pd.DataFrame) -> pd.DataFrame:
    """One row per film, best-rated first: ``film, reviews, mean_star`` (all its reviews) and
    ``evaluated, mean_true, mean_pred, error`` (= mean_pred - mean_true) over the model's
    evaluated reviews, plus each film's ``rank_true`` and ``rank_pred`` by those two means
    among the films with at least :data:`MIN_RANKED` evaluated reviews (NaN for the others)."""
    table = reviews.groupby("film").agg(reviews=("star", "size"), mean_star=("star", "mean"))
    evaluated = preds.groupby("film").agg(
        evaluated=("star", "size"), mean_true=("star", "mean"), mean_pred=("pred_star", "mean")
    )
    table = table.join(evaluated)
    table["evaluated"] = table["evaluated"].fillna(0).astype(int)
    table["error"] = table["mean_pred"] - table["mean_true"]
    ranked = table["evaluated"] >= MIN_RANKED
    table["rank_true"] = table["mean_true"].where(ranked).rank(ascending=False, method="min")
    table["rank_pred"] = table["mean_pred"].where(ranked).rank(ascending=False, method="min")
    table = table.sort_values(["mean_star", "reviews"], ascending=False)
    return table.reset_index()

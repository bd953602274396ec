"""Time and likes: how a film's stars move by month, and whether liked reviews agree with it.

Dates and likes are optional in DMSC-format data (the 2016 four-film corpus has neither), so
every function returns None when there is nothing to compute, and the caller says so.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def monthly_trend(reviews: pd.DataFrame, preds: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """Every month (``YYYY-MM``) from the first dated review to the last, months without
    reviews included: ``reviews`` and ``mean_star`` over all the film's dated reviews;
    ``evaluated``, ``mean_true`` and ``mean_pred`` over the model's evaluated reviews (NaN
    where a month has none). None when no review has a date."""
    dates = pd.to_datetime(reviews["date"], errors="coerce", format="%Y-%m-%d")
    dated = reviews.assign(month=dates.dt.to_period("M")).dropna(subset=["month"])
    if dated.empty:
        return None
    months = pd.period_range(dated["month"].min(), dated["month"].max(), freq="M", name="month")
    table = dated.groupby("month").agg(reviews=("star", "size"), mean_star=("star", "mean"))
    table = table.reindex(months)
    table["reviews"] = table["reviews"].fillna(0).astype(int)
    if preds is not None and len(preds):
        month_of = dated.set_index("review_id")["month"]
        p = preds.assign(month=preds["review_id"].map(month_of)).dropna(subset=["month"])
        evaluated = p.groupby("month").agg(
            evaluated=("star", "size"), mean_true=("star", "mean"), mean_pred=("pred_star", "mean")
        )
        table = table.join(evaluated)
        table["evaluated"] = table["evaluated"].fillna(0).astype(int)
    table.index = table.index.strftime("%Y-%m")
    return table.reset_index()


def likes_agreement(reviews: pd.DataFrame, top: int = 10) -> dict[str, Any] | None:
    """Do the most-liked reviews say what the film's reviews say on average?

    Returns ``mean_star`` (plain), ``like_weighted_mean_star`` (each review weighted by its
    likes), ``top_liked_mean_star`` (the ``top`` most-liked reviews), ``with_likes`` (reviews
    with at least one like), ``total_likes`` and ``top_liked`` (those reviews' rows). None when
    the data has no likes at all (column missing, empty, or every count 0)."""
    if "like" not in reviews.columns:
        return None
    likes = pd.to_numeric(reviews["like"], errors="coerce")
    known = reviews.assign(like=likes).dropna(subset=["like"])
    total = float(known["like"].sum()) if len(known) else 0.0
    if total <= 0:
        return None
    top_liked = known.nlargest(top, "like")
    return {
        "mean_star": float(reviews["star"].mean()),
        "like_weighted_mean_star": float((known["star"] * known["like"]).sum() / total),
        "top_liked_mean_star": float(top_liked["star"].mean()),
        "with_likes": int((known["like"] > 0).sum()),
        "total_likes": int(total),
        "top_liked": top_liked,
    }


def with_predictions(likes: dict[str, Any] | None, preds: pd.DataFrame) -> dict[str, Any] | None:
    """Add the model's star to the top-liked reviews it predicted (<NA> for the others)."""
    if likes is None:
        return None
    by_id = preds.set_index("review_id")["pred_star"]
    top = likes["top_liked"]
    return likes | {"top_liked": top.assign(predicted=top["review_id"].map(by_id).astype("Int8"))}

"""Stars: how many reviews, true vs predicted distribution, accuracy and confusion matrices.

Inputs are prediction rows (``star``, ``pred_star``, optionally ``model``) as in
predictions.parquet; star values are 1..5.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.modeling.metrics import bootstrap_ci

STARS = (1, 2, 3, 4, 5)


def star_counts(stars: pd.Series) -> pd.Series:
    """Reviews per star 1..5 (zeros included)."""
    return stars.astype(int).value_counts().reindex(STARS, fill_value=0).rename_axis("star")


def star_distribution(preds: pd.DataFrame) -> pd.DataFrame:
    """True vs predicted stars side by side: ``true``, ``predicted`` counts and their shares."""
    table = pd.DataFrame(
        {"true": star_counts(preds["star"]), "predicted": star_counts(preds["pred_star"])}
    )
    total = max(len(preds), 1)
    table["true_share"] = table["true"] / total
    table["predicted_share"] = table["predicted"] / total
    return table


def accuracy_summary(preds: pd.DataFrame) -> dict[str, Any]:
    """Reviews, mean true and predicted star, exact and off-by-one accuracy, MAE (NaN if empty)."""
    true = preds["star"].to_numpy(dtype=float)
    pred = preds["pred_star"].to_numpy(dtype=float)
    if len(true) == 0:
        nan = float("nan")
        return {
            "n": 0,
            "mean_star": nan,
            "mean_pred": nan,
            "exact": nan,
            "off_by_one": nan,
            "mae": nan,
        }
    err = np.abs(true - pred)
    return {
        "n": int(len(true)),
        "mean_star": float(true.mean()),
        "mean_pred": float(pred.mean()),
        "exact": float((err == 0).mean()),
        "off_by_one": float((err <= 1).mean()),
        "mae": float(err.mean()),
    }


def model_summaries(preds: pd.DataFrame) -> pd.DataFrame:
    """:func:`accuracy_summary` for every model in ``preds``, one row each, best exact first."""
    rows = [{"model": m, **accuracy_summary(g)} for m, g in preds.groupby("model", sort=True)]
    if not rows:
        return pd.DataFrame(
            columns=["model", "n", "mean_star", "mean_pred", "exact", "off_by_one", "mae"]
        )
    return (
        pd.DataFrame(rows)
        .sort_values("exact", ascending=False, kind="stable")
        .reset_index(drop=True)
    )


def confusion(preds: pd.DataFrame, normalise: bool = False) -> pd.DataFrame:
    """5x5 matrix, rows = true star, columns = predicted star. ``normalise`` divides each row by
    its total, so a row reads "of the reviews with this true star, the share predicted as ..."
    (rows without reviews stay 0)."""
    counts = pd.crosstab(preds["star"].astype(int), preds["pred_star"].astype(int))
    counts = counts.reindex(index=STARS, columns=STARS, fill_value=0)
    counts.index.name, counts.columns.name = "true", "predicted"
    if not normalise:
        return counts
    totals = counts.sum(axis=1).replace(0, 1)
    return counts.div(totals, axis=0)


def exact_ci(preds: pd.DataFrame, seed: int = 0) -> tuple[float, float] | None:
    """95% bootstrap interval of the exact accuracy (:func:`bootstrap_ci`, as the evaluations
    compute it); None without predictions."""
    if preds.empty:
        return None
    low, high = bootstrap_ci(preds["star"].to_numpy(int), preds["pred_star"].to_numpy(int),
                             seed=seed)["accuracy"]  # fmt: skip
    return float(low), float(high)

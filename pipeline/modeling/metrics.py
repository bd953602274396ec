"""Pure metric functions over star ratings 1..5, on scikit-learn's where it has them.

Everything takes plain arrays (true stars, predicted stars, optional class probabilities) and
returns JSON-ready dicts, so evaluation, reports and the app all read the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

STARS = (1, 2, 3, 4, 5)
NUM_CLASSES = len(STARS)
LABELS = {str(star): star - 1 for star in STARS}  # star -> class index, as models store it
# The evaluations whose predictions index the run's own reviews, best first: its random split,
# then a film held out of training (``cross_corpus`` rows index another run's reviews).
OWN_EVALUATIONS = ("random", "film_holdout")


def _as_stars(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.int64)
    if arr.size and (arr.min() < 1 or arr.max() > NUM_CLASSES):
        raise ValueError(f"stars must lie in 1..{NUM_CLASSES}, got {arr.min()}..{arr.max()}")
    return arr


def confusion_matrix(y_true: Any, y_pred: Any) -> np.ndarray:
    """Counts, rows = true star, columns = predicted star."""
    t, p = _as_stars(y_true), _as_stars(y_pred)
    import sklearn.metrics as sk  # lazily: scoring needs no sklearn

    return sk.confusion_matrix(t, p, labels=list(STARS)).astype(np.int64)


def normalise_rows(cm: np.ndarray) -> np.ndarray:
    """Row-normalised confusion matrix; rows without samples are zeros, not NaN."""
    totals = cm.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(cm, totals, out=np.zeros(cm.shape, dtype=np.float64), where=totals > 0)


def quadratic_weighted_kappa(y_true: Any, y_pred: Any) -> float:
    """Cohen's kappa with quadratic weights over the five stars (1 = perfect, 0 = chance)."""
    t, p = _as_stars(y_true), _as_stars(y_pred)
    if len(t) == 0:
        return float("nan")
    if np.unique(np.concatenate([t, p])).size == 1:
        return 1.0  # one star on both sides: kappa is undefined, the agreement is perfect
    import sklearn.metrics as sk  # lazily: scoring needs no sklearn

    return float(sk.cohen_kappa_score(t, p, labels=list(STARS), weights="quadratic"))


def per_class(y_true: Any, y_pred: Any) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per star; 0 where undefined."""
    t, p = _as_stars(y_true), _as_stars(y_pred)
    import sklearn.metrics as sk  # lazily: scoring needs no sklearn

    scores = sk.precision_recall_fscore_support(t, p, labels=list(STARS), zero_division=0)
    return {
        str(star): {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(support),
        }
        for star, precision, recall, f1, support in zip(STARS, *scores, strict=True)
    }


def macro_f1(y_true: Any, y_pred: Any) -> float:
    """Mean F1 over the stars that occur in the true labels or the predictions."""
    t, p = _as_stars(y_true), _as_stars(y_pred)
    import sklearn.metrics as sk  # lazily: scoring needs no sklearn

    return float(sk.f1_score(t, p, average="macro", zero_division=0)) if len(t) else float("nan")


def expected_star(probs: np.ndarray) -> np.ndarray:
    """Mean of the predicted star distribution."""
    return np.asarray(probs, dtype=np.float64) @ np.asarray(STARS, dtype=np.float64)


def median_star(probs: np.ndarray) -> np.ndarray:
    """Median of the predicted star distribution: the smallest star whose cumulative probability
    reaches one half. It minimises the expected absolute error, so it is the MAE-optimal pick."""
    cdf = np.cumsum(np.asarray(probs, dtype=np.float64), axis=1)
    cdf /= np.maximum(cdf[:, -1:], 1e-12)
    return (cdf < 0.5 - 1e-9).sum(axis=1).clip(0, NUM_CLASSES - 1) + 1


def calibration(
    y_true: Any, probs: np.ndarray, bins: int = 10
) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error of the top-class confidence, with its reliability table.

    Equal-width confidence bins; ECE = sum over bins of (bin share) x |accuracy - confidence|.
    """
    t = _as_stars(y_true)
    p = np.asarray(probs, dtype=np.float64)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) + 1) == t
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    table = []
    for b in range(bins):
        sel = which == b
        count = int(sel.sum())
        acc = float(correct[sel].mean()) if count else 0.0
        mean_conf = float(conf[sel].mean()) if count else 0.0
        if count:
            ece += count / len(t) * abs(acc - mean_conf)
        table.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": count,
                "accuracy": acc,
                "confidence": mean_conf,
            }
        )
    return float(ece), table


def star_metrics(
    y_true: Any, y_pred: Any, probs: np.ndarray | None = None, bins: int = 10
) -> dict[str, Any]:
    """Every metric of one model on one set of reviews.

    ``y_pred`` is the model's star pick (argmax for classifiers); with ``probs`` the expected-star
    and median-star variants and the calibration are added.
    """
    t, p = _as_stars(y_true), _as_stars(y_pred)
    n = len(t)
    if n == 0:
        return {"n": 0}
    err = np.abs(p - t)
    cm = confusion_matrix(t, p)
    out: dict[str, Any] = {
        "n": n,
        "accuracy": float((err == 0).mean()),
        "off_by_one": float((err <= 1).mean()),
        "mae": float(err.mean()),
        "rmse": float(np.sqrt((err.astype(np.float64) ** 2).mean())),
        "macro_f1": macro_f1(t, p),
        "qwk": quadratic_weighted_kappa(t, p),
        "per_class": per_class(t, p),
        "confusion": cm.tolist(),
        "confusion_normalised": normalise_rows(cm).tolist(),
        "distribution": {
            "true": np.bincount(t - 1, minlength=NUM_CLASSES).tolist(),
            "pred": np.bincount(p - 1, minlength=NUM_CLASSES).tolist(),
        },
    }
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float64)
        exp = expected_star(probs)
        med = median_star(probs)
        ece, table = calibration(t, probs, bins)
        out["expected_star_mae"] = float(np.abs(exp - t).mean())
        out["expected_star_rmse"] = float(np.sqrt(((exp - t) ** 2).mean()))
        out["median_star_mae"] = float(np.abs(med - t).mean())
        out["median_star_accuracy"] = float((med == t).mean())
        out["median_star_off_by_one"] = float((np.abs(med - t) <= 1).mean())
        out["ece"] = ece
        out["reliability"] = table
        rows = probs / probs.sum(axis=1, keepdims=True)  # float32 sums are 1 only to ~1e-7
        import sklearn.metrics as sk  # lazily: scoring needs no sklearn

        out["log_loss"] = float(sk.log_loss(t, rows, labels=list(STARS)))
    return out


HEADLINE = ("accuracy", "off_by_one", "mae", "qwk", "macro_f1")


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The five numbers every table shows."""
    return {k: metrics.get(k, float("nan")) for k in HEADLINE}


def resampled_interval(
    statistic: Callable[[np.ndarray], Any], n: int, reps: int = 200, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile interval of ``statistic(rows)`` over ``reps`` bootstrap resamples of ``n``
    rows (``rows``: indices drawn with replacement), for any estimate made from reviews."""
    draws = [statistic(rows) for rows in resampled_rows(n, reps, seed)]
    return np.percentile(draws, 2.5, axis=0), np.percentile(draws, 97.5, axis=0)


def resampled_rows(n: int, reps: int = 200, seed: int = 0) -> np.ndarray:
    """The ``reps`` bootstrap resamples of ``n`` rows that :func:`resampled_interval` draws, as
    a (reps, n) array of indices (for a statistic computed over all of them at once)."""
    rng = np.random.default_rng(seed)
    return np.array([rng.integers(0, n, n) for _ in range(reps)], dtype=np.int64).reshape(reps, n)


def bootstrap_ci(
    y_true: np.ndarray, y_pred: np.ndarray, resamples: int = 1000, seed: int = 0
) -> dict[str, list[float]]:
    """95% percentile intervals of exact, off-by-one, MAE and QWK over bootstrap resamples of
    the reviews. Every one of these is a function of the confusion matrix, so a resample is a
    multinomial draw of its 25 cells: a thousand resamples cost milliseconds."""
    t = np.asarray(y_true, dtype=np.int64) - 1
    p = np.asarray(y_pred, dtype=np.int64) - 1
    n = len(t)
    if n == 0:
        return {}
    cells = np.bincount(t * NUM_CLASSES + p, minlength=NUM_CLASSES**2) / n
    draws = np.random.default_rng(seed).multinomial(n, cells, size=resamples)
    cm = draws.reshape(resamples, NUM_CLASSES, NUM_CLASSES).astype(np.float64)
    idx = np.arange(NUM_CLASSES)
    dist = np.abs(idx[:, None] - idx[None, :])
    w = dist**2 / (NUM_CLASSES - 1) ** 2
    expected = np.einsum("bi,bj->bij", cm.sum(axis=2), cm.sum(axis=1)) / n
    denom = (w * expected).sum(axis=(1, 2))
    qwk = 1.0 - (w * cm).sum(axis=(1, 2)) / np.where(denom > 0, denom, np.nan)
    values = {
        "accuracy": np.trace(cm, axis1=1, axis2=2) / n,
        "off_by_one": (cm * (dist <= 1)).sum(axis=(1, 2)) / n,
        "mae": (cm * dist).sum(axis=(1, 2)) / n,
        "qwk": qwk,
    }
    return {k: np.nanpercentile(v, [2.5, 97.5]).round(4).tolist() for k, v in values.items()}

"""Star-mix estimates from a model's probabilities alone (quantification).

Model-level, so training can measure them; :mod:`pipeline.analytics.quantify` applies them
to a run.

A per-movie report asks "what do the reviews say the film's star mix is?", which is a different
question from "what star is this review?": counting a classifier's picks (classify-and-count, CC)
carries its training mix into every film. The estimators here follow QuaPy's definitions:

- ``cc``: share of predicted stars;  ``pcc``: mean of the predicted probabilities;
- ``acc`` / ``pacc``: CC / PCC corrected by the confusion rates measured on validation
  reviews (:func:`pipeline.modeling.prior.adjusted_prior`);
- ``em``: EM re-estimation of the priors (Saerens et al. 2002,
  :func:`~pipeline.modeling.prior.em_prior`).

Errors: absolute error of the mean star, and the earth mover's distance between the true and
estimated distributions (for ordered stars: the sum of absolute differences of the two CDFs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipeline.modeling.metrics import NUM_CLASSES, STARS
from pipeline.modeling.prior import adjusted_prior, em_prior, one_hot, prior_of

METHODS = ("cc", "pcc", "acc", "pacc", "em")
_STARS = np.asarray(STARS, dtype=np.float64)


def mean_star(dist: np.ndarray) -> float:
    """Mean star of a star distribution (shares of 1..5)."""
    return float(np.asarray(dist, dtype=np.float64) @ _STARS)


def emd(a: np.ndarray, b: np.ndarray) -> float:
    """Earth mover's distance between two star distributions, in stars."""
    return float(np.abs(np.cumsum(a) - np.cumsum(b)).sum())


def estimate(
    method: str,
    probs: np.ndarray,
    *,
    train_prior: np.ndarray,
    val_stars: np.ndarray,
    val_probs: np.ndarray,
) -> np.ndarray:
    """One method's estimate of the star distribution of the reviews behind ``probs`` (N, 5)."""
    probs = np.asarray(probs, dtype=np.float64)
    hard = one_hot(probs.argmax(axis=1) + 1)
    if method == "cc":
        return hard.mean(axis=0)
    if method == "pcc":
        return probs.mean(axis=0)
    if method == "acc":
        return adjusted_prior(hard, val_stars, one_hot(np.asarray(val_probs).argmax(axis=1) + 1))
    if method == "pacc":
        return adjusted_prior(probs, val_stars, val_probs)
    if method == "em":
        return em_prior(probs, train_prior)[1]
    raise ValueError(f"unknown quantification method {method!r}; choose from {list(METHODS)}")


def film_estimates(
    films: Sequence[str],
    stars: np.ndarray,
    probs: np.ndarray,
    *,
    train_stars: np.ndarray,
    val_stars: np.ndarray,
    val_probs: np.ndarray,
    methods: Sequence[str] = METHODS,
    min_reviews: int = 1,
    prior: np.ndarray | None = None,
) -> pd.DataFrame:
    """Estimated vs true star distribution and mean star of each film.

    ``films``, ``stars``, ``probs``: the reviews to quantify (one film label, true star and
    (N, 5) model probabilities per review; put held-out films here for an honest measure).
    ``train_stars``: the stars the model learnt from (its prior, used by EM); ``val_stars`` /
    ``val_probs``: labelled reviews the model did not train on (the confusion rates ACC/PACC
    correct by; best from films that are also unseen). ``prior``: the mix the model's
    probabilities assume when it is not the training mix (:func:`~pipeline.modeling.prior.
    implied_prior`: a class-balanced model's is uniform).

    One row per film with at least ``min_reviews`` reviews: ``film``, ``n``, ``true`` (5 shares),
    ``true_mean``; per method m: ``m`` (5 shares), ``m_mean``, ``m_abs_error`` (|mean star
    error|) and ``m_emd``. Sorted by ``n``, largest first.
    """
    films = np.asarray(films, dtype=object)
    stars = np.asarray(stars, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if not (len(films) == len(stars) == len(probs)):
        raise ValueError(
            f"films, stars and probs must have one entry per review "
            f"(got {len(films)}, {len(stars)}, {len(probs)})"
        )
    if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES:
        raise ValueError(f"probs must be (N, {NUM_CLASSES}) star probabilities, got {probs.shape}")
    train_prior = prior_of(train_stars) if prior is None else np.asarray(prior, dtype=np.float64)
    rows = []
    for film in pd.unique(films):
        sel = films == film
        n = int(sel.sum())
        if n < min_reviews:
            continue
        true = np.bincount(stars[sel] - 1, minlength=NUM_CLASSES) / n
        row: dict[str, object] = {"film": film, "n": n, "true": true, "true_mean": mean_star(true)}
        for m in methods:
            est = estimate(
                m, probs[sel], train_prior=train_prior, val_stars=val_stars, val_probs=val_probs
            )
            row[m] = est
            row[f"{m}_mean"] = mean_star(est)
            row[f"{m}_abs_error"] = abs(mean_star(est) - mean_star(true))
            row[f"{m}_emd"] = emd(est, true)
        rows.append(row)
    columns = ["film", "n", "true", "true_mean"]
    columns += [f"{m}{s}" for m in methods for s in ("", "_mean", "_abs_error", "_emd")]
    return pd.DataFrame(rows, columns=columns).sort_values("n", ascending=False, kind="stable")


def summarise(estimates: pd.DataFrame, min_reviews: int = 50) -> dict[str, dict[str, float]]:
    """Per method: median and mean |mean-star error| and median EMD over films with at least
    ``min_reviews`` reviews (the issue's yardstick: median abs error <= 0.25)."""
    big = estimates[estimates["n"] >= min_reviews]
    methods = [c[: -len("_abs_error")] for c in estimates.columns if c.endswith("_abs_error")]
    return {
        m: {
            "films": len(big),
            "median_abs_error": float(big[f"{m}_abs_error"].median()) if len(big) else np.nan,
            "mean_abs_error": float(big[f"{m}_abs_error"].mean()) if len(big) else np.nan,
            "median_emd": float(big[f"{m}_emd"].median()) if len(big) else np.nan,
        }
        for m in methods
    }

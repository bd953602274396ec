"""Star-mix estimates from a model's probabilities alone (quantification).

Model-level, so training can measure them; :mod:`pipeline.analytics.quantify` applies them
to a run.

A per-movie report asks "what do the reviews say the film's star mix is?", which is a different
question from "what star is this review?": counting a classifier's picks (classify-and-count, CC)
carries its training mix into every film. The estimators here follow QuaPy's definitions:

- ``cc``: share of predicted stars;  ``pcc``: mean of the predicted probabilities;
- ``acc`` / ``pacc``: CC / PCC corrected by the confusion rates measured on validation
  reviews (:func:`pipeline.modeling.prior.corrected_mix`);
- ``em``: EM re-estimation of the priors (Saerens et al. 2002,
  :func:`~pipeline.modeling.prior.em_prior`).

Errors: absolute error of the mean star, and the earth mover's distance between the true and
estimated distributions (for ordered stars: the sum of absolute differences of the two CDFs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.modeling.metrics import (
    NUM_CLASSES,
    STARS,
    quadratic_weighted_kappa,
    resampled_rows,
)
from pipeline.modeling.prior import (
    adapt_probs,
    confusion_rates,
    corrected_mix,
    em_priors,
    one_hot,
    prior_of,
)

METHODS = ("cc", "pcc", "acc", "pacc", "em")
EM_BATCH_ROWS = 1_000_000  # review rows stepped at once by a batched EM (40 MB per array)
METHOD_NAMES = {
    "cc": "classify and count (CC)",
    "pcc": "mean probability (PCC)",
    "acc": "adjusted classify and count (ACC)",
    "pacc": "adjusted mean probability (PACC)",
    "em": "EM re-estimation of the priors",
}
_STARS = np.asarray(STARS, dtype=np.float64)
# the artificial-prevalence protocol's star mixes: from balanced to 80% four and five stars
APP_MIXES = {
    "balanced": [0.2, 0.2, 0.2, 0.2, 0.2],
    "low": [0.4, 0.3, 0.15, 0.1, 0.05],
    "high": [0.05, 0.1, 0.15, 0.4, 0.3],
    "80% four and five": [0.02, 0.03, 0.15, 0.4, 0.4],
}
SKEWED = "80% four and five"
MIN_CHECK_REVIEWS = 100  # labelled reviews below which APP cannot tell the methods apart
QWK_SLACK = 0.02  # per-review adaptation may cost this much QWK at a mix, never more


def mean_star(dist: np.ndarray) -> float:
    """Mean star of a star distribution (shares of 1..5)."""
    return float(np.asarray(dist, dtype=np.float64) @ _STARS)


def emd(a: np.ndarray, b: np.ndarray) -> float:
    """Earth mover's distance between two star distributions, in stars."""
    return float(np.abs(np.cumsum(a) - np.cumsum(b)).sum())


@dataclass(frozen=True)
class Reference:
    """What the estimators hold new reviews against, worked out once for any number of sets of
    reviews: the mix the model's probabilities assume (EM's start) and its confusion rates on
    labelled reviews it did not train on (of its star picks for ACC, its probabilities for
    PACC)."""

    train_prior: np.ndarray
    pick_rates: np.ndarray
    prob_rates: np.ndarray

    @classmethod
    def of(
        cls, *, train_prior: np.ndarray, val_stars: np.ndarray, val_probs: np.ndarray
    ) -> Reference:
        val_probs = np.asarray(val_probs, dtype=np.float64).reshape(-1, NUM_CLASSES)
        picks = one_hot(val_probs.argmax(axis=1) + 1)
        return cls(
            np.asarray(train_prior, dtype=np.float64),
            confusion_rates(val_stars, picks),
            confusion_rates(val_stars, val_probs),
        )

    def estimate(self, method: str, probs: np.ndarray) -> np.ndarray:
        """One method's estimate of the star mix of the reviews behind ``probs`` (N, 5)."""
        return estimates(method, probs, np.arange(len(probs))[None], self)[0]


def estimate(
    method: str,
    probs: np.ndarray,
    *,
    train_prior: np.ndarray,
    val_stars: np.ndarray,
    val_probs: np.ndarray,
) -> np.ndarray:
    """One method's estimate of the star distribution of the reviews behind ``probs`` (N, 5)."""
    reference = Reference.of(train_prior=train_prior, val_stars=val_stars, val_probs=val_probs)
    return reference.estimate(method, probs)


def estimates(
    method: str, probs: np.ndarray, sets: np.ndarray, reference: Reference
) -> np.ndarray:
    """One method's star mix of each set of reviews ``probs[rows]``, ``rows`` a row of ``sets``
    ((B, n) indices, e.g. bootstrap resamples): (B, 5). Each set gets the arithmetic it would
    alone; the reference is worked out once and EM steps every set at once
    (:func:`~pipeline.modeling.prior.em_priors`, :data:`EM_BATCH_ROWS` review rows at a time)."""
    if method not in METHODS:
        raise ValueError(f"unknown quantification method {method!r}; choose from {list(METHODS)}")
    probs = np.asarray(probs, dtype=np.float64)
    if method == "em":
        per_batch = max(1, EM_BATCH_ROWS // max(1, sets.shape[1]))  # memory: (batch, n, 5)
        return np.concatenate([
            em_priors(probs[sets[i : i + per_batch]], reference.train_prior)
            for i in range(0, len(sets), per_batch)
        ])  # fmt: skip
    scores = one_hot(probs.argmax(axis=1) + 1) if method in ("cc", "acc") else probs
    means = np.stack([scores[rows].mean(axis=0) for rows in sets])
    if method in ("cc", "pcc"):
        return means
    rates = reference.pick_rates if method == "acc" else reference.prob_rates
    return np.stack([corrected_mix(mu, rates) for mu in means])


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
    reference = Reference.of(train_prior=train_prior, val_stars=val_stars, val_probs=val_probs)
    rows = []
    for film in pd.unique(films):
        sel = films == film
        n = int(sel.sum())
        if n < min_reviews:
            continue
        true = np.bincount(stars[sel] - 1, minlength=NUM_CLASSES) / n
        row: dict[str, object] = {"film": film, "n": n, "true": true, "true_mean": mean_star(true)}
        for m in methods:
            est = reference.estimate(m, probs[sel])
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


def app_sample(stars: np.ndarray, mix: Sequence[float], size: int, rng: np.random.Generator) -> Any:
    """Indices of ``size`` reviews with star shares ``mix`` (drawn with replacement per star;
    a star with no review is left out)."""
    counts = np.floor(np.asarray(mix) * size).astype(int)
    counts[int(np.argmax(mix))] += size - counts.sum()
    parts = [
        rng.choice(np.flatnonzero(stars == s + 1), n, replace=True)
        for s, n in enumerate(counts)
        if n and (stars == s + 1).any()
    ]
    return np.concatenate(parts)


def app_check(
    stars: np.ndarray,
    probs: np.ndarray,
    train_prior: np.ndarray,
    *,
    films: Sequence[str] | None = None,
    size: int = 100,
    reps: int = 8,
    seed: int = 0,
) -> dict[str, Any] | None:
    """How each quantifier and per-review adaptation fare when the star mix moves, measured on
    labelled reviews the model did not train on (its validation reviews), under the
    artificial-prevalence protocol: the reviews split in two halves, one for the confusion
    rates ACC and PACC correct by, the other resampled to each mix of :data:`APP_MIXES`
    (``reps`` samples of ``size``), then the other way round. With ``films`` the halves are
    two sets of films, so a method is also tried on films whose reviews read differently from
    the ones its rates came from (what a film report, or a new crawl, asks of it).

    Returns the median |mean-star error| per method, the ``best`` method, the mean QWK per mix
    with and without re-weighting each review (MAP-EM, :func:`~pipeline.modeling.prior.
    adapt_probs`) and ``adapt_reviews``: whether re-weighting each review helps (no worse than
    :data:`QWK_SLACK` at any mix, better at the skewed one). None below
    :data:`MIN_CHECK_REVIEWS` reviews."""
    stars = np.asarray(stars, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if len(stars) < MIN_CHECK_REVIEWS:
        return None
    rng = np.random.default_rng(seed)
    halves = _halves(films, len(stars), rng)
    errors: dict[str, list[float]] = {m: [] for m in METHODS}
    kappas: dict[str, tuple[list[float], list[float]]] = {m: ([], []) for m in APP_MIXES}
    for rates, held in (halves, halves[::-1]):
        reference = Reference.of(
            train_prior=train_prior, val_stars=stars[rates], val_probs=probs[rates]
        )
        for name, mix in APP_MIXES.items():
            for _ in range(reps):
                idx = held[app_sample(stars[held], mix, size, rng)]
                truth = mean_star(np.bincount(stars[idx] - 1, minlength=NUM_CLASSES) / len(idx))
                for m in METHODS:
                    errors[m].append(abs(mean_star(reference.estimate(m, probs[idx])) - truth))
                adapted = adapt_probs(probs[idx], train_prior)[0]
                plain = probs[idx].argmax(axis=1) + 1
                kappas[name][0].append(quadratic_weighted_kappa(stars[idx], plain))
                kappas[name][1].append(quadratic_weighted_kappa(stars[idx], adapted.argmax(1) + 1))
    medians = {m: float(np.median(e)) for m, e in errors.items()}
    per_mix = {n: (float(np.mean(a)), float(np.mean(b))) for n, (a, b) in kappas.items()}
    helps = all(b >= a - QWK_SLACK for a, b in per_mix.values())
    helps = helps and per_mix[SKEWED][1] > per_mix[SKEWED][0]
    return {
        "reviews": len(stars),
        "samples": len(errors[METHODS[0]]),
        "median_abs_error": medians,
        "best": min(METHODS, key=lambda m: (medians[m], METHODS.index(m))),
        "qwk": {n: {"unadapted": a, "adapted": b} for n, (a, b) in per_mix.items()},
        "adapt_reviews": bool(helps),
    }


def _halves(
    films: Sequence[str] | None, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of ``n`` reviews: by film (films alternate between the halves, largest first)
    when there are at least four films and each half holds a third of the reviews, else at
    random."""
    if films is not None:
        names, counts = np.unique(np.asarray(films, dtype=object), return_counts=True)
        if len(names) >= 4:
            first = set(names[np.argsort(-counts, kind="stable")][::2])
            mask = np.array([f in first for f in films])
            if n / 3 <= mask.sum() <= 2 * n / 3:
                return np.flatnonzero(mask), np.flatnonzero(~mask)
    order = rng.permutation(n)
    return order[::2], order[1::2]


def bootstrap_estimate(
    method: str, probs: np.ndarray, reference: Reference, reps: int = 200, seed: int = 0
) -> tuple[float, float]:
    """95% interval of one method's mean-star estimate over ``reps`` bootstrap resamples of the
    reviews (:func:`estimates` of every resample at once)."""
    resamples = resampled_rows(len(probs), reps, seed)
    low, high = np.percentile(estimates(method, probs, resamples, reference) @ _STARS, [2.5, 97.5])
    return float(low), float(high)

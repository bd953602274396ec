"""Prior shift: a new corpus (or film) has its own star mix, and every classifier carries its
training mix into it. Estimate the new mix from the model's probabilities alone, then re-weight.

- :func:`em_prior`: EM re-estimation of the priors (Saerens, Latinne & Decaestecker 2002): the
  posteriors are re-weighted by ``new / train`` prior and the prior re-estimated as their mean,
  until it stops moving. Needs reasonably calibrated probabilities. With ``strength`` it is
  MAP-EM under a Dirichlet prior centred on the training mix (``strength`` x N pseudo-reviews).
- :func:`adapt_probs`: what rewrites each review's probabilities: MAP-EM (strength
  :data:`EM_STRENGTH`), then :func:`collapsed`, which keeps the unadapted probabilities when the
  adapted stars pile onto one star the model itself did not favour. On 600-review slices of
  douban_2016_4films (three-corpus run; balanced, 80% four-and-five stars, a crawl's mix), plain
  EM put 76-100% of reviews on one star and dropped QWK to .00-.43 (unadapted .29-.70); MAP-EM
  at 0.5 kept it within -.07..+.06 of unadapted.
- :func:`corrected_mix`: the confusion-matrix correction (BBSE, Lipton et al. 2018; adjusted
  classify-and-count in quantification): solve ``C q = mu`` where ``C[j, i]`` is the mean score
  for star j of validation reviews whose true star is i and ``mu`` the mean score on the new
  reviews; hard predictions (one-hot) give BBSE / ACC, probabilities give PACC.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import read_table
from pipeline.modeling.calibration import Calibration
from pipeline.modeling.inputs import Predictions
from pipeline.modeling.metrics import NUM_CLASSES, STARS, resampled_interval

_FLOOR = 1e-6  # keeps a star that vanished from a mix recoverable by the next EM step
MIN_EM_REVIEWS = 20  # fewer reviews than this: EM's estimate runs to one star
EM_STRENGTH = 0.5  # Dirichlet pseudo-reviews per scored review when adapting each review
COLLAPSE_SHARE = 0.6  # adapted stars with more than this on one star...
COLLAPSE_GAIN = 0.2  # ...and this much more than unadapted: a runaway, not the corpus's mix


def _simplex(p: np.ndarray) -> np.ndarray:
    """Shares floored at :data:`_FLOOR` that sum to one (along the last axis)."""
    p = np.clip(np.asarray(p, dtype=np.float64), _FLOOR, None)
    return p / p.sum(axis=-1, keepdims=True)


def star_shares(mix: Any) -> np.ndarray:
    """Five non-negative finite shares (any scale, ``[1e308] * 5`` included) as a star mix."""
    arr = np.asarray(mix, dtype=np.float64)
    if arr.shape != (NUM_CLASSES,) or not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"a star mix is {NUM_CLASSES} finite non-negative shares, got {mix!r}")
    if arr.max() <= 0:
        raise ValueError("a star mix needs at least one positive share")
    arr = arr / arr.max()  # no overflow in the sum
    return arr / arr.sum()


def prior_of(stars: np.ndarray) -> np.ndarray:
    """Star shares of labelled reviews (the training prior)."""
    counts = np.bincount(np.asarray(stars, dtype=np.int64) - 1, minlength=NUM_CLASSES)
    return _simplex(counts.astype(np.float64))


def reweight(probs: np.ndarray, train_prior: np.ndarray, target_prior: np.ndarray) -> np.ndarray:
    """Bayes' rule for a changed prior: ``p'(y|x) ∝ p(y|x) q(y) / p(y)``."""
    w = np.asarray(probs, dtype=np.float64) * (_simplex(target_prior) / _simplex(train_prior))
    return w / np.maximum(w.sum(axis=1, keepdims=True), 1e-300)


def em_prior(
    probs: np.ndarray,
    train_prior: np.ndarray,
    tol: float = 1e-6,
    max_iter: int = 1000,
    strength: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """EM estimate of the star mix of ``probs``' reviews (MAP under a Dirichlet prior of
    ``strength`` x N pseudo-reviews at the training mix); returns (adapted probs, prior)."""
    probs = np.asarray(probs, dtype=np.float64)
    prior = em_priors(probs[None], train_prior, tol, max_iter, strength)[0]
    return reweight(probs, train_prior, prior), prior


def em_priors(
    probs: np.ndarray,
    train_prior: np.ndarray,
    tol: float = 1e-6,
    max_iter: int = 1000,
    strength: float = 0.0,
) -> np.ndarray:
    """:func:`em_prior`'s star mix of each of B sets of N reviews (``probs``: (B, N, 5), e.g.
    bootstrap resamples), all stepped together: each set takes the steps it would alone and
    stops when it converges; one numpy call per step instead of one per set and step."""
    probs = np.asarray(probs, dtype=np.float64)
    train_prior = _simplex(train_prior)
    priors = np.tile(train_prior, (len(probs), 1))
    if probs.shape[1] == 0:
        return priors
    scaled = probs / train_prior  # p(y|x) / p(y): a step reweights it by the current mix
    going = np.arange(len(probs))
    for _ in range(max_iter):
        adapted = scaled * priors[going][:, None, :]
        adapted /= np.maximum(adapted.sum(axis=2, keepdims=True), 1e-300)
        new = _simplex((adapted.mean(axis=1) + strength * train_prior) / (1.0 + strength))
        done = np.abs(new - priors[going]).max(axis=1) < tol
        priors[going] = new
        if done.all():
            break
        if done.any():
            going, scaled = going[~done], scaled[~done]
    return priors


def star_piles(probs: np.ndarray) -> np.ndarray:
    """Share of reviews whose most probable star is each of the five."""
    picks = np.asarray(probs).argmax(axis=1)
    return np.bincount(picks, minlength=NUM_CLASSES) / max(len(picks), 1)


def collapsed(adapted: np.ndarray, unadapted: np.ndarray) -> str | None:
    """Why ``adapted`` is a runaway (one star holding more than :data:`COLLAPSE_SHARE` of the
    picks, :data:`COLLAPSE_GAIN` more than before adaptation), or None."""
    after, before = star_piles(adapted), star_piles(unadapted)
    top = int(after.argmax())
    if after[top] > COLLAPSE_SHARE and after[top] - before[top] > COLLAPSE_GAIN:
        return (
            f"adaptation put {after[top]:.0%} of the reviews on {top + 1} stars (unadapted "
            f"{before[top]:.0%}): a runaway estimate, so the unadapted stars are kept"
        )
    return None


def adapt_probs(
    probs: np.ndarray, train_prior: np.ndarray
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Each review's probabilities re-weighted to the MAP-EM star mix of them all, unless that
    collapses (:func:`collapsed`): (probabilities, estimated mix, the warning when it did)."""
    adapted, prior = em_prior(probs, train_prior, strength=EM_STRENGTH)
    warning = collapsed(adapted, probs)
    return (
        (np.asarray(probs, dtype=np.float64), prior, warning) if warning else (adapted, prior, None)
    )


def mix_interval(
    probs: np.ndarray, train_prior: np.ndarray, reps: int = 200, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """95% bootstrap interval (over reviews) of the MAP-EM star mix of ``probs``."""
    probs = np.asarray(probs, dtype=np.float64)
    return resampled_interval(
        lambda rows: em_prior(probs[rows], train_prior, tol=1e-4, strength=EM_STRENGTH)[1],
        len(probs), reps, seed,
    )  # fmt: skip


def confusion_rates(val_stars: np.ndarray, val_scores: np.ndarray) -> np.ndarray:
    """The confusion rates ``C`` of the adjusted estimators: column i the mean score of the
    validation reviews of star i + 1 (a star absent from validation keeps the identity's column:
    the raw estimate)."""
    val_stars = np.asarray(val_stars, dtype=np.int64)
    val_scores = np.asarray(val_scores, dtype=np.float64)
    c = np.eye(NUM_CLASSES)
    for i in range(NUM_CLASSES):
        rows = val_stars == i + 1
        if rows.any():
            c[:, i] = val_scores[rows].mean(axis=0)
    return c


def corrected_mix(mu: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """The mix ``q`` with ``rates @ q`` nearest the mean score ``mu`` (non-negative least
    squares, then normalised; ``mu`` itself when no such mix is positive)."""
    from scipy.optimize import nnls  # scipy.optimize: 0.2 s a scorer need not pay

    q, _ = nnls(rates, mu)
    return _simplex(q) if q.sum() > 0 else _simplex(mu)


def one_hot(pred_star: np.ndarray) -> np.ndarray:
    """Hard star picks as (N, 5) indicator rows, the scores of classify-and-count."""
    return np.eye(NUM_CLASSES)[np.asarray(pred_star, dtype=np.int64) - 1]


def adapt_predictions(
    pred: Predictions, train_prior: np.ndarray, calibration: Calibration | None = None
) -> Predictions:
    """``pred`` calibrated (:mod:`~pipeline.modeling.calibration`, fitted on validation) and
    re-weighted to the EM-estimated star mix of its own reviews (the batch is the new corpus);
    star picks follow the adapted probabilities. Regression outputs (no probabilities) come
    back unchanged."""
    if pred.probs is None or len(pred.probs) == 0:
        return pred
    calibrated = (calibration or Calibration()).apply(pred.probs)
    probs = adapt_probs(calibrated, train_prior)[0].astype(np.float32)
    return Predictions(
        (probs.argmax(axis=1) + 1).astype(np.int8),
        probs @ np.asarray(STARS, dtype=np.float32),
        probs,
        pred.attention,
    )


def implied_prior(
    config: Mapping[str, Any],
    train_prior: np.ndarray,
    member_config: Callable[[str], Mapping[str, Any]] = lambda name: {},
) -> np.ndarray:
    """The star mix a model's probabilities assume, which EM and re-weighting start from: the
    training mix, except for a class-balanced model (uniform: the classes were weighed equally)
    and an ensemble (its members' mixes, by weight). Starting a balanced model from the training
    mix made EM over-shoot (docs/heads.md)."""
    members = config.get("members") or []
    if members:
        weights = config.get("member_weights") or [1.0 / len(members)] * len(members)
        parts = [implied_prior(member_config(m), train_prior, member_config) for m in members]
        return _simplex(sum(w * p for w, p in zip(weights, parts, strict=True)))
    if config.get("balanced"):
        return np.full(NUM_CLASSES, 1.0 / NUM_CLASSES)
    return np.asarray(train_prior, dtype=np.float64)


def run_train_prior(reviews_path: Path) -> np.ndarray:
    """The star mix a run's models learnt from: its train split (prepared reviews.parquet)."""
    table = read_table(reviews_path, columns=["star", "split"]).to_pandas()
    return prior_of(table.loc[table["split"] == "train", "star"].to_numpy())

"""Bias-corrected temperature scaling (BCTS), fitted on a model's validation predictions.

EM re-estimation of a star mix trusts the probabilities it is given; a regularised classifier is
under-confident (T = 0.6-0.9 on held-out Douban films) and leans towards its training mix, and EM
on such output runs away (issue 26). Alexandari, Kundaje & Shrikumar (2020) found one fix hard
to beat: ``softmax(log p / T + b)`` with a temperature ``T`` and one bias per class, fitted by
log loss on labelled held-out reviews, before any EM. ``b = 0`` is plain temperature scaling.

Every surface calibrates the same way: the evaluations per fold, ``douban evaluate`` on another
corpus, and scoring with ``--adapt-prior`` (:func:`saved_calibration` reads the run's validation
predictions of the model, so the calibration travels with the model set it was fitted on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.artifacts import CHECK_HINT, read_table
from pipeline.errors import CorruptArtifactError
from pipeline.modeling.metrics import NUM_CLASSES, OWN_EVALUATIONS

# below this many validation reviews the five biases fit noise (on the demo's ~100, BCTS then
# MAP-EM put 82% of a real crawl on one star): the temperature alone is fitted
MIN_BIAS_REVIEWS = 500


@dataclass(frozen=True)
class Calibration:
    """``softmax(log p / temperature + bias)``; the identity by default."""

    temperature: float = 1.0
    bias: tuple[float, ...] = field(default=(0.0,) * NUM_CLASSES)

    def apply(self, probs: np.ndarray) -> np.ndarray:
        z = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None))
        z = z / self.temperature + np.asarray(self.bias, dtype=np.float64)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def fit_calibration(probs: np.ndarray, stars: np.ndarray, bias: bool = True) -> Calibration:
    """The :class:`Calibration` that minimises the log loss of ``probs`` on labelled
    (validation) reviews; ``bias=False``, or fewer than :data:`MIN_BIAS_REVIEWS` reviews, fits
    the temperature alone. The identity when there is nothing to fit on."""
    probs = np.asarray(probs, dtype=np.float64)
    idx = np.asarray(stars, dtype=np.int64) - 1
    if len(idx) == 0:
        return Calibration()
    bias = bias and len(idx) >= MIN_BIAS_REVIEWS
    logp = np.log(np.clip(probs, 1e-12, None))
    rows = np.arange(len(idx))

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        inv_t, b = params[0], params[1:] if bias else np.zeros(NUM_CLASSES)
        z = logp * inv_t + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        value = -np.log(p[rows, idx] + 1e-300).mean()
        g = p.copy()
        g[rows, idx] -= 1.0  # d loss / d z, per review
        g /= len(idx)
        grad_t = np.array([(g * logp).sum()])
        return float(value), np.concatenate([grad_t, g.sum(axis=0)]) if bias else grad_t

    from scipy.optimize import minimize  # scipy.optimize: 0.2 s a scorer need not pay

    start = np.concatenate([[1.0], np.zeros(NUM_CLASSES)]) if bias else np.array([1.0])
    bounds = [(0.1, 10.0)] + [(-5.0, 5.0)] * (NUM_CLASSES if bias else 0)
    fit = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds)
    b = fit.x[1:] - fit.x[1:].mean() if bias else np.zeros(NUM_CLASSES)  # softmax ignores a shift
    return Calibration(float(1.0 / fit.x[0]), tuple(float(x) for x in b))


def validation_predictions(
    predictions_path: Path, model: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(stars, probs, films)`` of a saved model on its run's validation reviews (empty when
    there are none), what its calibration and the adaptation checks are fitted on."""
    empty = np.zeros(0, dtype=np.int64), np.zeros((0, NUM_CLASSES)), np.zeros(0, dtype=object)
    if not predictions_path.exists():
        return empty
    try:
        table = read_table(
            predictions_path,
            columns=["evaluation", "split", "star", "probs", "film", "review_id"],
            filters=[("model", "==", model), ("split", "==", "val")],
        ).to_pandas()
    except (OSError, ValueError) as err:  # truncated, not parquet, columns missing
        raise CorruptArtifactError(
            f"{predictions_path} cannot be read ({err})", f"re-evaluate: {CHECK_HINT}"
        ) from err
    table = table[table["evaluation"].isin(OWN_EVALUATIONS) & table["probs"].notna()]
    table = table.drop_duplicates("review_id")
    if table.empty:
        return empty
    probs = np.stack(table["probs"].to_numpy())
    return table["star"].to_numpy(np.int64), probs, table["film"].to_numpy(object)


def saved_calibration(predictions_path: Path, model: str) -> Calibration:
    """:func:`fit_calibration` of a saved model on its run's validation predictions (the
    identity when there are none), for adapting new text the way the evaluations do."""
    stars, probs, _ = validation_predictions(predictions_path, model)
    return fit_calibration(probs, stars)

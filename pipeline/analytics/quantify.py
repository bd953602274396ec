"""Per-film rating estimates of a run (quantification over its saved predictions).

The estimators themselves live in :mod:`pipeline.modeling.quantify` (training measures them
too); this module reads a :class:`~pipeline.run.Run` for reports and the app.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.errors import InputError
from pipeline.modeling.calibration import fit_calibration
from pipeline.modeling.prior import implied_prior, prior_of
from pipeline.modeling.quantify import app_check, bootstrap_estimate, film_estimates

if TYPE_CHECKING:
    from pipeline.run import Run


def film_rating_estimates(
    run: Run, model: str | None = None, split: str = "test"
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every film's star-mix estimate by the quantifier this run's validation reviews pick
    under the artificial-prevalence protocol (:func:`~pipeline.modeling.quantify.app_check`:
    the lowest median mean-star error over mixes from balanced to 80% four and five stars),
    with a 95% bootstrap interval of each film's mean star (``low``, ``high``). Returns the
    :func:`film_estimates` table and the choice: ``method``, its ``validated_error``, the
    ``samples`` and validation ``reviews`` it was measured on (EM, unvalidated, when there are
    too few)."""
    labelled = _labelled(run, model, split)
    check = app_check(labelled.val_stars, labelled.val_probs, labelled.prior,
                      films=labelled.val_films)  # fmt: skip
    method = check["best"] if check else "em"
    context = {"train_prior": labelled.prior, "val_stars": labelled.val_stars,
               "val_probs": labelled.val_probs}  # fmt: skip
    table = film_estimates(
        labelled.films, labelled.stars, labelled.probs, train_stars=labelled.train_stars,
        val_stars=labelled.val_stars, val_probs=labelled.val_probs, prior=labelled.prior,
    )  # fmt: skip
    intervals = [
        bootstrap_estimate(method, labelled.probs[labelled.films == film], **context)
        for film in table["film"]
    ]
    table["low"], table["high"] = [i[0] for i in intervals], [i[1] for i in intervals]
    choice = {
        "method": method,
        "validated_error": check["median_abs_error"][method] if check else None,
        "samples": check["samples"] if check else 0,
        "reviews": check["reviews"] if check else len(labelled.val_stars),
    }
    return table, choice


@dataclass(frozen=True)
class _Labelled:
    """A model's calibrated probabilities on one split and on the val split, with the stars."""

    films: np.ndarray
    stars: np.ndarray
    probs: np.ndarray
    val_stars: np.ndarray
    val_probs: np.ndarray
    val_films: np.ndarray
    train_stars: np.ndarray
    prior: np.ndarray


def _labelled(run: Run, model: str | None, split: str) -> _Labelled:
    model = model or run.default_model
    from pipeline.run import EVALUATION_ORDER  # the run's own evaluations, not cross_corpus

    preds = run.predictions
    preds = preds[(preds["model"] == model) & preds["evaluation"].isin(EVALUATION_ORDER)]
    if preds.empty:
        raise InputError(f"run {run.name} has no predictions of model {model!r}",
                         hint=f"run `douban evaluate --run {run.name}`")  # fmt: skip
    wanted = preds[preds["split"].isin([split, "val"])].drop_duplicates("review_id")
    lists = run.prediction_lists(str(model), wanted["review_id"]).set_index("review_id")
    wanted = wanted.join(lists["probs"], on="review_id")
    if wanted["probs"].isna().any():
        raise InputError(f"model {model!r} gives no star probabilities to count with",
                         hint="pick a classifier, e.g. tfidf_lr or head_cls")  # fmt: skip
    test, val = wanted[wanted["split"] == split], wanted[wanted["split"] == "val"]
    val_stars = val["star"].to_numpy(np.int64)
    val_probs = np.stack(val["probs"].to_numpy()) if len(val) else np.zeros((0, 5))
    calibration = fit_calibration(val_probs, val_stars)
    reviews = run.reviews
    train_stars = reviews.loc[reviews["split"] == "train", "star"].to_numpy()
    prior = implied_prior(
        _config_or_empty(run, str(model)), prior_of(train_stars),
        functools.partial(_config_or_empty, run),
    )  # fmt: skip
    return _Labelled(
        films=test["film"].to_numpy(),
        stars=test["star"].to_numpy(np.int64),
        probs=calibration.apply(np.stack(test["probs"].to_numpy())),
        val_stars=val_stars,
        val_probs=calibration.apply(val_probs),
        val_films=val["film"].to_numpy(object),
        train_stars=train_stars,
        prior=prior,
    )


def _config_or_empty(run: Run, model: str) -> dict:
    """A saved model's config; empty (the training mix is assumed) when only its predictions
    were kept, e.g. a run copied without ``trained/<gen>/models``."""
    return run.model_config(model) if model in run.saved_models else {}

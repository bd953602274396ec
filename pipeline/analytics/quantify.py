"""Per-film rating estimates of a run (quantification over its saved predictions).

The estimators themselves live in :mod:`pipeline.modeling.quantify` (training measures them
too); this module applies them to the probabilities a :class:`~pipeline.run.Run` reads, for
reports and the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.modeling.calibration import fit_calibration
from pipeline.modeling.quantify import Reference, app_check, bootstrap_estimate, film_estimates


def film_rating_estimates(
    probabilities: pd.DataFrame, train_stars: np.ndarray, prior: np.ndarray, split: str = "test"
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every film's star-mix estimate by the quantifier the validation reviews pick under the
    artificial-prevalence protocol (:func:`~pipeline.modeling.quantify.app_check`: the lowest
    median mean-star error over mixes from balanced to 80% four and five stars), with a 95%
    bootstrap interval of each film's mean star (``low``, ``high``). ``probabilities``: a
    model's predictions with star probabilities on ``split`` and val
    (:meth:`Run.probabilities <pipeline.run.Run.probabilities>`); ``prior``: the mix they
    assume. Returns the :func:`film_estimates` table and the choice: ``method``, its
    ``validated_error``, the ``samples`` and validation ``reviews`` it was measured on (EM,
    unvalidated, when there are too few)."""
    labelled = labelled_probabilities(probabilities, train_stars, prior, split)
    check = app_check(labelled.val_stars, labelled.val_probs, labelled.prior,
                      films=labelled.val_films)  # fmt: skip
    method = check["best"] if check else "em"
    reference = Reference.of(train_prior=labelled.prior, val_stars=labelled.val_stars,
                             val_probs=labelled.val_probs)  # fmt: skip
    table = film_estimates(
        labelled.films, labelled.stars, labelled.probs, train_stars=labelled.train_stars,
        val_stars=labelled.val_stars, val_probs=labelled.val_probs, prior=labelled.prior,
    )  # fmt: skip
    intervals = [
        bootstrap_estimate(method, labelled.probs[labelled.films == film], reference)
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
class Labelled:
    """A model's calibrated probabilities on one split and on the val split, with the stars."""

    films: np.ndarray
    stars: np.ndarray
    probs: np.ndarray
    val_stars: np.ndarray
    val_probs: np.ndarray
    val_films: np.ndarray
    train_stars: np.ndarray
    prior: np.ndarray


def labelled_probabilities(
    probabilities: pd.DataFrame, train_stars: np.ndarray, prior: np.ndarray, split: str
) -> Labelled:
    """The ``split`` and val rows, calibrated on val (BCTS)."""
    test = probabilities[probabilities["split"] == split]
    val = probabilities[probabilities["split"] == "val"]
    val_stars = val["star"].to_numpy(np.int64)
    val_probs = np.stack(val["probs"].to_numpy()) if len(val) else np.zeros((0, 5))
    calibration = fit_calibration(val_probs, val_stars)
    return Labelled(
        films=test["film"].to_numpy(),
        stars=test["star"].to_numpy(np.int64),
        probs=calibration.apply(np.stack(test["probs"].to_numpy())),
        val_stars=val_stars,
        val_probs=calibration.apply(val_probs),
        val_films=val["film"].to_numpy(object),
        train_stars=train_stars,
        prior=prior,
    )

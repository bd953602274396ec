"""Per-film rating estimates of a run (quantification over its saved predictions).

The estimators themselves live in :mod:`pipeline.modeling.quantify` (training measures them
too); this module reads a :class:`~pipeline.run.Run` for reports and the app.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.errors import InputError
from pipeline.modeling.prior import implied_prior, prior_of
from pipeline.modeling.quantify import METHODS, film_estimates

if TYPE_CHECKING:
    from pipeline.run import Run


def run_film_estimates(
    run: Run,
    model: str | None = None,
    split: str = "test",
    min_reviews: int = 1,
    methods: Sequence[str] = METHODS,
) -> pd.DataFrame:
    """:func:`film_estimates` of a run's films on ``split`` from a saved model's predictions
    (default: the run's default model), its training prior from the train split and the
    confusion rates from the val split: what a report or the app shows beside the true mix."""
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
    reviews = run.reviews
    return film_estimates(
        test["film"].to_numpy(), test["star"].to_numpy(), np.stack(test["probs"].to_numpy()),
        train_stars=reviews.loc[reviews["split"] == "train", "star"].to_numpy(),
        val_stars=val["star"].to_numpy(), val_probs=np.stack(val["probs"].to_numpy()),
        methods=methods, min_reviews=min_reviews,
        prior=implied_prior(
            _config_or_empty(run, str(model)),
            prior_of(reviews.loc[reviews["split"] == "train", "star"].to_numpy()),
            functools.partial(_config_or_empty, run),
        ),
    )  # fmt: skip


def _config_or_empty(run: Run, model: str) -> dict:
    """A saved model's config; empty (the training mix is assumed) when only its predictions
    were kept, e.g. a run copied without ``trained/<gen>/models``."""
    return run.model_config(model) if model in run.saved_models else {}

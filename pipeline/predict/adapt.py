"""Prior adaptation of scored records: a new corpus (or a batch of it) has its own star mix.
The records' probabilities, calibrated with the model's validation temperature, are re-weighted
to a given mix or to the one MAP-EM estimates for them together (:mod:`pipeline.modeling.prior`);
their stars and expected stars follow, unless the estimate runs away onto one star (then the
unadapted stars stay, each record says so). The log says the estimated mix with a bootstrap
interval and which was done. One function for the CLI, the Python API and the service."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from pipeline.config import RunPaths
from pipeline.errors import InputError, StageMissingError
from pipeline.modeling.prior import (
    MIN_EM_REVIEWS,
    adapt_probs,
    implied_prior,
    mix_interval,
    reweight,
    run_train_prior,
    sharpen,
    star_shares,
)
from pipeline.modeling.spec import read_config
from pipeline.predict.records import STARS

log = logging.getLogger(__name__)


def model_prior(paths: RunPaths, config: dict[str, Any]) -> np.ndarray:
    """The star mix a model's probabilities assume (:func:`implied_prior` of the run's training
    mix), which adaptation starts from."""
    if not paths.reviews.exists():
        raise StageMissingError(
            f"adapting the prior needs the training star mix: run {paths.name} has no "
            "prepared reviews",
            hint="score without --adapt-prior, or with a run that keeps its prepared/ folder",
        )
    return implied_prior(config, run_train_prior(paths.reviews), partial(read_config, paths.models))


def adapt_records(
    records: Sequence[Any],
    target: str | Sequence[float],
    model: str,
    *,
    start: Callable[[], np.ndarray],
    temperature: Callable[[], float],
    say: bool = True,
) -> list[float]:
    """Re-weight ``records`` (dicts or :class:`ScoreRecord`) in place from the ``start()`` mix to
    ``target``, calibrated at ``temperature()`` (both read only when there is something to
    adapt); returns the mix adapted to, which ``say`` logs (with its bootstrap interval).
    Refuses a model without probabilities and EM on fewer than :data:`MIN_EM_REVIEWS` scored
    reviews (it runs to one star)."""
    scored = [r for r in records if r["error"] is None]
    if any(r["probs"] is None for r in scored):
        raise InputError(
            f"model {model} gives a star, not probabilities: there is nothing to adapt to a "
            "star mix",
            "choose a classification model (douban models lists them)",
        )
    if target == "em" and len(scored) < MIN_EM_REVIEWS:
        raise InputError(
            f"estimating the star mix (em) needs at least {MIN_EM_REVIEWS} scored reviews "
            f"together, got {len(scored)}: on a handful EM runs to one star",
            "score more reviews at once, or give the star mix (five shares)",
        )
    if not scored:
        return []
    probs = np.array([r["probs"] for r in scored], dtype=np.float64)
    calibrated, mix = sharpen(probs, temperature()), start()
    if target == "em":
        adapted, prior, warning = adapt_probs(calibrated, mix)
        if say:  # the interval costs 200 EM runs: for a person reading the log, not a request
            shares = said_mix(prior, *mix_interval(calibrated, mix))
            done = "kept the unadapted stars" if warning else "re-weighted each review to it"
            log.info("estimated star mix of %d reviews (MAP-EM, 95%% interval): %s; %s",
                     len(scored), shares, done)  # fmt: skip
        if warning:
            log.warning("%s; the estimated star mix is still reported", warning)
            for r in scored:
                r["warnings"] = [*r["warnings"], warning]
    else:
        prior = star_shares(target)
        adapted = reweight(calibrated, mix, prior)
        if say:
            log.info("re-weighted %d reviews to the given mix %s", len(scored), said_mix(prior))
    for r, p in zip(scored, adapted, strict=True):
        r["probs"] = [float(x) for x in p]
        r["pred_star"] = int(p.argmax()) + 1
        r["expected_star"] = float(p @ np.asarray(STARS, dtype=np.float64))
    return [float(x) for x in prior]


def said_mix(mix: Any, low: Any = None, high: Any = None) -> str:
    """``1★ 8% (6%-10%) · 2★ ...``: a star mix for the log, with its interval when given."""
    ends = zip(low, high, strict=True) if low is not None else [None] * len(mix)
    return " · ".join(
        f"{s}★ {p:.0%}" + (f" ({e[0]:.0%}-{e[1]:.0%})" if e else "")
        for s, p, e in zip(STARS, mix, ends, strict=True)
    )

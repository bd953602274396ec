"""Prior adaptation of scored records: a new corpus (or a batch of it) has its own star mix.
The records' probabilities, calibrated as on the model's validation reviews (BCTS), are re-weighted
to a given mix or to the one MAP-EM estimates for them together (:mod:`pipeline.modeling.prior`);
their stars and expected stars follow where the model's validation check (APP) shows that
re-weighting each review helps, and unless the estimate runs away onto one star (then the
unadapted stars stay, each record says so); otherwise only the corpus's mix is adapted. The log
says the estimated mix with a bootstrap interval and which was done. One function for the CLI,
the Python API and the service."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from pipeline.config import RunPaths
from pipeline.errors import InputError, StageMissingError
from pipeline.modeling.calibration import Calibration, fit_calibration
from pipeline.modeling.prior import (
    MIN_EM_REVIEWS,
    adapt_probs,
    implied_prior,
    mix_interval,
    reweight,
    run_train_prior,
    star_shares,
)
from pipeline.modeling.quantify import app_check
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


@dataclass(frozen=True)
class Adaptation:
    """What adapting a model's scores needs, fitted once per scorer on its validation reviews:
    the calibration (BCTS), the mix its probabilities assume, and the APP check
    (:func:`~pipeline.modeling.quantify.app_check`) that says whether re-weighting each review
    helps, or only the corpus's star mix may be adapted."""

    calibration: Calibration
    start: np.ndarray
    check: dict[str, Any] | None

    @property
    def per_review(self) -> bool:
        return bool(self.check and self.check["adapt_reviews"])

    def why_not(self) -> str:
        if self.check is None:
            return "the model has too few validation reviews to show that it helps"
        worst = min(self.check["qwk"].items(), key=lambda kv: kv[1]["adapted"] - kv[1]["unadapted"])
        name, q = worst
        return (
            f"on its validation reviews resampled to the {name} star mix, it moved QWK "
            f"{q['unadapted']:.2f} -> {q['adapted']:.2f}"
        )


def fit_adaptation(
    stars: np.ndarray, probs: np.ndarray, start: np.ndarray, films: Any = None
) -> Adaptation:
    """:class:`Adaptation` from labelled validation ``stars`` / ``probs`` (and their ``films``,
    so the check also crosses films) and the start mix."""
    calibration = fit_calibration(probs, stars)
    check = app_check(stars, calibration.apply(probs), start, films=films) if len(stars) else None
    return Adaptation(calibration, start, check)


def adapt_records(
    records: Sequence[Any],
    target: str | Sequence[float],
    model: str,
    adaptation: Callable[[], Adaptation],
    say: bool = True,
) -> tuple[list[float], bool]:
    """Adapt ``records`` (dicts or :class:`ScoreRecord`) to ``target``: five star shares
    re-weight each review to that mix; "em" estimates the mix of the records together (MAP-EM
    on calibrated probabilities) and re-weights each review to it only where the validation
    check says that helps (:attr:`Adaptation.per_review`), else leaves each review's star and
    adapts only the mix. ``adaptation()`` is read only when there is something to adapt.
    Returns the mix and whether each review was re-weighted; ``say`` logs them (the estimated
    mix with its bootstrap interval). Refuses a model without probabilities and EM on fewer
    than :data:`MIN_EM_REVIEWS` scored reviews (it runs to one star)."""
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
        return [], False
    plan = adaptation()
    calibrated = plan.calibration.apply(np.array([r["probs"] for r in scored], dtype=np.float64))
    if target == "em":
        adapted, prior, warning = adapt_probs(calibrated, plan.start)
        per_review = plan.per_review and warning is None
        if say:  # the interval costs 200 EM runs: for a person reading the log, not a request
            shares = said_mix(prior, *mix_interval(calibrated, plan.start))
            done = (
                "re-weighted each review to it" if per_review
                else "kept each review's star (the runaway guard)" if warning
                else f"kept each review's star: re-weighting each review is not validated "
                f"for {model} ({plan.why_not()})"
            )  # fmt: skip
            log.info("estimated star mix of %d reviews (MAP-EM, 95%% interval): %s; %s",
                     len(scored), shares, done)  # fmt: skip
        if warning:
            log.warning("%s; the estimated star mix is still reported", warning)
            for r in scored:
                r["warnings"] = [*r["warnings"], warning]
    else:
        prior, per_review = star_shares(target), True
        adapted = reweight(calibrated, plan.start, prior)
        if say:
            log.info("re-weighted %d reviews to the given mix %s", len(scored), said_mix(prior))
    if per_review:
        for r, p in zip(scored, adapted, strict=True):
            r["probs"] = [float(x) for x in p]
            r["pred_star"] = int(p.argmax()) + 1
            r["expected_star"] = float(p @ np.asarray(STARS, dtype=np.float64))
    return [float(x) for x in prior], per_review


def said_mix(mix: Any, low: Any = None, high: Any = None) -> str:
    """``1★ 8% (6%-10%) · 2★ ...``: a star mix for the log, with its interval when given."""
    ends = zip(low, high, strict=True) if low is not None else [None] * len(mix)
    return " · ".join(
        f"{s}★ {p:.0%}" + (f" ({e[0]:.0%}-{e[1]:.0%})" if e else "")
        for s, p, e in zip(STARS, mix, ends, strict=True)
    )

"""Which reviews the feature stage encodes when a CPU cannot encode them all in time.

``features.encode_budget`` (e.g. ``30m``) bounds the encoder's wall time on a CPU. The stage
orders the prepared reviews once, seeded and stratified by split, film and star, so that every
prefix of the order keeps the corpus's mix; it times the encoder on the first reviews of that
order, and encodes the longest prefix whose tokens fit the budget. Text models still train on
every review; encoder models on the sample. The decision is recorded beside the store
(``sample.json``), so an interrupted stage resumes with the same reviews instead of re-timing.
On a GPU (and on a Ray cluster) the budget does not apply: every review is encoded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from pipeline import artifacts
from pipeline.config import Settings
from pipeline.encoding.load import pick_device
from pipeline.encoding.tokens import FeatureEncoder

SAMPLE_FILE = "sample.json"
CALIBRATION_REVIEWS = 512  # timed before planning: about a second of a 2-core CPU
STRATA = ("split", "film", "star")
console = Console(stderr=True)


def stratified_order(reviews: pd.DataFrame, seed: int) -> np.ndarray:
    """A seeded permutation of the rows in which every prefix holds each (split, film, star)
    stratum in proportion to its size: row j of a stratum of n rows sits at (rank_j + u_j) / n
    for a random rank and jitter, and the order sorts those positions."""
    rng = np.random.default_rng(seed)
    strata = reviews.groupby(list(STRATA), sort=True, observed=True).ngroup().to_numpy()
    sizes = np.bincount(strata)
    by_stratum = np.lexsort((rng.random(len(reviews)), strata))
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(len(reviews))
    rank[by_stratum] = np.arange(len(reviews)) - first[strata[by_stratum]]
    position = (rank + rng.random(len(reviews))) / sizes[strata]
    return np.argsort(position, kind="stable")


def measure_rate(
    encoder: FeatureEncoder,
    texts: list[str],
    layers: list[int],
    max_length: int,
    token_budget: int,
) -> float:
    """Tokens per second of ``encoder`` on ``texts`` (tokenisation and the states of ``layers``
    included: what the stage pays per review), after a warm-up batch."""

    def run(batch: list[str]) -> int:
        tokenized = encoder.tokenize(batch, max_length)
        wants = np.ones(len(batch), dtype=bool)
        for _ in encoder.batches(
            tokenized, layers=layers, token_budget=token_budget, wants_states=wants
        ):
            pass
        return int(tokenized.lengths.sum())

    run(texts[:8])  # warm-up: graph load and first allocations
    start = time.perf_counter()
    tokens = run(texts)
    return tokens / max(time.perf_counter() - start, 1e-9)


@dataclass(frozen=True)
class SamplePlan:
    """The reviews a budgeted stage encodes: ``review_ids`` ascending, ``reviews`` of ``total``,
    at a measured ``tokens_per_s`` (seconds: the estimate for the whole sample)."""

    review_ids: np.ndarray
    total: int
    tokens_per_s: float
    seconds: float

    @property
    def is_subset(self) -> bool:
        return len(self.review_ids) < self.total

    def describe(self, budget: float) -> str:
        what = (
            f"a stratified sample of {len(self.review_ids):,} of {self.total:,} reviews"
            if self.is_subset
            else f"all {self.total:,} reviews"
        )
        return (
            f"features plan: {what} (budget {_duration(budget)} at {self.tokens_per_s:,.0f} "
            f"tokens/s measured), ETA {_duration(self.seconds)}"
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def plan_sample(
    order: np.ndarray, lengths: np.ndarray, *, budget: float, rate: float
) -> SamplePlan:
    """The longest prefix of ``order`` (:func:`stratified_order`) whose tokens (``lengths``, per
    review) the encoder gets through within ``budget`` seconds at ``rate`` tokens per second (at
    least one review)."""
    seconds = np.cumsum(lengths[order]) / rate
    n = max(int(np.searchsorted(seconds, budget, side="right")), 1)
    return SamplePlan(np.sort(order[:n]), len(order), rate, float(seconds[n - 1]))


def recorded_sample(features_dir: Path, fingerprint: str) -> float | None:
    """The throughput an interrupted stage with this fingerprint measured, so it resumes with the
    same reviews; None when there is none."""
    try:
        doc = artifacts.read_json(features_dir / SAMPLE_FILE)
    except (OSError, ValueError):
        return None
    return float(doc["tokens_per_s"]) if doc.get("fingerprint") == fingerprint else None


def record_sample(features_dir: Path, fingerprint: str, plan: SamplePlan, budget: float) -> None:
    features_dir.mkdir(parents=True, exist_ok=True)
    artifacts.write_json(
        features_dir / SAMPLE_FILE,
        {
            "fingerprint": fingerprint,
            "tokens_per_s": plan.tokens_per_s,
            "budget_seconds": budget,
            "reviews": len(plan.review_ids),
            "total": plan.total,
        },
    )


def sample_budget(settings: Settings) -> float | None:
    """The encode budget in seconds when it applies (on a CPU), else None: encode everything."""
    features = settings.features
    if features.encode_budget is None or pick_device(features.device).type != "cpu":
        return None
    return features.encode_budget


def choose_reviews(
    settings: Settings,
    encoder: FeatureEncoder,
    reviews: pd.DataFrame,
    lengths: np.ndarray,
    layers: list[int],
    *,
    fingerprint: str,
    token_budget: int,
    force: bool,
) -> np.ndarray:
    """The review_ids to encode: all of them, or the stratified sample that fits the encode
    budget (timed here with ``encoder``, or the interrupted run's timing when resuming, keyed
    by ``fingerprint``)."""
    budget = sample_budget(settings)
    if budget is None:
        return np.arange(len(reviews))
    features_dir = settings.paths.features
    order = stratified_order(reviews, settings.seed)
    rate = None if force else recorded_sample(features_dir, fingerprint)
    if rate is None:
        calibration = [reviews["text"].iat[i] for i in order[:CALIBRATION_REVIEWS]]
        max_length = settings.features.max_length
        rate = measure_rate(encoder, calibration, layers, max_length, token_budget)
    plan = plan_sample(order, lengths, budget=budget, rate=rate)
    record_sample(features_dir, fingerprint, plan, budget)
    console.print(plan.describe(budget))
    if plan.is_subset:
        console.print(
            "  text models train on every review, encoder models on the sample "
            "(--encode-budget none encodes all)"
        )
    return plan.review_ids

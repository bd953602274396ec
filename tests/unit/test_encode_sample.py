"""The encode budget's sample: seeded, stratified in every prefix, and sized by throughput."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_settings, parse_duration
from pipeline.errors import InputError
from pipeline.features.sample import plan_sample, stratified_order


def corpus(n: int = 6000, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    films = rng.choice(["大片", "小众", "冷门"], size=n, p=[0.7, 0.25, 0.05])
    return pd.DataFrame(
        {
            "film": films,
            "star": rng.choice([1, 2, 3, 4, 5], size=n, p=[0.1, 0.1, 0.3, 0.3, 0.2]),
            "split": rng.choice(["train", "val", "test"], size=n, p=[0.8, 0.1, 0.1]),
        }
    )


def test_every_prefix_keeps_the_mix_of_split_film_and_star() -> None:
    reviews = corpus()
    order = stratified_order(reviews, seed=0)
    assert sorted(order) == list(range(len(reviews)))  # a permutation: nothing lost or repeated
    whole = reviews.value_counts(["split", "film", "star"], normalize=True)
    for n in (300, 1000, 2500):
        prefix = reviews.iloc[order[:n]].value_counts(["split", "film", "star"], normalize=True)
        gap = (prefix.reindex(whole.index, fill_value=0) - whole).abs()
        # systematic sampling: each stratum is within about two reviews of its share
        assert (gap * n).max() <= 2.0, (n, (gap * n).max())
    # a plain random sample of 300 strays much further from the mix (sd up to 6.5 reviews)
    random = reviews.sample(300, random_state=0).value_counts(["split", "film", "star"])
    assert ((random / 300).reindex(whole.index, fill_value=0) - whole).abs().max() * 300 > 4


def test_the_order_is_seeded() -> None:
    reviews = corpus()
    np.testing.assert_array_equal(stratified_order(reviews, 0), stratified_order(reviews, 0))
    assert not np.array_equal(stratified_order(reviews, 0), stratified_order(reviews, 1))


def test_the_sample_fits_the_budget_at_the_measured_rate() -> None:
    reviews = corpus(1000)
    lengths = np.random.default_rng(2).integers(5, 80, size=len(reviews))
    order = stratified_order(reviews, 0)
    plan = plan_sample(order, lengths, budget=10.0, rate=1000.0)  # 10,000 tokens
    n = len(plan.review_ids)
    assert lengths[order[:n]].sum() <= 10_000 < lengths[order[: n + 1]].sum()
    np.testing.assert_array_equal(plan.review_ids, np.sort(order[:n]))
    assert plan.is_subset and plan.seconds <= 10.0
    everything = plan_sample(order, lengths, budget=1e9, rate=1000.0)
    assert not everything.is_subset and len(everything.review_ids) == len(reviews)
    assert len(plan_sample(order, lengths, budget=0.0, rate=1000.0).review_ids) == 1


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800.0), ("90", 90.0), ("90s", 90.0), ("1.5h", 5400.0), ("none", None), ("all", None)],
)
def test_budgets_read_as_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds
    budget = load_settings(None, **{"features.encode_budget": text}).features.encode_budget
    assert budget == seconds


def test_a_bad_budget_says_what_a_duration_looks_like() -> None:
    with pytest.raises(InputError, match="30m"):
        load_settings(None, **{"features.encode_budget": "half an hour"})

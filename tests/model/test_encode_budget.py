"""A run whose encode budget covers only part of its reviews: the embedded encoder encodes a
seeded stratified sample, text models train on every review, encoder models on the sample, and
an interrupted stage resumes with the same sample. The throughput is fixed here (it is measured
on the machine otherwise), so the sample's size is known."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_settings, parse_duration
from pipeline.data.demo import generate_demo_corpus
from pipeline.data.prepare import prepare_run
from pipeline.encoding.load import resolve_encoder
from pipeline.encoding.runtime import load_feature_encoder
from pipeline.encoding.tokens import count_tokens
from pipeline.features import sample as sampling
from pipeline.features.extract import extract_features
from pipeline.features.sample import plan_sample, stratified_order
from pipeline.training.data import TrainingData
from pipeline.workflow import train_run

RATE = 1000.0  # tokens per second
BUDGET = "6s"  # 6,000 tokens: about a third of the run


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("budget")
    csv = generate_demo_corpus(root / "demo.csv", n_reviews=600, seed=4)
    settings = load_settings(
        None,
        run_name="budget",
        runs_dir=root / "runs",
        **{
            "prepare.workers": 1,
            "features.encode_budget": BUDGET,
            "features.shard_size": 64,
            "features.device": "cpu",
        },
    )
    prepare_run(settings, [csv])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sampling, "measure_rate", lambda *args, **kwargs: RATE)
        store = extract_features(settings)
    return settings, store


def test_the_store_holds_the_stratified_prefix_that_fits(budget_run) -> None:
    settings, store = budget_run
    reviews = pd.read_parquet(settings.paths.reviews)
    order = stratified_order(reviews, settings.seed)
    expected = plan_sample(order, store_lengths(reviews, settings), budget=6.0, rate=RATE)
    assert store.is_sample and store.num_prepared == len(reviews)
    np.testing.assert_array_equal(store.review_ids, expected.review_ids)
    assert 0.2 * len(reviews) < len(store) < 0.5 * len(reviews)
    sample = reviews.iloc[store.review_ids]
    for column in ("split", "star"):  # the sample keeps the run's mix
        gap = sample[column].value_counts(normalize=True) - reviews[column].value_counts(
            normalize=True
        )
        assert gap.abs().max() < 0.03, column
    counts = reviews["film"].value_counts()
    assert set(counts[counts >= 10].index) <= set(sample["film"])  # every film of some size
    # review_ids address the store; a review it does not hold is an error, not another's vector
    outside = int(np.setdiff1d(np.arange(len(reviews)), store.review_ids)[0])
    assert not store.covers([outside])[0] and store.covers(store.review_ids).all()
    with pytest.raises(IndexError, match="not in the feature store"):
        store.token_states([outside])
    inside = int(store.review_ids[5])
    assert len(store.token_states([inside])[0]) == len(store.input_ids(inside))


def store_lengths(reviews: pd.DataFrame, settings) -> np.ndarray:
    spec = resolve_encoder(settings.features.encoder)
    encoder = load_feature_encoder(
        spec, device="cpu", precision="fp32", token_layers=[-1], threads=1
    )
    return count_tokens(encoder, reviews["text"].tolist(), settings.features.max_length)


def test_an_interrupted_stage_resumes_with_the_same_sample(budget_run, monkeypatch) -> None:
    settings, store = budget_run
    features_dir = settings.paths.features
    first = (features_dir / "shard-00000" / "pooled_mean.npy").stat().st_mtime_ns
    shutil.rmtree(features_dir / "shard-00001")
    (features_dir / "manifest.json").unlink()

    def must_not_time(*args: object, **kwargs: object) -> float:
        raise AssertionError("a resumed stage re-timed the encoder")

    monkeypatch.setattr(sampling, "measure_rate", must_not_time)
    resumed = extract_features(settings)
    np.testing.assert_array_equal(resumed.review_ids, store.review_ids)
    assert (features_dir / "shard-00000" / "pooled_mean.npy").stat().st_mtime_ns == first
    np.testing.assert_array_equal(resumed.pooled("mean"), store.pooled("mean"))


def test_text_models_train_on_every_review_and_encoder_models_on_the_sample(budget_run) -> None:
    settings, store = budget_run
    doc = train_run(settings, ["tfidf_lr", "pooled_lr", "head_cls"], progress=False)
    models = doc["evaluations"]["random"]["models"]
    data = TrainingData.load(settings.paths)
    n_test = int((data.reviews["split"] == "test").sum())
    sampled_test = int((data.reviews["split"].iloc[store.review_ids] == "test").sum())
    assert models["tfidf_lr"]["test"]["n"] == n_test
    assert models["head_cls"]["test"]["n"] == models["pooled_lr"]["test"]["n"] == sampled_test
    assert 0 < sampled_test < n_test
    config = settings.paths.model("head_cls") / "config.json"
    trained_on = pd.read_json(config, typ="series")["train_reviews"]
    assert trained_on == len(data.rows("train", "tokens")) < len(data.rows("train"))


def test_a_budget_that_covers_every_review_is_the_plain_store(budget_run, tmp_path) -> None:
    """Same fingerprint with or without a budget when nothing is left out (so the Ray engine,
    which encodes everything, writes the very store the local engine does)."""
    settings, sampled = budget_run
    stores = {}
    for budget in ("none", "100h"):
        copy = settings.model_copy(update={"runs_dir": tmp_path / budget, "run_name": "all"})
        shutil.copytree(settings.paths.prepared, copy.paths.prepared)
        features = copy.features.model_copy(update={"encode_budget": parse_duration(budget)})
        stores[budget] = extract_features(copy.model_copy(update={"features": features}))
    assert stores["none"].fingerprint == stores["100h"].fingerprint != sampled.fingerprint
    assert not stores["100h"].is_sample and sampled.is_sample

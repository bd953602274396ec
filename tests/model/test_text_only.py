"""A run without a feature store trains and scores its text models (majority, TF-IDF) on every
prepared review; encoder models say which stage they need."""

from __future__ import annotations

import pytest

from pipeline import Scorer
from pipeline.config import load_settings
from pipeline.data.demo import generate_demo_corpus
from pipeline.data.prepare import prepare_run
from pipeline.errors import StageMissingError
from pipeline.workflow import train_run


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("text_only")
    csv = generate_demo_corpus(root / "demo.csv", n_reviews=600, seed=2)
    settings = load_settings(
        None, run_name="text", runs_dir=root / "runs", **{"prepare.workers": 1}
    )
    prepare_run(settings, [csv])
    return settings


def test_text_models_train_without_features(text_run) -> None:
    assert not text_run.paths.features.exists()
    doc = train_run(text_run, progress=False)
    models = doc["evaluations"]["random"]["models"]
    assert sorted(models) == ["majority", "tfidf_lr", "tfidf_ridge"]
    n_test = models["tfidf_lr"]["test"]["n"]
    assert (
        n_test > 0
        and models["tfidf_lr"]["test"]["accuracy"] > models["majority"]["test"]["accuracy"]
    )
    assert doc["default_model"]["name"] in ("tfidf_lr", "tfidf_ridge")

    scorer = Scorer.load("text", runs_dir=text_run.runs_dir)
    assert scorer.model_name == doc["default_model"]["name"]
    stars = [r["pred_star"] for r in scorer.score_records(["剧情拖沓，浪费时间", "太好看了，经典"])]
    assert all(1 <= s <= 5 for s in stars) and stars[0] < stars[1]


def test_encoder_models_name_the_missing_stage(text_run) -> None:
    with pytest.raises(StageMissingError, match="douban features --run text"):
        train_run(text_run, ["head_cls"], progress=False)

"""Training and evaluation on the session's demo run: artifacts, layouts, and that heads learn."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from pipeline.artifacts import read_json, write_json
from pipeline.config import RunPaths
from pipeline.modeling.baselines import TfidfVectoriser, word_ngrams
from pipeline.modeling.bundle import EncoderMismatchError, load_star_model, save_model
from pipeline.modeling.saved import read_saved_model
from pipeline.training.data import TrainingData
from pipeline.training.evaluate import PREDICTION_SCHEMA, choose_default, own_evaluation
from pipeline.training.train import ALL_MODELS
from pipeline.workflow import evaluate_run, run_pipeline, train_run

pytestmark = pytest.mark.slow


def test_every_model_saved_with_encoder_and_labels(demo_run):
    paths = demo_run.paths
    store_encoder = TrainingData.load(paths).encoder_info()
    for name in ALL_MODELS:
        saved = read_saved_model(paths.models, name)
        tensors, config = saved.tensors, saved.config
        assert (paths.model(name) / "model.safetensors").exists()
        assert config["encoder"]["fingerprint"] == store_encoder["fingerprint"]
        assert config["labels"] == {"1": 0, "2": 1, "3": 2, "4": 3, "5": 4}
        assert tensors, name
    head = read_saved_model(paths.models, "head_cls").config
    assert head["layers"] == TrainingData.load(paths).store.token_layers
    assert len(head["training"]["layer_weights"]) == 2


def test_loading_with_another_encoder_is_refused(demo_run):
    with pytest.raises(EncoderMismatchError, match="douban features"):
        load_star_model(demo_run.paths.models, "head_cls", fingerprint="0" * 64)


def test_metrics_layout(demo_run):
    doc = read_json(demo_run.paths.metrics)
    assert doc["run"] == "demo" and doc["is_demo"] is True
    assert doc["encoder"]["name"] == "e5-small"
    models = doc["evaluations"]["random"]["models"]
    assert set(ALL_MODELS) <= set(models)
    for name in ALL_MODELS:
        for split in ("val", "test"):
            m = models[name][split]
            assert m["n"] > 0
            assert 0 <= m["accuracy"] <= m["off_by_one"] <= 1
            assert np.asarray(m["confusion"]).sum() == m["n"]
        assert models[name]["per_film"]["test"]
        film_n = sum(v["n"] for v in models[name]["per_film"]["test"].values())
        assert film_n == models[name]["test"]["n"]
    assert "ece" in models["head_cls"]["test"] and "median_star_mae" in models["head_cls"]["test"]
    assert "ece" not in models["head_reg"]["test"]


def test_the_default_model_is_the_best_on_validation(demo_run):
    doc = read_json(demo_run.paths.metrics)
    val = {n: m["val"]["accuracy"] for n, m in doc["evaluations"]["random"]["models"].items()}
    default = doc["default_model"]
    assert default["chosen_on"] == "random/val" and default["metric"] == "exact"
    assert default["best_value"] == val[default["best"]] == max(val.values())
    assert default["value"] == val[default["name"]] >= max(val.values()) - default["margin"]
    assert default["name"] in default["within_margin"]


def test_a_close_call_goes_to_the_richer_model():
    def doc(tfidf: float, ensemble: float) -> dict:
        models = {
            "tfidf_lr": {"val": {"accuracy": tfidf, "n": 200}},
            "ensemble_head_tfidf": {"val": {"accuracy": ensemble, "n": 200}},
            "majority": {"val": {"accuracy": 0.3, "n": 200}},
        }
        return {"evaluations": {"random": {"models": models}}}

    close = choose_default(doc(0.60, 0.59), "random", "exact")  # one SE: 0.035
    assert close["name"] == "ensemble_head_tfidf" and close["best"] == "tfidf_lr"
    assert close["margin"] == pytest.approx((0.6 * 0.4 / 200) ** 0.5)
    assert close["within_margin"] == ["tfidf_lr", "ensemble_head_tfidf"]
    assert choose_default(doc(0.60, 0.50), "random", "exact")["name"] == "tfidf_lr"


def test_the_default_model_never_looks_at_test():
    models = {
        "a": {"val": {"accuracy": 0.6, "qwk": 0.2}, "test": {"accuracy": 0.5, "qwk": 0.9}},
        "b": {"val": {"accuracy": 0.5, "qwk": 0.7}, "test": {"accuracy": 0.9, "qwk": 0.1}},
    }
    doc = {"evaluations": {"random": {"models": models}}}
    assert choose_default(doc, "random", "exact")["name"] == "a"
    assert choose_default(doc, "random", "qwk") == {
        "name": "b", "chosen_on": "random/val", "metric": "qwk", "value": 0.7,
    }  # fmt: skip


def test_unchanged_inputs_train_and_evaluate_nothing(demo_run):
    paths = demo_run.paths
    current = paths.model_set.root
    stamps = {p: p.stat().st_mtime_ns for p in (paths.metrics, paths.predictions)}
    doc = train_run(demo_run, progress=False)
    assert paths.model_set.root == current  # no new generation
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert doc == read_json(paths.metrics)


def test_a_second_pipeline_run_recomputes_nothing(demo_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(demo_run.paths.root, runs / "demo", copy_function=os.link)  # read-only
    settings = demo_run.model_copy(update={"runs_dir": runs, "reports_dir": tmp_path / "reports"})
    csv = demo_run.runs_dir.parent / "demo_reviews.csv"
    first = run_pipeline(settings, [csv])
    generation = settings.paths.model_set.root
    stamps = {p: p.stat().st_mtime_ns for p in [*first.pages, settings.paths.metrics]}
    second = run_pipeline(settings, [csv])
    assert second.pages == first.pages and second.pages[-1].name == "index.html"
    assert settings.paths.model_set.root == generation
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_heads_beat_majority_clearly(demo_run):
    models = read_json(demo_run.paths.metrics)["evaluations"]["random"]["models"]
    majority = models["majority"]["test"]["accuracy"]
    for name in ("head_cls", "head_ord", "tfidf_lr", "ensemble_head_tfidf"):
        assert models[name]["test"]["accuracy"] > majority + 0.15, name
    assert models["head_reg"]["test"]["mae"] < models["majority"]["test"]["mae"] - 0.3


def test_predictions_cover_every_split_in_the_documented_schema(demo_run):
    table = pq.read_table(demo_run.paths.predictions)
    assert table.schema.equals(PREDICTION_SCHEMA)
    preds = table.to_pandas()
    reviews = pd.read_parquet(demo_run.paths.reviews)
    random = preds[preds["evaluation"] == "random"]
    for name, group in random.groupby("model"):
        assert sorted(group["review_id"]) == reviews["review_id"].tolist(), name
        assert set(group["split"]) == {"train", "val", "test"}
    head = random[random["model"] == "head_cls"]
    assert np.allclose(np.stack(head["probs"]).sum(1), 1, atol=1e-5)
    assert np.allclose(head["expected_star"], np.stack(head["probs"]) @ np.arange(1, 6), atol=1e-4)
    store = TrainingData.load(demo_run.paths).store
    lengths = store.lengths()[head["review_id"].to_numpy()]
    assert [len(a) for a in head["attention"]] == lengths.tolist()
    reg = random[random["model"] == "head_reg"]
    assert reg["probs"].isna().all() and reg["score"].between(1, 5).all()


def test_reevaluating_one_model_keeps_the_others(demo_run):
    before = pq.read_table(demo_run.paths.predictions).num_rows
    doc = evaluate_run(demo_run, models=["majority"], progress=False)
    assert pq.read_table(demo_run.paths.predictions).num_rows == before
    assert set(ALL_MODELS) <= set(doc["evaluations"]["random"]["models"])


def test_cross_corpus_evaluation(demo_run, tmp_path):
    from pipeline.data.demo import generate_demo_corpus

    other = generate_demo_corpus(tmp_path / "demo_reviews_other.csv", n_reviews=150, seed=7)
    doc = evaluate_run(demo_run, models=["majority", "head_cls"], external=other, progress=False)
    cross = doc["evaluations"]["cross_corpus"]
    assert cross["splits"] == ["test"]
    assert set(cross["models"]) == {"majority", "head_cls"}
    assert "val" not in cross["models"]["head_cls"]
    assert cross["models"]["head_cls"]["test"]["n"] > 100
    assert "random" in doc["evaluations"]  # kept
    preds = pd.read_parquet(demo_run.paths.predictions)
    assert (preds.loc[preds["evaluation"] == "cross_corpus", "split"] == "test").all()
    assert (demo_run.paths.root / "external" / "demo_reviews_other" / "features").is_dir()


def test_film_holdout_evaluation_name(tmp_path):
    paths = RunPaths(tmp_path / "run")
    write_json(paths.summary, {"holdout_films": []})
    assert own_evaluation(paths) == "random"
    write_json(paths.summary, {"holdout_films": ["钢铁侠1"]})
    assert own_evaluation(paths) == "film_holdout"


def test_saved_baselines_round_trip(demo_run, tmp_path):
    data = TrainingData.load(demo_run.paths)
    rows = data.rows("test")
    for name in ("majority", "tfidf_lr", "tfidf_ridge", "pooled_lr_layers", "ensemble_head_tfidf"):
        model = load_star_model(demo_run.paths.models, name)
        before = model.predict(data.source, rows)
        if name != "ensemble_head_tfidf":
            save_model(tmp_path / name, model.tensors(), model.config)
            model = load_star_model(tmp_path, name)
        after = model.predict(data.source, rows)
        assert np.array_equal(before.pred_star, after.pred_star), name
        assert np.array_equal(before.score, after.score), name


def test_tfidf_matches_sklearn():
    docs = [["好看", "的", "电影"], ["不", "好看"], ["电影", "好看", "好看"], ["难看"], []]
    ours = TfidfVectoriser.fit(docs, min_df=1)
    theirs = TfidfVectorizer(analyzer=word_ngrams, sublinear_tf=True).fit(docs)
    assert ours.vocabulary == theirs.vocabulary_
    assert np.allclose(ours.transform(docs).toarray(), theirs.transform(docs).toarray())

"""The Run API: opening runs by name, the one default model (chosen on validation), the
segmenter a run was prepared with, self-contained model bundles and the transformers-like call."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import (
    ModelNotFoundError,
    Run,
    RunNameError,
    RunNotFoundError,
    Scorer,
    StageMissingError,
    StaleArtifactError,
)
from pipeline.artifacts import write_json, write_manifest
from pipeline.config import RunPaths
from pipeline.modeling.spec import build_segmenter, segmenter_spec
from tests.synthetic_run import make_run


@pytest.mark.parametrize("name", ["", " ", ".", "..", "a/b", "../etc", "/tmp", "a\\b", "x\x00"])
def test_a_run_name_is_one_plain_path_segment(tmp_path: Path, name: str) -> None:
    with pytest.raises(RunNameError):
        Run.open(name, runs_dir=tmp_path)


def test_a_missing_run_says_it_does_not_exist_and_lists_the_runs(tmp_path: Path) -> None:
    make_run(tmp_path / "alpha")
    make_run(tmp_path / "beta")
    with pytest.raises(RunNotFoundError, match=r"'nope' does not exist.*alpha, beta"):
        Run.open("nope", runs_dir=tmp_path)
    assert Run.open("alpha", runs_dir=tmp_path).name == "alpha"
    assert Run.open(tmp_path / "beta").name == "beta"  # a directory opens as it is


def _fake_model(root: Path, name: str) -> None:
    write_json(RunPaths(root).models / name / "config.json", {"kind": "majority"})


def test_open_without_a_name_takes_the_newest_run_with_models(tmp_path: Path) -> None:
    with pytest.raises(StageMissingError, match="no run with trained models"):
        Run.open(None, runs_dir=tmp_path)
    make_run(tmp_path / "trained")
    _fake_model(tmp_path / "trained", "majority")
    make_run(tmp_path / "untrained")  # newer, but nothing to score with
    assert Run.open(None, runs_dir=tmp_path).name == "trained"


def _metrics(val: dict[str, float], test: dict[str, float]) -> dict:
    models = {
        m: {"val": {"n": 200, "accuracy": val[m]}, "test": {"n": 200, "accuracy": test[m]}}
        for m in val
    }
    return {"evaluations": {"random": {"models": models}}}


def test_default_model_is_chosen_on_validation_never_test(tmp_path: Path) -> None:
    root = make_run(tmp_path / "synthetic")
    for name in ("majority", "tfidf_lr", "head_cls"):
        _fake_model(root, name)
    # head_cls wins on test, tfidf_lr on validation: the default is tfidf_lr
    metrics = _metrics(
        val={"majority": 0.3, "tfidf_lr": 0.7, "head_cls": 0.6},
        test={"majority": 0.3, "tfidf_lr": 0.5, "head_cls": 0.8},
    )
    write_json(RunPaths(root).metrics, metrics)
    run = Run.open(root)
    assert run.default_model == "tfidf_lr"
    # what the evaluate stage recorded wins over the fallback
    write_json(RunPaths(root).metrics, metrics | {"default_model": {"name": "majority"}})
    assert Run.open(root).default_model == "majority"


def test_scorer_refuses_an_unknown_model_listing_the_models(demo_run) -> None:
    with pytest.raises(ModelNotFoundError, match="no model 'nope'.*head_cls"):
        Scorer.load("demo", model="nope", runs_dir=demo_run.runs_dir)


def test_segmenter_is_the_one_prepare_ran_with(tmp_path: Path) -> None:
    root = make_run(tmp_path / "synthetic")
    paths = RunPaths(root)
    words = tmp_path / "words.txt"
    words.write_text("复联四 10 n\n", encoding="utf-8")
    write_manifest(paths.prepared, "prepare", "fp", settings={"user_dict": str(words)})
    run = Run.open(root)
    assert "复联四" in run.segmenter.tokens("我想看复联四")
    assert "钢铁侠1" in run.segmenter.tokens("钢铁侠1真好看")  # film titles stay whole
    spec = segmenter_spec(paths)  # what a model bundle carries: no file needed to rebuild it
    words.unlink()
    assert "复联四" in build_segmenter(spec).tokens("我想看复联四")
    with pytest.raises(StaleArtifactError, match="no longer exists"):
        segmenter_spec(paths)


def test_importing_pipeline_stays_light() -> None:
    code = (
        "import sys, pipeline; pipeline.DoubanError; pipeline.Run; "
        "print(sorted(m for m in ('torch', 'transformers', 'streamlit') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ on the trained demo run


@pytest.fixture(scope="module")
def clf(demo_run) -> Scorer:
    return Run.open("demo", demo_run.runs_dir).scorer()


@pytest.mark.slow
def test_a_bundle_scores_without_feature_store_or_prepared_data(demo_run, clf, tmp_path) -> None:
    """Only the trained models travel: the copy has no features/ and no prepared/."""
    copy = tmp_path / "runs" / "demo"
    shutil.copytree(demo_run.paths.trained, copy / "trained")
    assert not (copy / "features").exists() and not (copy / "prepared").exists()
    texts = ["剧情拖沓，浪费时间", "这部电影太好看了，强烈推荐", "一般般吧"]
    moved = Scorer.load("demo", runs_dir=copy.parent).score_records(texts)
    here = clf.score_records(texts)
    assert [r["pred_star"] for r in moved] == [r["pred_star"] for r in here]
    np.testing.assert_allclose([r["probs"] for r in moved], [r["probs"] for r in here], atol=1e-5)
    assert [r["top_words"] for r in moved] == [r["top_words"] for r in here]


@pytest.mark.slow
def test_a_tfidf_model_loads_no_encoder(demo_run) -> None:
    tfidf = Scorer.load("demo", model="tfidf_lr", runs_dir=demo_run.runs_dir)
    (answer,) = tfidf("剧情拖沓，浪费时间")
    assert answer["label"] in range(1, 6)
    assert "encoder" not in vars(tfidf)  # loaded lazily, and not needed for labels
    tfidf.explain("剧情拖沓")  # explaining borrows head_cls, which reads encoder features
    assert "encoder" in vars(tfidf)


@pytest.mark.slow
def test_transformers_like_call(clf) -> None:
    text = "剧情拖沓，浪费时间"
    record = clf.score([text])[0]
    (top,) = clf(text)
    assert top == {"label": record.pred_star, "score": max(record.probs)}
    every = clf(text, top_k=None)
    assert sorted(a["label"] for a in every) == [1, 2, 3, 4, 5]
    assert [a["score"] for a in every] == sorted((a["score"] for a in every), reverse=True)
    assert sum(a["score"] for a in every) == pytest.approx(1.0, abs=1e-5)
    texts = ["好看", "难看死了", "", "一般"]
    as_list = clf(texts)
    assert [a["label"] for a in as_list[:2]] == [r.pred_star for r in clf.score(texts[:2])]
    assert as_list[2]["error"] == "empty review" and as_list[2]["label"] is None
    two = clf(pd.Series(texts), top_k=2)[0]  # batched with others: same up to float rounding
    alone = clf(texts[0], top_k=2)
    assert [a["label"] for a in two] == [a["label"] for a in alone]
    assert [a["score"] for a in two] == pytest.approx([a["score"] for a in alone], abs=1e-5)
    streamed = clf((t for t in texts), batch_size=3)
    assert not isinstance(streamed, list)  # lazy: scored batch by batch
    assert [a["label"] for a in streamed] == [a["label"] for a in as_list]
    assert record.to_dict()["model"] == record["model"] == clf.model_name


def test_a_run_directory_given_as_a_string_is_a_path(tmp_path) -> None:
    from pipeline.locate import resolve_run

    root = tmp_path / "runs" / "mine"
    root.mkdir(parents=True)
    assert resolve_run(str(root)).root == root
    assert resolve_run(root).root == root

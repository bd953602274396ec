"""Scoring new text with the session's demo run: records, bad input, files, API and CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import pipeline
from pipeline import Run, Scorer, StageMissingError
from pipeline.cli import app
from pipeline.predict.files import score_file
from pipeline.predict.postprocess import word_attention

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scorer(demo_run):
    return Scorer.load("demo", runs_dir=demo_run.runs_dir)


def test_record_fields(scorer):
    (rec,) = scorer.score_records(["这部电影太好看了，强烈推荐"])
    assert rec["error"] is None and rec["warnings"] == []
    assert rec["pred_star"] in range(1, 6)
    assert sum(rec["probs"]) == pytest.approx(1.0, abs=1e-5)
    assert rec["expected_star"] == pytest.approx(np.dot(rec["probs"], range(1, 6)), abs=1e-4)
    assert rec["regression"] is None  # one model's outputs: the default gives probabilities
    assert rec["top_words"] and all(w["word"] in rec["text"] for w in rec["top_words"])
    assert rec["model"] == scorer.model_name
    assert rec["attention_model"] == Run.open("demo", scorer.paths.root.parent).attention_model(
        scorer.model_name
    )


def test_regression_model_gives_its_continuous_star(demo_run):
    reg = Scorer.load("demo", model="head_reg", runs_dir=demo_run.runs_dir)
    good, bad = reg.score_records(["这部电影太好看了，强烈推荐", "剧情拖沓，浪费时间，烂片"])
    assert good["regression"] > bad["regression"] + 0.5
    assert good["probs"] is None and good["expected_star"] is None and good["model"] == "head_reg"
    assert reg("好看", top_k=None) == [{"label": reg.score(["好看"])[0].pred_star, "score": None}]


def test_default_model_is_chosen_on_validation(scorer, demo_run):
    from pipeline.artifacts import read_json

    doc = read_json(demo_run.paths.metrics)
    models = doc["evaluations"]["random"]["models"]
    chosen = doc["default_model"]["name"]
    assert doc["default_model"]["chosen_on"] == "random/val"
    assert models[chosen]["val"]["accuracy"] == max(m["val"]["accuracy"] for m in models.values())
    assert scorer.model_name == chosen == Run.open("demo", demo_run.runs_dir).default_model


def test_explain_words_cover_the_text(scorer):
    out = scorer.explain("剧情很精彩，演员演技在线，就是结尾有点仓促。<b>")
    words = out["words"]
    assert sum(w["weight"] for w in words) == pytest.approx(1.0, abs=1e-4)
    assert all(out["clean_text"][w["start"] : w["end"]] == w["word"] for w in words)
    assert {"精彩", "演技"} <= {w["word"] for w in words}
    assert [(w, s, e) for w, s, e, _ in out.words] == [
        (w["word"], w["start"], w["end"]) for w in words
    ]
    page = out._repr_html_()
    assert "精彩</span>" in page and "<b>" not in page  # markup in a review is shown, not run


def test_explanation_escapes_the_review():
    from pipeline.markup import highlight_html

    text = '<script>alert("x")</script>好看'
    page = highlight_html(text, [("好看", len(text) - 2, len(text), 1.0)])
    assert "<script>" not in page and "&lt;script&gt;" in page and "好看</span>" in page


@pytest.mark.parametrize(
    ("model", "explained_by"), [("head_ord", "head_ord"), ("tfidf_lr", "head_cls")]
)
def test_explanation_names_the_head_whose_attention_it_shows(demo_run, model, explained_by):
    """A head explains itself; a model without attention borrows head_cls's, and says so."""
    out = Scorer.load("demo", model=model, runs_dir=demo_run.runs_dir).explain(
        "剧情拖沓，浪费时间。"
    )
    assert out["model"] == model and out["attention_model"] == explained_by
    assert out["words"]


def test_word_attention_spreads_tokens_over_characters():
    text = "好看极了"
    offsets = np.array([[-1, -1], [0, 2], [2, 4], [-1, -1]])
    attention = np.array([5.0, 0.6, 0.2, 5.0])  # special tokens carry no characters
    words = word_attention(text, offsets, attention, [("好看", 0, 2), ("极", 2, 3), ("了", 3, 4)])
    assert [round(w[3], 4) for w in words] == [0.75, 0.125, 0.125]


@pytest.mark.parametrize(
    ("text", "error", "warning"),
    [
        ("", "empty review", None),
        ("   \n\t ", "empty review", None),
        (None, "empty review", None),
        ("<p></p> https://example.com", "no text left after cleaning", None),
        ("😀😀😀", None, "no Chinese characters"),
        ("What a wonderful film, loved it", None, "no Chinese characters"),
        ("好看" * 5000, None, "truncated"),
    ],
)
def test_bad_input_gets_a_defined_answer(scorer, text, error, warning):
    (rec,) = scorer.score_records([text])
    if error:
        assert error in rec["error"] and rec["pred_star"] is None
    else:
        assert rec["error"] is None and rec["pred_star"] in range(1, 6)
        assert any(warning in w for w in rec["warnings"]), rec["warnings"]


def test_batch_keeps_every_row_in_order(scorer):
    texts = ["好看", "", "难看死了", None, "一般般"] * 3
    records = scorer.score_records(texts)
    assert len(records) == len(texts)
    assert [r["row"] for r in records] == list(range(len(texts)))
    assert [r["error"] is not None for r in records] == [t in ("", None) for t in texts]
    single = [scorer.score_records([t])[0]["pred_star"] for t in texts[:5]]
    assert [r["pred_star"] for r in records[:5]] == single


def test_python_api_matches_scorer(scorer, demo_run):
    texts = ["特效很棒", "烂片一部"]
    api = pipeline.score(texts, run="demo", runs_dir=demo_run.runs_dir)
    direct = scorer.score_records(texts)
    for a, b in zip(api, direct, strict=True):
        assert a["pred_star"] == b["pred_star"]
        assert a["probs"] == pytest.approx(b["probs"], abs=1e-5)
    assert (
        pipeline.score("特效很棒", run=demo_run.paths.root)[0]["pred_star"]  # a run directory
        == api[0]["pred_star"]
    )


def test_scores_match_the_stored_predictions(scorer, demo_run):
    """Encoding afresh gives the predictions evaluation made from the feature store."""
    reviews = pd.read_parquet(demo_run.paths.reviews).query("split == 'test'").head(40)
    preds = pd.read_parquet(demo_run.paths.predictions)
    stored = preds[(preds["model"] == scorer.model_name) & (preds["evaluation"] == "random")]
    stored = stored.set_index("review_id").loc[reviews["review_id"]]
    records = scorer.score_records(reviews["text"].tolist())
    got = np.array([r["probs"] for r in records])
    assert np.abs(got - np.stack(stored["probs"])).max() < 0.02
    assert (np.array([r["pred_star"] for r in records]) == stored["pred_star"]).mean() >= 0.95


def test_csv_file_with_invalid_utf8_row(scorer, tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(
        "ID,Comment\n1,好看\n2,".encode() + b"\xff\xfe bad" + "\n3,\n4,难看\n".encode()
    )
    out = tmp_path / "out.csv"
    counts = score_file(scorer, path, out)
    assert counts == {"rows": 4, "errors": 2}
    df = pd.read_csv(out)
    assert df["row"].tolist() == [0, 1, 2, 3]
    assert df["error"].fillna("").tolist() == ["", "invalid UTF-8", "empty review", ""]
    assert df.loc[0, ["prob_1", "prob_5"]].notna().all()


def test_txt_to_jsonl(scorer, tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("好看\n\n难看\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    score_file(scorer, path, out)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["error"] for r in rows] == [None, "empty review", None]


def test_cli_score_json(demo_run):
    result = CliRunner().invoke(
        app, ["score", "--run", "demo", "--runs-dir", str(demo_run.runs_dir), "--json", "太好看了"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout[result.stdout.index("{") :])
    assert record["pred_star"] in range(1, 6) and len(record["probs"]) == 5


def test_no_trained_run_says_what_to_run(tmp_path):
    with pytest.raises(StageMissingError, match="douban train"):
        Scorer.load(runs_dir=tmp_path)


def test_models_of_a_run_share_one_encoder_session(demo_run):
    run = Run.open(demo_run.paths.root)
    models = [m for m in run.models if m != "majority" and "finetune" not in m][:3]
    scorers = [run.scorer(m) for m in models]
    assert all(s is run.scorer(m) for s, m in zip(scorers, models, strict=True))  # memoised
    sessions = {id(s.encoder.session) for s in scorers if hasattr(s.encoder, "session")}
    assert len(sessions) == 1
    assert [s.explain("好看").model for s in scorers] == models
    # a Run's scorers read no config.json again: they hold the configs the Run read
    assert all(s.config is run.model_config(m) for s, m in zip(scorers, models, strict=True))
    assert scorers[0].available == run.saved_models


def test_the_python_api_turns_bad_input_into_record_errors_or_one_clear_error(scorer):
    from pipeline.errors import InputError

    series = pd.Series(["好看", None, "难看"], dtype="string")  # convert_dtypes(): <NA>
    answers = scorer(series)
    assert answers[1]["label"] is None and answers[1]["error"] == "empty review"
    assert answers[0]["label"] in range(1, 6) and answers[2]["label"] in range(1, 6)
    records = scorer.score_records([np.float32("nan"), 5, b"\xe5\xa5\xbd", "好看"])
    assert [r["error"] for r in records[:3]] == [
        "empty review", "not text (int)", "bytes, not text: decode them first (.decode('utf-8'))"
    ]  # fmt: skip
    assert records[3]["error"] is None and len(records) == 4
    for bad in (b"\xe5\xa5\xbd", None, 5):
        with pytest.raises(InputError):
            scorer(bad)
    for kwargs in ({"batch_size": 0}, {"batch_size": -1}, {"top_k": 0}, {"top_k": -1},
                   {"top_k": "2"}, {"batch_size": 2.5}):  # fmt: skip
        with pytest.raises(InputError, match="must be a positive integer"):
            scorer(["好看"], **kwargs)
    assert len(scorer("好看", top_k=9)) == 5  # more than five: all five

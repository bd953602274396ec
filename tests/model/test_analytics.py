"""Analytics over a run: each pure function on small frames in the documented schemas."""

from __future__ import annotations

import html
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import FilmNotFoundError, Run, RunNotFoundError
from pipeline.analytics.attention import attention_examples, top_attention_words
from pipeline.analytics.embedding import stratified_sample, tsne_points
from pipeline.analytics.league import league_table
from pipeline.analytics.stars import (
    accuracy_summary,
    confusion,
    model_summaries,
    star_distribution,
)
from pipeline.analytics.time import likes_agreement, monthly_trend
from pipeline.analytics.words import (
    content_words,
    star_top_words,
    star_words_table,
    tfidf_by_group,
    top_words_by_film,
    word_cloud,
)
from pipeline.fonts import cjk_font_path
from pipeline.markup import highlight_html
from tests.synthetic_run import (
    FILMS,
    SCRIPT_REVIEW,
    STAR_WORDS,
    make_predictions,
    make_reviews,
    make_run,
)

STOPWORDS = frozenset({"的", "了", "是"})


@pytest.fixture(scope="module")
def reviews() -> pd.DataFrame:
    return make_reviews()


@pytest.fixture(scope="module")
def preds(reviews: pd.DataFrame) -> pd.DataFrame:
    return make_predictions(reviews)


def test_accuracy_and_distribution_match_a_hand_count() -> None:
    p = pd.DataFrame({"star": [1, 2, 3, 5, 5], "pred_star": [1, 3, 5, 5, 4]})
    s = accuracy_summary(p)
    assert s["n"] == 5
    assert s["exact"] == pytest.approx(2 / 5)
    assert s["off_by_one"] == pytest.approx(4 / 5)
    assert s["mae"] == pytest.approx((0 + 1 + 2 + 0 + 1) / 5)
    assert s["mean_pred"] == pytest.approx(18 / 5)
    d = star_distribution(p)
    assert d["true"].tolist() == [1, 1, 1, 0, 2]
    assert d["predicted"].tolist() == [1, 0, 1, 1, 2]
    assert d["true_share"].sum() == pytest.approx(1)
    assert np.isnan(accuracy_summary(p.iloc[:0])["mae"])


def test_confusion_counts_and_rows_normalised(preds: pd.DataFrame) -> None:
    one = preds[preds["model"] == "tfidf_lr"]
    counts = confusion(one)
    assert counts.shape == (5, 5)
    assert counts.to_numpy().sum() == len(one)
    assert np.trace(counts.to_numpy()) == (one["star"] == one["pred_star"]).sum()
    norm = confusion(one, normalise=True)
    present = counts.sum(axis=1) > 0
    np.testing.assert_allclose(norm[present].sum(axis=1), 1.0)
    # majority always predicts 4: every review lands in column 4
    assert confusion(preds[preds["model"] == "majority"])[4].sum() == len(one)


def test_model_summaries_rank_the_better_model_first(preds: pd.DataFrame) -> None:
    table = model_summaries(preds)
    assert table["model"].tolist()[0] == "head_cls"
    assert table["exact"].is_monotonic_decreasing


def test_tfidf_puts_a_word_only_one_film_uses_first(reviews: pd.DataFrame) -> None:
    ranked = top_words_by_film(reviews, STOPWORDS)
    for cn, _, _, own_word, _ in FILMS:
        assert ranked[cn]["word"].iloc[0] == own_word
        assert "的" not in set(ranked[cn]["word"]) and "，" not in set(ranked[cn]["word"])
    own = ranked[FILMS[0][0]].iloc[0]
    assert own["count"] == (reviews["tokens"].map(lambda t: FILMS[0][3] in t)).sum()


def test_tfidf_handles_an_empty_group() -> None:
    ranked = tfidf_by_group(
        {"a": Counter({"好看": 3, "电影": 1}), "b": Counter(), "c": Counter({"电影": 2})}
    )
    assert ranked["b"].empty
    assert ranked["a"]["word"].iloc[0] == "好看"


def test_content_words_drop_stopwords_and_punctuation() -> None:
    words = ["好看", "的", "，", "!", " ", "", "75", "0.5", "+", "Iron", "3D", "a", "👍"]
    assert content_words(words, STOPWORDS) == ["好看", "iron", "3d", "a", "👍"]


def test_top_words_per_star_table(reviews: pd.DataFrame) -> None:
    per_star = star_top_words(reviews, STOPWORDS, top=3)
    for star, words in STAR_WORDS.items():
        # each star's own words first; 电影, in every review whatever the star, never outranks them
        assert set(per_star[star]["word"].iloc[:2]) == set(words)
    table = star_words_table(per_star)
    assert list(table.columns) == ["1★", "2★", "3★", "4★", "5★"]
    word, count = table.iloc[0]["1★"].split(" ")
    assert int(count) == reviews.loc[reviews["star"] == 1, "tokens"].map(lambda t: word in t).sum()
    # a film whose reviews lack some stars gets blank cells, not an error
    few = star_words_table(star_top_words(reviews[reviews["star"] == 5], STOPWORDS))
    assert (few["1★"] == "").all() and (few["5★"] != "").any()


def test_word_cloud_draws_chinese_words() -> None:
    image = word_cloud({"好看": 5.0, "烂片": 3.0, "经典": 2.0}, cjk_font_path(), 300, 150)
    assert image.shape == (150, 300, 3)
    assert image.std() > 10  # not a blank canvas
    assert (image < 200).mean() > 0.01  # coloured glyph pixels on the white background
    with pytest.raises(ValueError, match="at least one drawable word"):
        word_cloud({}, cjk_font_path())
    # an emoji has no glyph in the CJK font: it is left out, not drawn as a box
    with pytest.raises(ValueError, match="at least one drawable word"):
        word_cloud({"👍": 5.0}, cjk_font_path())


def test_stratified_sample_keeps_star_shares_and_is_seeded() -> None:
    df = pd.DataFrame({"star": [5] * 900 + [1] * 90 + [3] * 10, "v": range(1000)})
    a = stratified_sample(df, cap=100, seed=1)
    assert len(a) == 100
    assert a["star"].value_counts().to_dict() == {5: 90, 1: 9, 3: 1}
    assert a.equals(stratified_sample(df, cap=100, seed=1))
    assert not a.equals(stratified_sample(df, cap=100, seed=2))
    assert stratified_sample(df, cap=5000).equals(df)


def test_tsne_points_have_coordinates_and_predictions(
    reviews: pd.DataFrame, preds: pd.DataFrame
) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16)) * 5
    features = (centres[reviews["star"].to_numpy()] + rng.normal(size=(len(reviews), 16))).astype(
        np.float32
    )
    film = reviews[reviews["film"] == FILMS[0][0]]
    test = preds[(preds["model"] == "head_cls") & (preds["split"] == "test")]
    points = tsne_points(features, film, test, cap=50, seed=0)
    assert len(points) == 50
    assert list(points.columns) == ["review_id", "x", "y", "star", "pred_star", "text", "film"]
    assert np.isfinite(points[["x", "y"]].to_numpy()).all()
    assert points["x"].std() > 0
    evaluated = points["review_id"].isin(test["review_id"])
    assert points.loc[evaluated, "pred_star"].notna().all()
    assert points.loc[~evaluated, "pred_star"].isna().all()
    with pytest.raises(ValueError, match="douban features"):
        tsne_points(features[:5], film, cap=50)


def test_highlight_escapes_review_text() -> None:
    text = SCRIPT_REVIEW
    start = text.index("好看")
    words = [("<script>", 0, 8, 0.2), ("好看", start, start + 2, 0.8)]
    out = highlight_html(text, words)
    assert "<script>" not in out and "<img" not in out
    assert html.escape("<script>") in out and "onerror=alert(1)&gt;" in out
    # the heaviest word at full colour, a lighter one at its share of it
    assert 'rgba(255,140,0,1.00)" title="好看: 0.800">好看</span>' in out
    assert "rgba(255,140,0,0.25)" in out
    # the text survives intact once the markup is removed and entities unescaped
    assert html.unescape(re.sub(r"<[^>]+>", "", out)) == text
    assert top_attention_words(words, 1) == [("好看", 0.8)]


def test_attention_examples_pick_confident_hits_and_worst_misses(preds: pd.DataFrame) -> None:
    head = preds[preds["model"] == "head_cls"].copy()
    ex = attention_examples(head)
    assert set(ex["kind"]) == {"correct", "mistake"}
    correct = ex[ex["kind"] == "correct"]
    assert (correct["star"] == correct["pred_star"]).all()
    mistakes = ex[ex["kind"] == "mistake"]
    assert (mistakes["star"] != mistakes["pred_star"]).all()
    for star, row in mistakes.set_index("star").iterrows():
        errors = (head.loc[head["star"] == star, "pred_star"] - star).abs()
        assert abs(row["pred_star"] - star) == errors.max()
    # models without attention give no examples
    assert attention_examples(preds[preds["model"] == "majority"]).empty


def test_monthly_trend_and_missing_dates(reviews: pd.DataFrame, preds: pd.DataFrame) -> None:
    film = reviews[reviews["film"] == FILMS[0][0]]
    test = preds[(preds["model"] == "head_cls") & (preds["split"] == "test")]
    trend = monthly_trend(film, test[test["film"] == FILMS[0][0]])
    assert trend["reviews"].sum() == len(film)
    assert trend["month"].tolist() == sorted(trend["month"])
    assert trend["evaluated"].sum() == (test["film"] == FILMS[0][0]).sum()
    assert trend["mean_star"].between(1, 5).all()
    assert monthly_trend(reviews[reviews["film"] == FILMS[2][0]]) is None
    # months without reviews are kept as zero rows, so gaps in time stay visible
    gap = pd.DataFrame({"review_id": [0, 1, 2], "star": [1, 3, 5],
                        "date": ["2015-01-03", "2015-04-30", "not a date"]})  # fmt: skip
    trend = monthly_trend(gap)
    assert trend["month"].tolist() == ["2015-01", "2015-02", "2015-03", "2015-04"]
    assert trend["reviews"].tolist() == [1, 0, 0, 1]
    assert trend["mean_star"].isna().tolist() == [False, True, True, False]


def test_likes_agreement() -> None:
    df = pd.DataFrame({"star": [1, 5, 5, 3], "like": pd.array([100, 0, 0, 100], dtype="Int64")})
    likes = likes_agreement(df, top=1)
    assert likes["mean_star"] == pytest.approx(3.5)
    assert likes["like_weighted_mean_star"] == pytest.approx(2.0)
    assert likes["top_liked_mean_star"] in (1.0, 3.0)
    assert likes["with_likes"] == 2 and likes["total_likes"] == 200
    assert likes_agreement(df.assign(like=pd.array([None] * 4, dtype="Int64"))) is None
    assert likes_agreement(df.drop(columns="like")) is None


def test_league_table(reviews: pd.DataFrame, preds: pd.DataFrame) -> None:
    test = preds[(preds["model"] == "majority") & (preds["split"] == "test")]
    league = league_table(reviews, test)
    assert set(league["film"]) == {f[0] for f in FILMS}
    assert league["reviews"].sum() == len(reviews)
    assert (league["mean_pred"] == 4).all()  # majority always says 4
    np.testing.assert_allclose(league["error"], league["mean_pred"] - league["mean_true"])
    assert league["mean_star"].is_monotonic_decreasing
    film = test["film"].iloc[0]  # a film with one evaluated review gets no rank
    lone = league_table(reviews, pd.concat([test.head(1), test[test["film"] != film]]))
    row = lone.set_index("film").loc[film]
    assert row["evaluated"] == 1 and pd.isna(row["rank_true"]) and pd.isna(row["rank_pred"])
    assert lone["rank_true"].notna().sum() == (lone["evaluated"] >= 5).sum()


def test_run_finds_films_and_the_default_model(tmp_path: Path) -> None:
    run = Run.open(make_run(tmp_path / "synthetic"))
    assert run.is_demo
    assert run.resolve_film("iron man") == "钢铁侠1"
    assert run.resolve_film(" 何以笙箫默 ") == "何以笙箫默"
    with pytest.raises(FilmNotFoundError, match="Iron Man"):
        run.resolve_film("Titanic")
    assert run.default_model == "head_cls"
    assert run.attention_model("tfidf_lr") == run.attention_model(None) == "head_cls"
    preds, where = run.evaluated("tfidf_lr", "钢铁侠1")
    assert where == "random/test"
    assert (preds["split"] == "test").all() and (preds["film"] == "钢铁侠1").all()
    assert {"comment", "text", "date", "like"} <= set(preds.columns)
    assert "attention" not in run.predictions.columns  # lists are read per model and film
    assert run.models_with_attention == {"head_cls"}
    lists = run.prediction_lists("head_cls", preds["review_id"])
    assert sorted(lists["review_id"]) == sorted(preds["review_id"])
    text_length = preds.set_index("review_id")["text"].str.len()
    pairs = zip(lists["review_id"], lists["attention"], strict=True)
    assert all(len(a) == text_length[i] + 2 for i, a in pairs)
    assert run.prediction_lists("majority", [0])["attention"].isna().all()
    assert run.pooled_features is None and run.feature_store is None
    with pytest.raises(RunNotFoundError, match="does not exist"):
        Run.open(tmp_path / "missing")

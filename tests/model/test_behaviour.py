"""CheckList-style behaviour of the trained demo model (Ribeiro et al. 2020): directional
expectations (negation, polarity) and invariance (a neutral sentence barely moves the score)."""

from __future__ import annotations

import pytest

from pipeline.predict.scorer import Scorer

pytestmark = pytest.mark.slow

NEGATION_PAIRS = [
    ("这部电影很好看", "这部电影不好看"),
    ("剧情很精彩", "剧情不精彩"),
    ("值得推荐", "不值得推荐"),
]
NEUTRAL = "我是周末和朋友一起去电影院看的。"


@pytest.fixture(scope="module")
def scorer(demo_run):
    return Scorer.load(demo_run.paths.root)


def _expected(scorer, texts):
    return [r["expected_star"] for r in scorer.score_records(texts)]


def test_negation_flips_the_direction(scorer):
    for positive, negated in NEGATION_PAIRS:
        pos, neg = _expected(scorer, [positive, negated])
        assert pos > neg + 0.3, (positive, pos, negated, neg)


def test_neutral_sentence_barely_changes_the_score(scorer):
    reviews = [
        "特效很震撼，演员演技在线，推荐！",
        "剧情拖沓，演技尴尬，浪费时间。",
        "还行吧，一般般。",
    ]
    before = _expected(scorer, reviews)
    after = _expected(scorer, [NEUTRAL + r for r in reviews])
    for b, a, r in zip(before, after, reviews, strict=True):
        assert abs(a - b) < 0.5, (r, b, a)


def test_strong_positive_above_strong_negative(scorer):
    pos, neg = _expected(
        scorer,
        [
            "神作！五星！演技炸裂，剧情感人，强烈推荐，值回票价！",
            "烂片！一星都嫌多，剧情狗血，演技尴尬，浪费钱！",
        ],
    )
    assert pos > 4.0 and neg < 2.0 and pos - neg > 2.0

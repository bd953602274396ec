"""Clauses and the aspects they name (issue 25): splitting at punctuation and turns, denials,
matching jieba words to the taxonomy, and extending it with a run's own words."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.data.aspects import (
    clause_aspects,
    default_terms,
    extend_terms,
    split_clauses,
    term_index,
)
from pipeline.data.text import Segmenter, clean_text
from pipeline.predict.aspects import aspect_clauses


def test_clauses_split_at_punctuation_and_turns_with_their_offsets() -> None:
    text = "剧情拖沓，但是演员演技在线！音乐不错~画面很美。。只是结局太仓促"
    clauses = split_clauses(text)
    assert [c.text for c in clauses] == [
        "剧情拖沓", "但是演员演技在线", "音乐不错", "画面很美", "只是结局太仓促"
    ]  # fmt: skip
    assert all(text[c.start : c.end] == c.text for c in clauses)
    whole = "这部电影不但好看而且感人"  # the 但 of 不但 is no turn
    assert [c.text for c in split_clauses(whole)] == [whole]
    assert split_clauses("，。！  ") == []
    spaced = "剧情还行 演技太差 but the BGM is great"  # one space: a comma between Chinese only
    assert [c.text for c in split_clauses(spaced)] == ["剧情还行", "演技太差 but the BGM is great"]


def test_a_denial_before_an_assertion_is_marked() -> None:
    denied, said = split_clauses("不是剧情不好，是节奏太拖")
    assert denied.denied and not said.denied
    assert not split_clauses("不是很好看，剧情一般")[0].denied  # no assertion follows


def test_words_name_aspects_whole_or_as_a_prefix_never_in_the_middle() -> None:
    index = term_index(default_terms())
    segmenter = Segmenter()
    found = clause_aspects(segmenter.spans("剧情片里演员的表演和配乐都很好"), index)
    assert set(found) == {"plot", "acting", "music"}
    assert [w for w, _, _ in found["acting"]] == ["演员", "表演"]
    assert clause_aspects(segmenter.spans("大家都在歌颂这部电影"), index) == {}  # 歌 of 歌颂


def test_a_run_extends_the_taxonomy_with_words_that_keep_an_aspects_company() -> None:
    clauses = [["剧情", "狗血"]] * 30 + [["演技", "浮夸"]] * 30 + [["电影", "好看"]] * 200
    clauses += [["狗血"]] * 5 + [["好看", "演技"]] * 10
    found = extend_terms(clauses, default_terms(), frozenset({"的"}))
    assert found["plot"] == ["狗血"] and found["acting"] == ["浮夸"]
    assert all("好看" not in words for words in found.values())  # everywhere: no aspect's


def every_clause_segmented(texts: list[str], segmenter: Segmenter, terms: dict) -> list:
    """What :func:`aspect_clauses` finds, the slow way: every clause of every text segmented."""
    index = term_index(terms)
    found = []
    for text in texts:
        clauses = [(c, clause_aspects(segmenter.spans(c.text), index)) for c in split_clauses(text)]
        found.append([(c, aspects) for c, aspects in clauses if aspects])
    return found


def test_only_clauses_that_hold_a_term_are_segmented_and_none_is_missed() -> None:
    terms = default_terms() | {"custom": ["c++", "Sci-Fi", "(3d)"]}  # regex characters, capitals
    texts = [
        "剧情片里演员的表演和配乐都很好，BGM一绝", "IMAX效果震撼；3D眼镜太重",
        "大家都在歌颂这部电影", "学C++的程序员看sci-fi片", "画面(3D)很美", "", "一句话没有方面",
    ]  # fmt: skip
    seg = Segmenter()
    assert aspect_clauses(texts, seg, terms) == every_clause_segmented(texts, seg, terms)
    assert aspect_clauses(texts, seg, {}) == [[] for _ in texts]


@pytest.mark.real_data
def test_the_prefilter_finds_what_segmenting_every_clause_finds_in_real_reviews(
    shared_data: Path,
) -> None:
    frame = pd.read_csv(shared_data / "dmsc_sample.csv", usecols=["Comment"], nrows=3000)
    texts = [clean_text(str(t)) for t in frame["Comment"].dropna()]
    segmenter, terms = Segmenter(), default_terms()
    found = aspect_clauses(texts, segmenter, terms)
    assert sum(map(len, found)) > 1000  # real reviews name aspects
    assert found == every_clause_segmented(texts, segmenter, terms)

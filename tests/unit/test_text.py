"""Cleaning, segmentation and stopwords (pipeline/text.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from pipeline.data.text import (
    Segmenter,
    clean_name,
    clean_text,
    film_words,
    load_stopwords,
    segment_chunks,
    segment_texts,
    word_spans,
)

SENTIMENT_WORDS = ["好", "不", "没", "没有", "差", "烂", "棒", "推荐", "一般", "还行", "呵呵", "太"]


def test_nfkc_maps_full_width_ascii_and_punctuation() -> None:
    assert clean_text("ＡＢＣ１２３，好看！") == "ABC123,好看!"
    assert clean_text("好看。《长城》") == "好看。《长城》"  # no compatibility form: unchanged


def test_film_names_lose_control_characters_only() -> None:
    assert clean_name("钢铁\x00侠1") == "钢铁侠1"  # a NUL would make a phantom second film
    assert clean_name(" 长\u200b城\x07\x1b ") == "长城"
    assert clean_name("Iron \t Man\r\n") == "Iron Man"
    assert clean_name("ＡＢＣ [/red] <b>") == "ＡＢＣ [/red] <b>"  # no other change to a name


def test_html_tags_removed_and_entities_unescaped() -> None:
    assert clean_text("好看<br/>极了<b>!</b>") == "好看 极了 !"
    assert clean_text('<a href="x">链接</a><!-- c -->') == "链接"
    assert clean_text("&lt;3 &amp; &#x1F602; &quot;神作&quot;") == '<3 & 😂 "神作"'


def test_title_brackets_faces_and_bare_ampersands_are_not_html() -> None:
    text = "<默><不将就> <You're my sunshine> %>_<% 玛丽苏&杰克苏"
    assert clean_text(text) == text


def test_urls_removed() -> None:
    assert clean_text("看这里http://t.cn/abc?x=1 好看") == "看这里 好看"
    assert clean_text("www.douban.com/subject/1 烂") == "烂"


def test_control_characters_removed_whitespace_collapsed() -> None:
    assert clean_text("好\x00看\u200b了\ufeff") == "好看了"
    assert clean_text("  好看 \n\t\u3000 极了\r\n ") == "好看 极了"


def test_emoji_kept_including_joined_sequences() -> None:
    family = "👨\u200d👩\u200d👧"
    assert clean_text(f"笑死😂👍 {family}") == f"笑死😂👍 {family}"


def test_cleaning_is_idempotent() -> None:
    text = " ＨＴＴＰ好看！<p>太 棒&amp;了</p> http://x.cn \x07😂 "
    once = clean_text(text)
    assert clean_text(once) == once


def test_film_title_stays_one_token() -> None:
    text = "我觉得何以笙箫默很烂"
    assert "何以笙箫默" not in Segmenter().tokens(text)  # plain jieba cuts the title
    assert "何以笙箫默" in Segmenter(["何以笙箫默"]).tokens(text)


def test_film_words_split_where_jieba_splits_anyway() -> None:
    assert film_words(["冰川时代5：星际碰撞", "Iron Man", "长城", "", None]) == (
        "冰川时代5",
        "星际碰撞",
        "长城",
    )


def test_tokens_drop_punctuation_and_whitespace_keep_stopwords_and_emoji() -> None:
    tokens = Segmenter().tokens("好看 的！！ 电影, 😂 。。")
    assert "的" in tokens and "😂" in tokens and "好看" in tokens
    assert not {"！", "!", ",", "。", " "} & set(tokens)


def test_word_spans_give_offsets_of_the_same_words_as_tokens() -> None:
    text = clean_text("《钢铁侠1》真的很好看！！小罗伯特唐尼太帅了😂")
    spans = word_spans(text, films=["钢铁侠1"])
    assert [w for w, _, _ in spans] == Segmenter(["钢铁侠1"]).tokens(text)
    assert all(text[start:end] == word for word, start, end in spans)
    assert ("钢铁侠1", 1, 5) in spans


def test_user_dictionary_keeps_a_word_whole(tmp_path: Path) -> None:
    text = "这部片子嘤嘤怪太多"
    assert "嘤嘤怪" not in Segmenter().tokens(text)
    user_dict = tmp_path / "words.txt"
    user_dict.write_text("嘤嘤怪 50000\n", encoding="utf-8")
    assert "嘤嘤怪" in Segmenter(user_dict=user_dict).tokens(text)


def test_missing_user_dictionary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="user dictionary"):
        Segmenter(user_dict=tmp_path / "nope.txt")


def _varied_texts(n: int) -> list[str]:
    parts = [
        "何以笙箫默",
        "真的",
        "很烂",
        "特效不错",
        "剧情狗血",
        "😂",
        "演技在线！",
        "长城",
        "还行吧",
    ]
    combos = itertools.cycle(itertools.permutations(parts, 4))
    return [clean_text("，".join(next(combos)) + f"第{i}次") for i in range(n)]


def test_segmentation_is_the_same_with_one_or_two_workers() -> None:
    texts = _varied_texts(2600)
    chunks = [texts[:1500], texts[1500:1501], texts[1501:]]  # batches split across workers
    films = ["何以笙箫默", "长城"]
    inline = list(segment_chunks(chunks, films, workers=1))
    pooled = list(segment_chunks(chunks, films, workers=2))
    assert pooled == inline
    assert [len(c) for c in pooled] == [1500, 1, 1099]
    assert inline[0][0][:3] == ["何以笙箫默", "真的", "很烂"]


def test_segment_texts_handles_empty_input() -> None:
    assert segment_texts([]) == []
    assert segment_texts(["好看"]) == [["好看"]]


def test_stopwords_have_function_words_but_no_sentiment_words() -> None:
    stopwords = load_stopwords()
    assert {"的", "了", "是", "我", "也", "就", "都", "我们", "这个", "电影"} <= stopwords
    assert len(stopwords) > 300
    assert not set(SENTIMENT_WORDS) & stopwords


def test_user_stopwords_are_added(tmp_path: Path) -> None:
    extra = tmp_path / "stop.txt"
    extra.write_text("# mine\n钢铁侠\n\n  漫威 \n", encoding="utf-8")
    stopwords = load_stopwords(extra)
    assert {"钢铁侠", "漫威", "的"} <= stopwords
    assert "# mine" not in stopwords
    with pytest.raises(FileNotFoundError):
        load_stopwords(tmp_path / "missing.txt")

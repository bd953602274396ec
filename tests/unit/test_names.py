"""A run teaches jieba the names its reviews use (issue 22): 何以琛 stays one word in the prepared
tokens, in the run's segmenter and so in attention and TF-IDF words, while general phrases and
fragments of a name do not become words."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import Run
from pipeline.config import load_settings
from pipeline.data.names import discover_names
from pipeline.data.prepare import prepare_run
from pipeline.data.text import Segmenter, load_stopwords

HEADER = ["Movie_Name_EN", "Movie_Name_CN", "Date", "Star", "Comment", "Like"]
BEFORE = ["", "我觉得", "还是", "最喜欢", "心疼", "演", "看到", "只为了", "其实", "谁演"]
AFTER = ["", "太帅了", "好深情", "好可怜", "演得好", "的眼神", "出场", "真的好", "太冷了"]
GENERAL = ["太好看了", "剧情拖沓", "浪费时间", "演技尴尬", "还可以吧", "音乐不错"]


def reviews() -> list[tuple[str, str]]:
    """(film, review): the name in varied company in one film; the same general phrases in
    both films."""
    rows = [("何以笙箫默", f"{b}何以琛{a}，{g}") for (b, a), g in
            zip(itertools.product(BEFORE, AFTER), itertools.cycle(GENERAL))]  # fmt: skip
    rows += [("钢铁侠", f"{g}，{h}，看了{n}遍")
             for g, h, n in itertools.product(GENERAL, GENERAL, range(30))]  # fmt: skip
    return rows


def test_a_film_name_is_found_and_phrases_and_fragments_are_not() -> None:
    films, texts = zip(*reviews(), strict=True)
    segmenter = Segmenter(set(films))
    names = discover_names(list(texts), list(films), segmenter.tokens, load_stopwords())
    assert "何以琛" in names
    assert not {"以琛", "何以", "太好看", "好看了", "剧情拖沓"} & set(names)
    assert segmenter.tokens("何以琛太帅了")[0] != "何以琛"  # jieba alone splits it


def test_prepare_keeps_the_name_whole_everywhere(tmp_path: Path) -> None:
    path = tmp_path / "names.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for i, (film, text) in enumerate(reviews()):
            w.writerow([film, film, "2016-01-01", 1 + i % 5, text, 0])
    settings = load_settings(None, run_name="names", runs_dir=tmp_path / "runs",
                             **{"prepare.workers": 1})  # fmt: skip
    summary = prepare_run(settings, [path], progress=False)
    assert "何以琛" in summary["run_words"]
    tokens = pq.read_table(settings.paths.reviews, columns=["tokens"])["tokens"].to_pylist()
    assert sum("何以琛" in t for t in tokens) == len(BEFORE) * len(AFTER)
    run = Run.open(settings.paths.root)
    assert "何以琛" in run.segmenter.tokens("我最喜欢何以琛了")
    off = load_settings(None, run_name="plain", runs_dir=tmp_path / "runs",
                        **{"prepare.workers": 1, "prepare.discover_names": False})  # fmt: skip
    assert prepare_run(off, [path], progress=False)["run_words"] == []


@pytest.mark.real_data
def test_names_of_real_reviews(shared_data: Path) -> None:
    import pandas as pd

    frame = pd.read_csv(shared_data / "dmsc_sample.csv", usecols=["Movie_Name_CN", "Comment"])
    frame = frame.dropna()
    films, texts = frame["Movie_Name_CN"].tolist(), frame["Comment"].tolist()
    segmenter = Segmenter(set(films))
    names = discover_names(texts, films, segmenter.tokens, load_stopwords())
    assert {"何以琛", "佟大为"} <= set(names[:50])
    assert not {"这部电影", "何以笙", "以琛", "没看过"} & set(names)

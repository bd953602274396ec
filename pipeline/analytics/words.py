"""Words: what a film's (or a star's) reviews say more than the rest, and word clouds of it.

TF-IDF treats each group (a film, or a star) as one document made of all its reviews' jieba
tokens, with sublinear tf (1 + log count) so a word repeated in a few reviews does not drown out
the rest, and smooth idf over the groups. Stopwords and single punctuation or symbol characters
are dropped first.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction import DictVectorizer
from sklearn.feature_extraction.text import TfidfTransformer

from pipeline.analytics.stars import STARS

TOP_WORDS = 30


def _is_noise(word: str) -> bool:
    """Whitespace, or a single punctuation / symbol / digit-like character."""
    word = word.strip()
    if not word:
        return True
    return len(word) == 1 and unicodedata.category(word)[0] in "PSZNC"


def content_words(tokens: Iterable[str], stopwords: frozenset[str]) -> list[str]:
    """Tokens minus stopwords and punctuation, as analytics count them."""
    return [t for t in tokens if t not in stopwords and not _is_noise(t)]


def group_counts(
    tokens: pd.Series, groups: pd.Series, stopwords: frozenset[str]
) -> dict[object, Counter[str]]:
    """Word counts per group value (``tokens`` holds one list of words per review)."""
    counts: dict[object, Counter[str]] = {}
    for group, words in zip(groups.to_numpy(), tokens.to_numpy(), strict=True):
        counter = counts.setdefault(group, Counter())
        counter.update(content_words(words, stopwords))
    return counts


def tfidf_by_group(
    counts: dict[object, Counter[str]], top: int = TOP_WORDS
) -> dict[object, pd.DataFrame]:
    """Each group's ``top`` words by TF-IDF against the other groups: ``word, score, count``."""
    groups = [g for g, c in counts.items() if c]
    empty = pd.DataFrame(
        {
            "word": pd.Series(dtype=str),
            "score": pd.Series(dtype=float),
            "count": pd.Series(dtype=int),
        }
    )
    result: dict[object, pd.DataFrame] = {g: empty for g in counts}
    if not groups:
        return result
    vectorizer = DictVectorizer()
    tf = vectorizer.fit_transform([counts[g] for g in groups])
    matrix = TfidfTransformer(sublinear_tf=True).fit_transform(tf).tocsr()
    vocab = vectorizer.get_feature_names_out()
    for row, group in enumerate(groups):
        scores = matrix.getrow(row).toarray().ravel()
        nonzero = np.flatnonzero(scores)
        # highest score first; ties broken by count, then alphabetically for a stable order
        order = sorted(nonzero, key=lambda i: (-scores[i], -counts[group][vocab[i]], vocab[i]))
        order = order[:top]
        result[group] = pd.DataFrame(
            {
                "word": vocab[order].astype(str),
                "score": scores[order].astype(float),
                "count": [counts[group][w] for w in vocab[order]],
            }
        )
    return result


def top_words_by_film(
    reviews: pd.DataFrame, stopwords: frozenset[str], top: int = TOP_WORDS
) -> dict[object, pd.DataFrame]:
    """Every film's ``top`` words against the rest of the corpus (each film one document)."""
    return tfidf_by_group(group_counts(reviews["tokens"], reviews["film"], stopwords), top)


def star_top_words(
    reviews: pd.DataFrame, stopwords: frozenset[str], top: int = 15
) -> dict[int, pd.DataFrame]:
    """Each star's ``top`` words against the other stars, from ``reviews`` (e.g. one film's)."""
    counts = group_counts(reviews["tokens"], reviews["star"].astype(int), stopwords)
    for star in STARS:
        counts.setdefault(star, Counter())
    ranked = tfidf_by_group(counts, top)
    return {star: ranked[star] for star in STARS}


def star_words_table(per_star: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Stars 1..5 as columns, rank as rows, ``"word count"`` cells (blank where a star has fewer
    words)."""
    depth = max((len(t) for t in per_star.values()), default=0)
    columns = {}
    for star in STARS:
        table = per_star.get(star)
        cells = (
            []
            if table is None
            else [f"{w} {c}" for w, c in zip(table["word"], table["count"], strict=True)]
        )
        columns[f"{star}★"] = cells + [""] * (depth - len(cells))
    return pd.DataFrame(columns, index=pd.RangeIndex(1, depth + 1, name="rank"))


def word_cloud(
    weights: dict[str, float],
    font_path: Path,
    width: int = 800,
    height: int = 400,
    seed: int = 0,
    colormap: str = "viridis",
) -> np.ndarray:
    """An RGB image (height, width, 3) of the words sized by weight; ValueError if no words."""
    from wordcloud import WordCloud

    weights = {w: float(v) for w, v in weights.items() if v > 0}
    if not weights:
        raise ValueError("a word cloud needs at least one word with a positive weight")
    cloud = WordCloud(
        font_path=str(font_path),
        width=width,
        height=height,
        background_color="white",
        random_state=seed,
        colormap=colormap,
        prefer_horizontal=0.9,
        max_words=len(weights),
    )
    return cloud.generate_from_frequencies(weights).to_array()

"""Words: what a film's (or a star's) reviews say more than the rest, and word clouds of it.

Films against the corpus: TF-IDF, each film one document made of all its reviews' jieba tokens,
with sublinear tf (1 + log count) so a word repeated in a few reviews does not drown out the
rest, and smooth idf over the films. Stars against each other: with only five "documents" idf
hardly separates anything (好看 tops 3, 4 and 5 stars alike), so stars use the weighted log-odds
ratio with an informative Dirichlet prior (Monroe, Colaresi & Quinn 2008), whose z-scores rank
words that a star uses distinctly more, and often, first. Stopwords and tokens of only
punctuation or numbers are dropped first; Latin words are lower-cased (Iron = iron).
"""

from __future__ import annotations

import io
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import sparse
from sklearn.feature_extraction import DictVectorizer
from sklearn.feature_extraction.text import TfidfTransformer

from pipeline.analytics.stars import STARS
from pipeline.fonts import cjk_font_path, font_codepoints

TOP_WORDS = 30
CLOUD_WORDS = 100  # a film's words against the corpus: enough for its cloud
MIN_WORD_COUNT = 2  # a word said once is not "what the film's reviews say"


def _is_noise(word: str) -> bool:
    """Nothing but punctuation, numbers, spaces and math/currency symbols ("，", "75", "0.5");
    emoji (symbol, other) count as words."""
    return all(
        unicodedata.category(c)[0] in "PZNC" or unicodedata.category(c) in ("Sm", "Sc", "Sk")
        for c in word
    )


def content_words(tokens: Iterable[str], stopwords: frozenset[str]) -> list[str]:
    """Tokens minus stopwords and punctuation, lower-cased, as analytics count them."""
    words = (t.lower() for t in tokens)
    return [w for w in words if w not in stopwords and not _is_noise(w)]


def group_counts(
    tokens: pd.Series, groups: pd.Series, stopwords: frozenset[str]
) -> dict[object, Counter[str]]:
    """Word counts per group value (``tokens`` holds one list of words per review)."""
    counts: dict[object, Counter[str]] = {}
    for group, words in zip(groups.to_numpy(), tokens.to_numpy(), strict=True):
        counter = counts.setdefault(group, Counter())
        counter.update(content_words(words, stopwords))
    return counts


def _empty_ranking() -> pd.DataFrame:
    return pd.DataFrame(
        {"word": pd.Series(dtype=str), "score": pd.Series(dtype=float),
         "count": pd.Series(dtype=int)}
    )  # fmt: skip


def _rank(
    counts: dict[object, Counter[str]],
    scorer: Callable[[sparse.csr_matrix], np.ndarray],
    top: int,
) -> dict[object, pd.DataFrame]:
    """Each group's ``top`` words by ``scorer(term_counts) -> scores`` (both groups x vocab),
    highest first, ties by count then word; only words the group uses, with a positive score."""
    groups = [g for g, c in counts.items() if c]
    result: dict[object, pd.DataFrame] = {g: _empty_ranking() for g in counts}
    if not groups:
        return result
    vectorizer = DictVectorizer()
    tf = sparse.csr_matrix(vectorizer.fit_transform([counts[g] for g in groups]))
    scores = scorer(tf)
    vocab = vectorizer.get_feature_names_out().astype(str)
    dense_tf = tf.toarray()
    for row, group in enumerate(groups):
        used = np.flatnonzero((dense_tf[row] > 0) & (scores[row] > 0))
        order = sorted(used, key=lambda i: (-scores[row, i], -dense_tf[row, i], vocab[i]))[:top]
        result[group] = pd.DataFrame(
            {"word": vocab[order], "score": scores[row, order].astype(float),
             "count": dense_tf[row, order].astype(int)}
        )  # fmt: skip
    return result


def _tfidf(tf: sparse.csr_matrix) -> np.ndarray:
    return TfidfTransformer(sublinear_tf=True).fit_transform(tf).toarray()


def _log_odds(tf: sparse.csr_matrix) -> np.ndarray:
    """z-scores of the log-odds of each word in each group against all other groups, with the
    pooled counts as the informative Dirichlet prior. A lone group has nothing to be contrasted
    with: its words rank by count."""
    y = tf.toarray().astype(float)
    if len(y) == 1:
        return y
    alpha = y.sum(axis=0)
    alpha0 = alpha.sum()
    n = y.sum(axis=1, keepdims=True)
    rest, n_rest = alpha - y, n.sum() - n
    delta = np.log((y + alpha) / (n + alpha0 - y - alpha)) - np.log(
        (rest + alpha) / (n_rest + alpha0 - rest - alpha)
    )
    return delta / np.sqrt(1 / (y + alpha) + 1 / (rest + alpha))


def tfidf_by_group(
    counts: dict[object, Counter[str]], top: int = TOP_WORDS
) -> dict[object, pd.DataFrame]:
    """Each group's ``top`` words by TF-IDF against the other groups: ``word, score, count``."""
    return _rank(counts, _tfidf, top)


def log_odds_by_group(
    counts: dict[object, Counter[str]], top: int = TOP_WORDS
) -> dict[object, pd.DataFrame]:
    """Each group's ``top`` words by weighted log-odds z-score against the other groups."""
    return _rank(counts, _log_odds, top)


def top_words_by_film(
    reviews: pd.DataFrame, stopwords: frozenset[str], top: int = TOP_WORDS
) -> dict[object, pd.DataFrame]:
    """Every film's ``top`` words against the rest of the corpus (each film one document)."""
    return tfidf_by_group(group_counts(reviews["tokens"], reviews["film"], stopwords), top)


def star_top_words(
    reviews: pd.DataFrame, stopwords: frozenset[str], top: int = 15
) -> dict[int, pd.DataFrame]:
    """Each star's ``top`` words against the other stars (log-odds), from ``reviews`` (e.g. one
    film's); a star without reviews gets an empty table."""
    counts = group_counts(reviews["tokens"], reviews["star"].astype(int), stopwords)
    for star in STARS:
        counts.setdefault(star, Counter())
    ranked = log_odds_by_group(counts, top)
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
    """An RGB image (height, width, 3) of the words sized by weight. Words with a character the
    font cannot draw (emoji in a CJK font) are left out rather than drawn as boxes; ValueError
    if no word is left."""
    from wordcloud import WordCloud

    glyphs = font_codepoints(Path(font_path))
    weights = {
        w: float(v) for w, v in weights.items() if v > 0 and all(ord(c) in glyphs for c in w)
    }
    if not weights:
        raise ValueError("a word cloud needs at least one drawable word with a positive weight")
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


def _png(image: np.ndarray) -> bytes:
    """PNG bytes at the default compression (``optimize``: 8 times the time for 2% less)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def cloud_pngs(top_words: pd.DataFrame, star_words: dict[int, pd.DataFrame]) -> dict[str, bytes]:
    """PNG word clouds: the film against the corpus (TF-IDF), then each star (log-odds); a
    table without a drawable word gets none."""
    font = cjk_font_path()
    tables = {"film": (top_words, 900, 380)}
    tables |= {f"{s}★": (star_words[s], 400, 260) for s in STARS}
    out = {}
    for name, (words, width, height) in tables.items():
        weights = dict(zip(words["word"], words["score"], strict=True))
        try:
            out[name] = _png(word_cloud(weights, font, width, height))
        except ValueError:
            continue
    return out

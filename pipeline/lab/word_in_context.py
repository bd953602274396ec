"""One word in many reviews: the same word's contextual vectors, before and after fine-tuning.

A contextual encoder gives 好看 a different vector in "很好看" and in "一点都不好看". We find the
reviews where jieba segments the word (so 好看 inside 不好看看 is not counted twice), take the
word's vector at every layer as the mean over the sub-tokens that overlap its characters, and
compare the occurrences: cosine similarity between every pair, the mean similarity between
occurrences from reviews of star i and star j, and a 2-D map. After fine-tuning, the same word
in a 1-star and a 5-star review should drift apart in the top layers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

Spans = Callable[[str], Sequence[tuple[str, int, int]]]


@dataclass(frozen=True)
class Occurrence:
    """The word at characters ``[start, end)`` of review ``row`` (an index into the texts)."""

    row: int
    start: int
    end: int


def find_occurrences(
    texts: Sequence[str], word: str, spans: Spans, *, limit: int | None = None
) -> list[Occurrence]:
    """The first jieba-segmented occurrence of ``word`` in each text, up to ``limit`` texts.

    A cheap substring test runs before segmentation, so scanning many reviews stays fast.
    """
    if not word:
        raise ValueError("the word to look for is empty")
    found = []
    for row, text in enumerate(texts):
        if word not in text:
            continue
        hit = next(((s, e) for w, s, e in spans(text) if w == word), None)
        if hit is not None:
            found.append(Occurrence(row, *hit))
            if limit is not None and len(found) >= limit:
                break
    return found


def token_positions(offsets: np.ndarray, start: int, end: int) -> np.ndarray:
    """Indices of the tokens whose character span overlaps ``[start, end)``; special and prefix
    tokens (offset -1) never do."""
    offsets = np.asarray(offsets)
    real = offsets[:, 0] >= 0
    overlap = (offsets[:, 0] < end) & (offsets[:, 1] > start)
    return np.flatnonzero(real & overlap)


def word_vector(token_states: np.ndarray, offsets: np.ndarray, start: int, end: int) -> np.ndarray:
    """Mean over the word's sub-tokens of ``token_states`` ``(T, L, d)`` -> ``(L, d)``."""
    pos = token_positions(offsets, start, end)
    if len(pos) == 0:
        raise ValueError(f"no token covers characters {start}..{end} (was the text truncated?)")
    return np.asarray(token_states[pos], dtype=np.float32).mean(axis=0)


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of ``(n, d)`` vectors."""
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    unit = v / np.where(norms > 0, norms, 1.0)
    return (unit @ unit.T).astype(np.float32)


def mean_similarity_by_label(
    similarity: np.ndarray, labels: np.ndarray, values: Iterable[int]
) -> np.ndarray:
    """``(k, k)`` mean similarity between occurrences labelled ``values[i]`` and ``values[j]``
    (self-pairs excluded; NaN where a cell has no pair)."""
    values = list(values)
    labels = np.asarray(labels)
    out = np.full((len(values), len(values)), np.nan, dtype=np.float32)
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    for i, a in enumerate(values):
        for j, b in enumerate(values):
            cell = np.outer(labels == a, labels == b) & off_diagonal
            if cell.any():
                out[i, j] = float(similarity[cell].mean())
    return out


def polarity_gap(similarity: np.ndarray, labels: np.ndarray) -> float:
    """Mean similarity among same-star occurrences minus that across the extreme stars (1-2
    versus 4-5); positive when the vectors know which way the review leans."""
    labels = np.asarray(labels)
    low, high = labels <= 2, labels >= 4
    off = ~np.eye(len(labels), dtype=bool)
    same = (labels[:, None] == labels[None, :]) & off
    cross = np.outer(low, high) | np.outer(high, low)
    if not same.any() or not cross.any():
        return float("nan")
    return float(similarity[same].mean() - similarity[cross].mean())

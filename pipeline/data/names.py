"""Words a run teaches jieba: character and actor names that its dictionary splits.

jieba cuts 何以琛 into 何以 / 琛 and 杨幂 into 杨 / 幂, so attention highlights, TF-IDF words and
word clouds show fragments of the names reviewers talk about most. A name is easy to see in the
reviews themselves, the way new-word discovery does it (Sproat & Shih 1990; the "solidity and
freedom" of a string): a short run of Chinese characters that

- is frequent (in at least ``min_reviews`` reviews);
- sticks together: it occurs far more often than its parts would by chance (pointwise mutual
  information of its weakest split);
- stands free: the characters before and after it vary (boundary entropy), so 何以笙 (always
  followed by 箫) is a fragment, not a word;
- belongs to a film: most of its uses are in one film's reviews, far more than that film's
  share of the run (where the run has several films), which keeps general phrases out;
- is one that jieba splits today, into pieces of which at least one is a lone character
  (何以 / 琛) and none is a stopword: a string jieba cuts into whole words (这部 / 电影) is a
  phrase, and one with a function word in it (版的何以) straddles a name's edge.

The words found go into the run's summary and from there into every segmenter of the run
(prepare, scoring, the app), so new text is cut the same way.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

_HAN_RUN = re.compile(r"[\u4e00-\u9fff]{2,}")
MAX_SAMPLE = 60_000  # reviews read; names frequent enough to matter show in any such sample
LENGTHS = (2, 3, 4)
MIN_PMI = math.log(50.0)  # natural log: the weakest split co-occurs 50x more than by chance
MIN_ENTROPY = 1.0  # nats of the characters on each side
MIN_FILM_SHARE = 0.8  # of its uses in one film (runs with several films)
MIN_FILM_LIFT = 1.5  # that share over the film's share of the reviews
MAX_WORDS = 300


def discover_names(
    texts: Sequence[str],
    films: Sequence[str],
    splits: Callable[[str], list[str]],
    stopwords: frozenset[str],
    min_reviews: int = 10,
    every: int = 1,
) -> list[str]:
    """Words of ``texts`` that pass every test in the module docstring, most frequent first.

    ``splits(word)`` is jieba's cut of a word as the run's segmenter would make it (without these
    words): a candidate it already keeps whole is not new. ``every``: the texts are every n-th
    review of the run already (:func:`sample_step`), which the frequency floor scales by."""
    step = sample_step(len(texts))
    texts, films = texts[::step], films[::step]
    step *= every
    counts: Counter[str] = Counter()
    by_film: dict[str, Counter[str]] = defaultdict(Counter)
    reviews: Counter[str] = Counter()
    for text, film in zip(texts, films, strict=True):
        seen = set()
        for run in _HAN_RUN.findall(text):
            counts.update(run)
            for n in (1, *LENGTHS):
                grams = [run[i : i + n] for i in range(len(run) - n + 1)]
                if n > 1:
                    counts.update(grams)
                    seen.update(grams)
        reviews.update(seen)
        by_film[film].update(seen)
    floor = max(2, round(min_reviews / step))
    total = sum(c for g, c in counts.items() if len(g) == 1) or 1
    candidates = [g for g, n in reviews.items() if n >= floor and _pmi(g, counts, total) >= MIN_PMI]
    sizes = Counter(films)
    if len(sizes) > 1:
        candidates = [g for g in candidates if _belongs_to_a_film(g, by_film, sizes, reviews[g])]
    candidates = [g for g in candidates if _splits_like_a_name(splits(g), stopwords)]
    free = _free(texts, set(candidates))
    found = sorted(free, key=lambda g: (-reviews[g], g))
    return found[:MAX_WORDS]


def _belongs_to_a_film(
    gram: str, by_film: dict[str, Counter[str]], sizes: Counter[str], uses: int
) -> bool:
    total = sizes.total()
    film, share = max(((f, c[gram] / uses) for f, c in by_film.items()), key=lambda x: x[1])
    return share >= MIN_FILM_SHARE and share >= MIN_FILM_LIFT * sizes[film] / total


def _splits_like_a_name(pieces: list[str], stopwords: frozenset[str]) -> bool:
    return (
        len(pieces) > 1
        and any(len(p) == 1 for p in pieces)
        and not any(p in stopwords for p in pieces)
    )


def sample_step(reviews: int) -> int:
    """Read every n-th of ``reviews`` reviews: about :data:`MAX_SAMPLE` of them."""
    return max(1, reviews // MAX_SAMPLE)


def _pmi(gram: str, counts: Counter[str], total: int) -> float:
    """Pointwise mutual information of the weakest way to cut ``gram`` in two."""
    p = counts[gram] / total
    worst = math.inf
    for i in range(1, len(gram)):
        left, right = counts[gram[:i]] / total, counts[gram[i:]] / total
        worst = min(worst, math.log(p / (left * right)))
    return worst


def _free(texts: Sequence[str], candidates: set[str]) -> list[str]:
    """The candidates whose neighbours on both sides vary (each meeting with a run's edge counts
    as a neighbour of its own: a name often starts or ends a sentence)."""
    sides: dict[str, tuple[Counter[str], Counter[str]]] = {
        g: (Counter(), Counter()) for g in candidates
    }
    edges = 0
    for text in texts:
        for run in _HAN_RUN.findall(text):
            for n in LENGTHS:
                for i in range(len(run) - n + 1):
                    gram = run[i : i + n]
                    if gram in sides:
                        left, right = sides[gram]
                        edges += 1
                        left[run[i - 1] if i else f"^{edges}"] += 1
                        right[run[i + n] if i + n < len(run) else f"${edges}"] += 1
    return [g for g, (left, right) in sides.items()
            if min(_entropy(left), _entropy(right)) >= MIN_ENTROPY]  # fmt: skip


def _entropy(counter: Counter[str]) -> float:
    total = counter.total()
    return -sum(c / total * math.log(c / total) for c in counter.values()) if total else 0.0

"""Clause-level opinions: which aspects each clause of a review mentions, and what the run's model
makes of that clause alone (:mod:`pipeline.data.aspects` splits and matches; the scorer scores).

A clause's sentiment is its expected star (or regression, or star) moved to -1..+1
(``(star - 3) / 2``): -1 is a one-star clause, +1 a five-star one. A denied clause ("不是剧情不好"
before "是节奏太拖") has its sentiment turned over: the reviewer takes the complaint back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from tqdm.auto import tqdm

from pipeline.data.aspects import Clause, clause_aspects, split_clauses, term_index, term_pattern

PRAISE = 0.25  # sentiment above this is praise, below minus this a complaint
SCORING_CHUNK = 20_000  # clauses scored between two steps of the progress bar


class ClauseScorer(Protocol):
    """What scoring clauses reads of a :class:`~pipeline.predict.scorer.Scorer`."""

    segmenter: Any

    def score_records(self, texts: Sequence[str], *, explain: bool) -> list[dict[str, Any]]: ...


def sentiment_of(record: Mapping[str, Any]) -> float | None:
    """A scored clause's sentiment in -1..+1 (None when it could not be scored)."""
    star = next((record[k] for k in ("expected_star", "regression", "pred_star")
                 if record.get(k) is not None), None)  # fmt: skip
    return None if star is None else max(-1.0, min(1.0, (float(star) - 3.0) / 2.0))


def aspect_clauses(
    texts: Sequence[str], segmenter: Any, terms: Mapping[str, Sequence[str]], progress: bool = False
) -> list[list[tuple[Clause, dict[str, list[tuple[str, int, int]]]]]]:
    """For each (cleaned) text, its clauses that mention an aspect, with the aspects and the
    words that say them (offsets in the clause). Only the clauses that hold a term are segmented
    (:func:`~pipeline.data.aspects.term_pattern`); ``progress``: a bar on a terminal."""
    index = term_index(terms)
    named = term_pattern(index)
    out = []
    bar = tqdm(texts, desc="aspect clauses", unit="review", disable=None if progress else True)
    for text in bar:
        found = []
        if named.search(text.lower()):
            for clause in split_clauses(text):
                if named.search(clause.text.lower()):
                    aspects = clause_aspects(segmenter.spans(clause.text), index)
                    if aspects:
                        found.append((clause, aspects))
        out.append(found)
    return out


def score_aspects(
    scorer: ClauseScorer,
    cleaned: Sequence[str],
    terms: Mapping[str, Sequence[str]],
    progress: bool = False,
) -> list[list[dict[str, Any]]]:
    """Every aspect-bearing clause of each cleaned text (:func:`~pipeline.data.text.
    clean_text`: a run's reviews already are), scored alone by ``scorer``: one list of clause
    records per text (``clause``, ``start``, ``end`` in the text, ``aspects`` {aspect: [words]},
    ``denied``, ``pred_star``, ``expected_star``, ``sentiment``). ``progress``: bars on a
    terminal."""
    found = aspect_clauses(cleaned, scorer.segmenter, terms, progress)
    flat = [clause.text for clauses in found for clause, _ in clauses]
    records: list[dict[str, Any]] = []
    with tqdm(total=len(flat), desc="scoring clauses", unit="clause",
              disable=None if progress else True) as bar:  # fmt: skip
        for at in range(0, len(flat), SCORING_CHUNK):
            chunk = flat[at : at + SCORING_CHUNK]
            records += scorer.score_records(chunk, explain=False)
            bar.update(len(chunk))
    scored = iter(records)
    out = []
    for clauses in found:
        told = []
        for clause, aspects in clauses:
            record = next(scored)
            sentiment = sentiment_of(record)
            if sentiment is not None and clause.denied:
                sentiment = -sentiment
            told.append({
                "clause": clause.text, "start": clause.start, "end": clause.end,
                "aspects": {a: [w for w, _, _ in words] for a, words in aspects.items()},
                "denied": clause.denied, "pred_star": record["pred_star"],
                "expected_star": record["expected_star"], "sentiment": sentiment,
            })  # fmt: skip
        out.append(told)
    return out

"""Clause-level opinions: which aspects each clause of a review mentions, and what the run's model
makes of that clause alone (:mod:`pipeline.data.aspects` splits and matches; the scorer scores).

A clause's sentiment is its expected star (or regression, or star) moved to -1..+1
(``(star - 3) / 2``): -1 is a one-star clause, +1 a five-star one. A denied clause ("不是剧情不好"
before "是节奏太拖") has its sentiment turned over: the reviewer takes the complaint back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pipeline.data.aspects import Clause, clause_aspects, split_clauses, term_index

PRAISE = 0.25  # sentiment above this is praise, below minus this a complaint


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
    texts: Sequence[str], segmenter: Any, terms: Mapping[str, Sequence[str]]
) -> list[list[tuple[Clause, dict[str, list[tuple[str, int, int]]]]]]:
    """For each (cleaned) text, its clauses that mention an aspect, with the aspects and the
    words that say them (offsets in the clause)."""
    index = term_index(terms)
    out = []
    for text in texts:
        found = []
        for clause in split_clauses(text):
            aspects = clause_aspects(segmenter.spans(clause.text), index)
            if aspects:
                found.append((clause, aspects))
        out.append(found)
    return out


def score_aspects(
    scorer: ClauseScorer, cleaned: Sequence[str], terms: Mapping[str, Sequence[str]]
) -> list[list[dict[str, Any]]]:
    """Every aspect-bearing clause of each cleaned text (:func:`~pipeline.data.text.
    clean_text`: a run's reviews already are), scored alone by ``scorer``: one list of clause
    records per text (``clause``, ``start``, ``end`` in the text, ``aspects`` {aspect: [words]},
    ``denied``, ``pred_star``, ``expected_star``, ``sentiment``)."""
    found = aspect_clauses(cleaned, scorer.segmenter, terms)
    flat = [clause.text for clauses in found for clause, _ in clauses]
    scored = iter(scorer.score_records(flat, explain=False)) if flat else iter(())
    out = []
    for clauses in found:
        records = []
        for clause, aspects in clauses:
            record = next(scored)
            sentiment = sentiment_of(record)
            if sentiment is not None and clause.denied:
                sentiment = -sentiment
            records.append({
                "clause": clause.text, "start": clause.start, "end": clause.end,
                "aspects": {a: [w for w, _, _ in words] for a, words in aspects.items()},
                "denied": clause.denied, "pred_star": record["pred_star"],
                "expected_star": record["expected_star"], "sentiment": sentiment,
            })  # fmt: skip
        out.append(records)
    return out

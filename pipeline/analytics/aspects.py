"""What a film's reviews praise and complain about: aspects per film, from clause-level opinions.

Every review of a run is split into clauses; the clauses that mention an aspect (plot, acting,
visuals, ...; :data:`pipeline.data.aspects.ASPECTS`, extended with the run's own words) are
scored alone by one of the run's models (:func:`pipeline.predict.aspects.score_aspects`; the
reports' :mod:`~pipeline.reports.corpus` does that once per run). The functions here are pure:
from those scored clauses, per film and aspect, how many clauses and reviews mention it, the
mean clause sentiment with a bootstrap interval, the corpus's mean for the same aspect, and the
most telling clauses both ways.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.aspects import ASPECTS, default_terms, extend_terms, split_clauses
from pipeline.modeling.metrics import resampled_interval
from pipeline.predict.aspects import PRAISE

MIN_CLAUSES = 10  # fewer clauses on an aspect: its numbers carry a small-sample note
CLAUSE_COLUMNS = ["review_id", "film", "star", "aspect", "clause", "words", "denied", "sentiment"]


def aspect_terms(
    chosen: Mapping[str, Any], texts: Sequence[str], segmenter: Any, stopwords: frozenset[str]
) -> dict[str, list[str]]:
    """The taxonomy's seed terms, the words ``chosen`` (settings ``[aspects]``) adds and, unless
    ``extend = false``, the words of ``texts`` that keep each aspect's company."""
    terms = default_terms()
    for aspect, words in (chosen.get("terms") or {}).items():
        terms.setdefault(str(aspect), [])
        terms[str(aspect)] += [str(w) for w in words if str(w) not in terms[str(aspect)]]
    if not chosen.get("extend", True):
        return terms
    clauses = ([w for w, _, _ in segmenter.spans(c.text)] for t in texts
               for c in split_clauses(t))  # fmt: skip
    for aspect, words in extend_terms(clauses, terms, stopwords).items():
        terms[aspect] += words
    return terms


def clause_frame(reviews: pd.DataFrame, records: Iterable[list[dict[str, Any]]]) -> pd.DataFrame:
    """One row per (clause, aspect) of the reviews' scored clauses (``records``: one list per
    review, :func:`~pipeline.predict.aspects.score_aspects`)."""
    rows = [
        (rid, film, star, aspect, r["clause"], words, r["denied"], r["sentiment"])
        for rid, film, star, found in zip(
            reviews["review_id"], reviews["film"], reviews["star"], records, strict=True
        )
        for r in found
        for aspect, words in r["aspects"].items()
    ]
    return pd.DataFrame(rows, columns=CLAUSE_COLUMNS)


def aspect_rows(clauses: pd.DataFrame, film: str, n_reviews: int, seed: int = 0) -> pd.DataFrame:
    """One row per aspect the film's scored clauses mention: ``aspect``, ``name`` (Chinese),
    ``english``, ``clauses``, ``reviews`` (mentioning it), ``share`` (of the film's
    ``n_reviews``), ``mean`` sentiment with a 95% bootstrap interval (``low``, ``high``),
    ``praise`` and ``complaint`` (shares of its clauses), ``corpus_mean`` (the other films'
    clauses on the same aspect) and ``small`` (fewer than :data:`MIN_CLAUSES` clauses). Most
    mentioned first."""
    mine, others = clauses[clauses["film"] == film], clauses[clauses["film"] != film]
    rows = []
    for aspect, group in mine.groupby("aspect", sort=False):
        values = group["sentiment"].to_numpy(np.float64)
        low, high = resampled_interval(lambda r, v=values: v[r].mean(), len(values), seed=seed)
        rest = others.loc[others["aspect"] == aspect, "sentiment"]
        zh, en, _ = ASPECTS.get(str(aspect), (str(aspect), "(your aspect)", ()))
        rows.append({
            "aspect": aspect, "name": zh, "english": en, "clauses": len(values),
            "reviews": int(group["review_id"].nunique()),
            "share": group["review_id"].nunique() / max(n_reviews, 1),
            "mean": float(values.mean()), "low": float(low), "high": float(high),
            "praise": float((values > PRAISE).mean()),
            "complaint": float((values < -PRAISE).mean()),
            "corpus_mean": float(rest.mean()) if len(rest) else None,
            "small": len(values) < MIN_CLAUSES,
        })  # fmt: skip
    frame = pd.DataFrame(rows, columns=["aspect", "name", "english", "clauses", "reviews", "share",
                                        "mean", "low", "high", "praise", "complaint",
                                        "corpus_mean", "small"])  # fmt: skip
    return frame.sort_values("clauses", ascending=False, kind="stable").reset_index(drop=True)


def aspect_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`aspect_rows` as the app and the reports show it."""
    shown = table.rename(columns={"mean": "sentiment", "corpus_mean": "other films"})
    return shown.drop(columns=["aspect", "small"])


def aspect_labels(table: pd.DataFrame) -> dict[str, str]:
    """Each aspect of :func:`aspect_rows` named as the app and the reports show it."""
    return dict(zip(table["aspect"], table["name"] + " " + table["english"], strict=True))


def telling(clauses: pd.DataFrame, film: str, aspect: str, k: int = 5) -> dict[str, list[Any]]:
    """The film's ``k`` most positive (``praise``) and ``k`` most negative (``complaint``)
    scored clauses on ``aspect``, each with its review's star and the words that name the aspect
    (:func:`~pipeline.markup.words_html` highlights them when a page is drawn)."""
    rows = clauses[(clauses["film"] == film) & (clauses["aspect"] == aspect)]
    rows = rows.drop_duplicates(["review_id", "clause"])
    fields = ["clause", "words", "sentiment", "star", "denied", "review_id"]
    best = rows[rows["sentiment"] > PRAISE].nlargest(k, "sentiment")[fields]
    worst = rows[rows["sentiment"] < -PRAISE].nsmallest(k, "sentiment")[fields]
    return {"praise": _readable(best), "complaint": _readable(worst)}


def with_attention(clauses: list[dict[str, Any]], explained: Sequence[Any], head: str) -> None:
    """Add to each telling clause where ``head`` looked when it read the clause alone
    (``explained``: its explained score records, in order): ``attention_text`` (the clause as
    the head read it), ``attention_words`` (word, start, end, weight: what
    :func:`~pipeline.markup.highlight_html` draws) and ``attention_model``."""
    for clause, record in zip(clauses, explained, strict=True):
        if record.words and record.clean_text:
            clause["attention_text"] = record.clean_text
            clause["attention_words"] = [[str(w), int(s), int(e), float(a)]
                                         for w, s, e, a in record.words]  # fmt: skip
            clause["attention_model"] = head


def _readable(rows: pd.DataFrame) -> list[dict[str, Any]]:
    return [{
        "clause": row["clause"], "words": list(row["words"]), "sentiment": float(row["sentiment"]),
        "star": int(row["star"]), "denied": bool(row["denied"]), "review_id": int(row["review_id"]),
    } for row in rows.to_dict("records")]  # fmt: skip

"""What a film's reviews praise and complain about: aspects per film, from clause-level opinions.

Every review of the run is split into clauses; the clauses that mention an aspect (plot, acting,
visuals, ...; :data:`pipeline.data.aspects.ASPECTS`, extended with the run's own words) are
scored alone by one of the run's models (:func:`pipeline.predict.aspects.score_aspects`; by
default the TF-IDF classifier, which scores a 50,000-review run's clauses in seconds on a CPU).
Per film and aspect: how many clauses and reviews mention it, the mean clause sentiment with a
bootstrap interval, the corpus's mean for the same aspect, and the most telling clauses both
ways.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.data.aspects import ASPECTS, default_terms, extend_terms, split_clauses
from pipeline.markup import highlight_html
from pipeline.modeling.metrics import resampled_interval
from pipeline.predict.aspects import PRAISE, score_aspects

if TYPE_CHECKING:
    from pipeline.run import Run

MIN_CLAUSES = 10  # fewer clauses on an aspect: its numbers carry a small-sample note
CLAUSE_COLUMNS = ["review_id", "film", "star", "aspect", "clause", "words", "denied", "sentiment"]


def clause_model(run: Run) -> str | None:
    """The model that scores clauses: ``tfidf_lr`` when the run has it (fast, and it reads
    words, which is what a clause is), else the run's default; None when no model is saved."""
    saved = run.saved_models
    return next((m for m in ("tfidf_lr", run.default_model) if m in saved), None)


def run_terms(run: Run) -> dict[str, list[str]]:
    """The taxonomy's seed terms, the words the run's settings add (``[aspects] terms``, as the
    run was prepared with them) and, unless ``extend = false``, the words of the run that keep
    each aspect's company (memoised)."""

    def compute() -> dict[str, list[str]]:
        terms = default_terms()
        chosen = run.recorded_settings.get("aspects") or {}
        for aspect, words in (chosen.get("terms") or {}).items():
            terms.setdefault(str(aspect), [])
            terms[str(aspect)] += [str(w) for w in words if str(w) not in terms[str(aspect)]]
        if not chosen.get("extend", True):
            return terms
        segmenter = run.segmenter
        # every n-th review, about 20,000 of them: words frequent enough to matter show in any
        # such sample, and the pass stays a few seconds on 2.1M reviews
        texts = run.reviews["text"].tolist()[:: max(1, len(run.reviews) // 20_000)]
        clauses = ([w for w, _, _ in segmenter.spans(c.text)] for t in texts
                   for c in split_clauses(t))  # fmt: skip
        for aspect, words in extend_terms(clauses, terms, run.stopwords).items():
            terms[aspect] += words
        return terms

    return run.kept.memo("aspect_terms", compute)


def run_clauses(run: Run, model: str | None = None) -> pd.DataFrame:
    """Every aspect-bearing clause of the run's reviews, one row per (clause, aspect), scored
    by ``model`` (default :func:`clause_model`); memoised per run and model."""
    model = model or clause_model(run)
    if model is None:  # nothing trained yet: no clause is scored
        return pd.DataFrame(columns=CLAUSE_COLUMNS)

    def compute() -> pd.DataFrame:
        reviews = run.reviews
        scorer = run.scorer(model)
        records = score_aspects(scorer, reviews["text"].tolist(), run_terms(run))
        rows = [
            (rid, film, star, aspect, r["clause"], words, r["denied"], r["sentiment"])
            for rid, film, star, found in zip(
                reviews["review_id"], reviews["film"], reviews["star"], records, strict=True
            )
            for r in found
            for aspect, words in r["aspects"].items()
        ]
        return pd.DataFrame(rows, columns=CLAUSE_COLUMNS)

    return run.kept.memo(("aspect_clauses", model), compute)


def film_aspects(run: Run, film: str, model: str | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per aspect the film's reviews mention: ``aspect``, ``name`` (Chinese),
    ``english``, ``clauses``, ``reviews`` (mentioning it), ``share`` (of the film's reviews),
    ``mean`` sentiment with a 95% bootstrap interval (``low``, ``high``), ``praise`` and
    ``complaint`` (shares of its clauses), ``corpus_mean`` (the other films' clauses on the same
    aspect) and ``small`` (fewer than :data:`MIN_CLAUSES` clauses). Most mentioned first."""
    film = run.resolve_film(film)
    n_reviews = int((run.reviews["film"] == film).sum())
    return _aspect_rows(_scored(run, model), film, n_reviews, seed)


def film_aspect_parts(run: Run, film: str, seed: int = 0) -> dict[str, Any]:
    """A film's report on aspects in one pass: :func:`film_aspects` (``aspects``), the
    :func:`telling_clauses` of each of its aspects (``aspect_clauses``, their attention read in
    one call), the run's terms and the model that scored the clauses."""
    clauses = _scored(run, None)
    n_reviews = int((run.reviews["film"] == film).sum())
    table = _aspect_rows(clauses, film, n_reviews, seed)
    told = {str(a): _told(clauses, film, str(a), 5) for a in table["aspect"]}
    _attend(run, [c for t in told.values() for c in t["praise"] + t["complaint"]])
    return {"aspects": table, "aspect_clauses": told, "aspect_terms": run_terms(run),
            "clause_model": clause_model(run)}  # fmt: skip


def _scored(run: Run, model: str | None) -> pd.DataFrame:
    return run_clauses(run, model).dropna(subset=["sentiment"])


def _aspect_rows(clauses: pd.DataFrame, film: str, n_reviews: int, seed: int) -> pd.DataFrame:
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
    """:func:`film_aspects` as the app and the reports show it."""
    shown = table.rename(columns={"mean": "sentiment", "corpus_mean": "other films"})
    return shown.drop(columns=["aspect", "small"])


def aspect_labels(table: pd.DataFrame) -> dict[str, str]:
    """Each aspect of :func:`film_aspects` named as the app and the reports show it."""
    return dict(zip(table["aspect"], table["name"] + " " + table["english"], strict=True))


def telling_clauses(
    run: Run, film: str, aspect: str, k: int = 5, model: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The film's ``k`` most positive and ``k`` most negative clauses on ``aspect`` (each with
    its review's star and the words that name the aspect), for reading and highlighting."""
    told = _told(_scored(run, model), run.resolve_film(film), aspect, k)
    _attend(run, told["praise"] + told["complaint"])
    return told


def _told(clauses: pd.DataFrame, film: str, aspect: str, k: int) -> dict[str, list[Any]]:
    rows = clauses[(clauses["film"] == film) & (clauses["aspect"] == aspect)]
    rows = rows.drop_duplicates(["review_id", "clause"])
    fields = ["clause", "words", "sentiment", "star", "denied", "review_id"]
    best = rows[rows["sentiment"] > PRAISE].nlargest(k, "sentiment")[fields]
    worst = rows[rows["sentiment"] < -PRAISE].nsmallest(k, "sentiment")[fields]
    return {"praise": _readable(best), "complaint": _readable(worst)}


def _attend(run: Run, clauses: list[dict[str, Any]]) -> None:
    """Add to each clause where the run's self-attentive head looks when it reads the clause
    alone (``attention_html``, ``attention_model``): which words carried it."""
    head = run.attention_model(run.default_model)
    if head is None or head not in run.saved_models or not clauses:
        return
    explained = run.scorer(head).score([c["clause"] for c in clauses], explain=True)
    for clause, record in zip(clauses, explained, strict=True):
        if record.words and record.clean_text:
            clause["attention_html"] = highlight_html(record.clean_text, record.words)
            clause["attention_model"] = head


def _readable(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Clause rows as plain records, each with ``html``: the clause with the words that name
    the aspect highlighted (escaped; the app and the reports show the same)."""
    out = []
    for row in rows.to_dict("records"):
        clause, words = row["clause"], list(row["words"])
        spans = [(w, i, i + len(w), 1.0) for w in words if (i := clause.find(w)) >= 0]
        out.append({
            "clause": clause, "words": words, "sentiment": float(row["sentiment"]),
            "star": int(row["star"]), "denied": bool(row["denied"]),
            "review_id": int(row["review_id"]), "html": highlight_html(clause, spans),
        })  # fmt: skip
    return out

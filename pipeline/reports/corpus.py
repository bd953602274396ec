"""A run's corpus-wide analytics, computed once per run (and model) and kept on the
:class:`~pipeline.run.Run` (:meth:`~pipeline.kept.Kept.memo`): every film's top words against
the others, the film league, every film's star-mix estimate, and the scored aspect clauses of
all reviews (all but the league also on disk, :meth:`~pipeline.kept.Kept.analytics`, for the
next process). A film's report (:mod:`pipeline.reports.inputs`), the index page, the
CLI and the app read them here; the numbers themselves are the pure functions of
:mod:`pipeline.analytics`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from pipeline.analytics.aspects import (
    CLAUSE_COLUMNS,
    aspect_rows,
    aspect_terms,
    clause_frame,
    telling,
    with_attention,
)
from pipeline.analytics.league import league_table
from pipeline.analytics.quantify import film_rating_estimates
from pipeline.analytics.words import CLOUD_WORDS, MIN_WORD_COUNT, top_words_by_film
from pipeline.artifacts import fingerprint
from pipeline.errors import InputError
from pipeline.predict.aspects import score_aspects
from pipeline.run import Run

log = logging.getLogger(__name__)

TERM_SAMPLE = 20_000  # reviews read for the run's own aspect words
CORPUS_VERSION = 1  # bump when what the kept top words, aspect words, clauses or estimates hold
T = TypeVar("T")


def corpus_numbers(run: Run, model: str | None) -> None:
    """Compute, or read where kept, every run-wide number a film's page shows, one after the
    other, saying what each took: what a reports stage does first, so its per-film progress
    (and ETA) counts films, not the first film's share of the corpus."""
    parts: dict[str, Callable[[], Any]] = {
        "film top words": lambda: corpus_top_words(run),
        "film league": lambda: league_for(run, model),
        "star mixes": lambda: star_estimates(run, model),
        "aspect words": lambda: run_terms(run),
        "aspect clauses": lambda: scored_clauses(run),
    }
    took = []
    for name, compute in parts.items():
        start = time.perf_counter()
        compute()
        took.append(f"{name} {time.perf_counter() - start:.1f} s")
    log.info("run-wide numbers of run %s: %s", run.name, ", ".join(took))


def corpus_top_words(run: Run) -> dict[object, pd.DataFrame]:
    """Every film's top words against the others (said at least twice), kept under
    ``analytics/`` for the next process (TF-IDF over every review: about 7 s on a 220,000-review
    crawl)."""

    def compute() -> pd.DataFrame:
        ranked = top_words_by_film(run.reviews, run.stopwords, CLOUD_WORDS)
        said = [t[t["count"] >= MIN_WORD_COUNT].assign(film=f) for f, t in ranked.items()]
        return pd.concat(said, ignore_index=True)

    def by_film() -> dict[object, pd.DataFrame]:
        on = (CLOUD_WORDS, MIN_WORD_COUNT, sorted(run.stopwords))
        table = _kept_once(run, None, "film-top-words", compute, *on)
        films = {f: t.drop(columns="film").reset_index(drop=True)
                 for f, t in table.groupby("film", sort=False)}  # fmt: skip
        none = table.iloc[:0].drop(columns="film")
        return {f: films[f] if f in films else none.copy() for f in run.films["film"]}

    return run.kept.memo("film_top_words", by_film)


def league_for(run: Run, model: str | None) -> pd.DataFrame:
    """The film league of ``model``'s evaluated predictions."""
    return run.kept.memo(
        ("league", model), lambda: league_table(run.reviews, run.evaluated(model)[0])
    )


def star_estimates(run: Run, model: str | None) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """Every film's star-mix estimate on the test split by the quantifier the run's validation
    picks, with intervals, and that choice; None when the model gives no star probabilities, or
    the same ones for every review (``majority``: its text tells nothing to count with). Kept
    under ``analytics/`` for the next process (the index page shows them)."""
    if model is None:
        return None

    def compute() -> tuple[pd.DataFrame, dict[str, Any]] | None:
        try:
            probabilities = run.probabilities(model)
        except InputError:  # a model without probabilities: nothing to count with
            return None
        probs = np.stack(probabilities["probs"].to_numpy())
        if (probs == probs[0]).all():  # and EM on identical rows crawls to its iteration cap
            return None
        table, choice = film_rating_estimates(
            probabilities, run.train_stars, run.model_prior(model)
        )
        return table.set_index("film"), choice

    found = _kept_once(run, model, "star-estimates", compute, run.generation)
    return None if found is None else (found[0], found[1])  # kept: a list


# ---------------------------------------------------------------------- aspects


def clause_model(run: Run) -> str | None:
    """The model that scores clauses: ``tfidf_lr`` when the run has it (fast, and it reads
    words, which is what a clause is), else the run's default; None when no model is saved."""
    saved = run.saved_models
    return next((m for m in ("tfidf_lr", run.default_model) if m in saved), None)


def run_terms(run: Run) -> dict[str, list[str]]:
    """The aspects' words for this run (:func:`~pipeline.analytics.aspects.aspect_terms`: the
    seeds, the words of the settings the run was prepared with and, unless ``extend = false``,
    the run's own words from every n-th review, about :data:`TERM_SAMPLE` of them), kept under
    ``analytics/`` for the next process."""
    chosen = run.recorded_settings.get("aspects") or {}

    def compute() -> dict[str, list[str]]:
        texts = run.reviews["text"].iloc[:: max(1, len(run.reviews) // TERM_SAMPLE)].tolist()
        return aspect_terms(chosen, texts, run.segmenter, run.stopwords)

    return _kept_once(run, None, "aspect-terms", compute, chosen)


def run_clauses(run: Run, model: str | None = None) -> pd.DataFrame:
    """Every aspect-bearing clause of the run's reviews, one row per (clause, aspect), scored
    by ``model`` (default :func:`clause_model`); kept under ``analytics/`` for the next process
    (scoring every clause of a large corpus takes minutes)."""
    model = model or clause_model(run)
    if model is None:  # nothing trained yet: no clause is scored
        return pd.DataFrame(columns=CLAUSE_COLUMNS)

    def compute() -> pd.DataFrame:
        texts = run.reviews["text"].tolist()
        plan = f"the aspect clauses of {len(texts):,} reviews with {model}, once for run {run.name}"
        log.info("aspects: scoring %s (kept under analytics/%s/)", plan, model)
        scored = score_aspects(run.scorer(model), texts, run_terms(run), progress=True)
        return clause_frame(run.reviews, scored)

    terms = run.recorded_settings.get("aspects")
    return _kept_once(run, model, "aspect-clauses", compute, run.generation, terms)


def _kept_once(run: Run, model: str | None, name: str, compute: Callable[[], T], *on: Any) -> T:
    """``compute()`` once per opened run, and kept as ``analytics/<model>/<name>`` while the
    run's reviews, predictions and features and ``on`` are unchanged."""

    def kept() -> T:
        fp = fingerprint(CORPUS_VERSION, run.source_stamp, model, *on)
        return run.kept.analytics(
            model, Path(name), fp, compute, lambda value: {name: value}, lambda parts: parts[name]
        )

    return run.kept.memo((name, model), kept)


def scored_clauses(run: Run, model: str | None = None) -> pd.DataFrame:
    """:func:`run_clauses` that could be scored (once per run and model: every film's report
    reads them)."""
    model = model or clause_model(run)
    return run.kept.memo(
        ("scored_clauses", model), lambda: run_clauses(run, model).dropna(subset=["sentiment"])
    )


def clause_explainer(run: Run) -> Callable[[list[dict[str, Any]]], None]:
    """What adds to telling clauses where the run's self-attentive head looks when it reads
    each alone (:func:`~pipeline.analytics.aspects.with_attention`); nothing without one."""
    head = run.attention_model(run.default_model)

    def explain(clauses: list[dict[str, Any]]) -> None:
        if head is None or head not in run.saved_models or not clauses:
            return
        texts = [c["clause"] for c in clauses]
        with_attention(clauses, run.scorer(head).score(texts, explain=True), head)

    return explain


def film_aspects(run: Run, film: str, model: str | None = None, seed: int = 0) -> pd.DataFrame:
    """The film's aspects (:func:`~pipeline.analytics.aspects.aspect_rows`) by ``model``'s
    clause scores (default :func:`clause_model`)."""
    film = run.resolve_film(film)
    n_reviews = int((run.reviews["film"] == film).sum())
    return aspect_rows(scored_clauses(run, model), film, n_reviews, seed)


def telling_clauses(
    run: Run, film: str, aspect: str, k: int = 5, model: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The film's ``k`` most positive and ``k`` most negative clauses on ``aspect``
    (:func:`~pipeline.analytics.aspects.telling`), with the head's attention over each."""
    told = telling(scored_clauses(run, model), run.resolve_film(film), aspect, k)
    clause_explainer(run)(told["praise"] + told["complaint"])
    return told

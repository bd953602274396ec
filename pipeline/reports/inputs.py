"""What a film's report reads of its run, read in one place (:meth:`FilmInputs.read`), so the
sections that compute the report (:mod:`pipeline.reports.sections`) work on data alone and the
page (:mod:`pipeline.reports.render`) draws what they computed. The corpus-wide numbers a page
shows (league, star-mix estimates, top words, scored clauses) come from
:mod:`pipeline.reports.corpus`, computed once per run."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.analytics.embedding import tsne_coordinates
from pipeline.reports.corpus import (
    clause_explainer,
    clause_model,
    corpus_top_words,
    league_for,
    run_terms,
    scored_clauses,
    star_estimates,
)
from pipeline.run import Run

NO_HEAD = "no attention head in this run: train head_cls to see attention"


@dataclass
class MapSource:
    """What a t-SNE map reads of a run: its pooled features (None when not extracted) and the
    kept coordinates (:meth:`~pipeline.kept.Kept.array`: another model's map of the same
    reviews, in this process or the app's, costs no second t-SNE)."""

    run: str
    features: Any | None  # pipeline.run.LastLayerPooled
    coordinates: Callable[[np.ndarray, int], np.ndarray]

    @classmethod
    def read(cls, run: Run) -> MapSource:
        def kept(x: np.ndarray, seed: int) -> np.ndarray:
            data = np.ascontiguousarray(x).tobytes() + str(x.shape).encode()
            digest = hashlib.sha1(data).hexdigest()[:20]
            return run.kept.array(f"tsne-{digest}-{seed}", lambda: tsne_coordinates(x, seed))

        return cls(run.name, run.pooled_features, kept)


@dataclass
class AttentionSource:
    """What the attention examples read: the head that explains the model, its evaluated
    predictions of the film with their attention, the feature store's token offsets and the
    run's segmenter; ``note`` says why there can be none."""

    model: str | None
    preds: pd.DataFrame
    note: str = ""  # why there can be no examples
    offsets: Callable[[int], np.ndarray] | None = None
    spans: Callable[[str], list[tuple[str, int, int]]] | None = None

    @classmethod
    def read(cls, run: Run, film: str, model: str | None) -> AttentionSource:
        name = run.attention_model(model)
        if name is None:
            return cls(None, pd.DataFrame(), NO_HEAD)
        store = run.feature_store
        if store is None:
            hint = f"run `douban features --run {run.name}`"
            return cls(name, pd.DataFrame(), f"no feature store (token offsets): {hint}")
        preds, _ = run.evaluated(name, film)
        preds = preds.merge(run.prediction_lists(name, preds["review_id"]), on="review_id")
        return cls(name, preds, "", store.offsets, run.segmenter.spans)


@dataclass
class TextSource:
    """What the model-independent parts of a report read: the film's words against the corpus,
    the stopwords, every scored aspect clause and the aspects' words, the model that scored the
    clauses and what adds the head's attention to a clause."""

    top_words: pd.DataFrame
    stopwords: frozenset[str]
    clauses: pd.DataFrame
    terms: dict[str, list[str]]
    clause_model: str | None
    explain: Callable[[list[dict[str, Any]]], None]

    @classmethod
    def read(cls, run: Run, film: str) -> TextSource:
        return cls(corpus_top_words(run)[film], run.stopwords, scored_clauses(run), run_terms(run),
                   clause_model(run), clause_explainer(run))  # fmt: skip


@dataclass
class FilmInputs:
    """Everything a film's report reads of its run, as data."""

    run: str
    generation: str
    is_demo: bool
    film: str
    model: str | None
    reviews: pd.DataFrame  # the film's
    predictions: pd.DataFrame  # the film's, of every model and evaluation
    preds: pd.DataFrame  # the model's evaluated predictions of the film, with the reviews
    evaluated_on: str  # e.g. "random/test"
    map: MapSource
    attention: AttentionSource
    league: pd.DataFrame
    estimates: tuple[pd.DataFrame, dict[str, Any]] | None  # corpus.star_estimates
    text: dict[str, Any] | TextSource  # kept text parts of another model's report, or their source

    @classmethod
    def read(
        cls, run: Run, film: str, model: str | None, text: dict[str, Any] | None = None
    ) -> FilmInputs:
        """``film``: its key (:meth:`Run.resolve_film`); ``model``: one with predictions
        (:meth:`Run.resolve_model`); ``text``: the film's text parts from another model's report
        of it (they depend on the reviews only), else they are read to be computed."""
        preds, evaluated_on = run.evaluated(model, film)
        return cls(
            run=run.name,
            generation=run.generation,
            is_demo=run.is_demo,
            film=film,
            model=model,
            reviews=run.reviews[run.reviews["film"] == film],
            predictions=run.predictions[run.predictions["film"] == film],
            preds=preds,
            evaluated_on=evaluated_on,
            map=MapSource.read(run),
            attention=AttentionSource.read(run, film, model),
            league=league_for(run, model),
            estimates=star_estimates(run, model),
            text=text if text is not None else TextSource.read(run, film),
        )

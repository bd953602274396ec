"""A film's report as data: :class:`FilmReport`, what one film's page shows.

:meth:`FilmReport.build` reads what the report needs of its run in one place
(:class:`~pipeline.reports.inputs.FilmInputs`), then :meth:`FilmReport.compute` computes it from
that data alone (:mod:`pipeline.reports.sections`, over the pure functions of
:mod:`pipeline.analytics`). :mod:`pipeline.reports.store` keeps reports (as the parts of
:meth:`FilmReport.to_parts`), :mod:`pipeline.reports.render` draws them and
:mod:`pipeline.reports.site` writes the pages.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline.analytics.embedding import DEFAULT_CAP
from pipeline.analytics.stars import (
    STARS,
    accuracy_summary,
    confusion,
    exact_ci,
    model_summaries,
    star_distribution,
)
from pipeline.analytics.time import likes_agreement, monthly_trend, with_predictions
from pipeline.analytics.words import star_words_table
from pipeline.reports.inputs import FilmInputs, TextSource
from pipeline.reports.sections import (
    AttentionExample,
    attention_section,
    same_evaluation,
    star_estimate,
    str_or_none,
    text_parts,
    tsne_section,
)
from pipeline.run import Run

ANALYTICS_VERSION = 10  # bump when what a FilmReport holds changes: cached artifacts are rebuilt
MIN_EVALUATED = 30  # fewer evaluated reviews: the numbers carry a visible small-sample note
SECTIONS = {
    "numbers": "Key numbers",
    "stars": "Star distribution",
    "estimate": "Star mix estimated from the text",
    "confusion": "Confusion matrix",
    "tsne": "Map of the reviews (t-SNE)",
    "words": "Words that set the film apart",
    "aspects": "What the reviews praise and complain about",
    "star-words": "Top words per star",
    "clouds": "Word clouds",
    "attention": "What the attention head looked at",
    "trend": "Stars over time",
    "likes": "Likes",
    "league": "Film league",
}
# of a FilmReport: what depends on the reviews only, the same for every model
TEXT_PARTS = ("top_words", "star_words", "clouds", "aspects", "aspect_clauses", "aspect_terms",
              "clause_model")  # fmt: skip


@dataclass
class FilmReport:
    """Everything one film's page shows, as data."""

    run: str
    generation: str  # the run's model set (Run.generation)
    film: str
    film_en: str | None
    is_demo: bool
    model: str | None
    evaluated_on: str  # e.g. "random/test": the evaluation and split the predictions come from
    reviews: int
    mean_star: float
    summary: dict[str, Any]  # accuracy_summary of the chosen model on the evaluated reviews
    exact_ci: tuple[float, float] | None  # bootstrap 95% interval of the exact accuracy
    models: pd.DataFrame  # model_summaries of every model on the film
    distribution: pd.DataFrame
    confusion_counts: pd.DataFrame
    confusion_normalised: pd.DataFrame
    tsne: pd.DataFrame | None
    tsne_note: str
    top_words: pd.DataFrame
    star_words: dict[int, pd.DataFrame]
    clouds: dict[str, bytes]  # PNG word clouds: the film, then "1★".."5★"
    aspects: pd.DataFrame  # analytics.aspects.film_aspects: one row per aspect mentioned
    aspect_clauses: dict[str, dict[str, list[dict[str, Any]]]]  # aspect -> telling_clauses
    aspect_terms: dict[str, list[str]]  # the words that name each aspect in this run
    clause_model: str | None  # the model that scored the clauses
    attention_model: str | None
    attention: list[AttentionExample]
    attention_note: str  # why there are no examples
    trend: pd.DataFrame | None
    likes: dict[str, Any] | None
    league: pd.DataFrame
    star_estimate: dict[str, Any] | None  # see star_estimate

    @property
    def small_sample(self) -> bool:
        return 0 < self.summary["n"] < MIN_EVALUATED

    @property
    def star_table(self) -> pd.DataFrame:
        """Stars as columns, rank as rows, ``word count`` cells."""
        return star_words_table(self.star_words)

    @classmethod
    def build(
        cls,
        run: Run,
        film: str,
        model: str | None = None,
        tsne_cap: int = DEFAULT_CAP,
        seed: int = 0,
        text: dict[str, Any] | None = None,
    ) -> FilmReport:
        """Compute a film's report (``film``: its key, :meth:`Run.resolve_film`; ``model``: one
        with predictions, :meth:`Run.resolve_model`). ``text``: the film's :data:`TEXT_PARTS`
        from another model's report of it (they depend on the reviews only)."""
        return cls.compute(FilmInputs.read(run, film, model, text), tsne_cap, seed)

    @classmethod
    def compute(cls, inputs: FilmInputs, tsne_cap: int = DEFAULT_CAP, seed: int = 0) -> FilmReport:
        """The report from what it read of its run: the data alone, no run. The sections first,
        then the tables of :mod:`pipeline.analytics`."""
        reviews, preds, film = inputs.reviews, inputs.preds, inputs.film
        all_models = same_evaluation(inputs.predictions, inputs.evaluated_on)
        estimate = star_estimate(inputs.estimates, film)
        tsne, tsne_note = tsne_section(inputs.map, reviews, preds, tsne_cap, seed)
        attention, attention_note = attention_section(inputs.attention)
        text = inputs.text
        if isinstance(text, TextSource):
            text = text_parts(text, film, reviews, seed)
        return cls(
            run=inputs.run,
            generation=inputs.generation,
            film=film,
            film_en=str_or_none(reviews["film_en"].iloc[0]),
            is_demo=inputs.is_demo,
            model=inputs.model,
            evaluated_on=inputs.evaluated_on,
            reviews=len(reviews),
            mean_star=float(reviews["star"].mean()),
            summary=accuracy_summary(preds),
            models=model_summaries(all_models),
            distribution=star_distribution(preds),
            confusion_counts=confusion(preds),
            confusion_normalised=confusion(preds, normalise=True),
            exact_ci=exact_ci(preds, seed),
            tsne=tsne,
            tsne_note=tsne_note,
            **text,
            attention_model=inputs.attention.model,
            attention=attention,
            attention_note=attention_note,
            likes=with_predictions(likes_agreement(reviews), preds),
            trend=monthly_trend(reviews, preds),
            league=inputs.league,
            star_estimate=estimate,
        )

    # ------------------------------------------------------------------ as a kept artifact

    def to_parts(self) -> dict[str, Any]:
        """The report as frames, PNG bytes and JSON values (what
        :meth:`~pipeline.kept.Kept.analytics` keeps)."""
        parts = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("confusion_counts", "confusion_normalised"):
            parts[name] = parts[name].to_numpy().tolist()
        parts["attention"] = [dataclasses.asdict(a) for a in self.attention]
        frames = [t.assign(star=s) for s, t in self.star_words.items()]  # one file, not five
        parts["star_words"] = pd.concat(frames, ignore_index=True)
        return parts

    @classmethod
    def from_parts(cls, parts: dict[str, Any]) -> FilmReport:
        """The report :meth:`to_parts` gave."""
        for name in ("confusion_counts", "confusion_normalised"):
            frame = pd.DataFrame(parts[name], index=list(STARS), columns=list(STARS))
            frame.index.name, frame.columns.name = "true", "predicted"
            parts[name] = frame
        words = parts["star_words"]
        parts["star_words"] = {
            s: words[words["star"] == s].drop(columns="star").reset_index(drop=True) for s in STARS
        }
        tupled = ("words", "top_words")
        parts["attention"] = [
            AttentionExample(**a | {p: [tuple(w) for w in a[p]] for p in tupled})
            for a in parts["attention"]
        ]
        parts["exact_ci"] = tuple(parts["exact_ci"]) if parts["exact_ci"] else None
        return cls(**parts)

    def text_of(self) -> dict[str, Any]:
        """Its :data:`TEXT_PARTS`: what another model's report of the same reviews reuses."""
        return {part: getattr(self, part) for part in TEXT_PARTS}

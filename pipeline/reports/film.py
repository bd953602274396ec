"""Self-contained HTML reports, one page per film plus an index, from a run's artifacts.

:meth:`FilmReport.build` reads what a film's report needs of its run in one place
(:class:`~pipeline.reports.inputs.FilmInputs`), then computes the report from that data alone
(:mod:`pipeline.reports.sections`, over the pure functions of :mod:`pipeline.analytics`);
:func:`film_report` keeps it as a fingerprinted artifact in ``runs/<run>/analytics/<model>/`` so
the app and the reports read it instead of recomputing t-SNE, TF-IDF and word clouds per visit.
Pages are Jinja2 templates (autoescaped: review text is data, never markup) with the charts of
:mod:`pipeline.reports.charts` as inline Vega-Lite and the Vega JavaScript inlined: no external
URL, the file opens anywhere, offline. Pages are written atomically to ``reports/<run>/``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.analytics.embedding import DEFAULT_CAP
from pipeline.analytics.stars import (
    STARS,
    accuracy_summary,
    confusion,
    model_summaries,
    star_distribution,
)
from pipeline.analytics.time import likes_agreement, monthly_trend
from pipeline.analytics.words import star_words_table
from pipeline.artifacts import fingerprint
from pipeline.reports.inputs import FilmInputs, MapSource, TextSource
from pipeline.reports.names import film_file_names
from pipeline.reports.sections import (
    AttentionExample,
    attention_section,
    exact_ci,
    same_evaluation,
    star_estimate,
    str_or_none,
    text_parts,
    tsne_section,
    with_predictions,
)
from pipeline.run import Run

log = logging.getLogger(__name__)

ANALYTICS_VERSION = 9  # bump when what a FilmReport holds changes: cached artifacts are rebuilt
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
TEMPLATES = Path(__file__).parent / "templates"
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
        """The report from what it read of its run: the data alone, no run."""
        reviews, preds = inputs.reviews, inputs.preds
        tsne, tsne_note = tsne_section(inputs.map, reviews, preds, tsne_cap, seed)
        attention, attention_note = attention_section(inputs.attention)
        text = inputs.text
        if isinstance(text, TextSource):
            text = text_parts(text, inputs.film, reviews, seed)
        return cls(
            run=inputs.run,
            generation=inputs.generation,
            film=inputs.film,
            film_en=str_or_none(reviews["film_en"].iloc[0]),
            is_demo=inputs.is_demo,
            model=inputs.model,
            evaluated_on=inputs.evaluated_on,
            reviews=len(reviews),
            mean_star=float(reviews["star"].mean()),
            summary=accuracy_summary(preds),
            exact_ci=exact_ci(preds, seed),
            models=model_summaries(same_evaluation(inputs.predictions, inputs.evaluated_on)),
            distribution=star_distribution(preds),
            confusion_counts=confusion(preds),
            confusion_normalised=confusion(preds, normalise=True),
            tsne=tsne,
            tsne_note=tsne_note,
            **text,
            attention_model=inputs.attention.model,
            attention=attention,
            attention_note=attention_note,
            trend=monthly_trend(reviews, preds),
            likes=with_predictions(likes_agreement(reviews), preds),
            league=inputs.league,
            star_estimate=star_estimate(inputs.estimates, inputs.film),
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
        parts["attention"] = [
            AttentionExample(**{**a, "top_words": [tuple(w) for w in a["top_words"]]})
            for a in parts["attention"]
        ]
        parts["exact_ci"] = tuple(parts["exact_ci"]) if parts["exact_ci"] else None
        return cls(**parts)

    def text_of(self) -> dict[str, Any]:
        """Its :data:`TEXT_PARTS`: what another model's report of the same reviews reuses."""
        return {part: getattr(self, part) for part in TEXT_PARTS}


def film_report(
    run: Run, film: str, model: str | None = None, tsne_cap: int = DEFAULT_CAP, seed: int = 0
) -> FilmReport:
    """The film's report from ``runs/<run>/analytics/`` when its inputs are unchanged, else
    built and stored there (atomically, with a fingerprinted manifest)."""
    film, model = run.resolve_film(film), run.resolve_model(model)
    films = run.films.set_index("film")["reviews"]
    cap = min(tsne_cap, int(films[film]))  # a film smaller than the cap: one map for every cap
    name = film_file_names(list(films.index))[film].removesuffix(".html")
    where = Path("films") / f"{name}.map-{cap}"
    fp = fingerprint(ANALYTICS_VERSION, run.source_stamp, film, model, cap, seed)
    words_fp = fingerprint(ANALYTICS_VERSION, run.source_stamp, film, cap, seed)

    def build() -> FilmReport:
        # the text parts of another model's report of the same reviews: switching model then
        # costs no TF-IDF, word clouds or aspects
        other = run.kept.analytics_like(where, words=words_fp)
        text = None if other is None else FilmReport.from_parts(other).text_of()
        return FilmReport.build(run, film, model, tsne_cap=cap, seed=seed, text=text)

    return run.kept.analytics(
        model, where, fp, build, FilmReport.to_parts, FilmReport.from_parts,
        film=film, model=model, tsne_cap=cap, words=words_fp,
    )  # fmt: skip


def corpus_map(
    run: Run, model: str | None = None, cap: int = DEFAULT_CAP, seed: int = 0
) -> tuple[pd.DataFrame | None, str]:
    """A t-SNE map of the whole corpus (a sample stratified by star) and what it shows, stored
    like :func:`film_report`; no points without features."""
    model = run.resolve_model(model)
    fp = fingerprint(ANALYTICS_VERSION, run.source_stamp, model, cap, seed)

    def build() -> tuple[pd.DataFrame | None, str]:
        return tsne_section(MapSource.read(run), run.reviews, run.evaluated(model)[0], cap, seed)

    return run.kept.analytics(
        model, Path(f"corpus-{cap}"), fp, build,
        lambda found: {"map": found[0], "note": found[1]},
        lambda parts: (parts["map"], parts["note"]),
        model=model, cap=cap,
    )  # fmt: skip

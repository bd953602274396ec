"""A run's film reports and corpus map as kept artifacts: read from ``runs/<run>/analytics/``
when their inputs are unchanged, else computed (:meth:`FilmReport.build`) and stored there,
atomically, with a fingerprinted manifest (:meth:`~pipeline.kept.Kept.analytics`), so the app
and the reports read them instead of recomputing t-SNE, TF-IDF and word clouds per visit."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.analytics.embedding import DEFAULT_CAP
from pipeline.artifacts import fingerprint
from pipeline.reports.film import ANALYTICS_VERSION, FilmReport
from pipeline.reports.inputs import MapSource
from pipeline.reports.names import film_file_names
from pipeline.reports.sections import tsne_section
from pipeline.run import Run


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

"""Rendering a film report and the run's index as self-contained HTML: jinja2 templates with
autoescaping (review text is data, never markup), charts and word clouds inlined."""

from __future__ import annotations

import base64
import logging
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from pipeline.analytics.aspects import aspect_labels, aspect_table
from pipeline.analytics.embedding import DEFAULT_CAP
from pipeline.analytics.stars import (
    accuracy_summary,
    model_summaries,
)
from pipeline.markup import highlight_html, words_html
from pipeline.reports import charts
from pipeline.reports.corpus import league_for, star_estimates
from pipeline.reports.film import (
    MIN_EVALUATED,
    SECTIONS,
    FilmReport,
)
from pipeline.reports.names import METRIC_GLOSSARY, format_value, human, model_name
from pipeline.reports.sections import same_evaluation, star_estimate
from pipeline.reports.store import corpus_map
from pipeline.run import Run

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"


@cache
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals |= {
        "SECTIONS": SECTIONS,
        "model_name": model_name,
        "highlight_html": lambda text, words: Markup(highlight_html(text, words)),
        "words_html": lambda text, words: Markup(words_html(text, words)),
    }
    env.filters |= {"cell": format_value}
    return env


def _table(df: pd.DataFrame, links: dict[str, str] | None = None) -> dict[str, Any]:
    """A table for the templates: human headers and formatted cells (``-`` for missing);
    ``links`` maps a first-column value to the page it links to."""
    table = human(df)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    rows = []
    for raw, shown in zip(df.itertuples(index=False), table.itertuples(index=False), strict=True):
        cells = [format_value(v, c) for v, c in zip(shown, table.columns, strict=True)]
        rows.append({"cells": cells, "href": (links or {}).get(raw[0])})
    return {"headers": list(table.columns), "numeric": numeric, "rows": rows}


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _chart(chart: Any) -> Markup:
    """A chart's spec for the page's inline script (escaped for a <script> element)."""
    return Markup(charts.spec_json(chart))


def _models_frame(models: pd.DataFrame) -> pd.DataFrame:
    return models[["model", "n", "exact", "off_by_one", "mae", "mean_pred"]]


def render_film(report: FilmReport) -> str:
    """The film's page as one self-contained HTML document."""
    has_preds = report.summary["n"] > 0
    figures: dict[str, Markup] = {}
    if has_preds:
        figures["stars"] = _chart(
            charts.true_vs_predicted(charts.distribution_long(report.distribution))
        )
        figures["confusion"] = _chart(
            charts.confusion_heatmap(
                report.confusion_normalised, True, counts=report.confusion_counts
            )
        )
    if report.tsne is not None:
        figures["tsne"] = _chart(charts.scatter_map(report.tsne))
    if report.trend is not None:
        figures["trend"] = _chart(charts.trend(report.trend, report.model))
    if report.league["mean_true"].notna().any():
        figures["league"] = _chart(charts.film_league(report.league, report.film))
    if len(report.aspects):
        figures["aspects"] = _chart(charts.aspect_bars(report.aspects))
    likes = report.likes
    top_liked = None
    if likes is not None:
        top_liked = _table(likes["top_liked"][["like", "star", "predicted", "comment"]])
    words = report.top_words.head(30)
    return (
        _environment()
        .get_template("film.html.j2")
        .render(
            r=report,
            title=_film_title(report),
            figures=figures,
            vega=Markup(charts.vega_javascript()) if figures else None,
            models=_table(_models_frame(report.models)) if len(report.models) else None,
            words=_table(
                words.assign(rank=range(1, len(words) + 1))[["rank", "word", "count", "score"]]
            ),
            star_words=_table(report.star_table.reset_index()),
            aspects=_table(aspect_table(report.aspects)) if len(report.aspects) else None,
            aspect_names=aspect_labels(report.aspects),
            clause_model=report.clause_model,
            clouds={k: _data_uri(v) for k, v in report.clouds.items()},
            top_liked=top_liked,
            glossary=METRIC_GLOSSARY,
            min_evaluated=MIN_EVALUATED,
            min_month=charts.MIN_MONTH_REVIEWS,
        )
    )


def _film_title(report: FilmReport) -> str:
    return f"{report.film} ({report.film_en})" if report.film_en else report.film


def render_index(
    run: Run, model: str | None, film_pages: dict[str, str], tsne_cap: int = DEFAULT_CAP,
    seed: int = 0,
) -> str:  # fmt: skip
    """The run's index: headline numbers, every model, every film (linked where its page
    exists), the league and the corpus map."""
    preds, evaluated_on = run.evaluated(model)
    overall = accuracy_summary(preds)
    league = league_for(run, model)
    per_film = {f: accuracy_summary(g) for f, g in preds.groupby("film")}
    found = star_estimates(run, model)
    estimates = {f: star_estimate(found, f) or {} for f in run.films["film"]}
    columns = ["film", "mean_star", "evaluated", "mean_true", "mean_pred", "error"]
    films = run.films.merge(league[columns], on="film")
    table = pd.DataFrame(
        {
            "film": films["film"],
            "English name": films["film_en"].where(films["film_en"].notna(), None),
            "reviews": films["reviews"],
            "mean_star": films["mean_star"],
            "evaluated": films["evaluated"],
            "mean_true": films["mean_true"],
            "mean_pred": films["mean_pred"],
            "error": films["error"],
            "exact": [per_film.get(f, {}).get("exact", np.nan) for f in films["film"]],
            "mae": [per_film.get(f, {}).get("mae", np.nan) for f in films["film"]],
            "estimated_mean": [estimates[f].get("estimated_mean", np.nan) for f in films["film"]],
            "estimate_error": [estimates[f].get("abs_error", np.nan) for f in films["film"]],
        }
    )
    points, map_note = corpus_map(run, model, tsne_cap, seed)
    figures = {}
    if league["mean_true"].notna().any():
        figures["league"] = _chart(charts.film_league(league))
    if points is not None:
        figures["map"] = _chart(charts.scatter_map(points, by_film=True))
    models = model_summaries(same_evaluation(run.predictions, evaluated_on))
    return (
        _environment()
        .get_template("index.html.j2")
        .render(
            title=f"Run {run.name}",
            run=run,
            model=model,
            is_demo=run.is_demo,
            evaluated_on=evaluated_on,
            overall=overall,
            n_films=len(run.films),
            n_reviews=len(run.reviews),
            mean_star=float(run.reviews["star"].mean()),
            models=_table(_models_frame(models)) if len(models) else None,
            films=_table(table, links={f: quote(p) for f, p in film_pages.items()}),
            figures=figures,
            map_note=map_note,
            vega=Markup(charts.vega_javascript()) if figures else None,
            glossary=METRIC_GLOSSARY,
        )
    )


# Names Windows reserves for devices (a report folder copied there must still open).

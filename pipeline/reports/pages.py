"""Self-contained HTML reports, one page per film plus an index, from a run's artifacts.

:meth:`FilmReport.build` gathers a film's numbers with the pure functions of
:mod:`pipeline.analytics`; :func:`render_film` and :func:`render_index` draw them (matplotlib
figures embedded as base64 PNG, inline CSS, no external URL, script or font: the file opens
anywhere, offline). Every piece of review text is escaped. Pages are written atomically to
``reports/<run>/``.
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pipeline.analytics import RunData, load_run
from pipeline.analytics.attention import attention_examples, highlight_html, top_attention_words
from pipeline.analytics.embedding import DEFAULT_CAP, tsne_points
from pipeline.analytics.league import league_table
from pipeline.analytics.stars import (
    STARS,
    accuracy_summary,
    confusion,
    model_summaries,
    star_distribution,
)
from pipeline.analytics.time import likes_agreement, monthly_trend
from pipeline.analytics.words import (
    star_top_words,
    star_words_table,
    top_words_by_film,
    word_cloud,
)
from pipeline.artifacts import write_text
from pipeline.config import Settings
from pipeline.fonts import cjk_font_path
from pipeline.predict.scorer import word_attention
from pipeline.reports import plots

log = logging.getLogger(__name__)

CLOUD_WORDS = 100
SECTIONS = {
    "numbers": "Key numbers",
    "stars": "Star distribution",
    "confusion": "Confusion matrix",
    "tsne": "Map of the reviews (t-SNE)",
    "words": "Words that set the film apart",
    "star-words": "Top words per star",
    "clouds": "Word clouds",
    "attention": "What the attention head looked at",
    "trend": "Stars over time",
    "likes": "Likes",
    "league": "Film league",
}


@dataclass
class AttentionExample:
    """One review with its attention highlight (``html`` is already escaped markup)."""

    kind: str  # "correct" or "mistake"
    star: int
    pred_star: int
    confidence: float
    html: str
    top_words: list[tuple[str, float]]


@dataclass
class FilmReport:
    """Everything one film's page shows, as data."""

    run: str
    film: str
    film_en: str | None
    is_demo: bool
    model: str | None
    evaluated_on: str  # e.g. "random/test": the evaluation and split the predictions come from
    reviews: int
    mean_star: float
    summary: dict[str, Any]  # accuracy_summary of the chosen model on the evaluated reviews
    models: pd.DataFrame  # model_summaries of every model on the film
    distribution: pd.DataFrame
    confusion_counts: pd.DataFrame
    confusion_normalised: pd.DataFrame
    tsne: pd.DataFrame | None
    tsne_note: str
    top_words: pd.DataFrame
    star_words: dict[int, pd.DataFrame]
    attention_model: str | None
    attention: list[AttentionExample]
    attention_note: str  # why there are no examples
    trend: pd.DataFrame | None
    likes: dict[str, Any] | None
    league: pd.DataFrame

    @classmethod
    def build(
        cls,
        run: RunData,
        film: str,
        model: str | None = None,
        tsne_cap: int = DEFAULT_CAP,
        seed: int = 0,
    ) -> FilmReport:
        """Compute a film's report (``film``: Chinese or English name; ``model``: default the
        best on test)."""
        film = run.resolve_film(film)
        model = model or run.best_model()
        if model is not None and model not in run.models:
            raise ValueError(f"run {run.name} has no predictions of model {model!r}: {run.models}")
        reviews = run.reviews[run.reviews["film"] == film]
        preds, evaluated_on = _evaluated(run, model, film)
        all_models = _same_evaluation(run.predictions, evaluated_on)
        all_models = all_models[all_models["film"] == film]
        tsne, tsne_note = _tsne(run, reviews, preds, tsne_cap, seed)
        attention_model, attention, attention_note = _attention(run, film, model)
        return cls(
            run=run.name,
            film=film,
            film_en=_str_or_none(reviews["film_en"].iloc[0]),
            is_demo=run.is_demo,
            model=model,
            evaluated_on=evaluated_on,
            reviews=len(reviews),
            mean_star=float(reviews["star"].mean()),
            summary=accuracy_summary(preds),
            models=model_summaries(all_models),
            distribution=star_distribution(preds),
            confusion_counts=confusion(preds),
            confusion_normalised=confusion(preds, normalise=True),
            tsne=tsne,
            tsne_note=tsne_note,
            top_words=_corpus_top_words(run)[film],
            star_words=star_top_words(reviews, run.stopwords),
            attention_model=attention_model,
            attention=attention,
            attention_note=attention_note,
            trend=monthly_trend(reviews, preds),
            likes=_with_predictions(likes_agreement(reviews), preds),
            league=_league(run, model),
        )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _evaluated(run: RunData, model: str | None, film: str | None) -> tuple[pd.DataFrame, str]:
    if model is None:
        empty = run.predictions.iloc[:0].assign(text=pd.Series(dtype=str))
        return empty, "none"
    return run.evaluated(model, film)


def _with_predictions(likes: dict[str, Any] | None, preds: pd.DataFrame) -> dict[str, Any] | None:
    """Add the model's star to the top-liked reviews it predicted (<NA> for the others)."""
    if likes is None:
        return None
    by_id = preds.set_index("review_id")["pred_star"]
    top = likes["top_liked"]
    return likes | {"top_liked": top.assign(predicted=top["review_id"].map(by_id).astype("Int8"))}


def _same_evaluation(preds: pd.DataFrame, evaluated_on: str) -> pd.DataFrame:
    """Rows of every model from the evaluation and split named ``evaluation/split``."""
    evaluation, _, split = evaluated_on.partition("/")
    return preds[(preds["evaluation"] == evaluation) & (preds["split"] == split)]


def _corpus_top_words(run: RunData) -> dict[object, pd.DataFrame]:
    """Every film's top words against the others, computed once per run."""
    return run.memo(
        "film_top_words", lambda: top_words_by_film(run.reviews, run.stopwords, CLOUD_WORDS)
    )


def _league(run: RunData, model: str | None) -> pd.DataFrame:
    return run.memo(
        ("league", model), lambda: league_table(run.reviews, _evaluated(run, model, None)[0])
    )


def _tsne(
    run: RunData, reviews: pd.DataFrame, preds: pd.DataFrame, cap: int, seed: int
) -> tuple[pd.DataFrame | None, str]:
    features = run.pooled_features
    if features is None:
        return None, f"no features in this run: run `douban features --run {run.name}`"
    if len(reviews) < 5:
        return None, f"only {len(reviews)} reviews: too few for a map"
    points = tsne_points(features, reviews, preds, cap=cap, seed=seed)
    return points, f"{len(points):,} of {len(reviews):,} reviews, sampled by star"


def _attention_model(run: RunData, model: str | None) -> str | None:
    """The chosen model when it has attention, else head_cls, else the first that has it."""
    with_attention = run.models_with_attention
    for name in (model, "head_cls", *sorted(with_attention)):
        if name in with_attention:
            return name
    return None


def _attention(
    run: RunData, film: str, model: str | None
) -> tuple[str | None, list[AttentionExample], str]:
    """The attention model, the film's highlighted examples, and why there are none."""
    name = _attention_model(run, model)
    if name is None:
        return None, [], "no attention head in this run: train head_cls to see attention"
    store = run.feature_store
    if store is None:
        return name, [], f"no feature store (token offsets): run `douban features --run {run.name}`"
    preds, _ = run.evaluated(name, film)
    preds = preds.merge(run.prediction_lists(name, preds["review_id"]), on="review_id")
    examples = []
    for row in attention_examples(preds).itertuples():
        offsets = store.offsets(int(row.review_id))
        spans = run.segmenter.spans(row.text)
        words = word_attention(row.text, offsets, np.asarray(row.attention), spans)
        examples.append(
            AttentionExample(
                kind=row.kind,
                star=int(row.star),
                pred_star=int(row.pred_star),
                confidence=float(row.confidence),
                html=highlight_html(row.text, words),
                top_words=top_attention_words(words),
            )
        )
    return name, examples, "" if examples else "no evaluated reviews with attention for this film"


# --------------------------------------------------------------------------------- rendering

CSS = """
body{font-family:'Noto Sans CJK SC','PingFang SC','Microsoft YaHei','Noto Color Emoji',sans-serif;
 margin:0;color:#222;background:#fafafa;line-height:1.5}
main{max-width:1100px;margin:0 auto;padding:1.5rem}
h1{margin:.2rem 0}h2{border-bottom:2px solid #4c72b0;padding-bottom:.2rem;margin-top:2.2rem}
.sub{color:#666}.caption{color:#555;font-style:italic;margin:.2rem 0 .8rem}
.demo{background:#fff3cd;border:1px solid #e0b000;padding:.6rem 1rem;border-radius:6px;
 font-weight:bold}
.cards{display:flex;flex-wrap:wrap;gap:.8rem}
.card{background:white;border:1px solid #ddd;border-radius:8px;padding:.6rem 1rem;min-width:120px}
.card .v{font-size:1.5rem;font-weight:bold}.card .k{color:#666;font-size:.85rem}
table{border-collapse:collapse;background:white;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}
th{background:#eef2f8}td.t,th.t{text-align:left}
img{max-width:100%;height:auto;background:white}
nav a{margin-right:.8rem}.note{color:#888}
.review{background:white;border:1px solid #ddd;border-left:5px solid #4c72b0;border-radius:4px;
 padding:.5rem .8rem;margin:.6rem 0}.review.mistake{border-left-color:#d7301f}
.att{border-radius:3px}.meta{color:#666;font-size:.85rem}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="zh-CN"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def _section(key: str, caption: str, content: str) -> str:
    return (
        f'<section id="{key}"><h2>{html.escape(SECTIONS[key])}</h2>'
        f'<p class="caption">{html.escape(caption)}</p>{content}</section>'
    )


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _figure(fig: Any, alt: str) -> str:
    return _img(plots.figure_to_data_uri(fig), alt)


def _left(is_text: bool) -> str:
    return ' class="t"' if is_text else ""


def _table(
    df: pd.DataFrame, formats: dict[str, str] | None = None, raw: Collection[str] = ()
) -> str:
    """An HTML table of ``df``; cells are escaped except columns in ``raw`` (trusted markup)."""
    formats = formats or {}
    text_columns = {c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])}
    head = "".join(f"<th{_left(c in text_columns)}>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for column, value in zip(df.columns, row, strict=True):
            if column in raw:
                text = str(value)
            elif pd.api.types.is_scalar(value) and pd.isna(value):
                text = "–"
            else:
                text = html.escape(format(value, formats.get(column, "")))
            cells.append(f"<td{_left(column in text_columns)}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _banner(is_demo: bool) -> str:
    if not is_demo:
        return ""
    return (
        '<p class="demo">Demo data: these reviews were generated by pipeline/demo.py, not written '
        "by Douban users. Numbers show how the pipeline works, not what people think of films.</p>"
    )


def _cards(items: list[tuple[str, str]]) -> str:
    cards = "".join(
        f'<div class="card"><div class="v">{html.escape(v)}</div>'
        f'<div class="k">{html.escape(k)}</div></div>'
        for k, v in items
    )
    return f'<div class="cards">{cards}</div>'


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _pct(x: float) -> str:
    return "–" if pd.isna(x) else f"{x:.1%}"


def _num(x: float, digits: int = 2) -> str:
    return "–" if pd.isna(x) else f"{x:.{digits}f}"


def _film_title(report: FilmReport) -> str:
    return f"{report.film} ({report.film_en})" if report.film_en else report.film


def render_film(report: FilmReport) -> str:
    """The film's page as one self-contained HTML document."""
    s = report.summary
    n_eval = s["n"]
    where = f"{_count(n_eval, 'review')} of {report.evaluated_on}" if n_eval else "no reviews"
    nav = "".join(f'<a href="#{k}">{html.escape(v)}</a>' for k, v in SECTIONS.items())
    parts = [
        f"<h1>{html.escape(_film_title(report))}</h1>",
        f'<p class="sub">run <b>{html.escape(report.run)}</b> · model '
        f"<b>{html.escape(report.model or 'none')}</b> · "
        f'<a href="index.html">all films</a></p>',
        _banner(report.is_demo),
        f"<nav>{nav}</nav>",
        _section(
            "numbers",
            f"All reviews of the film, and the model's predictions on {where} "
            "(never seen in training).",
            _cards(
                [
                    ("reviews", f"{report.reviews:,}"),
                    ("mean star", _num(report.mean_star)),
                    ("mean predicted star", _num(s["mean_pred"])),
                    ("exact accuracy", _pct(s["exact"])),
                    ("off-by-one accuracy", _pct(s["off_by_one"])),
                    ("MAE (stars)", _num(s["mae"])),
                ]
            )
            + _models_table(report.models),
        ),
    ]
    parts += _film_sections(report, where)
    return _page(f"{_film_title(report)} · {report.run}", "".join(parts))


def _film_sections(report: FilmReport, where: str) -> list[str]:
    has_preds = report.summary["n"] > 0
    font = cjk_font_path()
    out = [
        _section(
            "stars",
            f"Bars are the share of reviews with each star, true vs predicted, on {where}; "
            "the number on a bar is its count.",
            _figure(plots.star_distribution_figure(report.distribution), "star distribution")
            if has_preds
            else _note("no predictions for this film"),
        ),
        _section(
            "confusion",
            "Row = true star, column = predicted star; a cell is the share of that row "
            "(and its count). A strong diagonal means correct predictions.",
            _figure(
                plots.confusion_figure(report.confusion_normalised, report.confusion_counts),
                "confusion matrix",
            )
            if has_preds
            else _note("no predictions for this film"),
        ),
        _section(
            "tsne",
            "Each dot is a review placed by its encoder features (t-SNE): nearby dots read "
            "alike to the encoder; colour is the true star.",
            (
                _figure(plots.tsne_figure(report.tsne), "t-SNE map")
                if report.tsne is not None
                else ""
            )
            + _note(report.tsne_note),
        ),
        _section(
            "words",
            "Words this film's reviews use more than the other films' (TF-IDF, each film one "
            "document; stopwords removed), with how often they occur.",
            _words_table(report.top_words.head(30)),
        ),
        _section(
            "star-words",
            "For each star, the words its reviews of this film use distinctly more than the other "
            "stars' reviews (weighted log-odds, Monroe et al. 2008), with their counts.",
            _table(star_words_table(report.star_words).reset_index()),
        ),
        _section(
            "clouds",
            "Word size is how distinctive a word is: the film against the corpus (TF-IDF), then "
            "each star against the others (log-odds).",
            _clouds(report, font),
        ),
        _section(
            "attention",
            f"Reviews highlighted by the attention of {report.attention_model or 'a head model'}: "
            "the darker the orange, the more the head looked at the word. Per true star, the most "
            "confident correct prediction and the worst mistake.",
            _attention_html(report),
        ),
        _section(
            "trend",
            "Mean star per month over all the film's dated reviews (blue) and the model's mean "
            "prediction on its evaluated reviews (orange), for months with at least 5 of them; "
            "grey bars count reviews.",
            _figure(plots.trend_figure(report.trend), "monthly trend")
            if report.trend is not None
            else _note("no dates in this data"),
        ),
        _section(
            "likes",
            "Do the most-liked reviews agree with the average reviewer? Compare the plain mean "
            "star with the like-weighted one and the top-10 liked reviews' mean (predicted: "
            "the model's star for reviews it was evaluated on).",
            _likes_html(report.likes),
        ),
        _section(
            "league",
            "Every film's mean true star (dot) and mean predicted star (cross) on its evaluated "
            "reviews (how many in brackets); this film's name is red. Far apart means the model "
            "misjudges the film.",
            _figure(plots.league_figure(report.league, report.film), "film league")
            if report.league["mean_true"].notna().any()
            else _note("no predictions yet"),
        ),
    ]
    return out


def _models_table(models: pd.DataFrame) -> str:
    """Every model's numbers on the same reviews, best exact accuracy first."""
    if models.empty:
        return _note("no model has been evaluated here yet: run `douban train`")
    table = models[["model", "n", "exact", "off_by_one", "mae", "mean_pred"]].rename(
        columns={"n": "reviews", "off_by_one": "off-by-one", "mae": "MAE",
                 "mean_pred": "mean predicted"}
    )  # fmt: skip
    formats = {"exact": ".1%", "off-by-one": ".1%", "MAE": ".2f", "mean predicted": ".2f"}
    return _table(table, formats)


def _words_table(top: pd.DataFrame) -> str:
    if top.empty:
        return _note("no words left after removing stopwords")
    table = top.assign(rank=range(1, len(top) + 1))[["rank", "word", "count", "score"]]
    return _table(table, {"score": ".3f"})


def _cloud(words: pd.DataFrame, font: Path, width: int, height: int) -> np.ndarray | None:
    """A word cloud of a ``word, score`` table; None when no word can be drawn."""
    try:
        return word_cloud(
            dict(zip(words["word"], words["score"], strict=True)), font, width, height
        )
    except ValueError:
        return None


def _clouds(report: FilmReport, font: Path) -> str:
    parts = []
    film_cloud = _cloud(report.top_words, font, 900, 380)
    if film_cloud is not None:
        parts.append(_img(plots.image_to_data_uri(film_cloud), f"word cloud of {report.film}"))
    per_star = {f"{s}★": _cloud(report.star_words[s], font, 400, 260) for s in STARS}
    per_star = {k: v for k, v in per_star.items() if v is not None}
    if per_star:
        parts.append(_figure(plots.word_clouds_figure(per_star), "word clouds per star"))
    return "".join(parts) or _note("no words to draw")


def _attention_html(report: FilmReport) -> str:
    if not report.attention:
        return _note(report.attention_note)
    blocks = []
    for ex in report.attention:
        words = ", ".join(f"{html.escape(w)} {a:.2f}" for w, a in ex.top_words)
        label = "correct" if ex.kind == "correct" else "mistake"
        blocks.append(
            f'<div class="review {ex.kind}"><div class="meta">true {ex.star}★ · predicted '
            f"{ex.pred_star}★ · confidence {ex.confidence:.2f} · {label} · top words: {words}"
            f"</div><div>{ex.html}</div></div>"
        )
    return "".join(blocks)


def _likes_html(likes: dict[str, Any] | None) -> str:
    if likes is None:
        return _note("no likes in this data")
    cards = _cards(
        [
            ("mean star", _num(likes["mean_star"])),
            ("like-weighted mean star", _num(likes["like_weighted_mean_star"])),
            ("top-10 liked mean star", _num(likes["top_liked_mean_star"])),
            ("reviews with likes", f"{likes['with_likes']:,}"),
            ("likes", f"{likes['total_likes']:,}"),
        ]
    )
    top = likes["top_liked"][["like", "star", "predicted", "comment"]]
    top = top.astype({"like": int, "star": int})
    return cards + _table(top)


def render_index(run: RunData, model: str | None, film_pages: dict[str, str]) -> str:
    """The run's index: headline numbers, every model, every film (linked where its page
    exists), and the league table."""
    preds, evaluated_on = _evaluated(run, model, None)
    overall = accuracy_summary(preds)
    league = _league(run, model)
    per_film = {f: accuracy_summary(g) for f, g in preds.groupby("film")}
    columns = ["film", "mean_star", "evaluated", "mean_true", "mean_pred", "error"]
    films = run.films.merge(league[columns], on="film")
    links = [
        f'<a href="{quote(film_pages[f])}">{html.escape(f)}</a>'
        if f in film_pages
        else html.escape(f)
        for f in films["film"]
    ]
    table = pd.DataFrame(
        {
            "film": links,
            "English name": films["film_en"].fillna("").astype(str),
            "reviews": films["reviews"],
            "mean star": films["mean_star"],
            "evaluated": films["evaluated"],
            "mean true": films["mean_true"],
            "mean predicted": films["mean_pred"],
            "error": films["error"],
            "exact": [per_film.get(f, {}).get("exact", np.nan) for f in films["film"]],
            "MAE": [per_film.get(f, {}).get("mae", np.nan) for f in films["film"]],
        }
    )
    where = f"{_count(overall['n'], 'review')} of {evaluated_on}"
    models = model_summaries(_same_evaluation(run.predictions, evaluated_on))
    body = [
        f"<h1>Run {html.escape(run.name)}</h1>",
        f'<p class="sub">{len(run.films)} films · {len(run.reviews):,} reviews · model '
        f"<b>{html.escape(model or 'none')}</b> (best exact accuracy on test unless chosen)</p>",
        _banner(run.is_demo),
        f'<section id="numbers"><h2>Key numbers</h2><p class="caption">'
        f"The model's predictions on {html.escape(where)} (never seen in training).</p>",
        _cards(
            [
                ("films", str(len(run.films))),
                ("reviews", f"{len(run.reviews):,}"),
                ("mean star", _num(float(run.reviews["star"].mean()))),
                ("mean predicted star", _num(overall["mean_pred"])),
                ("exact accuracy", _pct(overall["exact"])),
                ("off-by-one accuracy", _pct(overall["off_by_one"])),
                ("MAE (stars)", _num(overall["mae"])),
            ]
        ),
        _models_table(models),
        "</section>",
        '<section id="films"><h2>Films</h2><p class="caption">Mean star over all the film\'s '
        "reviews; the rest over its evaluated reviews: their mean true and predicted star, the "
        "error (predicted − true) and accuracy. Click a film for its report.</p>",
        _table(
            table,
            {
                "mean star": ".2f",
                "mean true": ".2f",
                "mean predicted": ".2f",
                "error": "+.2f",
                "exact": ".1%",
                "MAE": ".2f",
            },
            raw={"film"},
        ),
        "</section>",
        _section(
            "league",
            "Every film's mean true star (dot) and mean predicted star (cross) on its evaluated "
            "reviews (how many in brackets), best-rated at the top.",
            _figure(plots.league_figure(league), "film league")
            if league["mean_true"].notna().any()
            else _note("no predictions yet"),
        ),
    ]
    return _page(f"Run {run.name}", "".join(body))


def film_file_names(films: list[str]) -> dict[str, str]:
    """A safe, unique ``.html`` file name per film (letters, digits and CJK kept)."""
    safe = {f: re.sub(r"[^\w\-]+", "_", f).strip("_") or "film" for f in films}
    counts = pd.Series(list(safe.values())).value_counts()
    return {
        f: (f"{name}-{hashlib.sha1(f.encode()).hexdigest()[:6]}" if counts[name] > 1 else name)
        + ".html"
        for f, name in safe.items()
    }


def write_reports(
    settings_or_run_dir: Settings | Path | str | RunData,
    films: list[str] | None = None,
    all_films: bool = False,
    model: str | None = None,
    reports_dir: Path | None = None,
    tsne_cap: int = DEFAULT_CAP,
    progress: bool = True,
) -> list[Path]:
    """Write ``<reports_dir>/<run>/<film>.html`` for the chosen films (CN or EN names) or all of
    them, and ``index.html``. The run is given by its settings, its directory, or already loaded
    (a :class:`RunData` keeps what it read for the next call). ``reports_dir`` defaults to
    ``settings.reports_dir``. Returns the paths written, index last."""
    if not films and not all_films:
        raise ValueError("name films to report on (--film) or ask for --all")
    settings = settings_or_run_dir if isinstance(settings_or_run_dir, Settings) else Settings()
    if isinstance(settings_or_run_dir, RunData):
        run = settings_or_run_dir
    elif isinstance(settings_or_run_dir, Settings):
        run = load_run(settings_or_run_dir.paths.root)
    else:
        run = load_run(settings_or_run_dir)
    base = reports_dir or settings.reports_dir
    seed = settings.seed
    model = model or run.best_model()
    wanted = list(run.films["film"]) if all_films else [run.resolve_film(f) for f in films or []]
    names = film_file_names(list(run.films["film"]))
    out_dir = Path(base) / run.name
    written = []
    for film in tqdm(wanted, desc=f"reports {run.name}", unit="film", disable=not progress):
        report = FilmReport.build(run, film, model, tsne_cap=tsne_cap, seed=seed)
        path = out_dir / names[film]
        write_text(path, render_film(report))
        written.append(path)
    pages = {f: n for f, n in names.items() if (out_dir / n).exists()}
    index = out_dir / "index.html"
    write_text(index, render_index(run, model, pages))
    written.append(index)
    log.info("wrote %d report pages to %s", len(written), out_dir)
    return written

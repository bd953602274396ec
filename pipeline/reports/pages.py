"""Self-contained HTML reports, one page per film plus an index, from a run's artifacts.

:meth:`FilmReport.build` gathers a film's numbers with the pure functions of
:mod:`pipeline.analytics`; :func:`film_report` keeps them as a fingerprinted artifact in
``runs/<run>/analytics/<model>/`` so the app and the reports read them instead of recomputing
t-SNE, TF-IDF and word clouds per visit. Pages are Jinja2 templates (autoescaped: review text is
data, never markup) with the charts of :mod:`pipeline.reports.charts` as inline Vega-Lite and the
Vega JavaScript inlined: no external URL, the file opens anywhere, offline. Pages are written
atomically to ``reports/<run>/``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import logging
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from PIL import Image
from tqdm.auto import tqdm

from pipeline.analytics.attention import attention_examples, top_attention_words
from pipeline.analytics.embedding import DEFAULT_CAP, tsne_points
from pipeline.analytics.league import league_table
from pipeline.analytics.quantify import run_film_estimates
from pipeline.analytics.stars import (
    STARS,
    accuracy_summary,
    confusion,
    model_summaries,
    star_distribution,
)
from pipeline.analytics.time import likes_agreement, monthly_trend
from pipeline.analytics.words import star_top_words, star_words_table, top_words_by_film, word_cloud
from pipeline.artifacts import (
    atomic_dir,
    fingerprint,
    is_current,
    read_json,
    write_json,
    write_manifest,
    write_text,
)
from pipeline.config import Settings
from pipeline.errors import InputError, ModelNotFoundError
from pipeline.fonts import cjk_font_path
from pipeline.markup import highlight_html
from pipeline.modeling.metrics import bootstrap_ci
from pipeline.reports import charts
from pipeline.reports.names import METRIC_GLOSSARY, format_value, human, model_name
from pipeline.run import Run

log = logging.getLogger(__name__)

ANALYTICS_VERSION = 3  # bump when what a FilmReport holds changes: cached artifacts are rebuilt
CLOUD_WORDS = 100
MIN_EVALUATED = 30  # fewer evaluated reviews: the numbers carry a visible small-sample note
MIN_MAP_REVIEWS = 30  # fewer reviews: no t-SNE map (a map of 15 dots shows noise)
MIN_WORD_COUNT = 2  # a word said once is not "what the film's reviews say"
MIN_EM_REVIEWS = 30  # fewer: EM re-estimation chases noise; the mean probability (PCC) is steadier
SECTIONS = {
    "numbers": "Key numbers",
    "stars": "Star distribution",
    "estimate": "Star mix estimated from the text",
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
TEMPLATES = Path(__file__).parent / "templates"


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
    attention_model: str | None
    attention: list[AttentionExample]
    attention_note: str  # why there are no examples
    trend: pd.DataFrame | None
    likes: dict[str, Any] | None
    league: pd.DataFrame
    star_estimate: dict[str, Any] | None  # see _star_estimate

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
    ) -> FilmReport:
        """Compute a film's report (``film``: Chinese or English name; ``model``: default the
        run's default model, chosen on validation)."""
        film = run.resolve_film(film)
        model = _model(run, model)
        reviews = run.reviews[run.reviews["film"] == film]
        preds, evaluated_on = _evaluated(run, model, film)
        all_models = _same_evaluation(run.predictions, evaluated_on)
        all_models = all_models[all_models["film"] == film]
        tsne, tsne_note = _tsne(run, reviews, preds, tsne_cap, seed)
        attention_model, attention, attention_note = _attention(run, film, model)
        top_words = _corpus_top_words(run)[film]
        star_words = {
            s: t[t["count"] >= MIN_WORD_COUNT].reset_index(drop=True)
            for s, t in star_top_words(reviews, run.stopwords).items()
        }
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
            exact_ci=exact_ci(preds, seed),
            models=model_summaries(all_models),
            distribution=star_distribution(preds),
            confusion_counts=confusion(preds),
            confusion_normalised=confusion(preds, normalise=True),
            tsne=tsne,
            tsne_note=tsne_note,
            top_words=top_words,
            star_words=star_words,
            clouds=_clouds(top_words, star_words),
            attention_model=attention_model,
            attention=attention,
            attention_note=attention_note,
            trend=monthly_trend(reviews, preds),
            likes=_with_predictions(likes_agreement(reviews), preds),
            league=_league(run, model),
            star_estimate=_star_estimate(run, model, film),
        )

    # ------------------------------------------------------------------ artifact on disk

    _FRAMES = ("models", "distribution", "tsne", "top_words", "trend", "league")

    def save(self, folder: Path) -> None:
        """Write the report into ``folder``: frames as parquet, clouds as PNG, the rest JSON."""
        doc: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self._FRAMES:
                if value is not None:
                    value.to_parquet(folder / f"{f.name}.parquet")
                doc[f.name] = value is not None
            elif f.name in ("confusion_counts", "confusion_normalised"):
                doc[f.name] = value.to_numpy().tolist()
            elif f.name == "star_words":
                frames = [t.assign(star=s) for s, t in value.items()]
                pd.concat(frames, ignore_index=True).to_parquet(folder / "star_words.parquet")
            elif f.name == "clouds":
                doc["clouds"] = list(value)
                for i, png in enumerate(value.values()):
                    (folder / f"cloud-{i}.png").write_bytes(png)
            elif f.name == "attention":
                doc["attention"] = [dataclasses.asdict(a) for a in value]
            elif f.name == "likes" and value is not None:
                value["top_liked"].to_parquet(folder / "top_liked.parquet")
                doc["likes"] = {k: v for k, v in value.items() if k != "top_liked"}
            else:
                doc[f.name] = value
        write_json(folder / "report.json", doc)

    @classmethod
    def load(cls, folder: Path) -> FilmReport:
        """The report :meth:`save` wrote."""
        doc = read_json(folder / "report.json")
        for name in cls._FRAMES:
            doc[name] = pd.read_parquet(folder / f"{name}.parquet") if doc[name] else None
        for name in ("confusion_counts", "confusion_normalised"):
            frame = pd.DataFrame(doc[name], index=list(STARS), columns=list(STARS))
            frame.index.name, frame.columns.name = "true", "predicted"
            doc[name] = frame
        words = pd.read_parquet(folder / "star_words.parquet")
        doc["star_words"] = {
            s: words[words["star"] == s].drop(columns="star").reset_index(drop=True) for s in STARS
        }
        doc["clouds"] = {
            name: (folder / f"cloud-{i}.png").read_bytes() for i, name in enumerate(doc["clouds"])
        }
        doc["attention"] = [
            AttentionExample(**{**a, "top_words": [tuple(w) for w in a["top_words"]]})
            for a in doc["attention"]
        ]
        if doc["likes"] is not None:
            doc["likes"]["top_liked"] = pd.read_parquet(folder / "top_liked.parquet")
        doc["exact_ci"] = tuple(doc["exact_ci"]) if doc["exact_ci"] else None
        return cls(**doc)


def _model(run: Run, model: str | None) -> str | None:
    model = model or run.default_model
    if model is not None and model not in run.models:
        raise ModelNotFoundError(
            f"run {run.name} has no predictions of model {model!r}; it has: "
            f"{', '.join(run.models) or '-'}",
            hint="pick one with --model (`douban models` lists them)",
        )
    return model


def exact_ci(preds: pd.DataFrame, seed: int = 0) -> tuple[float, float] | None:
    """95% bootstrap interval of the exact accuracy (:func:`bootstrap_ci`, as the evaluations
    compute it); None without predictions."""
    if preds.empty:
        return None
    low, high = bootstrap_ci(preds["star"].to_numpy(int), preds["pred_star"].to_numpy(int),
                             seed=seed)["accuracy"]  # fmt: skip
    return float(low), float(high)


def _inputs(run: Run) -> list[Any]:
    """Identity (size, mtime) of the files a report is computed from."""
    files = (run.paths.reviews, run.paths.predictions, run.paths.features / "manifest.json")
    out: list[Any] = []
    for path in files:
        stat = path.stat() if path.exists() else None
        out.append(None if stat is None else [stat.st_size, stat.st_mtime_ns])
    return out


def analytics_dir(run: Run, model: str | None) -> Path:
    """Where a run's cached analytics for one model live."""
    return run.paths.root / "analytics" / (model or "no-model")


def film_report(
    run: Run, film: str, model: str | None = None, tsne_cap: int = DEFAULT_CAP, seed: int = 0
) -> FilmReport:
    """The film's report from ``runs/<run>/analytics/`` when its inputs are unchanged, else
    built and stored there (atomically, with a fingerprinted manifest)."""
    film = run.resolve_film(film)
    model = _model(run, model)
    films = run.films.set_index("film")["reviews"]
    cap = min(tsne_cap, int(films[film]))  # a film smaller than the cap: one map for every cap
    name = film_file_names(list(films.index))[film].removesuffix(".html")
    folder = analytics_dir(run, model) / "films" / f"{name}.map-{cap}"
    fp = fingerprint(ANALYTICS_VERSION, _inputs(run), film, model, cap, seed)
    if is_current(folder, fp):
        try:
            return FilmReport.load(folder)
        except (OSError, KeyError, ValueError, TypeError) as err:  # damaged: rebuild it
            log.warning("rebuilding the cached report in %s: %s", folder, err)
    report = FilmReport.build(run, film, model, tsne_cap=cap, seed=seed)
    try:
        with atomic_dir(folder) as tmp:
            report.save(tmp)
            write_manifest(tmp, "analytics", fp, film=film, model=model, tsne_cap=cap)
    except OSError as err:  # a read-only run (someone else's folder): computed, not kept
        log.warning("cannot keep the film's analytics in %s: %s", folder, err)
    return report


def corpus_map(
    run: Run, model: str | None = None, cap: int = DEFAULT_CAP, seed: int = 0
) -> tuple[pd.DataFrame | None, str]:
    """A t-SNE map of the whole corpus (a sample stratified by star) and what it shows, stored
    like :func:`film_report`; no points without features."""
    model = _model(run, model)
    folder = analytics_dir(run, model) / f"corpus-{cap}"
    fp = fingerprint(ANALYTICS_VERSION, _inputs(run), model, cap, seed)
    if is_current(folder, fp):
        doc = read_json(folder / "map.json")
        points = pd.read_parquet(folder / "map.parquet") if doc["has_map"] else None
        return points, doc["note"]
    preds, _ = _evaluated(run, model, None)
    points, note = _tsne(run, run.reviews, preds, cap, seed)
    try:
        with atomic_dir(folder) as tmp:
            if points is not None:
                points.to_parquet(tmp / "map.parquet")
            write_json(tmp / "map.json", {"has_map": points is not None, "note": note})
            write_manifest(tmp, "analytics", fp, model=model, cap=cap)
    except OSError as err:  # a read-only run: computed, not kept
        log.warning("cannot keep the corpus map in %s: %s", folder, err)
    return points, note


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _evaluated(run: Run, model: str | None, film: str | None) -> tuple[pd.DataFrame, str]:
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


def _star_estimates(run: Run, model: str | None) -> pd.DataFrame | None:
    """Every film's EM and PCC estimate of its star mix on the test split (memoised per run);
    None when the model gives no star probabilities."""
    if model is None:
        return None

    def compute() -> pd.DataFrame | None:
        try:
            return run_film_estimates(run, model, methods=("pcc", "em")).set_index("film")
        except InputError:
            return None

    return run.memo(("star_estimates", model), compute)


def _star_estimate(run: Run, model: str | None, film: str) -> dict[str, Any] | None:
    """The film's star mix estimated from the model's probabilities alone, beside the true mix
    of the same test reviews: what a crawl without stars would tell about the film. EM
    re-estimation of the priors, or PCC on fewer than ``MIN_EM_REVIEWS`` reviews."""
    table = _star_estimates(run, model)
    if table is None or film not in table.index:
        return None
    row = table.loc[film]
    method = "em" if row["n"] >= MIN_EM_REVIEWS else "pcc"
    return {
        "method": method,
        "n": int(row["n"]),
        "true": [float(x) for x in row["true"]],
        "estimated": [float(x) for x in row[method]],
        "true_mean": float(row["true_mean"]),
        "estimated_mean": float(row[f"{method}_mean"]),
        "abs_error": float(row[f"{method}_abs_error"]),
    }


def _corpus_top_words(run: Run) -> dict[object, pd.DataFrame]:
    """Every film's top words against the others (said at least twice), once per run."""

    def compute() -> dict[object, pd.DataFrame]:
        ranked = top_words_by_film(run.reviews, run.stopwords, CLOUD_WORDS)
        return {
            f: t[t["count"] >= MIN_WORD_COUNT].reset_index(drop=True) for f, t in ranked.items()
        }

    return run.memo("film_top_words", compute)


def _league(run: Run, model: str | None) -> pd.DataFrame:
    return run.memo(
        ("league", model), lambda: league_table(run.reviews, _evaluated(run, model, None)[0])
    )


def _tsne(
    run: Run, reviews: pd.DataFrame, preds: pd.DataFrame, cap: int, seed: int
) -> tuple[pd.DataFrame | None, str]:
    features = run.pooled_features
    if features is None:
        return None, f"no features in this run: run `douban features --run {run.name}`"
    if len(reviews) < MIN_MAP_REVIEWS:
        return None, (
            f"only {len(reviews)} reviews: too few for a map (it needs {MIN_MAP_REVIEWS})"
        )
    encoded = reviews[features.covers(reviews["review_id"].to_numpy())]
    if len(encoded) < len(reviews):  # an encode budget: the map shows the encoded sample
        if len(encoded) < MIN_MAP_REVIEWS:
            return None, (
                f"only {len(encoded)} of {len(reviews)} reviews were encoded (encode budget): "
                f"too few for a map"
            )
        points = tsne_points(features, encoded, preds, cap=cap, seed=seed)
        return points, f"{len(points):,} of {len(reviews):,} reviews (the encoded sample)"
    points = tsne_points(features, reviews, preds, cap=cap, seed=seed)
    if len(points) < len(reviews):
        return points, f"{len(points):,} of {len(reviews):,} reviews, sampled by star"
    return points, f"all {len(points):,} reviews"


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _clouds(top_words: pd.DataFrame, star_words: dict[int, pd.DataFrame]) -> dict[str, bytes]:
    """PNG word clouds: the film against the corpus (TF-IDF), then each star (log-odds); a
    table without a drawable word gets none."""
    font = cjk_font_path()
    tables = {"film": (top_words, 900, 380)}
    tables |= {f"{s}★": (star_words[s], 400, 260) for s in STARS}
    out = {}
    for name, (words, width, height) in tables.items():
        weights = dict(zip(words["word"], words["score"], strict=True))
        try:
            out[name] = _png(word_cloud(weights, font, width, height))
        except ValueError:
            continue
    return out


def _attention(
    run: Run, film: str, model: str | None
) -> tuple[str | None, list[AttentionExample], str]:
    """The attention model, the film's highlighted examples, and why there are none. (The
    scorer's word mapping imports torch: only a build that draws attention pays for it.)"""
    name = run.attention_model(model)
    if name is None:
        return None, [], "no attention head in this run: train head_cls to see attention"
    store = run.feature_store
    if store is None:
        return name, [], f"no feature store (token offsets): run `douban features --run {run.name}`"
    from pipeline.predict.records import word_attention

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


@cache
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals |= {"SECTIONS": SECTIONS, "model_name": model_name}
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
    preds, evaluated_on = _evaluated(run, model, None)
    overall = accuracy_summary(preds)
    league = _league(run, model)
    per_film = {f: accuracy_summary(g) for f, g in preds.groupby("film")}
    estimates = {f: _star_estimate(run, model, f) or {} for f in run.films["film"]}
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
    models = model_summaries(_same_evaluation(run.predictions, evaluated_on))
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
RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
            *(f"lpt{i}" for i in range(10))}  # fmt: skip
MAX_NAME = 80  # characters: well inside every file system's 255-byte limit, even in UTF-8 CJK


def film_file_names(films: list[str]) -> dict[str, str]:
    """A safe, unique ``.html`` file name per film: letters, digits and CJK kept, anything else
    (separators, dots, control characters) replaced, never empty, hidden or reserved, so a page
    always lands inside ``reports/<run>/``."""
    safe = {}
    for film in films:
        name = unicodedata.normalize("NFKC", str(film))
        name = re.sub(r"[^\w\-]+", "_", name).strip("_-")[:MAX_NAME] or "film"
        if name.split(".")[0].casefold() in RESERVED:
            name = f"{name}_film"
        safe[film] = name
    counts = pd.Series(list(safe.values()), dtype=object).value_counts()
    return {
        f: (f"{name}-{hashlib.sha1(f.encode()).hexdigest()[:6]}" if counts[name] > 1 else name)
        + ".html"
        for f, name in safe.items()
    }


def _open_run(source: Settings | Path | str | Run) -> Run:
    """A run object for a Settings, a run directory, or an already opened run."""
    if isinstance(source, Settings):
        return Run.open(source.run_name, runs_dir=source.runs_dir)
    if isinstance(source, str | Path):
        path = Path(source)
        return Run.open(path.name, runs_dir=path.parent)
    return source


def write_reports(
    settings_or_run_dir: Settings | Path | str | Run,
    films: list[str] | None = None,
    all_films: bool = False,
    model: str | None = None,
    reports_dir: Path | None = None,
    tsne_cap: int = DEFAULT_CAP,
    progress: bool = True,
) -> list[Path]:
    """Write ``<reports_dir>/<run>/<film>.html`` for the chosen films (CN or EN names) or all of
    them, and ``index.html``. The run is given by its settings, its directory, or already opened
    (a run keeps what it read for the next call). ``reports_dir`` defaults to
    ``settings.reports_dir``. Returns the paths written, index last."""
    if not films and not all_films:
        raise InputError("name films to report on (--film) or ask for --all")
    settings = settings_or_run_dir if isinstance(settings_or_run_dir, Settings) else Settings()
    run = _open_run(settings_or_run_dir)
    base = reports_dir or settings.reports_dir
    seed = settings.seed
    model = _model(run, model)
    wanted = list(run.films["film"]) if all_films else [run.resolve_film(f) for f in films or []]
    names = film_file_names(list(run.films["film"]))
    out_dir = Path(base) / run.name
    written = []
    for film in tqdm(wanted, desc=f"reports {run.name}", unit="film", disable=not progress):
        report = film_report(run, film, model, tsne_cap=tsne_cap, seed=seed)
        path = out_dir / names[film]
        write_text(path, render_film(report))
        written.append(path)
    pages = {f: n for f, n in names.items() if (out_dir / n).exists()}
    index = out_dir / "index.html"
    write_text(index, render_index(run, model, pages, tsne_cap, seed))
    written.append(index)
    log.info("wrote %d report pages to %s", len(written), out_dir)
    return written

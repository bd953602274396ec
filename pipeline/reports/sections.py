"""The sections of a film report, one function each: the chosen model and its evaluated
predictions, the accuracy interval, the star estimate, the corpus's top words and league,
the t-SNE map, the word clouds and the attention examples. ``film.FilmReport.build``
assembles them; ``render`` draws them."""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.analytics.attention import attention_examples, top_attention_words
from pipeline.analytics.embedding import tsne_coordinates, tsne_points
from pipeline.analytics.league import league_table
from pipeline.analytics.quantify import film_rating_estimates
from pipeline.analytics.stars import (
    STARS,
)
from pipeline.analytics.words import top_words_by_film, word_cloud
from pipeline.errors import InputError
from pipeline.fonts import cjk_font_path
from pipeline.markup import highlight_html
from pipeline.modeling.metrics import bootstrap_ci
from pipeline.modeling.quantify import METHOD_NAMES
from pipeline.run import Run

log = logging.getLogger(__name__)

CLOUD_WORDS = 100
MIN_WORD_COUNT = 2  # a word said once is not "what the film's reviews say"
MIN_MAP_REVIEWS = 30  # fewer reviews: no t-SNE map (a map of 15 dots shows noise)
MIN_EM_REVIEWS = 30  # fewer: EM re-estimation chases noise; the mean probability (PCC) is steadier


@dataclass
class AttentionExample:
    """One review with its attention highlight (``html`` is already escaped markup)."""

    kind: str  # "correct" or "mistake"
    star: int
    pred_star: int
    confidence: float
    html: str
    top_words: list[tuple[str, float]]


def exact_ci(preds: pd.DataFrame, seed: int = 0) -> tuple[float, float] | None:
    """95% bootstrap interval of the exact accuracy (:func:`bootstrap_ci`, as the evaluations
    compute it); None without predictions."""
    if preds.empty:
        return None
    low, high = bootstrap_ci(preds["star"].to_numpy(int), preds["pred_star"].to_numpy(int),
                             seed=seed)["accuracy"]  # fmt: skip
    return float(low), float(high)


def str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def with_predictions(likes: dict[str, Any] | None, preds: pd.DataFrame) -> dict[str, Any] | None:
    """Add the model's star to the top-liked reviews it predicted (<NA> for the others)."""
    if likes is None:
        return None
    by_id = preds.set_index("review_id")["pred_star"]
    top = likes["top_liked"]
    return likes | {"top_liked": top.assign(predicted=top["review_id"].map(by_id).astype("Int8"))}


def same_evaluation(preds: pd.DataFrame, evaluated_on: str) -> pd.DataFrame:
    """Rows of every model from the evaluation and split named ``evaluation/split``."""
    evaluation, _, split = evaluated_on.partition("/")
    return preds[(preds["evaluation"] == evaluation) & (preds["split"] == split)]


def star_estimates(run: Run, model: str | None) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """Every film's star-mix estimate on the test split by the quantifier the run's validation
    picks, with intervals, and that choice (memoised per run); None when the model gives no
    star probabilities."""
    if model is None:
        return None

    def compute() -> tuple[pd.DataFrame, dict[str, Any]] | None:
        try:
            probabilities = run.probabilities(model)
        except InputError:  # a model without probabilities: nothing to count with
            return None
        table, choice = film_rating_estimates(
            probabilities, run.train_stars, run.model_prior(model)
        )
        return table.set_index("film"), choice

    return run.kept.memo(("star_estimates", model), compute)


def star_estimate(run: Run, model: str | None, film: str) -> dict[str, Any] | None:
    """The film's star mix estimated from the model's probabilities alone, beside the true mix
    of the same test reviews: what a crawl without stars would tell about the film. The method
    is the one the run's validation picked (with its validated error and the film's 95%
    interval); mean probability (PCC) on fewer than ``MIN_EM_REVIEWS`` reviews, where the
    corrected methods run away."""
    found = star_estimates(run, model)
    if found is None or film not in found[0].index:
        return None
    table, choice = found
    row = table.loc[film]
    chosen = row["n"] >= MIN_EM_REVIEWS
    method = choice["method"] if chosen else "pcc"
    estimate = {
        "method": method,
        "method_name": METHOD_NAMES[method],
        "validated_error": choice["validated_error"] if chosen else None,
        "validated_on": choice["reviews"],
        "interval": [float(row["low"]), float(row["high"])] if chosen else None,
        "n": int(row["n"]),
        "true": [float(x) for x in row["true"]],
        "estimated": [float(x) for x in row[method]],
        "true_mean": float(row["true_mean"]),
        "estimated_mean": float(row[f"{method}_mean"]),
        "abs_error": float(row[f"{method}_abs_error"]),
    }
    return estimate | {"note": estimate_note(estimate)}


def estimate_note(e: dict[str, Any]) -> str:
    """What the film's star-mix estimate is and how far to trust it, in words (the report and
    the app say the same)."""
    said = e["method_name"]
    if e["interval"]:
        low, high = e["interval"]
        said += (
            f": mean star {e['estimated_mean']:.2f} (95% interval {low:.2f}-{high:.2f} from "
            "resampling the reviews)"
        )
    said += f"; off the true mean star of these reviews by {e['abs_error']:.2f}. "
    if e["validated_error"] is not None:
        return said + (
            f"Chosen for this run on its {e['validated_on']:,} validation reviews (one set of "
            "films resampled to star mixes from balanced to 80% four and five stars, the other "
            "giving the confusion rates), where its median error of the mean star was "
            f"{e['validated_error']:.2f}."
        )
    if e["interval"] is None:
        return said + "Too few reviews for the validated method: the mean probability instead."
    return said + "Not validated: the run has too few validation reviews to choose a method."


def corpus_top_words(run: Run) -> dict[object, pd.DataFrame]:
    """Every film's top words against the others (said at least twice), once per run."""

    def compute() -> dict[object, pd.DataFrame]:
        ranked = top_words_by_film(run.reviews, run.stopwords, CLOUD_WORDS)
        return {
            f: t[t["count"] >= MIN_WORD_COUNT].reset_index(drop=True) for f, t in ranked.items()
        }

    return run.kept.memo("film_top_words", compute)


def league_for(run: Run, model: str | None) -> pd.DataFrame:
    return run.kept.memo(
        ("league", model), lambda: league_table(run.reviews, run.evaluated(model)[0])
    )


def tsne_section(
    run: Run, reviews: pd.DataFrame, preds: pd.DataFrame, cap: int, seed: int
) -> tuple[pd.DataFrame | None, str]:
    """The t-SNE map of ``reviews`` coloured by ``preds``. Its coordinates depend on the
    features only, so they are kept with the run (:meth:`~pipeline.kept.Kept.array`): another
    model's map of the same reviews, in this process or the app's, costs no second t-SNE."""

    def kept(x: np.ndarray, seed: int) -> np.ndarray:
        data = np.ascontiguousarray(x).tobytes() + str(x.shape).encode()
        digest = hashlib.sha1(data).hexdigest()[:20]
        return run.kept.array(f"tsne-{digest}-{seed}", lambda: tsne_coordinates(x, seed))

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
        points = tsne_points(features, encoded, preds, cap=cap, seed=seed, coordinates=kept)
        return points, f"{len(points):,} of {len(reviews):,} reviews (the encoded sample)"
    points = tsne_points(features, reviews, preds, cap=cap, seed=seed, coordinates=kept)
    if len(points) < len(reviews):
        return points, f"{len(points):,} of {len(reviews):,} reviews, sampled by star"
    return points, f"all {len(points):,} reviews"


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def cloud_pngs(top_words: pd.DataFrame, star_words: dict[int, pd.DataFrame]) -> dict[str, bytes]:
    """PNG word clouds: the film against the corpus (TF-IDF), then each star (log-odds); a
    table without a drawable word gets none."""
    font = cjk_font_path()
    tables = {"film": (top_words, 900, 380)}
    tables |= {f"{s}★": (star_words[s], 400, 260) for s in STARS}
    out = {}
    for name, (words, width, height) in tables.items():
        weights = dict(zip(words["word"], words["score"], strict=True))
        try:
            out[name] = png(word_cloud(weights, font, width, height))
        except ValueError:
            continue
    return out


def attention_section(
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
    from pipeline.predict.postprocess import word_attention

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

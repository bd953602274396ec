"""The sections of a film report, one function each, computed from what the report read of its
run (:mod:`pipeline.reports.inputs`), never from the run itself: the star estimate, the t-SNE
map, the attention examples and the model-independent text parts (words, clouds, aspects).
``film.FilmReport.compute`` assembles them; ``render`` draws them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.analytics.aspects import aspect_rows, telling
from pipeline.analytics.attention import attention_examples, top_attention_words
from pipeline.analytics.embedding import tsne_points
from pipeline.analytics.words import MIN_WORD_COUNT, cloud_pngs, star_top_words
from pipeline.markup import WordWeight
from pipeline.modeling.quantify import METHOD_NAMES
from pipeline.predict.postprocess import word_attention
from pipeline.reports.inputs import AttentionSource, MapSource, TextSource

MIN_MAP_REVIEWS = 30  # fewer reviews: no t-SNE map (a map of 15 dots shows noise)
MIN_EM_REVIEWS = 30  # fewer: EM re-estimation chases noise; the mean probability (PCC) is steadier


@dataclass
class AttentionExample:
    """One review with the head's attention over its words (drawn by
    :func:`~pipeline.markup.highlight_html` when a page shows it)."""

    kind: str  # "correct" or "mistake"
    star: int
    pred_star: int
    confidence: float
    text: str
    words: list[WordWeight]
    top_words: list[tuple[str, float]]


def str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def same_evaluation(preds: pd.DataFrame, evaluated_on: str) -> pd.DataFrame:
    """Rows of every model from the evaluation and split named ``evaluation/split``."""
    evaluation, _, split = evaluated_on.partition("/")
    return preds[(preds["evaluation"] == evaluation) & (preds["split"] == split)]


def star_estimate(
    found: tuple[pd.DataFrame, dict[str, Any]] | None, film: str
) -> dict[str, Any] | None:
    """The film's star mix estimated from the model's probabilities alone, beside the true mix
    of the same test reviews: what a crawl without stars would tell about the film. The method
    is the one the run's validation picked (with its validated error and the film's 95%
    interval); mean probability (PCC) on fewer than ``MIN_EM_REVIEWS`` reviews, where the
    corrected methods run away."""
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


def tsne_section(
    source: MapSource, reviews: pd.DataFrame, preds: pd.DataFrame, cap: int, seed: int
) -> tuple[pd.DataFrame | None, str]:
    """The t-SNE map of ``reviews`` coloured by ``preds``, and what it shows."""
    features = source.features
    if features is None:
        return None, f"no features in this run: run `douban features --run {source.run}`"
    if len(reviews) < MIN_MAP_REVIEWS:
        return None, (
            f"only {len(reviews)} reviews: too few for a map (it needs {MIN_MAP_REVIEWS})"
        )
    kept = source.coordinates
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


def attention_section(source: AttentionSource) -> tuple[list[AttentionExample], str]:
    """The film's highlighted attention examples, and why there are none."""
    if source.offsets is None or source.spans is None:
        return [], source.note
    examples = []
    for row in attention_examples(source.preds).itertuples():
        spans = source.spans(row.text)
        words = word_attention(row.text, source.offsets(int(row.review_id)),
                               np.asarray(row.attention), spans)  # fmt: skip
        examples.append(
            AttentionExample(
                kind=row.kind,
                star=int(row.star),
                pred_star=int(row.pred_star),
                confidence=float(row.confidence),
                text=row.text,
                words=words,
                top_words=top_attention_words(words),
            )
        )
    return examples, "" if examples else "no evaluated reviews with attention for this film"


def text_parts(source: TextSource, film: str, reviews: pd.DataFrame, seed: int) -> dict[str, Any]:
    """The parts of a film's report that depend on its reviews only, the same for every model:
    top words against the corpus and per star, their word clouds, and its aspects with their
    telling clauses (attention read in one call)."""
    star_words = {
        s: t[t["count"] >= MIN_WORD_COUNT].reset_index(drop=True)
        for s, t in star_top_words(reviews, source.stopwords).items()
    }
    clouds = cloud_pngs(source.top_words, star_words)
    table = aspect_rows(source.clauses, film, len(reviews), seed)
    told = {str(a): telling(source.clauses, film, str(a)) for a in table["aspect"]}
    source.explain([c for t in told.values() for c in t["praise"] + t["complaint"]])
    return {
        "top_words": source.top_words,
        "star_words": star_words,
        "clouds": clouds,
        "aspects": table,
        "aspect_clauses": told,
        "aspect_terms": source.terms,
        "clause_model": source.clause_model,
    }

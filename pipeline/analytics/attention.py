"""Attention highlights: which words a self-attentive head looked at, drawn over the review.

A head's attention (summed over hops, one weight per stored token) is spread over each token's
characters via the feature store's offsets and summed per jieba word
(:func:`pipeline.predict.postprocess.word_attention`, the same mapping ``Scorer.explain`` uses).
Every piece of review text goes through :func:`html.escape`: reviews are user content.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipeline.analytics.stars import STARS
from pipeline.markup import WordWeight


def confidence(preds: pd.DataFrame) -> pd.Series:
    """How sure the model was of its pick: the probability of the predicted star when the model
    gives probabilities, else closeness of the continuous score to the pick (1 = exactly on it)."""
    conf = pd.Series(np.nan, index=preds.index, dtype=float)
    if "probs" in preds.columns:
        for i, probs, pick in zip(preds.index, preds["probs"], preds["pred_star"], strict=True):
            if probs is not None and len(probs) >= pick:
                conf[i] = float(probs[int(pick) - 1])
    if "score" in preds.columns:
        missing = conf.isna()
        distance = (preds["score"].astype(float) - preds["pred_star"].astype(float)).abs()
        conf[missing] = (1 - distance[missing]).clip(lower=0)
    return conf.fillna(0.0)


def attention_examples(preds: pd.DataFrame, per_star: int = 1) -> pd.DataFrame:
    """For each true star, the ``per_star`` most confident correct predictions and the
    ``per_star`` worst mistakes (largest star error, then most confident). Only rows with
    attention are considered. Columns: ``star, kind, review_id, pred_star, confidence`` plus the
    input columns, ``kind`` being ``correct`` or ``mistake``."""
    rows = preds[preds["attention"].notna()] if "attention" in preds.columns else preds.iloc[:0]
    rows = rows.assign(
        confidence=confidence(rows),
        error=(rows["pred_star"].astype(int) - rows["star"].astype(int)).abs(),
    )
    picked = []
    for star in STARS:
        of_star = rows[rows["star"] == star]
        correct = of_star[of_star["error"] == 0].nlargest(per_star, "confidence")
        wrong = (
            of_star[of_star["error"] > 0]
            .sort_values(["error", "confidence"], ascending=False, kind="stable")
            .head(per_star)
        )
        picked += [correct.assign(kind="correct"), wrong.assign(kind="mistake")]
    out = pd.concat(picked, ignore_index=True) if picked else rows.assign(kind=[])
    return out.drop(columns="error")


def top_attention_words(words: Sequence[WordWeight], k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` words with the most attention (a word seen twice counts once, summed)."""
    totals: dict[str, float] = {}
    for word, _, _, weight in words:
        totals[word] = totals.get(word, 0.0) + weight
    return sorted(totals.items(), key=lambda kv: -kv[1])[:k]

"""A small run directory in the documented schemas (docs/architecture.md), built in code, for
testing analytics and reports without training anything: three films (one with only 10 reviews
and no dates or likes), three models, attention on the head model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.artifacts import write_json
from pipeline.config import RunPaths

FILMS = (
    # (cn, en, reviews, word only this film uses, has dates and likes)
    ("钢铁侠1", "Iron Man", 80, "贾维斯", True),
    ("何以笙箫默", "My Sunshine", 70, "何以琛", True),
    ("小电影", "Tiny Film", 10, "小众", False),
)
STAR_WORDS = {1: ["烂片", "难看"], 2: ["失望", "无聊"], 3: ["一般", "还行"], 4: ["好看", "不错"],
              5: ["经典", "神作"]}  # fmt: skip
SCRIPT_REVIEW = '<script>alert("x")</script><img src=x onerror=alert(1)>好看'
MODELS = ("majority", "tfidf_lr", "head_cls")


def make_reviews(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for cn, en, n, own_word, dated in FILMS:
        for i in range(n):
            star = int(rng.integers(1, 6))
            tokens = [*STAR_WORDS[star], "电影", "的", "，"]  # "的" is a stopword, "，" punctuation
            if i % 2 == 0:
                tokens.append(own_word)
            text = "".join(t for t in tokens if t != "，")
            rows.append(
                {
                    "film": cn,
                    "film_en": en,
                    "film_cn": cn,
                    "date": f"2015-{1 + i % 6:02d}-{1 + i % 28:02d}" if dated else None,
                    "star": star,
                    "like": int(rng.integers(0, 50)) if dated else None,
                    "comment": text,
                    "text": text,
                    "tokens": tokens,
                    "split": ("train", "train", "val", "test")[i % 4] if i > 3 else "test",
                    "source": "synthetic.csv",
                    "row_number": len(rows) + 1,
                }
            )
    reviews = pd.DataFrame(rows)
    first = reviews.index[reviews["film"] == FILMS[0][0]][0]
    reviews.loc[first, ["comment", "like"]] = [SCRIPT_REVIEW, 10_000]
    reviews.insert(0, "review_id", np.arange(len(reviews), dtype=np.int64))
    return reviews.astype({"star": "int8", "like": "Int64"})


def make_predictions(reviews: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """majority always says 4; tfidf_lr is right 60% of the time; head_cls 80%, with
    probabilities and attention over the review's characters."""
    rng = np.random.default_rng(seed)
    parts = []
    for model in MODELS:
        stars = reviews["star"].to_numpy(int)
        if model == "majority":
            pred = np.full_like(stars, 4)
        else:
            right = rng.random(len(stars)) < (0.6 if model == "tfidf_lr" else 0.8)
            pred = np.where(
                right, stars, np.clip(stars + rng.choice([-2, -1, 1], len(stars)), 1, 5)
            )
        probs = [np.eye(5, dtype=np.float32)[p - 1] * 0.6 + 0.08 for p in pred]
        attention = [rng.random(len(t) + 2).astype(np.float32) for t in reviews["text"]]
        parts.append(
            pd.DataFrame(
                {
                    "evaluation": "random",
                    "review_id": reviews["review_id"],
                    "film": reviews["film"],
                    "split": reviews["split"],
                    "star": reviews["star"],
                    "model": model,
                    "pred_star": pred.astype(np.int8),
                    "probs": probs,
                    "expected_star": [float((np.arange(1, 6) * p).sum()) for p in probs],
                    "score": pred.astype(np.float32),
                    "attention": attention if model == "head_cls" else None,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def make_run(root: Path, is_demo: bool = True) -> Path:
    """Write prepared/reviews.parquet, summary.json and predictions.parquet under ``root``."""
    paths = RunPaths(root)
    reviews = make_reviews()
    paths.prepared.mkdir(parents=True, exist_ok=True)
    reviews.to_parquet(paths.reviews)
    write_json(paths.summary, {"is_demo": is_demo, "films": [f[0] for f in FILMS]})
    make_predictions(reviews).to_parquet(paths.predictions)
    return root

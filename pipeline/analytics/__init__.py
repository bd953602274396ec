"""Analytics over one run: pure functions that return data, plus :func:`load_run` to read a run.

Each module covers one kind of question (``stars``, ``embedding``, ``words``, ``attention``,
``time``, ``league``). Their functions take DataFrames in the schemas of docs/architecture.md and
return DataFrames or dicts, so the HTML reports (matplotlib) and the Streamlit app (Altair) draw
the same numbers. :class:`RunData` reads a run's artifacts lazily and caches them, so building
reports for 28 films reads every parquet file once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.artifacts import read_json
from pipeline.config import RunPaths
from pipeline.errors import FilmNotFoundError

if TYPE_CHECKING:
    from pipeline.data.text import Segmenter
    from pipeline.features.store import FeatureStore

# Which of a model's predictions describe a film, best first: the run's own random split, then a
# film held out of training; within one, test before val. (``cross_corpus`` rows index another
# run's reviews, so they cannot be joined with this run's.)
EVALUATION_ORDER = ("random", "film_holdout")
SCALAR_PREDICTION_COLUMNS = (
    "evaluation",
    "review_id",
    "film",
    "split",
    "star",
    "model",
    "pred_star",
)
LIST_PREDICTION_COLUMNS = ("probs", "attention")
SPLIT_ORDER = ("test", "val")


class LastLayerPooled:
    """Row-indexable (N, d) float32 view of the last hidden state of (N, L+1, d) pooled
    features; indexing with review_ids reads just those rows."""

    def __init__(self, pooled_all: Any) -> None:
        self._all = pooled_all

    def __len__(self) -> int:
        return len(self._all)

    def __getitem__(self, rows: Any) -> np.ndarray:
        return np.asarray(self._all[rows][:, -1], dtype=np.float32)


@dataclass
class RunData:
    """A run's artifacts, read on first use and kept."""

    paths: RunPaths
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.paths.name

    @cached_property
    def reviews(self) -> pd.DataFrame:
        if not self.paths.reviews.exists():
            raise FileNotFoundError(
                f"{self.paths.reviews} is missing: run `douban prepare --run {self.name}` first"
            )
        return pd.read_parquet(self.paths.reviews)

    @cached_property
    def summary(self) -> dict[str, Any]:
        return read_json(self.paths.summary) if self.paths.summary.exists() else {}

    @cached_property
    def predictions(self) -> pd.DataFrame:
        """Every prediction of the run, without the per-review lists (``probs``, ``attention``:
        millions of small arrays on the full corpus; see :meth:`prediction_lists`). Empty, with
        the scalar columns, before training."""
        if not self.paths.predictions.exists():
            return pd.DataFrame(columns=list(SCALAR_PREDICTION_COLUMNS))
        names = pq.read_schema(self.paths.predictions).names
        columns = [c for c in names if c not in LIST_PREDICTION_COLUMNS]
        return pd.read_parquet(self.paths.predictions, columns=columns)

    def prediction_lists(self, model: str, review_ids: Iterable[int]) -> pd.DataFrame:
        """``review_id, probs, attention`` of one model for the given reviews (the first
        evaluation that has each review), read from the parquet file for just those rows."""
        ids = sorted({int(i) for i in review_ids})
        if not ids or not self.paths.predictions.exists():
            return pd.DataFrame(columns=["review_id", *LIST_PREDICTION_COLUMNS])
        table = pq.read_table(
            self.paths.predictions,
            columns=["evaluation", "review_id", *LIST_PREDICTION_COLUMNS],
            filters=[("model", "==", model), ("review_id", "in", ids)],
        )
        df = table.to_pandas()
        df = df[df["evaluation"].isin(EVALUATION_ORDER)]
        rank = df["evaluation"].map({e: i for i, e in enumerate(EVALUATION_ORDER)})
        df = df.assign(rank=rank).sort_values("rank", kind="stable")
        return df.drop_duplicates("review_id")[["review_id", *LIST_PREDICTION_COLUMNS]]

    @cached_property
    def models_with_attention(self) -> frozenset[str]:
        """Models whose predictions carry attention (the self-attentive heads)."""
        if not self.paths.predictions.exists():
            return frozenset()
        dataset = ds.dataset(self.paths.predictions)
        if "attention" not in dataset.schema.names:
            return frozenset()
        table = dataset.to_table(columns=["model"], filter=pc.field("attention").is_valid())
        return frozenset(pc.unique(table["model"]).to_pylist())

    @cached_property
    def metrics(self) -> dict[str, Any]:
        return read_json(self.paths.metrics) if self.paths.metrics.exists() else {}

    @property
    def is_demo(self) -> bool:
        return bool(self.summary.get("is_demo", False))

    @cached_property
    def stopwords(self) -> frozenset[str]:
        from pipeline.data.text import load_stopwords

        return frozenset(load_stopwords())

    @cached_property
    def feature_store(self) -> FeatureStore | None:
        """The run's feature store; None when features were not extracted."""
        if not (self.paths.features / "manifest.json").exists():
            return None
        from pipeline.features.store import FeatureStore

        return FeatureStore.open(self.paths.features)

    @cached_property
    def pooled_features(self) -> LastLayerPooled | None:
        """Mean-pooled last-layer features, one row per review_id, read on demand (a film's
        t-SNE sample reads 2,000 rows, not the whole memory-mapped store); None when not
        extracted."""
        store = self.feature_store
        return None if store is None else LastLayerPooled(store.pooled_all(kind="mean"))

    @cached_property
    def segmenter(self) -> Segmenter:
        """jieba as prepare ran it (film titles kept whole), for mapping attention to words."""
        from pipeline.data.text import Segmenter

        return Segmenter(self.summary.get("films", []))

    @cached_property
    def films(self) -> pd.DataFrame:
        """One row per film (``film, film_cn, film_en, reviews``), most reviewed first."""
        r = self.reviews
        names = r.groupby("film", sort=False)[["film_cn", "film_en"]].first()
        counts = r["film"].value_counts().rename("reviews")
        return names.join(counts).sort_values("reviews", ascending=False).reset_index()

    def resolve_film(self, name: str) -> str:
        """The film's grouping key for a Chinese or English name (case-insensitive)."""
        wanted = name.strip().casefold()
        for row in self.films.itertuples():
            candidates = (row.film, row.film_cn, row.film_en)
            if any(isinstance(c, str) and c.strip().casefold() == wanted for c in candidates):
                return str(row.film)
        listing = ", ".join(
            f"{row.film} ({row.film_en})" if isinstance(row.film_en, str) else str(row.film)
            for row in self.films.itertuples()
        )
        raise FilmNotFoundError(f"no film named {name!r} in run {self.name!r}; films: {listing}")

    @property
    def models(self) -> list[str]:
        return sorted(self.predictions["model"].unique().tolist())

    def best_model(self) -> str | None:
        """The model with the highest exact accuracy on the test split (metrics.json; the
        predictions when it is missing), from the first evaluation that has one; None before
        any model was evaluated."""
        for evaluation in EVALUATION_ORDER:
            scores = _test_accuracies(self.metrics, evaluation)
            if not scores:
                preds = self.predictions
                test = preds[(preds["evaluation"] == evaluation) & (preds["split"] == "test")]
                scores = {
                    m: float((g["star"] == g["pred_star"]).mean()) for m, g in test.groupby("model")
                }
            if scores:
                return max(sorted(scores), key=scores.__getitem__)
        return None

    def evaluated(self, model: str, film: str | None = None) -> tuple[pd.DataFrame, str]:
        """The model's predictions for a film (or the corpus) from the best available
        evaluation and split, joined with the reviews, and a label such as ``random/test``."""
        preds = self.predictions
        preds = preds[preds["model"] == model]
        if film is not None:
            preds = preds[preds["film"] == film]
        for evaluation in EVALUATION_ORDER:
            for split in SPLIT_ORDER:
                rows = preds[(preds["evaluation"] == evaluation) & (preds["split"] == split)]
                if len(rows):
                    return self._with_reviews(rows), f"{evaluation}/{split}"
        return self._with_reviews(preds.iloc[:0]), "none"

    def _with_reviews(self, preds: pd.DataFrame) -> pd.DataFrame:
        cols = ["review_id", "date", "like", "comment", "text", "tokens"]
        review_cols = self.reviews[[c for c in cols if c in self.reviews.columns]]
        return preds.merge(review_cols, on="review_id", how="left")

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """Compute once per run: corpus-wide results shared by every film's report."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


def _test_accuracies(metrics: dict[str, Any], evaluation: str) -> dict[str, float]:
    """``{model: exact accuracy on test}`` from metrics.json (layout of modeling/evaluate.py)."""
    models = metrics.get("evaluations", {}).get(evaluation, {}).get("models", {})
    return {
        name: float(m["test"]["accuracy"])
        for name, m in models.items()
        if m.get("test", {}).get("n") and "accuracy" in m["test"]
    }


def load_run(run_dir: Path | str) -> RunData:
    """Open a run directory; nothing is read until it is used."""
    root = Path(run_dir)
    if not root.is_dir():
        runs = sorted(p.name for p in root.parent.glob("*") if p.is_dir())
        raise FileNotFoundError(
            f"run directory {root} does not exist; runs in {root.parent}: {', '.join(runs) or '-'}"
        )
    return RunData(RunPaths(root))

"""One reader of one run directory: every surface (CLI, Python API, app, reports, lab) reads a run
through :class:`Run`, so they agree on its reviews, its models, its default model and the
settings each stage ran with.

Artifacts are read on first use and kept (``cached_property``), so building reports for 28 films
reads every parquet file once. The settings a stage ran with come from that stage's manifest,
never from the current command's defaults: the encoder, layers and ``max_length`` are the
features manifest's, the segmenter is prepare's (same film words, same user dictionary).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.artifacts import (
    read_frame,
    read_json,
    read_manifest,
    read_table,
)
from pipeline.config import RunPaths
from pipeline.data.text import Segmenter, load_stopwords
from pipeline.errors import (
    CorruptArtifactError,
    FilmNotFoundError,
    InputError,
    ModelNotFoundError,
    StageMissingError,
)
from pipeline.kept import Kept
from pipeline.locate import locate_run, newest_trained_run, resolve_run
from pipeline.modeling.metrics import OWN_EVALUATIONS
from pipeline.modeling.prior import implied_prior, prior_of
from pipeline.modeling.spec import (
    build_segmenter,
    default_model_of,
    explaining_head,
    list_models,
    read_config,
    segmenter_spec,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pipeline.features.store import FeatureStore
    from pipeline.predict.scorer import Scorer

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
SPLIT_ORDER = ("test", "val")  # within an evaluation, which split describes a film best


class LastLayerPooled:
    """Review_id-indexable (N, d) float32 view of the last hidden state of a store's pooled
    features; indexing with review_ids reads just those rows (:meth:`covers` says which reviews
    a budgeted store encoded)."""

    def __init__(self, store: FeatureStore) -> None:
        self._store = store
        self._all = store.pooled_all(kind="mean")

    def __len__(self) -> int:
        return self._store.num_prepared

    def covers(self, review_ids: Any) -> np.ndarray:
        return self._store.covers(review_ids)

    def __getitem__(self, review_ids: Any) -> np.ndarray:
        return np.asarray(self._all[self._store.rows_of(review_ids)][:, -1], dtype=np.float32)


@dataclass
class Run:
    """A run's artifacts, read on first use and kept. Open one with :meth:`open`."""

    paths: RunPaths
    kept: Kept = field(init=False, repr=False)  # what is derived from the run, computed once

    def __post_init__(self) -> None:
        self.paths = self.paths.pinned()  # one model set for everything this Run reads
        self.kept = Kept(self.paths.root)

    @classmethod
    def open(cls, name: str | Path | None = None, runs_dir: Path | str | None = None) -> Run:
        """Run ``name`` under ``runs_dir`` (default ``$DOUBAN_RUNS_DIR`` or runs/); a
        :class:`~pathlib.Path` opens that directory; ``None`` opens the newest run with models.
        A name that is not one plain path segment raises ``RunNameError``; a missing run
        ``RunNotFoundError`` listing the runs there are."""
        runs = Path(runs_dir) if runs_dir is not None else None
        if name is None:
            return cls(newest_trained_run(runs))
        if isinstance(name, Path):
            return cls(locate_run(name.name, name.parent))
        return cls(locate_run(name, runs))

    @property
    def name(self) -> str:
        return self.paths.name

    # ------------------------------------------------------------------ prepared data

    @cached_property
    def reviews(self) -> pd.DataFrame:
        if not self.paths.reviews.exists():
            raise StageMissingError(
                f"run {self.name} has no prepared reviews ({self.paths.reviews} is missing)",
                hint=f"run `douban prepare --run {self.name}` first",
            )
        return read_frame(self.paths.reviews)

    @cached_property
    def summary(self) -> dict[str, Any]:
        return read_json(self.paths.summary) if self.paths.summary.exists() else {}

    @property
    def is_demo(self) -> bool:
        return bool(self.summary.get("is_demo", False))

    @cached_property
    def stopwords(self) -> frozenset[str]:
        extra = (self.manifest("prepare") or {}).get("settings", {}).get("extra_stopwords")
        return frozenset(load_stopwords(Path(extra) if extra else None))

    @cached_property
    def segmenter(self) -> Segmenter:
        """jieba as prepare ran it: the same film words and user dictionary."""
        return build_segmenter(segmenter_spec(self.paths))

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

    def resolve_model(self, model: str | None) -> str | None:
        """``model``, or the run's default model when None, checked to have predictions."""
        model = model or self.default_model
        if model is not None and model not in self.models:
            raise ModelNotFoundError(
                f"run {self.name} has no predictions of model {model!r}; it has: "
                f"{', '.join(self.models) or '-'}",
                hint="pick one with --model (`douban models` lists them)",
            )
        return model

    @property
    def source_stamp(self) -> list[Any]:
        """Identity (size, mtime) of the reviews, predictions and features: what anything
        derived from them (a film report, a map) is fingerprinted with."""
        files = (self.paths.reviews, self.paths.predictions, self.paths.features / "manifest.json")
        stats = [path.stat() if path.exists() else None for path in files]
        return [None if st is None else [st.st_size, st.st_mtime_ns] for st in stats]

    # ------------------------------------------------------------------ stage settings

    def manifest(self, stage: str) -> dict[str, Any] | None:
        """The manifest (settings + fingerprint) ``stage`` ran with; None before it ran."""
        where = {"prepare": self.paths.prepared, "features": self.paths.features}
        return read_manifest(where.get(stage, self.paths.root / stage))

    @cached_property
    def encoder_spec(self) -> dict[str, Any]:
        """The encoder the features were extracted with (name, path, pooling, prefix,
        fingerprint), plus the ``max_length`` and ``token_layers`` they used."""
        manifest = self.manifest("features")
        if manifest is None:
            raise StageMissingError(
                f"run {self.name} has no features", hint=f"run `douban features --run {self.name}`"
            )
        return {
            **manifest["encoder"],
            "max_length": manifest["max_length"],
            "token_layers": manifest["token_layers"],
        }

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
        return None if store is None else LastLayerPooled(store)

    # ------------------------------------------------------------------ models and metrics

    @cached_property
    def saved_models(self) -> list[str]:
        """Models saved in the run (each a self-contained bundle)."""
        return list_models(self.paths.models)

    @property
    def models(self) -> list[str]:
        """Models of the run: saved, or with predictions."""
        return sorted(set(self.saved_models) | set(self.predictions["model"].unique().tolist()))

    @cached_property
    def metrics(self) -> dict[str, Any]:
        return read_json(self.paths.metrics) if self.paths.metrics.exists() else {}

    @cached_property
    def recorded_settings(self) -> dict[str, Any]:
        """The settings the run was last prepared with (``settings.json``), for the reader: a
        stage takes its own from the config file and flags; {} when there is none."""
        path = self.paths.settings
        return read_json(path) if path.exists() else {}

    @property
    def generation(self) -> str:
        """The name of the model set this Run reads (``gen-N``; the run's own name for a run
        trained before model sets had generations): every surface reports it."""
        return self.paths.model_set.root.name

    @cached_property
    def default_model(self) -> str | None:
        """The run's one default model, chosen on validation (see
        :func:`pipeline.modeling.spec.choose_default_model`); None before training."""
        return default_model_of(self.paths, self.models)

    @cached_property
    def model_configs(self) -> dict[str, dict[str, Any]]:
        """Every saved model's config.json (kind, settings, scoring spec), read once."""
        return {m: read_config(self.paths.models, m) for m in self.saved_models}

    def model_config(self, model: str) -> dict[str, Any]:
        """A saved model's config.json (:attr:`model_configs`)."""
        if model not in self.saved_models:
            raise ModelNotFoundError(
                f"run {self.name} has no model {model!r}; it has: "
                f"{', '.join(self.saved_models) or '-'}",
                hint="pick one with --model, or train it with `douban train`",
            )
        return self.model_configs[model]

    def attention_model(self, model: str | None) -> str | None:
        """The head whose attention explains ``model`` (one rule for every surface:
        :func:`pipeline.modeling.spec.explaining_head`)."""
        members: list[str] = []
        if model in self.saved_models:
            members = list(self.model_config(model).get("members", []))
        return explaining_head(model, self.models_with_attention, members)

    @cached_property
    def models_with_attention(self) -> frozenset[str]:
        """Models whose outputs carry attention (the self-attentive heads)."""
        saved = {m for m, config in self.model_configs.items() if config.get("kind") == "head"}
        if saved or not self.paths.predictions.exists():
            return frozenset(saved)
        dataset = ds.dataset(self.paths.predictions)
        if "attention" not in dataset.schema.names:
            return frozenset()
        table = dataset.to_table(columns=["model"], filter=pc.field("attention").is_valid())
        return frozenset(pc.unique(table["model"]).to_pylist())

    def scorer(self, model: str | None = None) -> Scorer:
        """A :class:`~pipeline.predict.scorer.Scorer` for ``model`` (default: the default
        model) from this Run's pinned model set, loaded once per run object."""
        from pipeline.predict.scorer import Scorer

        name = model or self.default_model
        return self.kept.memo(  # the pinned set, and the configs this Run has read
            ("scorer", name), lambda: Scorer(self.paths, name, configs=self.model_configs)
        )

    def loaded_scorers(self) -> list[str]:
        """The models whose scorer this Run has loaded (what the service reports as loaded)."""
        return self.kept.memoised("scorer")

    # ------------------------------------------------------------------ predictions

    @cached_property
    def predictions(self) -> pd.DataFrame:
        """Every prediction of the run, without the per-review lists (``probs``, ``attention``:
        millions of small arrays on the full corpus; see :meth:`prediction_lists`). Empty, with
        the scalar columns, before training."""
        if not self.paths.predictions.exists():
            return pd.DataFrame(columns=list(SCALAR_PREDICTION_COLUMNS))
        with self._readable(self.paths.predictions):
            names = pq.read_schema(self.paths.predictions).names
            columns = [c for c in names if c not in LIST_PREDICTION_COLUMNS]
            return read_frame(self.paths.predictions, columns=columns)

    @contextmanager
    def _readable(self, path: Path) -> Iterator[None]:
        """A truncated or garbled parquet file is a one-line error naming it and its stage."""
        try:
            yield
        except (OSError, ValueError) as err:  # ArrowInvalid is a ValueError
            raise CorruptArtifactError(
                f"{path} cannot be read ({err})",
                f"re-evaluate: `douban evaluate --run {self.name} --force`",
            ) from err

    def prediction_lists(self, model: str, review_ids: Iterable[int]) -> pd.DataFrame:
        """``review_id, probs, attention`` of one model for the given reviews (the first
        evaluation that has each review), read from the parquet file for just those rows."""
        ids = sorted({int(i) for i in review_ids})
        if not ids or not self.paths.predictions.exists():
            return pd.DataFrame(columns=["review_id", *LIST_PREDICTION_COLUMNS])
        with self._readable(self.paths.predictions):
            table = read_table(
                self.paths.predictions,
                columns=["evaluation", "review_id", *LIST_PREDICTION_COLUMNS],
                filters=[("model", "==", model), ("review_id", "in", ids)],
            )
        df = table.to_pandas()
        df = df[df["evaluation"].isin(OWN_EVALUATIONS)]
        rank = df["evaluation"].map({e: i for i, e in enumerate(OWN_EVALUATIONS)})
        df = df.assign(rank=rank).sort_values("rank", kind="stable")
        return df.drop_duplicates("review_id")[["review_id", *LIST_PREDICTION_COLUMNS]]

    def evaluated(self, model: str | None, film: str | None = None) -> tuple[pd.DataFrame, str]:
        """The model's predictions for a film (or the corpus) from the best available
        evaluation and split, joined with the reviews, and a label such as ``random/test``
        (no rows, ``none``, without a model)."""
        preds = self.predictions
        preds = preds[preds["model"] == model] if model is not None else preds.iloc[:0]
        if film is not None:
            preds = preds[preds["film"] == film]
        for evaluation in OWN_EVALUATIONS:
            for split in SPLIT_ORDER:
                rows = preds[(preds["evaluation"] == evaluation) & (preds["split"] == split)]
                if len(rows):
                    return self._with_reviews(rows), f"{evaluation}/{split}"
        return self._with_reviews(preds.iloc[:0]), "none"

    def probabilities(self, model: str, splits: Sequence[str] = ("test", "val")) -> pd.DataFrame:
        """The model's predictions with their star probabilities on ``splits`` (the run's own
        evaluations, one row per review): what counting stars from the text starts from."""
        preds = self.predictions
        preds = preds[(preds["model"] == model) & preds["evaluation"].isin(OWN_EVALUATIONS)]
        if preds.empty:
            raise InputError(f"run {self.name} has no predictions of model {model!r}",
                             hint=f"run `douban evaluate --run {self.name}`")  # fmt: skip
        wanted = preds[preds["split"].isin(splits)].drop_duplicates("review_id")
        lists = self.prediction_lists(model, wanted["review_id"]).set_index("review_id")
        wanted = wanted.join(lists["probs"], on="review_id")
        if wanted["probs"].isna().any():
            raise InputError(f"model {model!r} gives no star probabilities to count with",
                             hint="pick a classifier, e.g. tfidf_lr or head_cls")  # fmt: skip
        return wanted

    @cached_property
    def train_stars(self) -> np.ndarray:
        return self.reviews.loc[self.reviews["split"] == "train", "star"].to_numpy()

    def model_prior(self, model: str) -> np.ndarray:
        """The star mix the model's probabilities assume (:func:`implied_prior` of the training
        mix; a model kept only by its predictions assumes that mix)."""

        def config(name: str) -> dict[str, Any]:
            return self.model_config(name) if name in self.saved_models else {}

        return implied_prior(config(model), prior_of(self.train_stars), config)

    def _with_reviews(self, preds: pd.DataFrame) -> pd.DataFrame:
        cols = ["review_id", "date", "like", "comment", "text", "tokens"]
        review_cols = self.reviews[[c for c in cols if c in self.reviews.columns]]
        return preds.merge(review_cols, on="review_id", how="left")


_OPEN_RUNS: dict[str, tuple[float, Run]] = {}


def get_scorer(
    run: str | Path | None = None, model: str | None = None, runs_dir: Path | str | None = None
) -> Scorer:
    """The :class:`~pipeline.predict.scorer.Scorer` of an open :class:`Run`, kept for the
    process (the Run memoises its scorers); the run is opened again when its models change on
    disk (a new generation, a re-trained model)."""
    paths = resolve_run(run, Path(runs_dir) if runs_dir else None)
    stamp = max((p.stat().st_mtime for p in paths.models.glob("*/config.json")), default=0.0)
    key = str(paths.root.resolve())
    cached = _OPEN_RUNS.get(key)
    if cached is None or cached[0] != stamp:
        _OPEN_RUNS[key] = (stamp, Run(paths))
    return _OPEN_RUNS[key][1].scorer(model)


def score(
    texts: str | Iterable[Any],
    run: str | Path | None = None,
    model: str | None = None,
    runs_dir: Path | str | None = None,
) -> list[dict[str, Any]]:
    """Score review text(s) with a trained run: a list of records (one per text, in order) with
    pred_star, probs (stars 1..5), expected_star, regression, top_words, warnings and error."""
    return get_scorer(run, model, runs_dir).score_records(texts)

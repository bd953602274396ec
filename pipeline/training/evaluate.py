"""`douban evaluate`: predictions of every saved model on every review of a run, metrics on the
validation and test splits (overall and per film), saved as ``metrics.json`` and the long-format
``predictions.parquet`` (docs/architecture.md).

Evaluations: ``random`` (the run's own split), ``film_holdout`` (the same, for a run prepared with
``--holdout-films``: its test split is the held-out films) and ``cross_corpus`` (another CSV,
prepared and encoded under ``runs/<run>/external/<name>/``, every review counted as test).
Re-evaluating replaces only the (evaluation, model) pairs it computed; the rest is kept.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from pipeline.artifacts import atomic_path, read_json, write_json
from pipeline.config import FeatureSettings, RunPaths, Settings
from pipeline.modeling.bundle import list_models, load_star_model, needs_tokens
from pipeline.modeling.inputs import Predictions
from pipeline.modeling.metrics import headline, star_metrics
from pipeline.training.train import RunData

log = logging.getLogger(__name__)
console = Console(stderr=True)
EVALUATIONS = ("random", "film_holdout", "cross_corpus")
METRIC_SPLITS = ("val", "test")

PREDICTION_SCHEMA = pa.schema(
    [
        ("evaluation", pa.string()),
        ("review_id", pa.int64()),
        ("film", pa.string()),
        ("split", pa.string()),
        ("star", pa.int8()),
        ("model", pa.string()),
        ("pred_star", pa.int8()),
        ("probs", pa.list_(pa.float32())),
        ("expected_star", pa.float32()),
        ("score", pa.float32()),
        ("attention", pa.list_(pa.float32())),
    ]
)


def run_evaluation(paths: RunPaths) -> str:
    """``film_holdout`` when the run was prepared with held-out films, else ``random``."""
    summary = read_json(paths.summary) if paths.summary.exists() else {}
    return "film_holdout" if summary.get("holdout_films") else "random"


def _list_column(values: Sequence[np.ndarray] | np.ndarray | None, n: int) -> pa.Array:
    if values is None:
        return pa.nulls(n, type=pa.list_(pa.float32()))
    arrays = [np.asarray(v, dtype=np.float32) for v in values]
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.float32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.float32()))


def prediction_table(
    evaluation: str, model: str, reviews: pd.DataFrame, rows: np.ndarray, pred: Predictions
) -> pa.Table:
    """One model's predictions in the long format of predictions.parquet."""
    sub = reviews.iloc[rows]
    n = len(rows)
    expected = pred.expected_star
    return pa.Table.from_arrays(
        [
            pa.array([evaluation] * n, pa.string()),
            pa.array(sub["review_id"].to_numpy(np.int64)),
            pa.array(sub["film"].astype(str).tolist(), pa.string()),
            pa.array(sub["split"].astype(str).tolist(), pa.string()),
            pa.array(sub["star"].to_numpy(np.int8)),
            pa.array([model] * n, pa.string()),
            pa.array(np.asarray(pred.pred_star, dtype=np.int8)),
            _list_column(pred.probs, n),
            pa.nulls(n, pa.float32()) if expected is None else pa.array(expected, pa.float32()),
            pa.array(np.asarray(pred.score, dtype=np.float32)),
            _list_column(pred.attention, n),
        ],
        schema=PREDICTION_SCHEMA,
    )


def model_metrics(
    reviews: pd.DataFrame, rows: np.ndarray, pred: Predictions, splits: Sequence[str]
) -> dict[str, Any]:
    """Metrics per split, overall and per film, for one model's predictions on ``rows``."""
    sub = reviews.iloc[rows]
    split = sub["split"].to_numpy()
    film = sub["film"].astype(str).to_numpy()
    stars = sub["star"].to_numpy(np.int64)
    out: dict[str, Any] = {"per_film": {}}

    def metrics(mask: np.ndarray) -> dict[str, Any]:
        probs = None if pred.probs is None else pred.probs[mask]
        return star_metrics(stars[mask], pred.pred_star[mask], probs)

    for s in splits:
        in_split = split == s
        out[s] = metrics(in_split)
        out["per_film"][s] = {
            f: metrics(in_split & (film == f)) for f in sorted(set(film[in_split]))
        }
    return out


def _external_name(path: Path) -> str:
    return re.sub(r"[^\w.-]+", "_", path.stem) or "external"


def external_data(paths: RunPaths, settings: Settings, csv: Path) -> RunData:
    """Prepare and encode another corpus with the run's own encoder and feature layers, under
    ``runs/<run>/external/<name>/`` (reused when already up to date)."""
    from pipeline.data.prepare import prepare_run
    from pipeline.features.extract import extract_features
    from pipeline.features.store import FeatureStore

    store = FeatureStore.open(paths.features)
    spec = store.encoder
    ext = settings.model_copy(
        update={
            "runs_dir": paths.root / "external",
            "run_name": _external_name(csv),
            "prepare": settings.prepare.model_copy(update={"holdout_films": []}),
            "features": FeatureSettings(
                encoder=spec["name"],
                pooling=spec.get("pooling"),
                prefix=spec.get("prefix"),
                max_length=store.max_length,
                token_budget=settings.features.token_budget,
                token_layers=list(store.token_layers),
                shard_size=settings.features.shard_size,
                device=settings.features.device,
            ),
        }
    )
    prepare_run(ext, [csv])
    extract_features(ext)
    return RunData.load(ext.paths)


def _merge_predictions(path: Path, new: list[pa.Table], replaced: set[tuple[str, str]]) -> None:
    tables = []
    if path.exists():
        old = pq.read_table(path).cast(PREDICTION_SCHEMA)
        keys = pc.binary_join_element_wise(old["evaluation"], old["model"], "\x00")
        drop = pa.array(["\x00".join(k) for k in replaced], pa.string())
        tables.append(old.filter(pc.invert(pc.is_in(keys, value_set=drop))))
    tables += new
    with atomic_path(path) as tmp:
        pq.write_table(pa.concat_tables(tables), tmp, compression="zstd")


def evaluate_run(
    settings: Settings,
    models: Sequence[str] | None = None,
    external: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict with the run's saved models (default: all) and record metrics and predictions.

    With ``external`` the models score that CSV instead (evaluation ``cross_corpus``).
    """
    paths = settings.paths
    names = list(models or list_models(paths.models))
    if not names:
        raise FileNotFoundError(
            f"no trained models in {paths.models}: run `douban train --run {paths.name}`"
        )
    if external is not None:
        evaluation, data, splits = (
            "cross_corpus",
            external_data(paths, settings, external),
            ("test",),
        )
        data.reviews = data.reviews.assign(split="test")
    else:
        evaluation, data, splits = run_evaluation(paths), RunData.load(paths), METRIC_SPLITS
    fingerprint = data.encoder_info()["fingerprint"]
    all_rows = np.arange(len(data.reviews))
    token_rows = np.flatnonzero(data.store.has_tokens())
    # a text-reading model (a fine-tuned encoder) costs an encoder pass per review: it predicts
    # only the splits that metrics and the app read, not the train split
    metric_rows = np.flatnonzero(data.reviews["split"].isin(splits).to_numpy())

    doc = read_json(paths.metrics) if paths.metrics.exists() else {}
    doc |= {"run": paths.name, "is_demo": _is_demo(paths), "encoder": data.encoder_info()}
    section = doc.setdefault("evaluations", {}).setdefault(evaluation, {"models": {}})
    section["splits"] = list(splits)
    tables = []
    for name in tqdm(names, desc=f"evaluate {evaluation}", unit="model", disable=not progress):
        model = load_star_model(paths.models, name, fingerprint)
        if getattr(model, "reads_text", False):
            rows = metric_rows
        elif needs_tokens(model):
            rows = token_rows
            if len(rows) < len(all_rows):
                log.warning("%s: %d reviews have no token states", name, len(all_rows) - len(rows))
        else:
            rows = all_rows
        pred = model.predict(data.source, rows)
        tables.append(prediction_table(evaluation, name, data.reviews, rows, pred))
        section["models"][name] = model_metrics(data.reviews, rows, pred, splits)
    section["evaluated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    _merge_predictions(paths.predictions, tables, {(evaluation, n) for n in names})
    write_json(paths.metrics, doc)
    print_table(doc, evaluation)
    return doc


def _is_demo(paths: RunPaths) -> bool:
    return bool(read_json(paths.summary).get("is_demo")) if paths.summary.exists() else False


def print_table(doc: dict[str, Any], evaluation: str, split: str = "test") -> None:
    """Every model's headline figures on one split, best exact accuracy first."""
    models = doc.get("evaluations", {}).get(evaluation, {}).get("models", {})
    rows = [(m, headline(v[split])) for m, v in models.items() if v.get(split, {}).get("n")]
    table = Table(title=f"{doc.get('run')}: {evaluation} evaluation, {split} split")
    for col in ("model", "n", "exact", "off-by-one", "MAE", "QWK", "macro-F1"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, h in sorted(rows, key=lambda r: -r[1]["accuracy"]):
        table.add_row(
            name,
            str(models[name][split]["n"]),
            f"{h['accuracy']:.1%}",
            f"{h['off_by_one']:.1%}",
            f"{h['mae']:.3f}",
            f"{h['qwk']:.3f}",
            f"{h['macro_f1']:.3f}",
        )
    Console().print(table)

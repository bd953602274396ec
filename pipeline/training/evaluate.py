"""`douban evaluate`: predictions of every model of a model set on every review of a run, metrics
on the validation and test splits (overall and per film), saved beside the models as
``metrics.json`` and the long-format ``predictions.parquet`` (docs/architecture.md), and the run's
one default model, chosen on the validation split (never test).

Evaluations: ``random`` (the run's own split), ``film_holdout`` (the same, for a run prepared with
``--holdout-films``: its test split is the held-out films) and ``cross_corpus`` (another CSV that
the workflow prepares and encodes under ``runs/<run>/external/<name>/``, every review counted as
test). Each (evaluation, model) pair records the fingerprint of the data and the model it was
computed from; a current pair is not recomputed, and re-evaluating keeps the other pairs.
"""

from __future__ import annotations

import logging
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

from pipeline.artifacts import atomic_path, fingerprint, read_json, read_table
from pipeline.config import ModelSet, RunPaths, Settings
from pipeline.errors import StageMissingError
from pipeline.modeling.bundle import list_models, load_star_model
from pipeline.modeling.calibration import saved_calibration
from pipeline.modeling.inputs import Predictions
from pipeline.modeling.metrics import headline, star_metrics
from pipeline.modeling.prior import (
    adapt_predictions,
    implied_prior,
    run_train_prior,
)
from pipeline.modeling.spec import best_on_validation, write_metrics
from pipeline.training.data import TrainingData, saved_fingerprint

log = logging.getLogger(__name__)
console = Console(stderr=True)
METRIC_SPLITS = ("val", "test")
EVALUATE_VERSION = "evaluate-1"  # bump when the figures change meaning: every pair is recomputed

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


def own_evaluation(paths: RunPaths) -> str:
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
    """Metrics per split, overall, per film and (when the run has several corpora) per source,
    for one model's predictions on ``rows``."""
    sub = reviews.iloc[rows]
    split = sub["split"].to_numpy()
    film = sub["film"].astype(str).to_numpy()
    source = sub["source"].astype(str).to_numpy() if "source" in sub else np.full(len(sub), "")
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
        if len(set(source)) > 1:
            out.setdefault("per_source", {})[s] = {
                c: metrics(in_split & (source == c)) for c in sorted(set(source[in_split]))
            }
    return out


def _merge_predictions(path: Path, new: list[pa.Table], replaced: set[tuple[str, str]]) -> None:
    tables = []
    if path.exists():
        old = read_table(path).cast(PREDICTION_SCHEMA)
        keys = pc.binary_join_element_wise(old["evaluation"], old["model"], "\x00")
        drop = pa.array(["\x00".join(k) for k in replaced], pa.string())
        tables.append(old.filter(pc.invert(pc.is_in(keys, value_set=drop))))
    tables += new
    with atomic_path(path) as tmp:
        pq.write_table(pa.concat_tables(tables), tmp, compression="zstd")


def pair_fingerprint(data: TrainingData, models: ModelSet, name: str) -> str:
    """What an (evaluation, model) pair was computed from: the reviews and features, the model."""
    return fingerprint(EVALUATE_VERSION, data.fingerprint, saved_fingerprint(models.model(name)))


def read_metrics(models: ModelSet) -> dict[str, Any]:
    """The set's metrics document (empty before its first evaluation)."""
    return read_json(models.metrics) if models.metrics.exists() else {}


def _evaluation(paths: RunPaths, evaluation: str | None) -> str:
    return evaluation or own_evaluation(paths)


def stale_models(
    data: TrainingData, models: ModelSet, names: Sequence[str], evaluation: str
) -> list[str]:
    """The named models whose figures in ``evaluation`` are missing or were computed from other
    data or another version of the model."""
    doc = read_metrics(models)
    recorded = doc.get("evaluations", {}).get(evaluation, {}).get("fingerprints", {})
    return [n for n in names if recorded.get(n) != pair_fingerprint(data, models, n)]


def choose_default(doc: dict[str, Any], evaluation: str, select_by: str) -> dict[str, Any] | None:
    """The default model the evaluate stage records: :func:`best_on_validation` of the run's
    own evaluation."""
    return best_on_validation(doc, evaluation, select_by)


def needs_evaluation(
    settings: Settings,
    data: TrainingData,
    models: ModelSet,
    names: Sequence[str] | None = None,
    evaluation: str | None = None,
) -> bool:
    """Whether :func:`evaluate_models` would change anything: a stale pair, or a default model
    not chosen as the settings say."""
    evaluation = _evaluation(data.paths, evaluation)
    names = list(names or list_models(models.models))
    if stale_models(data, models, names, evaluation):
        return True
    if evaluation == "cross_corpus":
        return False
    doc = read_metrics(models)
    return doc.get("default_model") != choose_default(doc, evaluation, settings.select_by)


def evaluate_models(
    settings: Settings,
    data: TrainingData,
    models: ModelSet,
    names: Sequence[str] | None = None,
    *,
    evaluation: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict with the named models of ``models`` (default: all) on ``data`` and record the
    metrics, the predictions and the default model in ``models``; returns the metrics document.
    Pairs that are current are kept as they are unless ``force``. ``evaluation``: default the
    run's own (``random`` or ``film_holdout``); ``cross_corpus`` counts every review as test."""
    paths = settings.paths
    names = list(names or list_models(models.models))
    if not names:
        raise StageMissingError(
            f"run {paths.name} has no trained models", f"run `douban train --run {paths.name}`"
        )
    evaluation = _evaluation(paths, evaluation)
    splits = ("test",) if evaluation == "cross_corpus" else METRIC_SPLITS
    reviews = data.reviews.assign(split="test") if evaluation == "cross_corpus" else data.reviews
    todo = names if force else stale_models(data, models, names, evaluation)
    encoder_fp = data.encoder_info()["fingerprint"]
    all_rows = np.arange(len(reviews))
    # a text-reading model (a fine-tuned encoder) costs an encoder pass per review: it predicts
    # only the splits that metrics and the app read, not the train split
    metric_rows = np.flatnonzero(reviews["split"].isin(splits).to_numpy())

    doc = read_metrics(models)
    doc |= {"run": paths.name, "is_demo": _is_demo(paths), "encoder": data.encoder_info()}
    section = doc.setdefault("evaluations", {}).setdefault(evaluation, {"models": {}})
    section["splits"] = list(splits)
    recorded = section.setdefault("fingerprints", {})
    tables = []
    for name in tqdm(todo, desc=f"evaluate {evaluation}", unit="model", disable=not progress):
        model = load_star_model(models.models, name, encoder_fp)
        if model.reads_text:
            rows = metric_rows
        else:
            rows = np.flatnonzero(data.input_mask(model.store_needs))
            if len(rows) < len(all_rows):
                log.info("%s reads the %d encoded reviews of %d", name, len(rows), len(all_rows))
        pred = model.predict(data.source, rows)
        tables.append(prediction_table(evaluation, name, reviews, rows, pred))
        section["models"][name] = model_metrics(reviews, rows, pred, splits)
        if evaluation == "cross_corpus" and pred.probs is not None:  # a new corpus: its own prior
            calibration = saved_calibration(models.predictions, name)
            members = getattr(model, "members", {})
            prior = implied_prior(
                model.config, run_train_prior(paths.reviews), lambda m, ms=members: ms[m].config
            )
            adapted = adapt_predictions(pred, prior, calibration)
            section.setdefault("adapted", {})[name] = model_metrics(reviews, rows, adapted, splits)
        recorded[name] = pair_fingerprint(data, models, name)
    if todo:
        section["evaluated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        _merge_predictions(models.predictions, tables, {(evaluation, n) for n in todo})
    else:
        log.info("%s evaluation of run %s is up to date", evaluation, paths.name)
    if evaluation != "cross_corpus":
        doc["default_model"] = choose_default(doc, evaluation, settings.select_by)
    write_metrics(models, doc)
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
    console.print(table)
    sizes = {models[name][split]["n"] for name, _ in rows}
    if len(sizes) > 1:
        console.print(
            f"n differs: encoder models read the reviews with stored features ({min(sizes):,} "
            f"{split} reviews: an encode budget's stratified sample or a token-state limit), "
            f"text models every review ({max(sizes):,})"
        )

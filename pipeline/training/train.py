"""`douban train`: fit the baselines and the self-attentive heads of one run side by side, save
them under ``runs/<run>/models/`` and evaluate them (metrics.json + predictions.parquet).

Head training: AdamW, early stopping on the validation split (accuracy for the classifier, MAE of
the predicted stars for regression and ordinal heads), seeded, token states read from the
memory-mapped store one length-bucketed batch at a time (never loaded whole).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from pipeline.artifacts import write_json
from pipeline.config import HeadSettings, RunPaths, Settings
from pipeline.modeling.baselines import EnsembleModel, LinearStarModel, MajorityModel
from pipeline.modeling.bundle import list_models, load_star_model, needs_tokens, save_model
from pipeline.modeling.heads import OUTPUT_KINDS, HeadModel, OutputKind
from pipeline.modeling.inputs import FeatureSource, StoreSource

log = logging.getLogger(__name__)

HEAD_NAMES: dict[str, str] = {
    "classification": "head_cls",
    "regression": "head_reg",
    "ordinal": "head_ord",
}
BASELINE_NAMES = ("majority", "tfidf_lr", "tfidf_ridge", "pooled_lr", "pooled_lr_layers")
ENSEMBLE_NAME = "ensemble_head_tfidf"
FINETUNE_ENSEMBLE_NAME = "ensemble_finetune_tfidf"
# ensemble -> its two members, fitted in the same call or loaded from disk; the fine-tuned member
# comes from `douban finetune`, which fits its ensemble itself
ENSEMBLES: dict[str, tuple[str, str]] = {
    ENSEMBLE_NAME: ("head_cls", "tfidf_lr"),
    FINETUNE_ENSEMBLE_NAME: ("finetune_cls", "tfidf_lr"),
}
ALL_MODELS = (*BASELINE_NAMES, *HEAD_NAMES.values(), ENSEMBLE_NAME)  # what `douban train` fits
TRAINABLE = (*ALL_MODELS, FINETUNE_ENSEMBLE_NAME)


@dataclass
class RunData:
    """A run's prepared reviews and feature store, row i = review_id i."""

    paths: RunPaths
    reviews: pd.DataFrame
    store: Any
    source: StoreSource

    @classmethod
    def load(cls, paths: RunPaths) -> RunData:
        from pipeline.features.store import FeatureStore

        if not paths.reviews.exists():
            raise FileNotFoundError(
                f"no prepared reviews in {paths.prepared}: run `douban prepare --run {paths.name}`"
            )
        reviews = pd.read_parquet(paths.reviews)
        store = FeatureStore.open(paths.features)
        if not np.array_equal(store.review_ids, reviews["review_id"].to_numpy()):
            raise ValueError(
                f"the feature store of run {paths.name} does not match its prepared reviews: "
                f"run `douban features --run {paths.name}`"
            )
        return cls(paths, reviews, store, StoreSource(store, reviews))

    @property
    def stars(self) -> np.ndarray:
        return self.reviews["star"].to_numpy().astype(np.int64)

    def rows(self, split: str, need_tokens: bool = False) -> np.ndarray:
        mask = self.reviews["split"].to_numpy() == split
        if need_tokens:
            mask &= self.store.has_tokens()
        return np.flatnonzero(mask)

    def encoder_info(self) -> dict[str, Any]:
        spec = self.store.encoder
        return {"name": spec.get("name"), "fingerprint": spec.get("fingerprint"), "spec": spec}


def pick_torch_device(prefer: str = "auto") -> torch.device:
    from pipeline.encoding.load import pick_device

    return pick_device(prefer)


def length_batches(
    rows: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffled batches of similar length: shuffle, sort within windows of 50 batches, cut,
    shuffle the batch order. Less padding, still a fresh order each epoch."""
    rows = rng.permutation(rows)
    window = batch_size * 50
    batches = []
    for start in range(0, len(rows), window):
        chunk = rows[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def validation_score(output: OutputKind, pred_star: np.ndarray, stars: np.ndarray) -> float:
    """Higher is better: accuracy for classifiers, minus the star MAE otherwise."""
    if output == "classification":
        return float((pred_star == stars).mean())
    return -float(np.abs(pred_star.astype(np.int64) - stars).mean())


def fit_head(
    source: FeatureSource,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    stars: np.ndarray,
    lengths: np.ndarray,
    output: OutputKind,
    hs: HeadSettings,
    *,
    layers: Sequence[int],
    pooled_layers: Sequence[int],
    hidden_size: int,
    seed: int = 0,
    device: torch.device | None = None,
    progress: bool = True,
) -> tuple[HeadModel, dict[str, Any]]:
    """Train one head; returns the best-on-validation model and its training history."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = device or torch.device("cpu")
    arch = {
        "hops": hs.hops,
        "attention_dim": hs.attention_dim,
        "mlp_dim": hs.mlp_dim,
        "dropout": hs.dropout,
        "layer_mix": hs.layer_mix,
    }
    model = HeadModel.build(output, hidden_size, layers, pooled_layers, arch)
    model.module.to(device)
    weights = None
    if hs.class_weights and output == "classification":
        counts = np.bincount(stars[train_rows] - 1, minlength=5).astype(np.float32)
        inv = counts.sum() / np.maximum(counts, 1) / 5
        weights = torch.tensor(inv, device=device)
    opt = torch.optim.AdamW(model.module.parameters(), lr=hs.lr, weight_decay=hs.weight_decay)
    labels = torch.from_numpy(stars - 1)
    best_score, best_state, best_epoch, history = -np.inf, None, 0, []
    for epoch in range(1, hs.epochs + 1):
        model.module.train()
        started, total, seen = time.perf_counter(), 0.0, 0
        batches = length_batches(train_rows, lengths, hs.batch_size, rng)
        bar = tqdm(batches, desc=f"{HEAD_NAMES[output]} epoch {epoch}", disable=not progress)
        for batch in bar:
            out, _ = model.forward_rows(source, batch)
            y = labels[batch].to(device)
            loss = model.module.loss(out, y, weights) + hs.penalty * out.penalty
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
            seen += len(batch)
            bar.set_postfix(loss=f"{total / seen:.4f}", refresh=False)
        val_pred = model.predict(source, val_rows).pred_star
        score = validation_score(output, val_pred, stars[val_rows])
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / max(seen, 1),
                "val_score": score,
                "seconds": time.perf_counter() - started,
            }
        )
        log.info("%s epoch %d: loss %.4f, val %.4f", HEAD_NAMES[output], epoch, total / seen, score)
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = copy.deepcopy(model.module.state_dict())
        elif epoch - best_epoch >= hs.patience:
            break
    model.module.load_state_dict(best_state)
    model.module.eval()
    mix = model.module.mix
    info = {
        "history": history,
        "best_epoch": best_epoch,
        "val_score": best_score,
        "layer_weights": None if mix is None else torch.softmax(mix.weights.detach(), 0).tolist(),
    }
    return model, info


def _head_layers(data: RunData, hs: HeadSettings) -> list[int]:
    from pipeline.encoding.encode import normalize_layers

    stored = list(data.store.token_layers)
    if hs.layers is None:
        return stored
    wanted = normalize_layers(hs.layers, data.store.num_layers)
    missing = [x for x in wanted if x not in stored]
    if missing:
        raise ValueError(
            f"head.layers {hs.layers} asks for layer(s) {missing} but the store keeps token states "
            f"of {stored}: run `douban features --run {data.paths.name} --layers ...`"
        )
    return wanted


def _config(data: RunData, settings: Settings, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "encoder": data.encoder_info(),
        "features_fingerprint": data.store.fingerprint,
        "run": data.paths.name,
        "settings": settings.head.model_dump(mode="json"),
        "seed": settings.seed,
        "trained": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **extra,
    }


def train_models(
    settings: Settings, models: Sequence[str] | None = None, progress: bool = True
) -> dict[str, dict[str, Any]]:
    """Fit the requested models (default: all) and save them; returns each model's config."""
    wanted = list(models or ALL_MODELS)
    unknown = sorted(set(wanted) - set(TRAINABLE))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {list(TRAINABLE)}")
    hs = settings.head
    torch.manual_seed(settings.seed)
    data = RunData.load(settings.paths)
    stars = data.stars
    train, val = data.rows("train"), data.rows("val")
    if len(train) == 0 or len(val) == 0:
        raise ValueError(
            f"run {data.paths.name} needs reviews in both train and val splits "
            f"(has {len(train)} / {len(val)})"
        )
    source, num_states = data.source, data.store.num_layers
    last = num_states - 1
    fitted: dict[str, Any] = {}

    def keep(name: str, model: Any, **extra: Any) -> None:
        model.config |= _config(data, settings, extra)
        save_model(settings.paths.model(name), model.tensors(), model.config)
        fitted[name] = model
        log.info("saved %s -> %s", name, settings.paths.model(name))

    if "majority" in wanted:
        keep("majority", MajorityModel.fit(stars[train]))
    saved = set(list_models(settings.paths.models))
    ensembles = [e for e in ENSEMBLES if e in wanted]
    for member in {m for e in ensembles for m in ENSEMBLES[e]} - saved - set(wanted):
        if member not in ALL_MODELS:
            raise ValueError(
                f"the ensemble needs {member}: run `douban finetune --run {data.paths.name}` first"
            )
        wanted.append(member)  # an ensemble needs it: train it too
    if "tfidf_lr" in wanted:
        keep("tfidf_lr", LinearStarModel.fit_tfidf(source, train, val, stars, seed=settings.seed))
    if "tfidf_ridge" in wanted:
        model = LinearStarModel.fit_tfidf(source, train, val, stars, True, seed=settings.seed)
        keep("tfidf_ridge", model)
    if "pooled_lr" in wanted:
        keep("pooled_lr", LinearStarModel.fit_pooled(source, train, val, stars, [last]))
    if "pooled_lr_layers" in wanted:
        layers = [x % num_states for x in hs.baseline_pooled_layers]
        keep("pooled_lr_layers", LinearStarModel.fit_pooled(source, train, val, stars, layers))

    head_train, head_val = data.rows("train", True), data.rows("val", True)
    outputs = [o for o in OUTPUT_KINDS if o in hs.outputs]
    heads_wanted = [o for o in outputs if HEAD_NAMES[o] in wanted]
    if heads_wanted and (len(head_train) == 0 or len(head_val) == 0):
        raise ValueError("no token states for the train/val reviews: heads cannot be trained")
    if heads_wanted:
        layers = _head_layers(data, hs)
        device = pick_torch_device(hs.device)
        lengths = data.store.lengths()
        for output in heads_wanted:
            model, info = fit_head(
                source, head_train, head_val, stars, lengths, output, hs,
                layers=layers, pooled_layers=[last] if hs.pooled_input else [],
                hidden_size=data.store.hidden_size, seed=settings.seed, device=device,
                progress=progress,
            )  # fmt: skip
            model.module.cpu()
            keep(HEAD_NAMES[output], model, training=info, train_reviews=len(head_train))

    fingerprint = data.encoder_info()["fingerprint"]
    for name in ensembles:
        members = {
            m: fitted.get(m) or load_star_model(settings.paths.models, m, fingerprint)
            for m in ENSEMBLES[name]
        }
        rows = head_val if any(needs_tokens(m) for m in members.values()) else val
        val_probs = [m.predict(source, rows).probs for m in members.values()]
        keep(name, EnsembleModel.fit(members, val_probs, stars[rows]))
    write_json(settings.paths.settings, settings)
    return {name: m.config for name, m in fitted.items()}


def train_run(
    settings: Settings, models: Sequence[str] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Train, then evaluate the models just trained (other models' figures are kept); returns
    the metrics document."""
    from pipeline.training.evaluate import evaluate_run

    trained = train_models(settings, models, progress=progress)
    return evaluate_run(settings, models=list(trained), progress=progress)

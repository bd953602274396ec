"""`douban train`: fit the baselines, the self-attentive heads and their ensembles of one run
side by side and save them into a model set (``models/<name>/``, see ``RunPaths.new_model_set``).

A model is current when its config.json records the fingerprint it would be trained with now
(the features it reads, the training settings and seed; for an ensemble its members'), and a
current model is not retrained: the one caching rule of every stage. Evaluation is a stage of its
own (evaluate.py); workflow.py runs one after the other.

Head training: AdamW, early stopping on the validation split (accuracy for the classifier, MAE of
the predicted stars for regression and ordinal heads), seeded, token states read from the
memory-mapped store one length-bucketed batch at a time (never loaded whole).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.artifacts import fingerprint
from pipeline.config import HeadSettings, ModelSet, Settings
from pipeline.encoding.encode import normalize_layers
from pipeline.encoding.load import pick_device
from pipeline.errors import InputError, StageMissingError
from pipeline.modeling.baselines import EnsembleModel, LinearStarModel, MajorityModel
from pipeline.modeling.batching import length_bucketed_batches, seed_everything, validation_score
from pipeline.modeling.bundle import (
    SCORING,
    load_star_model,
    save_model,
    scoring_spec,
)
from pipeline.modeling.heads import OUTPUT_KINDS, HeadModel, OutputKind
from pipeline.modeling.inputs import FeatureSource, members_need
from pipeline.training.data import TEXT_MODELS, TrainingData, saved_fingerprint

log = logging.getLogger(__name__)

TRAIN_VERSION = "train-1"  # bump when training changes meaning: every model becomes stale
HEAD_NAMES: dict[str, str] = {
    "classification": "head_cls",
    "regression": "head_reg",
    "ordinal": "head_ord",
}
BASELINE_NAMES = ("majority", "tfidf_lr", "tfidf_ridge", "pooled_lr", "pooled_lr_layers")
ENSEMBLE_NAME = "ensemble_head_tfidf"
FINETUNE_ENSEMBLE_NAME = "ensemble_finetune_tfidf"
# ensemble -> its two members; the fine-tuned member comes from `douban finetune`, after which the
# workflow fits its ensemble
ENSEMBLES: dict[str, tuple[str, str]] = {
    ENSEMBLE_NAME: ("head_cls", "tfidf_lr"),
    FINETUNE_ENSEMBLE_NAME: ("finetune_cls", "tfidf_lr"),
}
ALL_MODELS = (*BASELINE_NAMES, *HEAD_NAMES.values(), ENSEMBLE_NAME)  # what `douban train` fits
TRAINABLE = (*ALL_MODELS, FINETUNE_ENSEMBLE_NAME)


def default_models(hs: HeadSettings, has_features: bool = True) -> list[str]:
    """What `douban train` fits unless told otherwise: every baseline, the heads of
    ``head.outputs`` and, with ``head.ensemble``, the head + TF-IDF ensemble; only the text
    models on a run without features."""
    if not has_features:
        return list(TEXT_MODELS)
    heads = [HEAD_NAMES[o] for o in OUTPUT_KINDS if o in hs.outputs]
    ensemble = [ENSEMBLE_NAME] if hs.ensemble and "head_cls" in heads else []
    return [*BASELINE_NAMES, *heads, *ensemble]


def model_fingerprints(
    settings: Settings, data: TrainingData, models: ModelSet, names: Sequence[str]
) -> dict[str, str]:
    """The fingerprint each named model must record to be current: the feature store it reads
    (which covers the prepared reviews and the encoder), the head settings and the seed; for an
    ensemble, its members' fingerprints (the planned ones, else the saved ones)."""
    head = settings.head.model_dump(mode="json", exclude={"device"})
    fps: dict[str, str] = {}
    for name in sorted(names, key=lambda n: n in ENSEMBLES):  # members before ensembles
        if name in ENSEMBLES:
            members = [fps.get(m) or saved_fingerprint(models.model(m)) for m in ENSEMBLES[name]]
            fps[name] = fingerprint(TRAIN_VERSION, name, members)
        else:
            fps[name] = fingerprint(TRAIN_VERSION, name, data.fingerprint, head, settings.seed)
    return fps


def models_to_train(
    settings: Settings,
    data: TrainingData,
    models: ModelSet,
    wanted: Sequence[str] | None = None,
    *,
    force: bool = False,
) -> list[str]:
    """The wanted models (default: all of ``douban train``) that are not current in ``models``
    (all of them with ``force``), with the members a wanted ensemble needs that are not current
    either."""
    wanted = list(wanted or default_models(settings.head, data.store is not None))
    unknown = sorted(set(wanted) - set(TRAINABLE))
    if unknown:
        raise InputError(f"unknown model(s) {unknown}", f"choose from {', '.join(TRAINABLE)}")
    if data.store is None and set(wanted) - set(TEXT_MODELS):
        data.require_store(", ".join(sorted(set(wanted) - set(TEXT_MODELS))))
    members = {m for e in wanted if e in ENSEMBLES for m in ENSEMBLES[e]} - set(wanted)
    for member in sorted(members - set(ALL_MODELS)):
        if saved_fingerprint(models.model(member)) is None:
            raise StageMissingError(
                f"the ensemble needs {member}", f"run `douban finetune --run {data.paths.name}`"
            )
    candidates = [*wanted, *(members & set(ALL_MODELS))]
    fps = model_fingerprints(settings, data, models, candidates)
    stale = {n for n in candidates if saved_fingerprint(models.model(n)) != fps[n]}
    return [n for n in TRAINABLE if n in stale or (force and n in wanted)]


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
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise InputError(
            f"a head needs train and validation reviews with token states (has "
            f"{len(train_rows)} / {len(val_rows)})",
            "prepare more reviews, or encode more of them (--encode-budget)",
        )
    seed_everything(seed)
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
        batches = length_bucketed_batches(lengths, hs.batch_size, rng=rng, rows=train_rows)
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
        score = validation_score(output, model.predict(source, val_rows), stars[val_rows])
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


def _head_layers(data: TrainingData, hs: HeadSettings) -> list[int]:
    store = data.require_store()
    stored = list(store.token_layers)
    if hs.layers is None:
        return stored
    wanted = normalize_layers(hs.layers, store.num_layers)
    missing = [x for x in wanted if x not in stored]
    if missing:
        raise InputError(
            f"head.layers {hs.layers} asks for layer(s) {missing} but the store keeps token states "
            f"of {stored}",
            f"run `douban features --run {data.paths.name} --layers ...`",
        )
    return wanted


def train_models(
    settings: Settings,
    data: TrainingData,
    models: ModelSet,
    names: Sequence[str],
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Fit the named models (see :func:`models_to_train`) and save them into ``models``;
    returns each model's config."""
    if not names:
        return {}
    hs = settings.head
    seed_everything(settings.seed)
    stars = data.stars
    train, val = data.rows("train"), data.rows("val")
    if len(train) == 0 or len(val) == 0:
        raise InputError(
            f"run {data.paths.name} needs reviews in both train and val splits "
            f"(has {len(train)} / {len(val)})",
            "prepare more reviews, or change prepare.val_frac",
        )
    fps = model_fingerprints(settings, data, models, names)
    common = {
        "encoder": data.encoder_info(),
        "features_fingerprint": data.fingerprint,
        "run": data.paths.name,
        "settings": hs.model_dump(mode="json"),
        "seed": settings.seed,
        SCORING: scoring_spec(data.paths),
    }
    source = data.source
    fitted: dict[str, Any] = {}

    def keep(name: str, model: Any, **extra: Any) -> None:
        model.config |= common | extra
        model.config |= {"fingerprint": fps[name], "trained": time.strftime("%Y-%m-%dT%H:%M:%S")}
        save_model(models.model(name), model.tensors(), model.config)
        fitted[name] = model
        log.info("saved %s -> %s", name, models.model(name))

    if "majority" in names:
        keep("majority", MajorityModel.fit(stars[train]))
    if "tfidf_lr" in names:
        balanced = settings.head.tfidf_balanced
        model = LinearStarModel.fit_tfidf(
            source, train, val, stars, seed=settings.seed, balanced=balanced
        )
        keep("tfidf_lr", model)
    if "tfidf_ridge" in names:
        model = LinearStarModel.fit_tfidf(source, train, val, stars, True, seed=settings.seed)
        keep("tfidf_ridge", model)
    num_states = data.require_store().num_layers if set(names) - set(TEXT_MODELS) else 0
    last = num_states - 1
    pooled_train, pooled_val = data.rows("train", "pooled"), data.rows("val", "pooled")
    if "pooled_lr" in names:
        model = LinearStarModel.fit_pooled(source, pooled_train, pooled_val, stars, [last])
        keep("pooled_lr", model)
    if "pooled_lr_layers" in names:
        layers = [x % num_states for x in hs.baseline_pooled_layers]
        model = LinearStarModel.fit_pooled(source, pooled_train, pooled_val, stars, layers)
        keep("pooled_lr_layers", model)

    head_train, head_val = data.rows("train", "tokens"), data.rows("val", "tokens")
    heads = [o for o in OUTPUT_KINDS if HEAD_NAMES[o] in names]
    if heads and (len(head_train) == 0 or len(head_val) == 0):
        raise StageMissingError(
            "no token states for the train/val reviews: heads cannot be trained",
            f"run `douban features --run {data.paths.name}` without a token-state limit",
        )
    if heads:
        layers = _head_layers(data, hs)
        device = pick_device(hs.device)
        store = data.require_store()
        for output in heads:
            model, info = fit_head(
                source, head_train, head_val, stars, data.token_lengths(), output, hs,
                layers=layers, pooled_layers=[last] if hs.pooled_input else [],
                hidden_size=store.hidden_size, seed=settings.seed, device=device,
                progress=progress,
            )  # fmt: skip
            model.module.cpu()
            keep(HEAD_NAMES[output], model, training=info, train_reviews=len(head_train))

    for name in (n for n in names if n in ENSEMBLES):
        members = {
            m: fitted.get(m)
            or load_star_model(models.models, m, data.encoder_info()["fingerprint"])
            for m in ENSEMBLES[name]
        }
        rows = data.rows("val", members_need(members.values()))
        val_probs = [m.predict(source, rows).probs for m in members.values()]
        # a fine-tuned self-attentive member brings its own encoder: the ensemble scores with it
        tuned = [m.config for m in members.values() if m.config.get("tuned_encoder")]
        own = {"encoder": tuned[0]["encoder"], SCORING: tuned[0][SCORING]} if tuned else {}
        keep(name, EnsembleModel.fit(members, val_probs, stars[rows]), **own)
    return {name: m.config for name, m in fitted.items()}

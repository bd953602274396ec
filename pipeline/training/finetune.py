"""`douban finetune`: the encoder fine-tuned with the star as its training signal, saved into the
run's model set beside the frozen-feature models.

The frozen-feature heads show what the pretrained encoder already knows about stars; fine-tuning
shows how far the same encoder moves when the star is the training signal. The model and its
training loop live in :mod:`pipeline.training.tuning`; this stage picks its reviews
(``finetune.train_limit`` train reviews and ``val_limit`` val reviews, stratified by star),
starts it from the run's frozen head, and saves it as ``models/finetune_<cls|reg|ord>/``: for the
self-attentive classifier the tuned encoder as a plain transformers directory beside a head
(``save_tuned_head``), which scores on ONNX Runtime without torch. A model whose fingerprint
(encoder, settings, seed, prepared data, the head it started from) is unchanged is not retrained.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.artifacts import fingerprint, read_frame, read_manifest
from pipeline.config import ModelSet, Settings
from pipeline.encoding.load import EncoderSpec, resolve_encoder
from pipeline.errors import InputError, StageMissingError
from pipeline.modeling.sentence import (
    CODE_VERSION,
    model_name,
    resolve_train_layers,
    save_finetuned,
    save_tuned_head,
)
from pipeline.modeling.spec import SCORING, scoring_spec
from pipeline.training.data import saved_fingerprint
from pipeline.training.train import HEAD_NAMES
from pipeline.training.tuning import limit_rows, saved_head, tune_encoder

log = logging.getLogger(__name__)


def finetune_fingerprint(
    settings: Settings, spec: EncoderSpec, models: ModelSet | None = None
) -> str:
    prepared = read_manifest(settings.paths.prepared)
    if prepared is None:
        raise StageMissingError(
            f"no prepared data in {settings.paths.prepared}",
            f"run `douban prepare --run {settings.run_name} --input <csv>` first",
        )
    tuning = settings.finetune.model_dump(mode="json", exclude={"device", "in_run"})
    tuning["train_layers"] = resolve_train_layers(settings.finetune)
    if settings.finetune.classifier == "attention":  # the head's shape and penalty
        tuning["head"] = settings.head.model_dump(
            mode="json", include={"hops", "attention_dim", "mlp_dim", "penalty"}
        )
        if models is not None:  # the frozen head it may start from
            head = HEAD_NAMES[settings.finetune.output]
            tuning["warm_start"] = saved_fingerprint(models.model(head))
    return fingerprint(
        CODE_VERSION,
        spec.fingerprint,
        spec.pooling,
        spec.prefix,
        tuning,
        settings.seed,
        prepared["fingerprint"],
    )


def _split_rows(reviews: pd.DataFrame, split: str, limit: int | None, seed: int) -> np.ndarray:
    rows = np.flatnonzero(reviews["split"].to_numpy() == split)
    if len(rows) == 0:
        raise InputError(
            f"the prepared reviews have no {split!r} split to fine-tune with",
            "prepare more reviews, or change prepare.val_frac",
        )
    return limit_rows(rows, reviews["star"].to_numpy(), limit, seed)


def finetune_target(settings: Settings, models: ModelSet) -> tuple[EncoderSpec, str]:
    """The encoder to fine-tune and the fingerprint the fine-tuned model records (in
    ``models``, whose frozen head it may start from)."""
    features = settings.features
    spec = resolve_encoder(features.encoder, pooling=features.pooling, prefix=features.prefix)
    return spec, finetune_fingerprint(settings, spec, models)


def is_current(settings: Settings, models: ModelSet) -> bool:
    """Whether ``models`` holds the fine-tuned model these settings would train."""
    model_dir = models.model(model_name(settings.finetune.output))
    return saved_fingerprint(model_dir) == finetune_target(settings, models)[1]


def finetune_model(
    settings: Settings, models: ModelSet, *, force: bool = False, progress: bool = True
) -> Path:
    """Fine-tune the run's encoder on its train split (``finetune.train_limit`` reviews,
    stratified), early-stopped on its val split, into ``models`` as ``finetune_<output>/``;
    returns that directory. Skipped when the model there records the same fingerprint.
    Evaluating it and fitting its ensemble are the workflow's next steps."""
    model_dir = models.model(model_name(settings.finetune.output))
    spec, fp = finetune_target(settings, models)
    if not force and saved_fingerprint(model_dir) == fp:
        log.info("%s is up to date (fingerprint %s): not retrained", model_dir.name, fp)
    else:
        _train_and_save(settings, spec, fp, model_dir, progress, models.models)
    return model_dir


def _train_and_save(
    settings: Settings,
    spec: EncoderSpec,
    fp: str,
    model_dir: Path,
    progress: bool,
    models_dir: Path,
) -> None:
    ft = settings.finetune
    name = model_dir.name
    reviews = read_frame(settings.paths.reviews, columns=["review_id", "star", "text", "split"])
    train_rows = _split_rows(reviews, "train", ft.train_limit, settings.seed)
    val_rows = _split_rows(reviews, "val", ft.val_limit, settings.seed)
    tuned = tune_encoder(
        settings, spec, reviews["text"].tolist(), reviews["star"].to_numpy(np.int64),
        train_rows, val_rows, warm=saved_head(models_dir, ft.output), progress=progress,
        label=name,
    )  # fmt: skip
    report = tuned.report
    save = save_tuned_head if ft.classifier == "attention" else save_finetuned
    save(
        model_dir,
        tuned.model,
        tuned.encoder,
        {
            "name": name,
            "fingerprint": fp,
            "encoder": asdict(spec),
            "max_length": ft.max_length,
            SCORING: scoring_spec(settings.paths, asdict(spec), ft.max_length),
            "settings": ft.model_dump(mode="json"),
            "seed": settings.seed,
            "warm_start": tuned.warm_start,
            "train": report.to_dict(),
            "data": {
                "train_reviews": len(train_rows),
                "val_reviews": len(val_rows),
                "prepared": read_manifest(settings.paths.prepared)["fingerprint"],
            },
            "code_version": CODE_VERSION,
        },
    )
    log.info(
        "%s: best val %s %.4f at step %d of %d, %.0f s (%.1f s per 1,000 reviews) -> %s",
        name,
        report.selection_metric,
        report.best_val,
        report.best_step,
        report.steps,
        report.seconds,
        report.seconds_per_1000_reviews,
        model_dir,
    )

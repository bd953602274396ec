"""Fine-tuning the whole encoder: the pooled sentence vector, dropout and one linear layer.

The frozen-feature heads show what the pretrained encoder already knows about stars; fine-tuning
shows how far the same encoder moves when the star is the training signal. The head reads the
encoder's own pooled vector (mean over real tokens for e5, or [CLS]) and predicts 5 class logits
(``classification``), one star value (``regression``) or 4 CORN logits (``ordinal``), with the same
losses and decoding as the self-attentive heads, so its predictions are directly comparable.

Training: AdamW, linear warm-up then linear decay, gradient clipping, validation checks every
``eval_every`` steps with early stopping and the best weights restored, seeded, bf16 autocast on
a GPU and fp32 on a CPU. Batches are length-bucketed (reviews of similar length share a batch), so
little compute goes to padding. The word-embedding matrix (250k x 384 for e5-small, 80% of the
parameters) is frozen by default: only the tokens a batch contains would move, while AdamW would
still keep and update state for all of it on every step.

Saved as ``models/finetune_<cls|reg|ord>/``: ``model.safetensors`` (encoder + head),
``tokenizer/`` and ``config.json`` (base encoder spec and fingerprint, encoder config, head,
settings, labels, training history), and reloads to identical outputs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.numpy import load_file
from torch import nn
from tqdm.auto import tqdm
from transformers import (
    get_linear_schedule_with_warmup,
)

from pipeline.artifacts import MODEL_CONFIG, MODEL_WEIGHTS, fingerprint, read_json, read_manifest
from pipeline.config import FinetuneSettings, ModelSet, Settings
from pipeline.encoding.load import Encoder, EncoderSpec, load_encoder, pick_device, resolve_encoder
from pipeline.errors import InputError, StageMissingError
from pipeline.modeling.batching import (
    autocast,
    collate,
    length_bucketed_batches,
    module_device,
    seed_everything,
    selection_metric,
    stratified_subset,
    token_ids,
    validation_score,
)
from pipeline.modeling.heads import task_loss
from pipeline.modeling.sentence import (
    CODE_VERSION,
    SentenceModel,
    freeze_lower_layers,
    freeze_word_embeddings,
    model_name,
    predict,
    resolve_train_layers,
    save_finetuned,
    save_tuned_head,
)
from pipeline.modeling.spec import SCORING, scoring_spec
from pipeline.training.data import saved_fingerprint
from pipeline.training.train import HEAD_NAMES

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- training


@dataclass
class TrainReport:
    """What happened during fine-tuning (kept in config.json)."""

    steps: int = 0
    planned_steps: int = 0
    best_step: int = 0
    best_val: float = float("nan")
    selection_metric: str = ""
    stopped_early: bool = False
    seconds: float = 0.0
    validation_seconds: float = 0.0
    train_reviews: int = 0
    reviews_seen: int = 0
    train_tokens: int = 0
    frozen_parameters: int = 0
    trainable_parameters: int = 0
    device: str = ""
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def seconds_per_1000_reviews(self) -> float:
        """Training time (validation excluded) per 1,000 reviews seen."""
        training = self.seconds - self.validation_seconds
        return 1000.0 * training / self.reviews_seen if self.reviews_seen else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"seconds_per_1000_reviews": self.seconds_per_1000_reviews}


def _param_groups(
    model: nn.Module, weight_decay: float, lr: float, head_lr: float
) -> list[dict[str, Any]]:
    """AdamW groups: no decay on biases and LayerNorms; the classifier (``head.*``) at its own
    learning rate."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            decay = not (p.ndim < 2 or "LayerNorm" in name)
            groups.setdefault((name.startswith("head."), decay), []).append(p)
    return [
        {
            "params": ps,
            "weight_decay": weight_decay if decay else 0.0,
            "lr": head_lr if head else lr,
        }
        for (head, decay), ps in groups.items()
    ]


def warm_start_head(model: SentenceModel, models_dir: Path) -> str | None:
    """Start the self-attentive classifier from the run's frozen head of the same output when
    it read the encoder's last layer alone with the same shape: it already knows what the
    pretrained features say, so fine-tuning starts where the frozen model ended. Returns the
    head's name, or None (then it starts from scratch)."""
    name = HEAD_NAMES[model.output]
    try:
        config = read_json(models_dir / name / MODEL_CONFIG)
        weights = load_file(str(models_dir / name / MODEL_WEIGHTS))
    except (OSError, ValueError):
        return None
    last = model.encoder.config.num_hidden_layers
    if config.get("layers") != [last] or config.get("pooled_layers") or config.get("tuned_encoder"):
        return None
    try:
        model.head.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    except RuntimeError:  # another hops / attention_dim / mlp_dim
        return None
    return name


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every tensor that training can change (frozen parameters excluded)."""
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k not in frozen}


def train(
    model: SentenceModel,
    encoder: Encoder,
    train_texts: Sequence[str],
    train_stars: np.ndarray,
    val_texts: Sequence[str],
    val_stars: np.ndarray,
    settings: FinetuneSettings,
    *,
    seed: int,
    penalty: float = 0.0,
    progress: bool = True,
) -> TrainReport:
    """Fine-tune ``model`` (built on ``encoder.model``) in place, on the device it sits on; the
    weights of the best validation check are restored at the end. ``penalty`` weighs the
    self-attentive classifier's redundancy term (Lin et al.)."""
    if model.encoder is not encoder.model:
        raise ValueError("the model must be built on encoder.model (SentenceModel(encoder.model))")
    train_stars = np.asarray(train_stars, dtype=np.int64)
    val_stars = np.asarray(val_stars, dtype=np.int64)
    if len(train_texts) != len(train_stars) or len(val_texts) != len(val_stars):
        raise ValueError("texts and stars must have the same length")
    if len(train_texts) == 0 or len(val_texts) == 0:
        raise ValueError("fine-tuning needs at least one training and one validation review")
    device = module_device(model)
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    model.train()
    report = TrainReport(
        train_reviews=len(train_texts),
        selection_metric=selection_metric(model.output),
        frozen_parameters=freeze_word_embeddings(model, settings.freeze_embeddings),
        device=str(device),
    )
    report.frozen_parameters += freeze_lower_layers(model, resolve_train_layers(settings))
    report.trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head_lr = settings.head_lr if model.classifier == "attention" else settings.lr
    ids = token_ids(encoder, train_texts, settings.max_length)
    lengths = [len(x) for x in ids]
    labels = torch.as_tensor(train_stars - 1)
    total = math.ceil(len(ids) / settings.batch_size) * settings.epochs
    report.planned_steps = total
    optimizer = torch.optim.AdamW(
        _param_groups(model, settings.weight_decay, settings.lr, head_lr),
        lr=settings.lr,
        fused=device.type == "cuda",
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_frac * total), total)
    pad_id = encoder.tokenizer.pad_token_id
    best_state: dict[str, torch.Tensor] | None = None
    bad_checks, running = 0, float("nan")
    start = time.perf_counter()
    bar = tqdm(total=total, desc=f"fine-tune {model.output}", unit="step", disable=not progress)

    def check(step: int) -> bool:
        """Validate; keep the best weights; True when patience has run out."""
        nonlocal best_state, bad_checks
        began = time.perf_counter()
        preds = predict(model, encoder, val_texts, max_length=settings.max_length)
        model.train()
        report.validation_seconds += time.perf_counter() - began
        score = validation_score(model.output, preds, val_stars)
        report.history.append(
            {"step": step, "train_loss": running, "val": score, "lr": scheduler.get_last_lr()[0]}
        )
        bar.set_postfix(loss=f"{running:.3f}", val=f"{score:.4f}")
        if best_state is None or score > report.best_val:
            report.best_val, report.best_step, bad_checks = score, step, 0
            best_state = _trainable_state(model)
            return False
        bad_checks += 1
        return bad_checks > settings.patience

    step = 0
    for _epoch in range(settings.epochs):
        for batch in length_bucketed_batches(lengths, settings.batch_size, rng=rng):
            input_ids, mask = collate([ids[i] for i in batch], pad_id, device)
            with autocast(device):
                raw, redundancy = model(input_ids, mask)
            loss = task_loss(model.output, raw, labels[batch].to(device))
            loss = loss + penalty * redundancy.float()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            report.reviews_seen += len(batch)
            report.train_tokens += int(mask.sum())
            value = float(loss.detach())
            running = value if math.isnan(running) else 0.95 * running + 0.05 * value
            bar.update(1)
            if step % settings.eval_every == 0 and step < total and check(step):
                report.stopped_early = True
                break
        if report.stopped_early:
            break
    if not report.stopped_early:
        check(step)
    bar.close()
    report.steps = step
    model.load_state_dict(best_state, strict=False)
    model.eval()
    report.seconds = time.perf_counter() - start
    return report


# --------------------------------------------------------------------------- the stage


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
    return rows[stratified_subset(reviews["star"].to_numpy()[rows], limit, seed)]


@contextlib.contextmanager
def all_cpu_threads(device: torch.device) -> Iterator[None]:
    """Train on every core (some builds default to fewer), restoring the caller's setting."""
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    reviews = pd.read_parquet(
        settings.paths.reviews, columns=["review_id", "star", "text", "split"]
    )
    train_rows = _split_rows(reviews, "train", ft.train_limit, settings.seed)
    val_rows = _split_rows(reviews, "val", ft.val_limit, settings.seed)
    device = pick_device(ft.device)
    encoder = load_encoder(spec, device=device)
    seed_everything(settings.seed)
    hs = settings.head
    arch = {"hops": hs.hops, "attention_dim": hs.attention_dim, "mlp_dim": hs.mlp_dim}
    model = SentenceModel(
        encoder.model,
        spec.pooling,
        ft.output,
        ft.dropout,
        ft.classifier,
        arch | {"dropout": ft.dropout},
    ).to(device)
    warm = warm_start_head(model, models_dir) if ft.classifier == "attention" else None
    log.info(
        "fine-tuning %s on %d train reviews (%d val) on %s, classifier %s%s",
        name,
        len(train_rows),
        len(val_rows),
        device,
        ft.classifier,
        f" starting from {warm}" if warm else "",
    )
    texts, stars = reviews["text"].tolist(), reviews["star"].to_numpy(np.int64)
    with all_cpu_threads(device):
        report = train(
            model,
            encoder,
            [texts[i] for i in train_rows],
            stars[train_rows],
            [texts[i] for i in val_rows],
            stars[val_rows],
            ft,
            seed=settings.seed,
            penalty=hs.penalty if ft.classifier == "attention" else 0.0,
            progress=progress,
        )
    save = save_tuned_head if ft.classifier == "attention" else save_finetuned
    save(
        model_dir,
        model,
        encoder,
        {
            "name": name,
            "fingerprint": fp,
            "encoder": asdict(spec),
            "max_length": ft.max_length,
            SCORING: scoring_spec(settings.paths, asdict(spec), ft.max_length),
            "settings": ft.model_dump(mode="json"),
            "seed": settings.seed,
            "warm_start": warm,
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

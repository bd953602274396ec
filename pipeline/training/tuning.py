"""How an encoder is fine-tuned: the training loop under the stage (``finetune.py``) and under
the held-out evaluations (``fold_fitters.py``), which fine-tune one model per fold.

The model is a :class:`~pipeline.modeling.sentence.SentenceModel`: the encoder with Lin et al.'s
self-attentive classifier on its last layer (``finetune.classifier="attention"``, started from
the run's frozen head of the same output when it has one), or its pooled vector and one linear
layer (``"linear"``). Training: AdamW (the classifier at its own learning rate), linear warm-up
then decay, gradient clipping, validation checks every ``eval_every`` steps with early stopping
and the best weights restored, seeded, bf16 autocast on a GPU and fp32 on a CPU. Batches are
length-bucketed, so little compute goes to padding. The word-embedding matrix (80% of e5-small's
parameters) is frozen by default, and on a CPU only the top layers train (``train_layers``).
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
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from pipeline.artifacts import MODEL_CONFIG, MODEL_WEIGHTS, read_json, read_tensors
from pipeline.config import FinetuneSettings, Settings
from pipeline.encoding.encode import autocast
from pipeline.encoding.load import Encoder, EncoderSpec, load_encoder, pick_device
from pipeline.modeling.batching import (
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
    SentenceModel,
    freeze_lower_layers,
    freeze_word_embeddings,
    model_name,
    predict,
    resolve_train_layers,
)
from pipeline.training.train import HEAD_NAMES

log = logging.getLogger(__name__)
FrozenHead = tuple[dict[str, Any], dict[str, np.ndarray]]  # a frozen head's config and weights


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


def saved_head(models_dir: Path, output: str) -> FrozenHead | None:
    """The run's frozen head of ``output`` (config and weights), if it has one."""
    name = HEAD_NAMES[output]
    try:
        return read_json(models_dir / name / MODEL_CONFIG), read_tensors(
            models_dir / name / MODEL_WEIGHTS
        )
    except (OSError, ValueError):
        return None


def warm_start_head(model: SentenceModel, head: FrozenHead | None) -> str | None:
    """Start the self-attentive classifier from a frozen head of the same output when it read
    the encoder's last layer alone with the same shape: it already knows what the pretrained
    features say, so fine-tuning starts where the frozen model ended. Returns the head's name,
    or None (then it starts from scratch)."""
    if head is None:
        return None
    config, weights = head
    last = model.encoder.config.num_hidden_layers
    if config.get("layers") != [last] or config.get("pooled_layers") or config.get("tuned_encoder"):
        return None
    try:
        model.head.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    except RuntimeError:  # another hops / attention_dim / mlp_dim
        return None
    return HEAD_NAMES[model.output]


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
            with autocast(device, fp16_fallback=False):
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


def limit_rows(rows: np.ndarray, stars: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """At most ``limit`` of ``rows``, stratified by star (``stars``: per review)."""
    return rows[stratified_subset(stars[rows], limit, seed)]


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


@dataclass
class Tuned:
    """A freshly fine-tuned model: the SentenceModel on its encoder, how it trained, and the
    frozen head it started from (None: from scratch)."""

    model: SentenceModel
    encoder: Encoder
    report: TrainReport
    warm_start: str | None


def tune_encoder(
    settings: Settings,
    spec: EncoderSpec,
    texts: Sequence[str],
    stars: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    *,
    warm: FrozenHead | None,
    progress: bool = True,
    label: str = "",
) -> Tuned:
    """Fine-tune ``spec`` under the ``finetune`` settings' classifier on ``texts[train_rows]``,
    early-stopped on ``texts[val_rows]``; the stage and the held-out evaluations share it."""
    ft = settings.finetune
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
    started_from = warm_start_head(model, warm) if ft.classifier == "attention" else None
    log.info(
        "fine-tuning %s on %d train reviews (%d val) on %s, classifier %s%s",
        label or model_name(ft.output),
        len(train_rows),
        len(val_rows),
        device,
        ft.classifier,
        f" starting from {started_from}" if started_from else "",
    )
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
    return Tuned(model, encoder, report, started_from)

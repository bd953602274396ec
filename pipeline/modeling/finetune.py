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
import torch.nn.functional as F
from coral_pytorch.losses import corn_loss
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PreTrainedModel,
    get_linear_schedule_with_warmup,
)

from pipeline import __version__
from pipeline.artifacts import atomic_dir, fingerprint, read_json, read_manifest, write_json
from pipeline.config import FinetuneSettings, Settings
from pipeline.encoders import Encoder, EncoderSpec, load_encoder, pick_device, resolve_encoder
from pipeline.features import plan_batches, tokenize
from pipeline.modeling.heads import OUTPUT_KINDS, OutputKind, decode
from pipeline.modeling.inputs import Predictions
from pipeline.modeling.metrics import NUM_CLASSES
from pipeline.modeling.storage import CONFIG, LABELS, WEIGHTS

log = logging.getLogger(__name__)

MODEL_NAMES: dict[str, str] = {
    "classification": "finetune_cls",
    "regression": "finetune_reg",
    "ordinal": "finetune_ord",
}
TOKENIZER_DIR = "tokenizer"
KIND = "finetune"
CODE_VERSION = f"finetune-1/{__version__}"  # bump the prefix when training changes meaning
OUT_DIM = {"classification": NUM_CLASSES, "regression": 1, "ordinal": NUM_CLASSES - 1}


def model_name(output: str) -> str:
    if output not in MODEL_NAMES:
        raise ValueError(f"output must be one of {list(MODEL_NAMES)}, got {output!r}")
    return MODEL_NAMES[output]


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence vector ``(B, d)`` from hidden states ``(B, T, d)`` and a ``(B, T)`` 0/1 mask."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        m = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
    raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")


class SentenceModel(nn.Module):
    """A BERT-family encoder with dropout + linear on its pooled sentence vector."""

    def __init__(
        self, encoder: PreTrainedModel, pooling: str, output: OutputKind, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if output not in OUTPUT_KINDS:
            raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
        self.encoder = encoder
        self.pooling = pooling
        self.output = output
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, OUT_DIM[output])
        if output == "regression":  # start at the middle of the scale, not at 0 stars
            nn.init.zeros_(self.head.weight)
            nn.init.constant_(self.head.bias, 3.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(self.dropout(pool(hidden, attention_mask, self.pooling)))


def task_loss(output: OutputKind, raw: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The heads' losses for labels 0..4 (star - 1): cross-entropy, MSE on the star, CORN."""
    raw = raw.float()
    if output == "classification":
        return F.cross_entropy(raw, labels)
    if output == "regression":
        return F.mse_loss(raw.squeeze(1), labels.float() + 1.0)
    return corn_loss(raw, labels, num_classes=NUM_CLASSES)


# --------------------------------------------------------------------------- batching


def token_ids(encoder: Encoder, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
    """Token ids per text, exactly as feature extraction tokenizes (prefix, specials, cut)."""
    return tokenize(encoder, list(texts), max_length).input_ids


def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, *, rng: np.random.Generator
) -> list[np.ndarray]:
    """Training batches of indices whose members have similar lengths: shuffle, sort within
    pools of 50 batches, cut, shuffle the batches. Every epoch differs; padding stays small."""
    lengths = np.asarray(lengths)
    perm = rng.permutation(len(lengths))
    pool_size = batch_size * 50
    batches = []
    for start in range(0, len(perm), pool_size):
        chunk = perm[start : start + pool_size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(
    ids: Sequence[np.ndarray], pad_id: int | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(B, T)`` input ids and 0/1 attention mask."""
    lengths = np.fromiter((len(x) for x in ids), np.int64, len(ids))
    mask = np.arange(lengths.max()) < lengths[:, None]
    padded = np.full(mask.shape, pad_id or 0, dtype=np.int64)
    padded[mask] = np.concatenate(ids)
    return torch.from_numpy(padded).to(device), torch.from_numpy(mask.astype(np.int64)).to(device)


def stratified_subset(stars: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``limit`` items with the star mix of the whole (all: None/0)."""
    n = len(stars)
    if not limit or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    values, counts = np.unique(stars, return_counts=True)
    quota = np.floor(counts / n * limit).astype(int)
    quota[np.argsort(-(counts / n * limit - quota))[: limit - quota.sum()]] += 1  # largest rest
    picked = [
        rng.choice(np.flatnonzero(stars == v), size=q, replace=False)
        for v, q in zip(values, quota, strict=True)
    ]
    return np.sort(np.concatenate(picked))


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


def autocast(device: torch.device) -> Any:
    """bf16 autocast on a GPU that supports it; a no-op elsewhere (fp32 on the CPU)."""
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def selection_score(output: OutputKind, preds: Predictions, stars: np.ndarray) -> float:
    """Validation score to maximise: exact accuracy for classifiers, minus MAE for regression."""
    if output == "regression":
        return -float(np.abs(preds.score - stars).mean())
    return float((preds.pred_star == stars).mean())


def freeze_word_embeddings(model: SentenceModel, freeze: bool) -> int:
    """Freeze (or not) the word-embedding matrix; returns how many parameters are frozen."""
    weight = model.encoder.get_input_embeddings().weight
    weight.requires_grad_(not freeze)
    return weight.numel() if freeze else 0


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every tensor that training can change (frozen parameters excluded)."""
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k not in frozen}


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


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
    progress: bool = True,
) -> TrainReport:
    """Fine-tune ``model`` (built on ``encoder.model``) in place, on the device it sits on; the
    weights of the best validation check are restored at the end."""
    if model.encoder is not encoder.model:
        raise ValueError("the model must be built on encoder.model (SentenceModel(encoder.model))")
    train_stars = np.asarray(train_stars, dtype=np.int64)
    val_stars = np.asarray(val_stars, dtype=np.int64)
    if len(train_texts) != len(train_stars) or len(val_texts) != len(val_stars):
        raise ValueError("texts and stars must have the same length")
    if len(train_texts) == 0 or len(val_texts) == 0:
        raise ValueError("fine-tuning needs at least one training and one validation review")
    device = _device(model)
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    model.train()
    report = TrainReport(
        train_reviews=len(train_texts),
        selection_metric="-mae" if model.output == "regression" else "accuracy",
        frozen_parameters=freeze_word_embeddings(model, settings.freeze_embeddings),
        device=str(device),
    )
    report.trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ids = token_ids(encoder, train_texts, settings.max_length)
    lengths = [len(x) for x in ids]
    labels = torch.as_tensor(train_stars - 1)
    total = math.ceil(len(ids) / settings.batch_size) * settings.epochs
    report.planned_steps = total
    optimizer = torch.optim.AdamW(
        _param_groups(model, settings.weight_decay), lr=settings.lr, fused=device.type == "cuda"
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
        score = selection_score(model.output, preds, val_stars)
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
                raw = model(input_ids, mask)
            loss = task_loss(model.output, raw, labels[batch].to(device))
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


@torch.no_grad()
def predict(
    model: SentenceModel,
    encoder: Encoder,
    texts: Sequence[str],
    *,
    max_length: int,
    token_budget: int = 8192,
    progress: bool = False,
) -> Predictions:
    """Stars, scores and probabilities for cleaned texts, in input order."""
    device = _device(model)
    model.eval()
    ids = token_ids(encoder, texts, max_length)
    raw = torch.zeros((len(ids), OUT_DIM[model.output]), dtype=torch.float32)
    lengths = np.fromiter((len(x) for x in ids), np.int64, len(ids))
    batches = plan_batches(lengths, max(token_budget, max_length))
    for batch in tqdm(batches, desc="predict", unit="batch", disable=not progress):
        input_ids, mask = collate([ids[i] for i in batch], encoder.tokenizer.pad_token_id, device)
        with autocast(device):
            raw[torch.as_tensor(batch)] = model(input_ids, mask).float().cpu()
    d = decode(model.output, raw)
    return Predictions(d.pred_star, d.score, d.probs)


# --------------------------------------------------------------------------- save / load


@dataclass
class Finetuned:
    """A fine-tuned model ready to predict. ``encoder`` is an :class:`Encoder` over the tuned
    weights, so feature code (``features.encode_texts``) and the lab read it like any encoder."""

    model: SentenceModel
    encoder: Encoder
    config: dict[str, Any]

    @property
    def max_length(self) -> int:
        return int(self.config["max_length"])

    def predict(self, texts: Sequence[str], *, progress: bool = False) -> Predictions:
        return predict(
            self.model, self.encoder, texts, max_length=self.max_length, progress=progress
        )


def save_finetuned(
    model_dir: Path, model: SentenceModel, encoder: Encoder, config: dict[str, Any]
) -> None:
    """Weights, tokenizer and config in one atomic directory swap."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    full_config = {
        "kind": KIND,
        "labels": LABELS,
        "output": model.output,
        "pooling": model.pooling,
        "prefix": encoder.spec.prefix,
        "dropout": model.dropout.p,
        "encoder_config": model.encoder.config.to_dict(),
        **config,
    }
    with atomic_dir(model_dir) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        encoder.tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        write_json(tmp / CONFIG, full_config)


def load_finetuned(
    model_dir: Path, device: torch.device | str = "cpu", attn_implementation: str | None = None
) -> Finetuned:
    """Rebuild a saved fine-tuned model; ``attn_implementation="eager"`` to read attentions."""
    model_dir = Path(model_dir)
    if not (model_dir / CONFIG).exists():
        raise FileNotFoundError(
            f"no fine-tuned model at {model_dir}; run `douban finetune --run "
            f"{model_dir.parent.parent.name}`"
        )
    config = read_json(model_dir / CONFIG)
    if config.get("kind") != KIND:
        raise ValueError(f"{model_dir} holds a {config.get('kind')!r} model, not a fine-tuned one")
    encoder_config = dict(config["encoder_config"])
    encoder_config = AutoConfig.for_model(encoder_config.pop("model_type"), **encoder_config)
    if attn_implementation:
        encoder_config._attn_implementation = attn_implementation
    state = load_file(str(model_dir / WEIGHTS))
    encoder = AutoModel.from_config(encoder_config)
    if getattr(encoder, "pooler", None) is not None and not any(
        k.startswith("encoder.pooler.") for k in state
    ):
        encoder.pooler = None  # the base checkpoint had none (e5): never trained, never saved
    model = SentenceModel(encoder, config["pooling"], config["output"], config["dropout"])
    model.load_state_dict(state, strict=True)
    model.to(pick_device(device) if isinstance(device, str) else device).eval()
    spec = EncoderSpec(
        name=model_dir.name,
        path=str(model_dir),
        pooling=config["pooling"],
        prefix=config["prefix"],
        fingerprint=config.get("fingerprint", ""),
    )
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir / TOKENIZER_DIR))
    return Finetuned(model, Encoder(spec=spec, model=model.encoder, tokenizer=tokenizer), config)


# --------------------------------------------------------------------------- the stage


def finetune_fingerprint(settings: Settings, spec: EncoderSpec) -> str:
    prepared = read_manifest(settings.paths.prepared)
    if prepared is None:
        raise FileNotFoundError(
            f"no prepared data in {settings.paths.prepared}: run "
            f"`douban prepare --run {settings.run_name} --input <csv>` first"
        )
    tuning = settings.finetune.model_dump(mode="json", exclude={"device"})
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
        raise ValueError(f"the prepared reviews have no {split!r} split to fine-tune with")
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


def _saved_fingerprint(model_dir: Path) -> str | None:
    config = model_dir / CONFIG
    return read_json(config).get("fingerprint") if config.exists() else None


def finetune_run(
    settings: Settings,
    *,
    force: bool = False,
    evaluate: bool = True,
    external: Path | None = None,
    progress: bool = True,
) -> Path:
    """Fine-tune the run's encoder on its train split (``finetune.train_limit`` reviews,
    stratified), early-stopped on its val split; saves ``models/finetune_<output>/`` and returns
    that directory. Skipped when a model with the same fingerprint is already there. Then, with
    ``evaluate``, the model joins metrics.json / predictions.parquet (and the cross-corpus
    evaluation on ``external``), like every other model of the run."""
    ft = settings.finetune
    name = model_name(ft.output)
    model_dir = settings.paths.model(name)
    features = settings.features
    spec = resolve_encoder(features.encoder, pooling=features.pooling, prefix=features.prefix)
    fp = finetune_fingerprint(settings, spec)
    if not force and _saved_fingerprint(model_dir) == fp:
        log.info("%s is up to date (fingerprint %s): not retrained", name, fp)
    else:
        _train_and_save(settings, spec, fp, model_dir, progress)
    if evaluate:
        _evaluate(settings, name, external)
    return model_dir


def _evaluate(settings: Settings, name: str, external: Path | None) -> None:
    """Evaluate the model, and for classification also fit and evaluate its mix with TF-IDF +
    LR (``ensemble_finetune_tfidf``, weight fitted on validation), as `douban train` does for the
    self-attentive head: the two err on different reviews."""
    from pipeline.modeling.evaluate import evaluate_run
    from pipeline.modeling.train import ENSEMBLES, FINETUNE_ENSEMBLE_NAME, train_run

    if read_manifest(settings.paths.features) is None:
        log.warning(
            "%s is not evaluated yet: the run has no feature store, which evaluation shares with "
            "the other models; run `douban features --run %s` then `douban evaluate --run %s "
            "--models %s`",
            name,
            settings.run_name,
            settings.run_name,
            name,
        )
        return
    evaluate_run(settings, [name])
    models = [name]
    if name in ENSEMBLES[FINETUNE_ENSEMBLE_NAME]:
        train_run(settings, [FINETUNE_ENSEMBLE_NAME])
        models.append(FINETUNE_ENSEMBLE_NAME)
    if external is not None:
        evaluate_run(settings, models, external=external)


def _train_and_save(
    settings: Settings, spec: EncoderSpec, fp: str, model_dir: Path, progress: bool
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
    model = SentenceModel(encoder.model, spec.pooling, ft.output, ft.dropout).to(device)
    log.info(
        "fine-tuning %s on %d train reviews (%d val) on %s",
        name,
        len(train_rows),
        len(val_rows),
        device,
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
            progress=progress,
        )
    save_finetuned(
        model_dir,
        model,
        encoder,
        {
            "name": name,
            "fingerprint": fp,
            "encoder": asdict(spec),
            "max_length": ft.max_length,
            "settings": ft.model_dump(mode="json"),
            "seed": settings.seed,
            "train": report.to_dict(),
            "data": {
                "train_reviews": len(train_rows),
                "val_reviews": len(val_rows),
                "prepared": read_manifest(settings.paths.prepared)["fingerprint"],
            },
            "code_version": CODE_VERSION,
        },
    )
    write_json(settings.paths.settings, settings)
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

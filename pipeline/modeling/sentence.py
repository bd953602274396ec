"""The fine-tuned sentence model: the encoder's pooled vector, dropout and one linear layer,
with the same outputs, losses and decoding as the self-attentive heads; saved and reloaded whole.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PreTrainedModel,
)

from pipeline import __version__
from pipeline.artifacts import MODEL_CONFIG, MODEL_WEIGHTS, atomic_dir, read_json, write_json
from pipeline.encoding.encode import plan_batches
from pipeline.encoding.load import Encoder, EncoderSpec, pick_device
from pipeline.errors import InputError, StageMissingError
from pipeline.modeling.batching import autocast, collate, module_device, token_ids
from pipeline.modeling.heads import OUTPUT_KINDS, OutputKind, decode
from pipeline.modeling.inputs import Predictions
from pipeline.modeling.metrics import LABELS, NUM_CLASSES

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
    device = module_device(model)
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
        save_file(state, str(tmp / MODEL_WEIGHTS), metadata={"format": "pt"})
        encoder.tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        write_json(tmp / MODEL_CONFIG, full_config)


def load_finetuned(
    model_dir: Path, device: torch.device | str = "cpu", attn_implementation: str | None = None
) -> Finetuned:
    """Rebuild a saved fine-tuned model; ``attn_implementation="eager"`` to read attentions."""
    model_dir = Path(model_dir)
    if not (model_dir / MODEL_CONFIG).exists():
        raise StageMissingError(f"no fine-tuned model at {model_dir}", "run `douban finetune`")
    config = read_json(model_dir / MODEL_CONFIG)
    if config.get("kind") != KIND:
        raise InputError(f"{model_dir} holds a {config.get('kind')!r} model, not a fine-tuned one")
    encoder_config = dict(config["encoder_config"])
    encoder_config = AutoConfig.for_model(encoder_config.pop("model_type"), **encoder_config)
    if attn_implementation:
        encoder_config._attn_implementation = attn_implementation
    state = load_file(str(model_dir / MODEL_WEIGHTS))
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

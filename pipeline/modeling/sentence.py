"""The fine-tuned sentence model: the encoder with a classifier on top, with the same outputs,
losses and decoding as the frozen heads. The classifier is Lin et al.'s self-attentive head
(``attention``, the default: the studio's own model, whose attention explains its scores) or
dropout + one linear layer on the pooled vector (``linear``).

A fine-tuned self-attentive model is saved as a bundle the rest of the studio already reads: the
tuned encoder as a plain transformers directory (``encoder/``, exported to ONNX for scoring like
any encoder) beside a ``head`` model that reads its last layer; the linear one is saved whole.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PreTrainedModel,
)

from pipeline.artifacts import (
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    WEIGHTS_SHA256,
    atomic_dir,
    read_json,
    sha256_file,
    write_json,
)
from pipeline.encoding.encode import autocast, plan_batches
from pipeline.encoding.load import (
    Encoder,
    EncoderSpec,
    bundled_encoder,
    load_encoder,
    pick_device,
)
from pipeline.errors import InputError, StageMissingError
from pipeline.modeling.batching import collate, module_device, token_ids
from pipeline.modeling.heads import OUTPUT_KINDS, OutputKind, SelfAttentiveHead, decode
from pipeline.modeling.inputs import Predictions
from pipeline.modeling.metrics import LABELS, NUM_CLASSES
from pipeline.modeling.saved import SavedModel, read_saved_model

log = logging.getLogger(__name__)

MODEL_NAMES: dict[str, str] = {
    "classification": "finetune_cls",
    "regression": "finetune_reg",
    "ordinal": "finetune_ord",
}
TOKENIZER_DIR = "tokenizer"
KIND = "finetune"
CODE_VERSION = "finetune-2"  # bump when training changes meaning: tuned models retrain
OUT_DIM = {"classification": NUM_CLASSES, "regression": 1, "ordinal": NUM_CLASSES - 1}
CLASSIFIERS = ("attention", "linear")
TUNED_ENCODER_DIR = "encoder"  # the tuned encoder inside a self-attentive model's bundle


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
    """A BERT-family encoder with a classifier on its last hidden states (see the module)."""

    def __init__(
        self,
        encoder: PreTrainedModel,
        pooling: str,
        output: OutputKind,
        dropout: float = 0.1,
        classifier: str = "linear",
        arch: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if output not in OUTPUT_KINDS:
            raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
        if classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
        self.encoder = encoder
        self.pooling = pooling
        self.output = output
        self.classifier = classifier
        self.dropout = nn.Dropout(dropout)
        hidden = encoder.config.hidden_size
        self.head: nn.Module
        if classifier == "attention":  # one input layer, the encoder's last: shaped like the
            # frozen head of a run that stores only it, so it can start from that head
            self.head = SelfAttentiveHead(hidden, 1, output, layer_mix=True, **(arch or {}))
        else:
            self.head = nn.Linear(hidden, OUT_DIM[output])
            if output == "regression":  # start at the middle of the scale, not at 0 stars
                nn.init.zeros_(self.head.weight)
                nn.init.constant_(self.head.bias, 3.0)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw outputs and the attention redundancy penalty (0 for the linear classifier)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.classifier == "attention":
            out = self.head(hidden.unsqueeze(2), attention_mask.bool())
            return out.raw, out.penalty
        raw = self.head(self.dropout(pool(hidden, attention_mask, self.pooling)))
        return raw, raw.new_zeros(())


# --------------------------------------------------------------------------- what trains


def freeze_word_embeddings(model: SentenceModel, freeze: bool) -> int:
    """Freeze (or not) the word-embedding matrix; returns how many parameters are frozen."""
    weight = model.encoder.get_input_embeddings().weight
    weight.requires_grad_(not freeze)
    return weight.numel() if freeze else 0


CPU_TRAIN_LAYERS = 4  # finetune.train_layers="auto" on a CPU


def resolve_train_layers(settings: Any) -> int | None:
    """``finetune.train_layers`` of ``settings`` (FinetuneSettings) for the device it trains
    on ("auto": the top 4 on a CPU)."""
    if settings.train_layers != "auto":
        return settings.train_layers
    return CPU_TRAIN_LAYERS if pick_device(settings.device).type == "cpu" else None


def freeze_lower_layers(model: SentenceModel, train_layers: int | None) -> int:
    """Train only the top ``train_layers`` transformer layers (None, or at least as many as
    the encoder has: all): the embeddings and the layers below are frozen, so the backward pass
    stops under the lowest trained layer. Returns how many parameters it froze."""
    layers = getattr(getattr(model.encoder, "encoder", None), "layer", None)
    if train_layers is None:
        return 0
    if not isinstance(layers, nn.ModuleList):
        log.warning(
            "finetune.train_layers=%s: %s has no BERT-style encoder.layer list, so every layer "
            "trains",
            train_layers,
            type(model.encoder).__name__,
        )
        return 0
    if train_layers >= len(layers):
        return 0
    count = 0
    for module in (model.encoder.embeddings, *layers[: len(layers) - train_layers]):
        for p in module.parameters():
            count += p.numel() if p.requires_grad else 0
            p.requires_grad_(False)
    return count


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
        with autocast(device, fp16_fallback=False):
            raw[torch.as_tensor(batch)] = model(input_ids, mask)[0].float().cpu()
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
        full_config[WEIGHTS_SHA256] = sha256_file(tmp / MODEL_WEIGHTS)
        write_json(tmp / MODEL_CONFIG, full_config)


def save_tuned_head(
    model_dir: Path, model: SentenceModel, encoder: Encoder, config: dict[str, Any]
) -> EncoderSpec:
    """A fine-tuned self-attentive model as a bundle: ``encoder/`` (weights + tokenizer, a
    plain transformers directory) and a ``head`` model reading its last layer, whose config and
    scoring spec name that encoder relative to the models folder; written atomically. Returns
    the bundled encoder's spec (its fingerprint covers the weights, not the path)."""
    if model.classifier != "attention":
        raise ValueError("save_tuned_head saves the self-attentive classifier; use save_finetuned")
    head = model.head
    last = model.encoder.config.num_hidden_layers
    arch = {
        "hops": head.hops,
        "attention_dim": head.w_s1.out_features,
        "mlp_dim": head.mlp[0].out_features,
        "dropout": head.dropout.p,
        "layer_mix": True,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    with atomic_dir(model_dir) as tmp:
        model.encoder.save_pretrained(str(tmp / TUNED_ENCODER_DIR))
        encoder.tokenizer.save_pretrained(str(tmp / TUNED_ENCODER_DIR))
        spec = bundled_encoder(tmp / TUNED_ENCODER_DIR, model.pooling, encoder.spec.prefix)
        bundle = {
            "name": spec.name,
            "bundle": f"{model_dir.name}/{TUNED_ENCODER_DIR}",  # relative to the models folder
            "pooling": spec.pooling,
            "prefix": spec.prefix,
            "fingerprint": spec.fingerprint,
        }
        scoring = dict(config.pop("scoring"))
        scoring |= {"encoder": bundle, "token_layers": [last], "precision": "fp32"}
        save_file(tensors, str(tmp / MODEL_WEIGHTS), metadata={"format": "pt"})
        write_json(
            tmp / MODEL_CONFIG,
            {
                "kind": "head",
                "tuned_encoder": TUNED_ENCODER_DIR,
                "labels": LABELS,
                "output": model.output,
                "hidden_size": model.encoder.config.hidden_size,
                "layers": [last],
                "pooled_layers": [],
                "arch": arch,
                **config,
                "base_encoder": config.get("encoder"),
                "encoder": bundle,
                "scoring": scoring,
                WEIGHTS_SHA256: sha256_file(tmp / MODEL_WEIGHTS),
            },
        )
    return spec


def tuned_encoder(model_dir: Path, device: torch.device | str = "cpu") -> Encoder:
    """The fine-tuned encoder of a model bundle, whichever classifier it was tuned with."""
    config = read_json(Path(model_dir) / MODEL_CONFIG)
    if config.get("tuned_encoder"):
        encoder = config["encoder"]
        spec = bundled_encoder(
            Path(model_dir) / config["tuned_encoder"], encoder["pooling"], encoder["prefix"]
        )
        return load_encoder(spec, device=device)
    return load_finetuned(model_dir, device=device).encoder


def load_finetuned(
    model_dir: Path, device: torch.device | str = "cpu", attn_implementation: str | None = None
) -> Finetuned:
    """Rebuild a saved fine-tuned model; ``attn_implementation="eager"`` to read attentions."""
    model_dir = Path(model_dir)
    if not (model_dir / MODEL_CONFIG).exists():
        raise StageMissingError(f"no fine-tuned model at {model_dir}", "run `douban finetune`")
    saved = read_saved_model(model_dir.parent, model_dir.name)
    if saved.kind != KIND:
        raise InputError(f"{model_dir} holds a {saved.kind!r} model, not a fine-tuned one")
    return build_finetuned(saved, device, attn_implementation)


def build_finetuned(
    saved: SavedModel, device: torch.device | str = "cpu", attn_implementation: str | None = None
) -> Finetuned:
    """A fine-tuned model from its read directory (:func:`load_finetuned`)."""
    config, state, model_dir = saved.config, saved.tensors, saved.path
    encoder_config = dict(config["encoder_config"])
    encoder_config = AutoConfig.for_model(encoder_config.pop("model_type"), **encoder_config)
    if attn_implementation:
        encoder_config._attn_implementation = attn_implementation
    encoder = AutoModel.from_config(encoder_config)
    if getattr(encoder, "pooler", None) is not None and not any(
        k.startswith("encoder.pooler.") for k in state
    ):
        encoder.pooler = None  # the base checkpoint had none (e5): never trained, never saved
    model = SentenceModel(encoder, config["pooling"], config["output"], config["dropout"])
    model.load_state_dict(state, strict=True)  # the linear classifier (save_finetuned)
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

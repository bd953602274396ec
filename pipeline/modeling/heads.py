"""Self-attentive sentence heads over frozen token states (Lin et al. 2017, arXiv 1703.03130).

One module, three outputs. Per review the head sees the stored token states of one or more
encoder layers, ``(n_tokens, n_layers, d)``:

1. scalar mix (Peters et al. 2018, the feature-based BERT recipe): a learned softmax weight per
   stored layer and a global scale turn the layers into one ``(n, d)`` matrix ``H``;
2. structured self-attention: ``A = softmax(W_s2 tanh(W_s1 H^T))``, ``r`` hops, padding masked to
   ``-inf`` before the softmax so it gets exactly zero weight;
3. ``M = A H`` flattened (optionally with the review's pooled mean vector appended) goes through
   an MLP to 5 class logits (``classification``), 1 value (``regression``) or 4 CORN logits
   (``ordinal``, Shi et al. 2021 via coral-pytorch: conditional "star > k" binary tasks).

The redundancy penalty is ``P = ||A A^T - I||_F^2`` averaged over the batch (the squared
Frobenius norm per review, then the batch mean), times ``HeadSettings.penalty``; it pushes the
hops to attend to different tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from coral_pytorch.losses import corn_loss
from torch import nn

from pipeline.modeling.batching import pad
from pipeline.modeling.inputs import FeatureSource, Predictions
from pipeline.modeling.metrics import NUM_CLASSES, STARS

OutputKind = Literal["classification", "regression", "ordinal"]
OUTPUT_KINDS: tuple[OutputKind, ...] = ("classification", "regression", "ordinal")


@dataclass
class HeadOutput:
    raw: torch.Tensor  # (B, 5) logits, (B, 1) value or (B, 4) CORN logits
    attention: torch.Tensor  # (B, r, T), rows sum to 1 over real tokens
    penalty: torch.Tensor  # scalar, already the batch mean


def attention_penalty(attention: torch.Tensor) -> torch.Tensor:
    """Batch mean of ``||A A^T - I||_F^2`` for attention ``(B, r, T)``."""
    gram = attention @ attention.transpose(1, 2)
    eye = torch.eye(attention.shape[1], device=attention.device, dtype=attention.dtype)
    return ((gram - eye) ** 2).sum(dim=(1, 2)).mean()


class ScalarMix(nn.Module):
    """``gamma * sum_l softmax(w)_l * H_l`` over the stored layers."""

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # (B, T, L, d) -> (B, T, d)
        w = torch.softmax(self.weights, dim=0)
        return self.gamma * (w @ states)  # (L) @ (B, T, L, d) -> (B, T, d)


class SelfAttentiveHead(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        output: OutputKind = "classification",
        hops: int = 4,
        attention_dim: int = 128,
        mlp_dim: int = 256,
        dropout: float = 0.2,
        pooled_dim: int = 0,
        layer_mix: bool = True,
    ) -> None:
        super().__init__()
        if output not in OUTPUT_KINDS:
            raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
        if num_layers > 1 and not layer_mix:
            raise ValueError("several input layers need layer_mix=True")
        self.output = output
        self.hops = hops
        self.mix = ScalarMix(num_layers) if layer_mix else None
        self.dropout = nn.Dropout(dropout)
        self.w_s1 = nn.Linear(hidden_size, attention_dim, bias=False)
        self.w_s2 = nn.Linear(attention_dim, hops, bias=False)
        self.pooled_dim = pooled_dim
        out_dim = {"classification": NUM_CLASSES, "regression": 1, "ordinal": NUM_CLASSES - 1}
        self.mlp = nn.Sequential(
            nn.Linear(hops * hidden_size + pooled_dim, mlp_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_dim, out_dim[output]),
        )

    def forward(
        self, states: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor | None = None
    ) -> HeadOutput:
        """``states`` (B, T, L, d), ``mask`` (B, T) true for real tokens, ``pooled`` (B, p)."""
        h = self.mix(states) if self.mix is not None else states[:, :, 0]
        h = self.dropout(h)
        scores = self.w_s2(torch.tanh(self.w_s1(h))).transpose(1, 2)  # (B, r, T)
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        attention = torch.softmax(scores, dim=-1)
        m = (attention @ h).flatten(1)  # (B, r*d)
        if self.pooled_dim:
            if pooled is None:
                raise ValueError("this head was built with pooled input; pass pooled vectors")
            m = torch.cat([m, pooled], dim=1)
        return HeadOutput(self.mlp(m), attention, attention_penalty(attention))

    def loss(
        self, out: HeadOutput, labels: torch.Tensor, class_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Task loss for labels 0..4 (star - 1); the caller adds ``penalty * out.penalty``."""
        return task_loss(self.output, out.raw, labels, class_weights)


def task_loss(
    output: OutputKind,
    raw: torch.Tensor,
    labels: torch.Tensor,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss of every model kind for labels 0..4 (star - 1): cross-entropy, MSE on the star,
    CORN; computed in fp32 whatever precision the forward pass ran in."""
    raw = raw.float()
    if output == "classification":
        return F.cross_entropy(raw, labels, weight=class_weights)
    if output == "regression":
        return F.mse_loss(raw.squeeze(1), labels.float() + 1.0)
    return corn_loss(raw, labels, num_classes=NUM_CLASSES)


@dataclass
class Decoded:
    pred_star: np.ndarray  # int8 (B,)
    score: np.ndarray  # float32 (B,): regression value or expected star
    probs: np.ndarray | None  # float32 (B, 5)


def corn_probs(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities from CORN logits: P(y > k) is the running product of the conditional
    sigmoids, and P(y = k) the drop between consecutive ranks (never negative)."""
    above = torch.cumprod(torch.sigmoid(logits), dim=1)  # (B, K-1): P(y > k)
    ones = torch.ones_like(above[:, :1])
    zeros = torch.zeros_like(above[:, :1])
    return torch.cat([ones, above], dim=1) - torch.cat([above, zeros], dim=1)


def decode(output: OutputKind, raw: torch.Tensor) -> Decoded:
    """Stars, continuous score and probabilities from a head's raw output."""
    raw = raw.detach().float()
    if output == "regression":
        value = raw.squeeze(1).clamp(STARS[0], STARS[-1])
        pred = torch.round(value)
        return Decoded(pred.to(torch.int8).numpy(), value.numpy().astype(np.float32), None)
    probs = torch.softmax(raw, dim=1) if output == "classification" else corn_probs(raw)
    if output == "classification":
        pred = probs.argmax(dim=1) + 1
    else:  # CORN's own rule: count the rank thresholds passed with P(y > k) > 0.5
        pred = (torch.cumprod(torch.sigmoid(raw), dim=1) > 0.5).sum(dim=1) + 1
    expected = probs @ torch.arange(1, NUM_CLASSES + 1, dtype=probs.dtype)
    return Decoded(
        pred.to(torch.int8).numpy(),
        expected.numpy().astype(np.float32),
        probs.numpy().astype(np.float32),
    )


def pad_batch(
    token_states: list[np.ndarray], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a list of ``(n_i, L, d)`` arrays to ``(B, T, L, d)`` float32 plus a ``(B, T)`` mask."""
    if min((len(s) for s in token_states), default=0) == 0:
        raise ValueError("every review needs at least one token state")
    states, mask = pad(token_states, 0.0, np.float16)
    return torch.from_numpy(states).to(device).float(), torch.from_numpy(mask).to(device)


class HeadModel:
    """A trained :class:`SelfAttentiveHead` plus which stored layers it reads; predicts from any
    :class:`~pipeline.modeling.inputs.FeatureSource` in batches (padding per batch)."""

    kind = "head"
    store_needs, reads_words, reads_text = "tokens", False, False

    def __init__(self, module: SelfAttentiveHead, config: dict[str, Any]) -> None:
        self.module = module
        self.config = {"kind": self.kind, **config}
        self.layers: list[int] = list(config["layers"])
        self.token_layers = self.layers
        self.pooled_layers: list[int] = list(config.get("pooled_layers", []))

    @classmethod
    def build(
        cls,
        output: OutputKind,
        hidden_size: int,
        layers: Sequence[int],
        pooled_layers: Sequence[int],
        arch: dict[str, Any],
    ) -> HeadModel:
        """``arch``: hops, attention_dim, mlp_dim, dropout, layer_mix."""
        module = SelfAttentiveHead(
            hidden_size,
            len(layers),
            output,
            pooled_dim=hidden_size * len(pooled_layers),
            **arch,
        )
        config = {
            "output": output,
            "hidden_size": hidden_size,
            "layers": [int(x) for x in layers],
            "pooled_layers": [int(x) for x in pooled_layers],
            "arch": dict(arch),
        }
        return cls(module, config)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def forward_rows(
        self, source: FeatureSource, rows: Sequence[int]
    ) -> tuple[HeadOutput, torch.Tensor]:
        """The head's output for ``rows`` and the padding mask it used."""
        states, mask = pad_batch(source.token_states(rows, self.layers), self.device)
        pooled = None
        if self.pooled_layers:
            pooled = torch.from_numpy(source.pooled(rows, self.pooled_layers)).to(self.device)
        return self.module(states, mask, pooled), mask

    @torch.inference_mode()
    def predict(
        self, source: FeatureSource, rows: Sequence[int], batch_size: int = 256
    ) -> Predictions:
        self.module.eval()
        parts = []
        for start in range(0, len(rows), batch_size):
            batch = list(rows[start : start + batch_size])
            out, mask = self.forward_rows(source, batch)
            dec = decode(self.config["output"], out.raw.cpu())
            attn = out.attention.sum(dim=1).float().cpu().numpy()
            lengths = mask.sum(dim=1).tolist()
            parts.append(
                Predictions(
                    dec.pred_star,
                    dec.score,
                    dec.probs,
                    [attn[i, : lengths[i]].copy() for i in range(len(batch))],
                )
            )
        if not parts:
            return Predictions(np.zeros(0, np.int8), np.zeros(0, np.float32))
        return Predictions.concat(parts)

    def tensors(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.module.state_dict().items()}

    @classmethod
    def from_saved(cls, tensors: dict[str, np.ndarray], config: dict[str, Any]) -> HeadModel:
        model = cls.build(
            config["output"],
            config["hidden_size"],
            config["layers"],
            config.get("pooled_layers", []),
            config["arch"],
        )
        model.module.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
        model.module.eval()
        model.config = config
        return model

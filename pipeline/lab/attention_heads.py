"""What the encoder's own attention heads do (Clark et al. 2019, "What does BERT look at?").

- head view: every layer x head attention map of one review, with token labels, and a word-level
  view: a jieba word's row is the mean over its sub-tokens' rows (attention *from* the word) and
  its column the sum over its sub-tokens' columns (attention *to* the word), so rows still sum
  to 1;
- corpus statistics: for every layer and head, the share of attention a token gives to the next
  token, the previous token, itself, the first special token (<s>/[CLS]), the last one
  (</s>/[SEP]) and punctuation, averaged over every token of a sample of reviews; the heads with
  the largest shares are named (positional heads, delimiter heads that park attention on </s>);
- the encoder's attention beside the self-attentive head's attention on the same reviews: rank
  correlation and top-token overlap, on the review's text tokens only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from pipeline.data.text import is_word
from pipeline.encoding.encode import plan_batches, tokenize
from pipeline.encoding.load import Encoder

PATTERNS = ("next", "previous", "self", "first", "last", "punctuation")
SUBWORD_MARKS = "▁#Ġ"  # SentencePiece, WordPiece and byte-BPE word markers


@dataclass
class ReviewAttention:
    """One review's attention: ``attention[l, h, i, j]`` = how much token i looks at token j in
    layer l (0 = first transformer layer), head h; rows sum to 1."""

    tokens: list[str]
    offsets: np.ndarray  # (T, 2) char offsets into the text; -1 for special and prefix tokens
    attention: np.ndarray  # (L, H, T, T) float32


def punctuation_mask(tokens: Sequence[str]) -> np.ndarray:
    """True for tokens that are only punctuation once subword markers are stripped."""
    out = []
    for token in tokens:
        core = token.strip(SUBWORD_MARKS)
        out.append(bool(core) and not is_word(core) and not token.startswith(("<", "[")))
    return np.array(out, dtype=bool)


@contextlib.contextmanager
def eager_attention(encoder: Encoder) -> Iterator[None]:
    """Switch the model to eager attention (the only kind that returns weights) for a while."""
    model = encoder.model
    before = model.config._attn_implementation
    if before != "eager":
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if before != "eager":
            model.set_attn_implementation(before)


def encoder_attention(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    max_length: int,
    token_budget: int = 4096,
    progress: bool = False,
) -> list[ReviewAttention]:
    """Every layer's attention maps for each text, padding removed, in input order."""
    tokenized = tokenize(encoder, list(texts), max_length)
    device = next(encoder.model.parameters()).device
    out: list[ReviewAttention | None] = [None] * len(texts)
    batches = plan_batches(tokenized.lengths, max(token_budget, max_length))
    with eager_attention(encoder), torch.inference_mode():
        for rows in tqdm(batches, desc="attention", unit="batch", disable=not progress):
            lengths = tokenized.lengths[rows]
            mask = np.arange(lengths.max()) < lengths[:, None]
            ids = np.full(mask.shape, encoder.tokenizer.pad_token_id or 0, dtype=np.int64)
            ids[mask] = np.concatenate([tokenized.input_ids[r] for r in rows])
            attentions = encoder.model(
                input_ids=torch.from_numpy(ids).to(device),
                attention_mask=torch.from_numpy(mask.astype(np.int64)).to(device),
                output_attentions=True,
            ).attentions
            stacked = torch.stack(attentions, dim=1).float().cpu().numpy()  # (B, L, H, T, T)
            for j, row in enumerate(rows):
                n = int(lengths[j])
                out[row] = ReviewAttention(
                    tokens=encoder.tokenizer.convert_ids_to_tokens(
                        tokenized.input_ids[row].tolist()
                    ),
                    offsets=tokenized.offsets[row],
                    attention=stacked[j, :, :, :n, :n].copy(),
                )
    return out  # type: ignore[return-value]


# ------------------------------------------------------------------------- word-level view


def word_groups(
    offsets: np.ndarray, tokens: Sequence[str], spans: Sequence[tuple[str, int, int]]
) -> tuple[list[str], list[np.ndarray]]:
    """A partition of the tokens into display units: each jieba word gets the tokens that
    overlap it most; special, prefix and punctuation tokens stay units of their own."""
    offsets = np.asarray(offsets)
    owner = np.full(len(offsets), -1)
    best = np.zeros(len(offsets))
    for k, (_, start, end) in enumerate(spans):
        overlap = np.minimum(offsets[:, 1], end) - np.maximum(offsets[:, 0], start)
        better = (offsets[:, 0] >= 0) & (overlap > best)
        owner[better], best[better] = k, overlap[better]
    labels: list[str] = []
    groups: list[np.ndarray] = []
    seen: dict[int, int] = {}
    for i in range(len(offsets)):
        if owner[i] < 0:
            labels.append(tokens[i])
            groups.append(np.array([i]))
        elif owner[i] in seen:
            groups[seen[owner[i]]] = np.append(groups[seen[owner[i]]], i)
        else:
            seen[owner[i]] = len(groups)
            labels.append(spans[owner[i]][0])
            groups.append(np.array([i]))
    return labels, groups


def word_level(attention: np.ndarray, groups: Sequence[np.ndarray]) -> np.ndarray:
    """``(..., T, T)`` token attention -> ``(..., W, W)``: mean over a unit's rows, sum over its
    columns, so every row still sums to 1."""
    cols = np.stack([attention[..., g].sum(axis=-1) for g in groups], axis=-1)  # (..., T, W)
    return np.stack([cols[..., g, :].mean(axis=-2) for g in groups], axis=-2)


def head_view(
    encoder: Encoder,
    text: str,
    spans: Sequence[tuple[str, int, int]],
    *,
    max_length: int,
) -> dict[str, object]:
    """Every layer x head map of one review at token and at jieba-word level (for the app's
    head view of any text; ``spans`` from ``pipeline.text.word_spans``)."""
    review = encoder_attention(encoder, [text], max_length=max_length)[0]
    words, groups = word_groups(review.offsets, review.tokens, spans)
    return {
        "tokens": review.tokens,
        "attention": review.attention,
        "words": words,
        "word_attention": word_level(review.attention, groups),
    }


# ------------------------------------------------------------------------- corpus statistics


def pattern_sums(attention: np.ndarray, punctuation: np.ndarray) -> dict[str, np.ndarray]:
    """Per pattern, the ``(L, H)`` attention summed over the review's query tokens, plus the
    number of query tokens each sum is over (``count_<pattern>``)."""
    n = attention.shape[-1]
    idx = np.arange(n)
    sums = {
        "next": attention[..., idx[:-1], idx[1:]].sum(-1),
        "previous": attention[..., idx[1:], idx[:-1]].sum(-1),
        "self": attention[..., idx, idx].sum(-1),
        "first": attention[..., :, 0].sum(-1),
        "last": attention[..., :, n - 1].sum(-1),
        "punctuation": attention[..., :, punctuation].sum((-1, -2)),
    }
    counts = {"next": n - 1, "previous": n - 1}
    return sums | {f"count_{p}": np.float64(counts.get(p, n)) for p in PATTERNS}


def head_pattern_shares(reviews: Sequence[ReviewAttention]) -> dict[str, np.ndarray]:
    """``(L, H)`` mean share of a token's attention per pattern, over every token of every
    review (reviews of one token are skipped: they have no neighbours)."""
    totals: dict[str, np.ndarray] = {}
    for review in reviews:
        if review.attention.shape[-1] < 2:
            continue
        sums = pattern_sums(review.attention, punctuation_mask(review.tokens))
        for key, value in sums.items():
            totals[key] = totals.get(key, 0) + value
    if not totals:
        raise ValueError("no review with at least two tokens to compute head statistics on")
    return {p: (totals[p] / totals[f"count_{p}"]).astype(np.float32) for p in PATTERNS}


def top_heads(shares: np.ndarray, k: int = 3) -> list[dict[str, float]]:
    """The ``k`` (layer, head) cells with the largest share; layers counted from 1."""
    flat = np.argsort(-shares, axis=None)[:k]
    return [
        {"layer": int(i) + 1, "head": int(j), "share": float(shares[i, j])}
        for i, j in zip(*np.unravel_index(flat, shares.shape), strict=True)
    ]


# ------------------------------------------------------------------ encoder vs attentive head


def encoder_token_weights(attention: np.ndarray, layer: int = -1, row: str = "cls") -> np.ndarray:
    """A per-token weight from one layer, averaged over heads: the first token's row (``cls``),
    or the attention each token receives averaged over all rows (``mean``)."""
    maps = attention[layer].mean(axis=0)  # (T, T)
    if row == "cls":
        return maps[0]
    if row == "mean":
        return maps.mean(axis=0)
    raise ValueError(f"row must be 'cls' or 'mean', got {row!r}")


def compare_weights(
    encoder_weights: np.ndarray, head_weights: np.ndarray, text_tokens: np.ndarray, k: int = 3
) -> dict[str, float]:
    """Agreement of two per-token weightings on a review's text tokens: Spearman correlation
    and the share of the head's top-k tokens that are also among the encoder's top-k."""
    a = np.asarray(encoder_weights, dtype=np.float64)[text_tokens]
    b = np.asarray(head_weights, dtype=np.float64)[text_tokens]
    if len(a) < 2:
        return {"spearman": float("nan"), "top_overlap": float("nan"), "tokens": len(a)}
    kk = min(k, len(a))
    top_a, top_b = set(np.argsort(-a)[:kk]), set(np.argsort(-b)[:kk])
    rho = (
        np.corrcoef(pd.Series(a).rank(), pd.Series(b).rank())[0, 1]
        if a.std() and b.std()
        else np.nan
    )
    return {"spearman": float(rho), "top_overlap": len(top_a & top_b) / kk, "tokens": len(a)}

"""What every encoder pass shares, without torch: layer indices, token ids with character
offsets, length-sorted batches under a token budget, and one review's encoded features. The
torch path (:mod:`pipeline.encoding.encode`) and the ONNX Runtime path
(:mod:`pipeline.encoding.onnx_encoder`) both build on these, so they batch and slice alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np

from pipeline.errors import InputError


def normalize_layers(layers: Sequence[int] | Literal["all"], num_hidden_states: int) -> list[int]:
    """Absolute hidden-state indices (0 = embeddings, L = last), negative ones counted from the
    end; order kept."""
    if layers == "all":
        return list(range(num_hidden_states))
    absolute = []
    for layer in layers:
        if not -num_hidden_states <= layer < num_hidden_states:
            raise InputError(
                f"layer {layer} does not exist: this encoder has hidden states "
                f"0..{num_hidden_states - 1} (0 = embeddings, -1 = last)"
            )
        absolute.append(layer % num_hidden_states)
    return absolute


@dataclasses.dataclass
class Tokenized:
    """Unpadded token ids and character offsets (into the text without the prefix) per text."""

    input_ids: list[np.ndarray]  # each (n,) int32
    offsets: list[np.ndarray]  # each (n, 2) int32; (-1, -1) for special and prefix tokens
    lengths: np.ndarray  # (texts,) int64 tokens per text


def tokenized_from(
    ids: Sequence[Sequence[int]],
    spans: Sequence[Sequence[tuple[int, int]]],
    special: Sequence[Sequence[int]],
    prefix_len: int,
) -> Tokenized:
    """A tokenizer's ids, offsets and special-token masks for ``prefix + text`` as
    :class:`Tokenized`: offsets shifted back onto ``text``, (-1, -1) for special and prefix
    tokens."""
    input_ids, offsets = [], []
    for row_ids, row_spans, row_special in zip(ids, spans, special, strict=True):
        row = np.asarray(row_spans, dtype=np.int32).reshape(-1, 2) - prefix_len
        is_text = (np.asarray(row_special, dtype=bool) == 0) & (row[:, 1] > 0)
        row[:, 0] = np.maximum(row[:, 0], 0)  # a token spanning the prefix's space
        row[~is_text] = -1
        input_ids.append(np.asarray(row_ids, dtype=np.int32))
        offsets.append(row)
    lengths = np.fromiter(map(len, input_ids), np.int64, len(input_ids))
    return Tokenized(input_ids, offsets, lengths)


def plan_batches(lengths: np.ndarray, token_budget: int) -> list[np.ndarray]:
    """Row indices per batch, longest first, each batch's padded size (rows x longest) within
    ``token_budget``; one over-long row still forms a batch of its own."""
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(token_budget // longest, 1)
        batches.append(order[start : start + size])
        start += size
    return batches


@dataclasses.dataclass
class EncodedReview:
    """One review's features, as returned by :func:`encode_texts`."""

    input_ids: np.ndarray  # (n,) int32
    offsets: np.ndarray  # (n, 2) int32 into the original text; (-1, -1): special/prefix token
    token_states: np.ndarray  # (n, len(token_layers), d) float16
    pooled_mean: np.ndarray  # (L+1, d) float32, mean over the attention mask (prefix included)
    pooled_cls: np.ndarray  # (L+1, d) float32, first token

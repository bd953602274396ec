"""Training mechanics shared by the self-attentive heads and the fine-tuned encoder, written once:
length-bucketed batches, padding, the validation score that picks the best weights, stratified
subsets, the device a module sits on, autocast and seeding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.encoding.encode import tokenize
from pipeline.encoding.load import Encoder
from pipeline.modeling.inputs import Predictions

# --------------------------------------------------------------------------- batching


def token_ids(encoder: Encoder, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
    """Token ids per text, exactly as feature extraction tokenizes (prefix, specials, cut)."""
    return tokenize(encoder, list(texts), max_length).input_ids


def length_bucketed_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    rng: np.random.Generator,
    rows: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Training batches whose members have similar lengths: shuffle, sort within pools of 50
    batches, cut, shuffle the batches. Every epoch differs; padding stays small. ``rows`` picks
    the items (indices into ``lengths``; default all of them)."""
    lengths = np.asarray(lengths)
    items = rng.permutation(len(lengths) if rows is None else rows)
    pool_size = batch_size * 50
    batches = []
    for start in range(0, len(items), pool_size):
        chunk = items[start : start + pool_size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def pad(items: Sequence[np.ndarray], value: float, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad ``(n_i, ...)`` arrays to ``(B, T, ...)`` and the ``(B, T)`` bool mask of real
    positions."""
    lengths = np.fromiter((len(x) for x in items), np.int64, len(items))
    mask = np.arange(lengths.max(initial=0)) < lengths[:, None]
    padded = np.full(mask.shape + np.shape(items[0])[1:], value, dtype=dtype)
    padded[mask] = np.concatenate(items)
    return padded, mask


def collate(
    ids: Sequence[np.ndarray], pad_id: int | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(B, T)`` input ids and 0/1 attention mask."""
    padded, mask = pad(ids, pad_id or 0, np.int64)
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


# --------------------------------------------------------------------------- model selection


def selection_metric(output: str) -> str:
    """What :func:`validation_score` measures for an output kind."""
    return "accuracy" if output == "classification" else "-mae"


def validation_score(output: str, preds: Predictions, stars: np.ndarray) -> float:
    """The score whose best validation check keeps the weights (higher is better): exact
    accuracy for a classifier, minus the MAE of the predicted stars for regression and ordinal
    outputs, whose point is being close rather than exact."""
    pred = np.asarray(preds.pred_star, dtype=np.int64)
    stars = np.asarray(stars, dtype=np.int64)
    if selection_metric(output) == "accuracy":
        return float((pred == stars).mean())
    return -float(np.abs(pred - stars).mean())


# --------------------------------------------------------------------------- devices, precision


def module_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)

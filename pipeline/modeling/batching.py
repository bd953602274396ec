"""Training mechanics shared by the heads and the fine-tuned encoder: length-bucketed batches,
padding, stratified subsets, seeding and autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pipeline.encoding.encode import tokenize
from pipeline.encoding.load import Encoder

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


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)

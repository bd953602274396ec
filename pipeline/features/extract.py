"""Frozen encoder features: fast batched extraction and the sharded, memory-mapped feature store.

Extraction tokenizes first (cheap), sorts reviews by length and packs batches up to a budget of
padded tokens, so almost no compute goes to padding. Pooled vectors (mean and CLS) are kept for
every hidden state; token states only for the chosen layers, ragged (no padding stored).

The store is written one shard at a time (``shard_size`` reviews in review_id order), each into a
temporary directory renamed into place, and length-sorted only within itself, so a shard's bytes
never depend on the other shards: a killed run resumes at the first missing shard and ends
byte-identical to an uninterrupted one. ``manifest.json`` is written last; it marks a complete
store. Layout of ``runs/<run>/features/``::

    manifest.json               fingerprint, encoder spec, layers, shard list
    shard-00000/meta.json       shard fingerprint, rows [start, stop), rows with token states
    shard-00000/review_ids.npy  (n,) int64
    shard-00000/token_index.npy (n+1,) int64: row i's tokens are [index[i], index[i+1])
    shard-00000/input_ids.npy   (tokens, ) int32
    shard-00000/offsets.npy     (tokens, 2) int32 character offsets into `text`; -1: not text
    shard-00000/token_states.npy (tokens of the first n_states rows, layers, d) float16
    shard-00000/pooled_mean.npy (n, L+1, d) float16, hidden state 0 = embeddings
    shard-00000/pooled_cls.npy  (n, L+1, d) float16
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from pipeline import __version__, artifacts
from pipeline.config import Settings
from pipeline.encoding.encode import (
    _check_lengths,
    _encode_batches,
    accelerate_for_cpu,
    count_tokens,
    normalize_layers,
    resolve_token_budget,
    tokenize,
)
from pipeline.encoding.load import Encoder, EncoderSpec, load_encoder, pick_device, resolve_encoder
from pipeline.features.store import FeatureStore

CODE_VERSION = f"features-1/{__version__}"  # bump the prefix when stored content changes
STAGE = "features"
POOLED_KINDS = ("mean", "cls")
_SHARD_FILES = (
    "meta.json",
    "review_ids.npy",
    "token_index.npy",
    "input_ids.npy",
    "offsets.npy",
    "token_states.npy",
    "pooled_mean.npy",
    "pooled_cls.npy",
)

console = Console(stderr=True)


class ExtractionInterrupted(RuntimeError):
    """Raised by the ``stop_after_shards`` test hook to simulate a killed extraction."""


# ---------------------------------------------------------------------------------------------
# fingerprints


def _content_parts(settings: Settings, spec: EncoderSpec) -> dict[str, Any]:
    """Everything that decides a shard's bytes, except which of its rows keep token states."""
    features = settings.features
    prepared = artifacts.read_manifest(settings.paths.prepared)
    if prepared is None:
        raise FileNotFoundError(
            f"no prepared data in {settings.paths.prepared}: run "
            f"`douban prepare --run {settings.run_name} --input <csv>` first"
        )
    layers = features.token_layers
    return {
        "encoder": spec.fingerprint,
        "max_length": features.max_length,
        "pooling": spec.pooling,
        "prefix": spec.prefix,
        "token_layers": layers if layers == "all" else sorted(set(layers)),
        "prepared": prepared["fingerprint"],
        "code": CODE_VERSION,
    }


def features_fingerprint(settings: Settings, spec: EncoderSpec) -> str:
    """Identity of a feature store: encoder, max_length, pooling, prefix, token layers,
    token_state_limit, prepared data and code version."""
    return artifacts.fingerprint(
        _content_parts(settings, spec), settings.features.token_state_limit
    )


def _shard_fingerprint(content: dict[str, Any], start: int, stop: int, n_states: int) -> str:
    return artifacts.fingerprint(content, start, stop, n_states)


@dataclasses.dataclass(frozen=True)
class _ShardPlan:
    name: str
    start: int
    stop: int
    n_states: int
    fingerprint: str


def _plan_shards(
    content: dict[str, Any], n_reviews: int, shard_size: int, state_limit: int | None
) -> list[_ShardPlan]:
    limit = n_reviews if state_limit is None else min(state_limit, n_reviews)
    plans = []
    for number, start in enumerate(range(0, n_reviews, shard_size)):
        stop = min(start + shard_size, n_reviews)
        n_states = min(max(limit - start, 0), stop - start)
        fp = _shard_fingerprint(content, start, stop, n_states)
        plans.append(_ShardPlan(f"shard-{number:05d}", start, stop, n_states, fp))
    return plans


def _shard_is_done(features_dir: Path, plan: _ShardPlan) -> bool:
    shard_dir = features_dir / plan.name
    if not all((shard_dir / f).exists() for f in _SHARD_FILES):
        return False
    try:
        return artifacts.read_json(shard_dir / "meta.json").get("fingerprint") == plan.fingerprint
    except (OSError, ValueError):
        return False


def _read_reviews(settings: Settings) -> pd.DataFrame:
    path = settings.paths.reviews
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run `douban prepare --run {settings.run_name} --input <csv>`"
        )
    reviews = pd.read_parquet(path, columns=["review_id", "text"])
    if reviews.empty:
        raise ValueError(f"{path} has no reviews: nothing to extract features from")
    if not np.array_equal(reviews["review_id"].to_numpy(), np.arange(len(reviews))):
        raise ValueError(
            f"{path}: review_id must be 0..N-1 in row order (docs/architecture.md); "
            f"re-run `douban prepare --run {settings.run_name}`"
        )
    missing = reviews["text"].isna()
    if missing.any():
        ids = reviews.loc[missing, "review_id"].head(5).tolist()
        raise ValueError(
            f"{path}: {int(missing.sum())} reviews have no text (review_id {ids}...); "
            f"re-run `douban prepare --run {settings.run_name}`"
        )
    return reviews


def _size_report(
    lengths: np.ndarray,
    plans: list[_ShardPlan],
    done: set[str],
    n_layers: int,
    hidden_states: int,
    hidden_size: int,
) -> int:
    """Print the exact store size (from token counts) and return it in bytes."""
    states_tokens = sum(int(lengths[p.start : p.start + p.n_states].sum()) for p in plans)
    sizes = {
        "token states (fp16)": states_tokens * n_layers * hidden_size * 2,
        "pooled mean + CLS (fp16)": 2 * len(lengths) * hidden_states * hidden_size * 2,
        "input ids + offsets": int(lengths.sum()) * 12,
    }
    table = Table(title="feature store", show_header=False)
    table.add_row("reviews", f"{len(lengths):,} ({sum(p.n_states for p in plans):,} with tokens)")
    table.add_row("tokens", f"{int(lengths.sum()):,} (mean {lengths.mean():.1f} per review)")
    for label, size in sizes.items():
        table.add_row(label, _human(size))
    table.add_row("total", _human(sum(sizes.values())))
    table.add_row("shards", f"{len(plans)} ({len(done)} already done)")
    console.print(table)
    return sum(sizes.values())


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _write_shard(
    encoder: Encoder,
    texts: list[str],
    review_ids: np.ndarray,
    plan: _ShardPlan,
    layers: list[int],
    *,
    max_length: int,
    token_budget: int,
    shard_dir: Path,
    bar: tqdm,
) -> None:
    """Encode one shard straight into memory-mapped files in a temporary directory, then
    rename it into place."""
    tokenized = tokenize(encoder, texts, max_length)
    lengths = tokenized.lengths
    index = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=index[1:])
    wants = np.arange(len(texts)) < plan.n_states
    shape = (len(texts), encoder.num_layers + 1, encoder.hidden_size)
    with artifacts.atomic_dir(shard_dir) as tmp:
        np.save(tmp / "review_ids.npy", review_ids.astype(np.int64))
        np.save(tmp / "token_index.npy", index)
        np.save(tmp / "input_ids.npy", np.concatenate(tokenized.input_ids))
        np.save(tmp / "offsets.npy", np.concatenate(tokenized.offsets))
        open_memmap = np.lib.format.open_memmap
        pooled = {
            kind: open_memmap(tmp / f"pooled_{kind}.npy", "w+", np.float16, shape)
            for kind in POOLED_KINDS
        }
        states = open_memmap(
            tmp / "token_states.npy",
            "w+",
            np.float16,
            (int(index[plan.n_states]), len(layers), encoder.hidden_size),
        )
        for rows, out in _encode_batches(
            encoder,
            tokenized,
            layers=layers,
            token_budget=token_budget,
            wants_states=wants,
            bar=bar,
        ):
            pooled["mean"][rows] = out.pooled_mean
            pooled["cls"][rows] = out.pooled_cls
            for j, row in enumerate(rows):
                if wants[row]:
                    states[index[row] : index[row + 1]] = out.states[
                        out.state_starts[j] : out.state_starts[j + 1]
                    ]
        for array in (*pooled.values(), states):
            array.flush()
        del pooled, states
        artifacts.write_json(
            tmp / "meta.json",
            {
                "fingerprint": plan.fingerprint,
                "start": plan.start,
                "stop": plan.stop,
                "n_states": plan.n_states,
                "tokens": int(index[-1]),
            },
        )


def _clear_stale(features_dir: Path, keep: set[str]) -> None:
    """Remove shard directories (and leftovers of killed writes) that the plan does not reuse."""
    if not features_dir.exists():
        return
    for path in features_dir.iterdir():
        is_shard = path.name.startswith(("shard-", ".shard-"))
        if path.is_dir() and is_shard and path.name not in keep:
            shutil.rmtree(path)


def extract_features(
    settings: Settings, *, force: bool = False, stop_after_shards: int | None = None
) -> FeatureStore:
    """Build (or resume, or reuse) ``runs/<run>/features``; a no-op when nothing changed.

    ``stop_after_shards`` is a test hook: raise :class:`ExtractionInterrupted` after writing that
    many new shards, as if the process had been killed there.
    """
    features = settings.features
    features_dir = settings.paths.features
    spec = resolve_encoder(features.encoder, pooling=features.pooling, prefix=features.prefix)
    fp = features_fingerprint(settings, spec)
    if not force and artifacts.is_current(features_dir, fp):
        with contextlib.suppress(FileNotFoundError):
            store = FeatureStore.open(features_dir, expect_fingerprint=fp)
            console.print(
                f"features up to date in {features_dir} (fingerprint {fp}): nothing to do"
            )
            return store
    (features_dir / artifacts.MANIFEST).unlink(missing_ok=True)  # incomplete from here on

    reviews = _read_reviews(settings)
    texts = reviews["text"].tolist()
    device = pick_device(features.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    encoder = accelerate_for_cpu(load_encoder(spec, device=device))
    token_budget = resolve_token_budget(encoder, features.token_budget, features.max_length)
    _check_lengths(encoder, features.max_length, token_budget)
    hidden_states = encoder.num_layers + 1
    layers = sorted(set(normalize_layers(features.token_layers, hidden_states)))
    content = _content_parts(settings, spec)
    plans = _plan_shards(content, len(texts), features.shard_size, features.token_state_limit)
    done = set() if force else {p.name for p in plans if _shard_is_done(features_dir, p)}
    _clear_stale(features_dir, keep=done)

    lengths = count_tokens(encoder, texts, features.max_length)
    size = _size_report(lengths, plans, done, len(layers), hidden_states, encoder.hidden_size)
    features_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(features_dir).free
    todo = sum(p.stop - p.start for p in plans if p.name not in done) / len(texts)
    if size * todo > free:
        raise OSError(
            f"the feature store needs {_human(size * todo)} more but {features_dir} has "
            f"{_human(free)} free: lower --token-state-limit or store fewer --layers"
        )

    written = 0
    initial = sum(p.stop - p.start for p in plans if p.name in done)
    with tqdm(total=len(texts), initial=initial, unit="review", desc="features") as bar:
        for plan in plans:
            if plan.name in done:
                continue
            _write_shard(
                encoder,
                texts[plan.start : plan.stop],
                reviews["review_id"].to_numpy()[plan.start : plan.stop],
                plan,
                layers,
                max_length=features.max_length,
                token_budget=token_budget,
                shard_dir=features_dir / plan.name,
                bar=bar,
            )
            written += 1
            if stop_after_shards is not None and written >= stop_after_shards:
                raise ExtractionInterrupted(f"stopped after {written} shard(s) (test hook)")

    artifacts.write_manifest(
        features_dir,
        STAGE,
        fp,
        encoder=dataclasses.asdict(spec),
        num_hidden_states=hidden_states,
        hidden_size=encoder.hidden_size,
        token_layers=layers,
        max_length=features.max_length,
        token_state_limit=features.token_state_limit,
        num_reviews=len(texts),
        num_tokens=int(lengths.sum()),
        device=str(device),
        token_budget=token_budget,
        code_version=CODE_VERSION,
        shards=[
            {"name": p.name, "start": p.start, "stop": p.stop, "n_states": p.n_states}
            for p in plans
        ],
    )
    artifacts.write_json(settings.paths.settings, settings)
    console.print(f"features: {written} shard(s) written, {len(done)} reused -> {features_dir}")
    return FeatureStore.open(features_dir, expect_fingerprint=fp)

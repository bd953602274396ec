"""The feature stage: frozen encoder features of every prepared review, into the sharded,
memory-mapped feature store (:mod:`pipeline.features.store`).

Extraction tokenizes first (cheap), sorts reviews by length and packs batches up to a budget of
padded tokens, so almost no compute goes to padding. Pooled vectors (mean and CLS) are kept for
every hidden state; token states only for the chosen layers, ragged (no padding stored).

On a CPU the encoder runs on ONNX Runtime, int8 by default (``features.precision``; see
:mod:`pipeline.encoding.runtime`); on a GPU on torch in bf16. Two engines write the same store
through the same :mod:`pipeline.features.shards` (fingerprints, shard plans and reuse,
:func:`~pipeline.features.shards.write_shard`, the manifest): ``local`` (this process, the
default) and ``ray`` (:mod:`pipeline.features.ray_engine`, a pool of encoder actors on a Ray
cluster); only who writes the pending shards differs.
"""

from __future__ import annotations

import os
from typing import Literal

from tqdm.auto import tqdm

from pipeline.config import Settings
from pipeline.encoding.load import pick_device, resolve_encoder
from pipeline.encoding.runtime import load_feature_encoder
from pipeline.encoding.tokens import default_token_budget
from pipeline.errors import InputError
from pipeline.features.shards import (
    current_store,
    finish_extraction,
    plan_extraction,
    store_precision,
    write_shard,
)
from pipeline.features.store import FeatureStore
from pipeline.locking import run_lock

ENGINES = ("local", "ray")


def _extract_locally(settings: Settings, force: bool) -> FeatureStore:
    features = settings.features
    device, threads = str(pick_device(features.device)), os.cpu_count() or 1
    spec = resolve_encoder(features.encoder, pooling=features.pooling, prefix=features.prefix)
    encoder = load_feature_encoder(
        spec,
        device=device,
        precision=store_precision(settings),
        token_layers=features.token_layers,
        threads=threads,
    )
    token_budget = features.token_budget or default_token_budget(
        encoder.device, threads, features.max_length
    )
    job = plan_extraction(settings, encoder, force=force, token_budget=token_budget)
    with tqdm(total=len(job.texts), initial=job.reused_rows, unit="review", desc="features") as bar:
        for plan in job.pending:
            write_shard(
                encoder,
                job.texts[plan.start : plan.stop],
                job.review_ids[plan.start : plan.stop],
                plan,
                job.layers,
                max_length=features.max_length,
                token_budget=token_budget,
                shard_dir=job.features_dir / plan.name,
                bar=bar,
            )
    runtime = f"{type(encoder).__name__} {encoder.precision} on {encoder.device}"
    return finish_extraction(job, engine="local", device=runtime, token_budget=token_budget)


def extract_features(
    settings: Settings,
    *,
    force: bool = False,
    engine: Literal["local", "ray"] = "local",
    address: str | None = None,
    actors: int | None = None,
) -> FeatureStore:
    """Build (or resume, or reuse) ``runs/<run>/features``; a no-op when nothing changed.

    On a CPU with ``features.encode_budget`` the local engine encodes a stratified sample that
    fits the budget (:mod:`pipeline.features.sample`). ``engine="ray"`` encodes every review,
    its pending shards on a Ray cluster (``address``: ``auto``,
    ``HOST:PORT`` or None for a local runtime; ``actors``: encoder actors, default one per GPU,
    else one per CPU); the store it writes is the same as the local engine's.
    """
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}", f"use one of {', '.join(ENGINES)}")
    if engine == "ray":
        from pipeline.cluster import require_ray

        require_ray()  # say how to install it before anything else
        # a cluster is how a corpus outgrows one CPU's budget: it encodes every review
        features = settings.features.model_copy(update={"encode_budget": None})
        settings = settings.model_copy(update={"features": features})
    store = current_store(settings, force=force)
    if store is not None:
        return store
    with run_lock(settings.paths.root, "features"):  # one writer per run
        if engine == "ray":
            from pipeline.features.ray_engine import extract_on_ray

            return extract_on_ray(settings, force=force, address=address, actors=actors)
        return _extract_locally(settings, force)

"""The feature stage on Ray: the pending shards stream through a pool of encoder actors.

The driver plans exactly as the local engine does (``shards.plan_extraction``: fingerprints,
shard plans, finished shards skipped) and writes the manifest at the end. Ray Data carries one
pending shard per row (its plan and texts) to the actors; each actor loads the encoder once and
runs ``shards.write_shard``, the local engine's own writer, so a shard is the same bytes
whichever engine wrote it (up to float round-off between devices and thread counts). Ray
restarts a killed actor and retries its shard; the atomic shard write means a killed writer
leaves only a temporary directory, removed at the end.

Actors write into ``runs/<run>/features`` themselves: on a multi-node cluster the runs directory
must be the same path on every node (a shared filesystem; see the README's cluster recipe).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from pipeline.cluster import cause_of, plan_actors, ray_runtime
from pipeline.config import Settings
from pipeline.encoding.load import EncoderSpec, resolve_encoder
from pipeline.encoding.runtime import load_feature_encoder
from pipeline.encoding.tokens import default_token_budget
from pipeline.errors import EncoderNotAvailable
from pipeline.features.shards import (
    Extraction,
    ShardPlan,
    console,
    finish_extraction,
    plan_extraction,
    write_shard,
)
from pipeline.features.store import FeatureStore

_PLAN_FIELDS = tuple(f.name for f in dataclasses.fields(ShardPlan))


@dataclasses.dataclass(frozen=True)
class _EncodeJob:
    """What every actor needs besides a shard: picklable, small."""

    spec: EncoderSpec
    layers: list[int]
    precision: str
    max_length: int
    token_budget: int | None
    features_dir: str
    device: str
    threads: int


class ShardEncoder:
    """A Ray actor: loads the encoder once, then encodes and writes whole shards."""

    def __init__(self, job: _EncodeJob) -> None:
        self.job = job
        # resolved on this node (its own cache path), then checked to be the driver's weights
        spec = resolve_encoder(job.spec.name, pooling=job.spec.pooling, prefix=job.spec.prefix)
        if spec.fingerprint != job.spec.fingerprint:
            raise EncoderNotAvailable(
                f"encoder {spec.name!r} on this node ({spec.path}) is not the driver's "
                f"(fingerprint {spec.fingerprint}, expected {job.spec.fingerprint})",
                "give every node the same encoder files",
            )
        self.encoder = load_feature_encoder(
            spec,
            device=job.device,
            precision=job.precision,
            token_layers=job.layers,
            threads=job.threads,
        )
        self.token_budget = job.token_budget or default_token_budget(
            self.encoder.device, job.threads, job.max_length
        )

    def __call__(self, batch: pa.Table) -> dict[str, list[Any]]:
        names, rows = [], []
        for item in batch.to_pylist():
            plan = ShardPlan(**{name: item[name] for name in _PLAN_FIELDS})
            write_shard(
                self.encoder,
                item["texts"],
                np.asarray(item["review_ids"], dtype=np.int64),
                plan,
                self.job.layers,
                max_length=self.job.max_length,
                token_budget=self.token_budget,
                shard_dir=Path(self.job.features_dir) / plan.name,
            )
            names.append(plan.name)
            rows.append(plan.stop - plan.start)
        return {"name": names, "rows": rows, "token_budget": [self.token_budget] * len(names)}


def _shard_items(job: Extraction) -> list[dict[str, Any]]:
    return [
        dataclasses.asdict(plan)
        | {
            "texts": job.texts[plan.start : plan.stop],
            "review_ids": job.review_ids[plan.start : plan.stop].tolist(),
        }
        for plan in job.pending
    ]


def extract_on_ray(
    settings: Settings,
    *,
    force: bool = False,
    address: str | None = None,
    actors: int | None = None,
) -> FeatureStore:
    """Write the pending shards of ``runs/<run>/features`` on a Ray cluster (see the module
    docstring); the result is the store the local engine writes."""
    features = settings.features
    spec = resolve_encoder(features.encoder, pooling=features.pooling, prefix=features.prefix)
    tokenizer = load_feature_encoder(
        spec, device="cpu", precision="fp32", token_layers=[-1], threads=1
    )  # plans only: tokenizes
    job = plan_extraction(settings, tokenizer, force=force)
    with ray_runtime(address) as ray:
        pool = plan_actors(actors, features.device)
        pending = job.pending
        console.print(f"ray: {len(pending)} shard(s) on {pool.describe()}")
        if 0 < len(pending) < pool.actors:
            console.print(
                f"only {len(pending)} shard(s) for {pool.actors} actors: lower "
                f"features.shard_size ({features.shard_size}) to keep every actor busy",
                style="yellow",
            )
        encode_job = _EncodeJob(
            job.spec,
            job.layers,
            job.precision,
            features.max_length,
            features.token_budget,
            str(job.features_dir.resolve()),
            pool.device,
            pool.threads,
        )
        budgets: set[int] = set()
        if pending:
            shards = ray.data.from_items(_shard_items(job), override_num_blocks=len(pending))
            done = shards.map_batches(
                ShardEncoder,
                batch_size=1,
                batch_format="pyarrow",
                fn_constructor_kwargs={"job": encode_job},
                udf_modifying_row_count=False,
                **pool.map_batches_args(),
            )
            with tqdm(
                total=len(job.texts), initial=job.reused_rows, unit="review", desc="features"
            ) as bar:
                try:
                    for batch in done.iter_batches(batch_size=None, batch_format="pyarrow"):
                        bar.update(sum(batch.column("rows").to_pylist()))
                        budgets.update(batch.column("token_budget").to_pylist())
                except ray.exceptions.RayError as error:
                    raise cause_of(error) from error
    return finish_extraction(
        job,
        engine="ray",
        device=f"{pool.device} x {pool.actors} actor(s)",
        token_budget=max(budgets) if budgets else None,
    )

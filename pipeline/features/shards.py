"""What every engine of the feature stage shares: the store's fingerprints and shard plans, which
shards are already done, one shard's encoding and atomic write, and the manifest that completes
the store. ``extract`` runs it in this process, ``ray_engine`` on a pool of Ray actors.

The store is written one shard at a time (``shard_size`` reviews in review_id order), each into a
temporary directory renamed into place, and length-sorted only within itself, so a shard's bytes
never depend on the other shards: a killed run resumes at the first missing shard and ends
byte-identical to an uninterrupted one. ``manifest.json`` is written last; it marks a complete
store (layout: :mod:`pipeline.features.store`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from pipeline import artifacts
from pipeline.config import Settings
from pipeline.encoding.load import EncoderSpec, pick_device, resolve_encoder
from pipeline.encoding.runtime import resolve_precision
from pipeline.encoding.tokens import FeatureEncoder, check_lengths, count_tokens, normalize_layers
from pipeline.errors import InputError, StageMissingError
from pipeline.features.sample import STRATA, choose_reviews, sample_budget
from pipeline.features.store import CODE_VERSION, POOLED_KINDS, SHARD_FILES, STAGE, FeatureStore

console = Console(stderr=True)


# ---------------------------------------------------------------------------------------------
# fingerprints and shard plans (shared by every engine)


def store_precision(settings: Settings) -> str:
    """The precision the store is (to be) encoded at: ``features.precision`` resolved for the
    device (int8 on a CPU with ONNX Runtime unless told otherwise)."""
    features = settings.features
    return resolve_precision(features.precision, pick_device(features.device).type)


def _content_parts(settings: Settings, spec: EncoderSpec) -> dict[str, Any]:
    """Everything that decides a shard's bytes, except which of its rows keep token states."""
    features = settings.features
    prepared = artifacts.read_manifest(settings.paths.prepared)
    if prepared is None:
        raise StageMissingError(
            f"no prepared data in {settings.paths.prepared}",
            f"run `douban prepare --run {settings.run_name} --input <csv>` first",
        )
    layers = features.token_layers
    return {
        "encoder": spec.fingerprint,
        "max_length": features.max_length,
        "pooling": spec.pooling,
        "prefix": spec.prefix,
        "token_layers": layers if layers == "all" else sorted(set(layers)),
        "prepared": prepared["fingerprint"],
        "precision": store_precision(settings),
        "code": CODE_VERSION,
    }


def features_fingerprint(settings: Settings, spec: EncoderSpec) -> str:
    """Identity of a feature store of every prepared review: encoder, max_length, pooling,
    prefix, token layers, token_state_limit, prepared data, precision (int8 or fp32) and code
    version (never the engine or the device itself). A budgeted sample's store adds the sample
    to it (:func:`sample_fingerprint`)."""
    return artifacts.fingerprint(
        _content_parts(settings, spec), settings.features.token_state_limit
    )


def sample_fingerprint(full: str, review_ids: np.ndarray) -> str:
    """The store fingerprint of a sample of the reviews (``full``: the whole store's)."""
    return artifacts.fingerprint(
        full, hashlib.sha256(review_ids.astype(np.int64).tobytes()).hexdigest()
    )


def _sample_key(settings: Settings, full: str) -> dict[str, Any] | None:
    """What chooses a budgeted sample: the whole store's fingerprint, the budget, the seed."""
    budget = sample_budget(settings)
    return (
        None if budget is None else {"basis": full, "encode_budget": budget, "seed": settings.seed}
    )


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """One shard: review rows [start, stop), the first ``n_states`` of them with token states."""

    name: str
    start: int
    stop: int
    n_states: int
    fingerprint: str


def _plan_shards(
    content: dict[str, Any], n_reviews: int, shard_size: int, state_limit: int | None
) -> list[ShardPlan]:
    limit = n_reviews if state_limit is None else min(state_limit, n_reviews)
    plans = []
    for number, start in enumerate(range(0, n_reviews, shard_size)):
        stop = min(start + shard_size, n_reviews)
        n_states = min(max(limit - start, 0), stop - start)
        fp = artifacts.fingerprint(content, start, stop, n_states)
        plans.append(ShardPlan(f"shard-{number:05d}", start, stop, n_states, fp))
    return plans


def _shard_is_done(features_dir: Path, plan: ShardPlan) -> bool:
    shard_dir = features_dir / plan.name
    if not all((shard_dir / f).exists() for f in SHARD_FILES):
        return False
    try:
        return artifacts.read_json(shard_dir / "meta.json").get("fingerprint") == plan.fingerprint
    except (OSError, ValueError):
        return False


def _read_reviews(settings: Settings) -> pd.DataFrame:
    path = settings.paths.reviews
    if not path.exists():
        raise StageMissingError(
            f"{path} does not exist",
            f"run `douban prepare --run {settings.run_name} --input <csv>`",
        )
    reviews = artifacts.read_frame(path, columns=["review_id", "text", *STRATA])
    if reviews.empty:
        raise InputError(f"{path} has no reviews: nothing to extract features from")
    redo = f"re-run `douban prepare --run {settings.run_name}`"
    if not np.array_equal(reviews["review_id"].to_numpy(), np.arange(len(reviews))):
        raise InputError(
            f"{path}: review_id must be 0..N-1 in row order (docs/architecture.md)", redo
        )
    missing = reviews["text"].isna()
    if missing.any():
        ids = reviews.loc[missing, "review_id"].head(5).tolist()
        raise InputError(
            f"{path}: {int(missing.sum())} reviews have no text (review_id {ids}...)", redo
        )
    return reviews


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _clear_stale(features_dir: Path, keep: set[str]) -> None:
    """Remove shard directories (and leftovers of killed writes) that the plan does not reuse."""
    if not features_dir.exists():
        return
    for path in features_dir.iterdir():
        is_shard = path.name.startswith(("shard-", ".shard-"))
        if path.is_dir() and is_shard and path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)


@dataclasses.dataclass
class Extraction:
    """A planned feature stage: what every engine needs to write the pending shards."""

    settings: Settings
    spec: EncoderSpec
    fingerprint: str
    texts: list[str]  # of the reviews to encode, in store order
    review_ids: np.ndarray  # their review_ids: all of them, or a budgeted sample (ascending)
    num_prepared: int
    plans: list[ShardPlan]
    done: set[str]
    layers: list[int]  # absolute hidden-state indices whose token states are stored
    precision: str
    num_tokens: int
    hidden_states: int
    hidden_size: int
    sample: dict[str, Any] | None  # a budgeted sample: what chose it, and its size

    @property
    def features_dir(self) -> Path:
        return self.settings.paths.features

    @property
    def pending(self) -> list[ShardPlan]:
        return [p for p in self.plans if p.name not in self.done]

    @property
    def reused_rows(self) -> int:
        return sum(p.stop - p.start for p in self.plans if p.name in self.done)


def current_store(settings: Settings, *, force: bool = False) -> FeatureStore | None:
    """The complete store when it is up to date with ``settings`` (then there is nothing to do)."""
    features = settings.features
    spec = resolve_encoder(features.encoder, pooling=features.pooling, prefix=features.prefix)
    fp = features_fingerprint(settings, spec)
    manifest = artifacts.read_manifest(settings.paths.features) or {}
    sample = manifest.get("sample")
    if sample is not None and sample.get("key") == _sample_key(settings, fp):
        fp = manifest.get("fingerprint", fp)  # the sample this budget chose: still current
    if force or not artifacts.is_current(settings.paths.features, fp):
        return None
    with contextlib.suppress(FileNotFoundError):
        store = FeatureStore.open(settings.paths.features, expect_fingerprint=fp)
        console.print(
            f"features up to date in {settings.paths.features} (fingerprint {fp}): nothing to do"
        )
        return store
    return None


def plan_extraction(
    settings: Settings,
    encoder: FeatureEncoder,
    *,
    force: bool = False,
    token_budget: int | None = None,
) -> Extraction:
    """Validate the prepared reviews, choose which to encode (all, or a budgeted sample timed
    with ``encoder`` at ``token_budget``), plan the shards, keep the finished ones (unless
    ``force``), report the store's size and check the disk."""
    features = settings.features
    features_dir = settings.paths.features
    spec = encoder.spec
    fp = features_fingerprint(settings, spec)
    (features_dir / artifacts.MANIFEST).unlink(missing_ok=True)  # incomplete from here on
    reviews = _read_reviews(settings)
    # a budget left to each worker's device resolves to at least max_length
    check_lengths(encoder, features.max_length, features.token_budget or features.max_length)
    hidden_states = encoder.num_layers + 1
    layers = sorted(set(normalize_layers(features.token_layers, hidden_states)))
    lengths = count_tokens(encoder, reviews["text"].tolist(), features.max_length)
    key = _sample_key(settings, fp)
    ids = choose_reviews(
        settings, encoder, reviews, lengths, layers,
        fingerprint=artifacts.fingerprint(key), token_budget=token_budget or features.max_length,
        force=force,
    )  # fmt: skip
    texts, lengths = reviews["text"].to_numpy()[ids].tolist(), lengths[ids]
    content = _content_parts(settings, spec)
    sample = None
    if len(ids) < len(reviews):  # a sample: shards hold other reviews than rows [start, stop)
        fp = sample_fingerprint(fp, ids)
        content["sample"] = fp
        sample = {"key": key, "reviews": len(ids), "of": len(reviews)}
    plans = _plan_shards(content, len(texts), features.shard_size, features.token_state_limit)
    done = set() if force else {p.name for p in plans if _shard_is_done(features_dir, p)}
    _clear_stale(features_dir, keep=done)

    job = Extraction(
        settings, spec, fp, texts, ids, len(reviews), plans, done, layers,
        store_precision(settings), int(lengths.sum()), hidden_states, encoder.hidden_size, sample,
    )  # fmt: skip
    size = _size_report(job, lengths)
    features_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(features_dir).free
    todo = (len(texts) - job.reused_rows) / len(texts)
    if size * todo > free:
        raise InputError(
            f"the feature store needs {_human(size * todo)} more but {features_dir} has "
            f"{_human(free)} free",
            "lower --token-state-limit or store fewer --layers",
        )
    return job


def _size_report(job: Extraction, lengths: np.ndarray) -> int:
    """Print the exact store size (from token counts) and return it in bytes."""
    states_tokens = sum(int(lengths[p.start : p.start + p.n_states].sum()) for p in job.plans)
    sizes = {
        "token states (fp16)": states_tokens * len(job.layers) * job.hidden_size * 2,
        "pooled mean + CLS (fp16)": 2 * len(lengths) * job.hidden_states * job.hidden_size * 2,
        "input ids + offsets": int(lengths.sum()) * 12,
    }
    with_tokens = sum(p.n_states for p in job.plans)
    table = Table(title="feature store", show_header=False)
    table.add_row("reviews", f"{len(lengths):,} ({with_tokens:,} with tokens)")
    table.add_row("tokens", f"{int(lengths.sum()):,} (mean {lengths.mean():.1f} per review)")
    for label, size in sizes.items():
        table.add_row(label, _human(size))
    table.add_row("total", _human(sum(sizes.values())))
    table.add_row("shards", f"{len(job.plans)} ({len(job.done)} already done)")
    console.print(table)
    return sum(sizes.values())


# ---------------------------------------------------------------------------------------------
# one shard (what every engine runs)


def write_shard(
    encoder: FeatureEncoder,
    texts: list[str],
    review_ids: np.ndarray,
    plan: ShardPlan,
    layers: list[int],
    *,
    max_length: int,
    token_budget: int,
    shard_dir: Path,
    bar: tqdm | None = None,
) -> None:
    """Encode one shard's texts straight into memory-mapped files in a temporary directory,
    then rename it into place (so a killed writer leaves no half shard behind)."""
    tokenized = encoder.tokenize(texts, max_length)
    lengths = tokenized.lengths
    index = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=index[1:])
    wants = np.arange(len(texts)) < plan.n_states
    shape = (len(texts), encoder.num_layers + 1, encoder.hidden_size)
    with artifacts.atomic_dir(shard_dir) as tmp:
        np.save(tmp / "review_ids.npy", np.asarray(review_ids, dtype=np.int64))
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
        for rows, out in encoder.batches(
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


def finish_extraction(job: Extraction, **engine: Any) -> FeatureStore:
    """Check every planned shard is there, write the manifest (the store is complete from
    here on) and open the store; ``engine`` (device, token budget, ...) is recorded as is."""
    features_dir = job.features_dir
    missing = [p.name for p in job.plans if not _shard_is_done(features_dir, p)]
    if missing:
        raise StageMissingError(
            f"feature shards {missing[:5]} were not written",
            f"run `douban features --run {job.settings.run_name}` again to finish them",
        )
    _clear_stale(features_dir, keep={p.name for p in job.plans})  # killed writers' leftovers
    features = job.settings.features
    artifacts.write_manifest(
        features_dir,
        STAGE,
        job.fingerprint,
        encoder=dataclasses.asdict(job.spec),
        num_hidden_states=job.hidden_states,
        hidden_size=job.hidden_size,
        token_layers=job.layers,
        precision=job.precision,
        max_length=features.max_length,
        token_state_limit=features.token_state_limit,
        num_reviews=len(job.texts),
        num_prepared=job.num_prepared,
        sample=job.sample,
        num_tokens=job.num_tokens,
        code_version=CODE_VERSION,
        shards=[
            {"name": p.name, "start": p.start, "stop": p.stop, "n_states": p.n_states}
            for p in job.plans
        ],
        **engine,
    )
    artifacts.write_json(job.settings.paths.settings, job.settings)
    written = len(job.plans) - len(job.done)
    console.print(f"features: {written} shard(s) written, {len(job.done)} reused -> {features_dir}")
    return FeatureStore.open(features_dir, expect_fingerprint=job.fingerprint)

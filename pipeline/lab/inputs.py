"""The lab's inputs: the frozen and fine-tuned encoders of a run, the held-out sample every view
is computed on, their pooled vectors per layer, and the fingerprinted cache of every view."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from pipeline.artifacts import cached_arrays, fingerprint, write_arrays, write_json
from pipeline.config import RunPaths, Settings
from pipeline.encoding.load import Encoder, EncoderSpec, load_encoder, pick_device, resolve_encoder
from pipeline.errors import InputError, ModelNotFoundError, StageMissingError
from pipeline.modeling.batching import stratified_subset
from pipeline.modeling.sentence import tuned_encoder
from pipeline.run import Run

log = logging.getLogger(__name__)
console = Console(stderr=True)
LAB_VERSION = "lab-2"  # bump when a view changes meaning: every cached view recomputes
FROZEN = "frozen"


# ------------------------------------------------------------------------------ cache helpers


def without_nan(obj: Any) -> Any:
    """NaN (an undefined mean, say) as JSON null, so every JSON reader accepts the file."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: without_nan(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [without_nan(v) for v in obj]
    return obj


def save_json(path: Path, doc: dict[str, Any]) -> None:
    write_json(path, without_nan(doc))


# ------------------------------------------------------------------------------ the lab's inputs


@dataclasses.dataclass
class Lab:
    """One run's lab: settings, the sampled reviews, and the two encoders (loaded on demand)."""

    settings: Settings
    run: Run
    spec: EncoderSpec  # the frozen encoder: the one the run's features were extracted with
    max_length: int  # the run's features.max_length
    reviews: pd.DataFrame
    eval_rows: np.ndarray
    train_rows: np.ndarray
    model_name: str | None  # the fine-tuned model compared with the frozen encoder
    tuned_fingerprint: str | None  # of that model's weights
    sample_fingerprint: str  # data, encoder and sampled reviews: what sentence vectors depend on
    fingerprint: str  # everything: what the views depend on
    progress: bool = True

    @property
    def paths(self) -> RunPaths:
        return self.settings.paths

    @property
    def models(self) -> list[str]:
        return [FROZEN] + ([self.model_name] if self.model_name else [])

    @property
    def eval_stars(self) -> np.ndarray:
        return self.reviews["star"].to_numpy(np.int64)[self.eval_rows]

    @functools.cached_property
    def device(self) -> Any:
        return pick_device(self.settings.lab.device)

    @functools.cached_property
    def frozen(self) -> Encoder:
        return load_encoder(self.spec, device=self.device)

    @functools.cached_property
    def finetuned(self) -> Encoder:
        if self.model_name is None:
            raise RuntimeError("this run has no fine-tuned model")
        return tuned_encoder(self.paths.model(self.model_name), device=self.device)

    def encoder(self, which: str) -> Encoder:
        return self.frozen if which == FROZEN else self.finetuned

    def texts(self, rows: Sequence[int]) -> list[str]:
        text = self.reviews["text"]
        return [str(text.iat[int(r)]) for r in rows]

    def fp(self, *parts: Any) -> str:
        return fingerprint(self.fingerprint, *parts)

    def path(self, name: str) -> Path:
        return self.paths.lab / name


def pick_finetuned(run: Run, requested: str | None) -> str | None:
    """The requested fine-tuned model, else the first of finetune_cls / _ord / _reg saved."""
    if requested is not None:
        if requested not in run.saved_models:
            raise ModelNotFoundError(
                f"run {run.name} has no model {requested!r}",
                hint=f"run `douban finetune --run {run.name}` first",
            )
        return requested
    for name in ("finetune_cls", "finetune_ord", "finetune_reg"):
        if name in run.saved_models:
            return name
    return None


def frozen_encoder(run: Run, settings: Settings) -> tuple[EncoderSpec, int]:
    """The run's encoder and ``max_length`` (its features manifest); the settings' only for a
    run without features, which records no encoder."""
    if run.manifest("features") is None:
        f = settings.features
        return resolve_encoder(f.encoder, pooling=f.pooling, prefix=f.prefix), f.max_length
    recorded = run.encoder_spec
    spec = resolve_encoder(recorded["name"], pooling=recorded["pooling"], prefix=recorded["prefix"])
    if spec.fingerprint != recorded["fingerprint"]:
        log.warning(
            "encoder %s here (fingerprint %s) differs from the one run %s was featurised with (%s)",
            recorded["name"], spec.fingerprint, run.name, recorded["fingerprint"],
        )  # fmt: skip
    return spec, int(recorded["max_length"])


def open_lab(settings: Settings, progress: bool = True) -> Lab:
    """Sample the lab's reviews and pin down what its artifacts depend on."""
    paths = settings.paths
    run = Run.open(paths.root)
    prepared = run.manifest("prepare")
    if prepared is None or not paths.reviews.exists():
        raise StageMissingError(
            f"no prepared data in {paths.prepared}",
            hint=f"run `douban prepare --run {paths.name} --input <csv>` first",
        )
    reviews = run.reviews[["review_id", "film", "star", "text", "split"]]
    lab = settings.lab
    split = reviews["split"].to_numpy()
    stars = reviews["star"].to_numpy(np.int64)
    rows = {}
    for name, limit in (("test", lab.eval_reviews), ("train", lab.probe_train_reviews)):
        candidates = np.flatnonzero(split == name)
        if len(candidates) < 10:
            raise InputError(
                f"run {paths.name} has {len(candidates)} {name} reviews; the lab needs at least 10",
                hint="prepare more reviews",
            )
        rows[name] = candidates[stratified_subset(stars[candidates], limit, settings.seed)]
    model_name = pick_finetuned(run, lab.model)
    spec, max_length = frozen_encoder(run, settings)
    tuned_fp = None
    if model_name is not None:
        tuned_fp = run.model_config(model_name).get("fingerprint")
    sample_fp = fingerprint(
        LAB_VERSION,
        prepared["fingerprint"],
        spec.fingerprint,
        spec.pooling,
        spec.prefix,
        max_length,
        lab.eval_reviews,
        lab.probe_train_reviews,
        settings.seed,
    )
    fp = fingerprint(sample_fp, lab.model_dump(mode="json", exclude={"device"}), tuned_fp)
    return Lab(
        settings,
        run,
        spec,
        max_length,
        reviews,
        rows["test"],
        rows["train"],
        model_name,
        tuned_fp,
        sample_fp,
        fp,
        progress,
    )


# ------------------------------------------------------------------------------ pooled vectors


def _encode_pooled(lab: Lab, which: str, rows: np.ndarray) -> np.ndarray:
    from pipeline.encoding.encode import encode_texts

    encoder = lab.encoder(which)
    encoded = encode_texts(
        encoder,
        lab.texts(rows),
        token_layers=[-1],
        max_length=lab.max_length,
        token_budget=lab.settings.features.token_budget,
        progress=lab.progress,
    )
    kind = "pooled_cls" if encoder.spec.pooling == "cls" else "pooled_mean"
    return np.stack([getattr(e, kind) for e in encoded]).astype(np.float32)


def _store_pooled(lab: Lab, rows: np.ndarray) -> np.ndarray | None:
    """Frozen vectors straight from the run's feature store, when it holds this encoder's."""
    store = lab.run.feature_store
    if store is None:
        return None
    spec = lab.spec
    same = (
        store.encoder.get("fingerprint") == spec.fingerprint
        and store.encoder.get("prefix") == spec.prefix
        and store.max_length == lab.max_length
        and np.array_equal(store.review_ids, lab.reviews["review_id"].to_numpy())
    )
    if not same:
        return None
    kind = "cls" if spec.pooling == "cls" else "mean"
    pooled = store.pooled_all(kind)
    return np.asarray(pooled[np.sort(rows)], dtype=np.float32)[np.argsort(np.argsort(rows))]


def pooled(lab: Lab, which: str) -> dict[str, np.ndarray]:
    """``eval`` and ``train`` pooled vectors ``(N, L+1, d)`` of one model, cached."""
    path = lab.path(f"pooled-{which}.npz")
    tuned = None if which == FROZEN else lab.tuned_fingerprint
    fp = fingerprint(lab.sample_fingerprint, which, tuned)  # frozen vectors outlive a re-tune
    cached = cached_arrays(path, fp)
    if cached is not None:
        return cached
    console.print(f"[bold]lab[/]: sentence vectors of the {which} encoder")
    out = {}
    for part, rows in (("eval", lab.eval_rows), ("train", lab.train_rows)):
        vectors = _store_pooled(lab, rows) if which == FROZEN else None
        out[part] = vectors if vectors is not None else _encode_pooled(lab, which, rows)
    write_arrays(
        path,
        fp,
        eval=out["eval"].astype(np.float16),
        train=out["train"].astype(np.float16),
        eval_rows=lab.eval_rows,
        train_rows=lab.train_rows,
    )
    return out

"""What the train and evaluate stages read: a run's prepared reviews beside its feature store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.artifacts import MODEL_CONFIG, read_json, read_manifest
from pipeline.config import RunPaths
from pipeline.errors import StageMissingError, StaleArtifactError
from pipeline.features.store import FeatureStore
from pipeline.modeling.inputs import StoreSource


@dataclass
class TrainingData:
    """A run's prepared reviews and feature store, row i = review_id i."""

    paths: RunPaths
    reviews: pd.DataFrame
    store: FeatureStore
    source: StoreSource

    @classmethod
    def load(cls, paths: RunPaths) -> TrainingData:
        if not paths.reviews.exists():
            raise StageMissingError(
                f"no prepared reviews in {paths.prepared}",
                f"run `douban prepare --run {paths.name} --input <csv>`",
            )
        if read_manifest(paths.features) is None:
            raise StageMissingError(
                f"run {paths.name} has no feature store",
                f"run `douban features --run {paths.name}`",
            )
        reviews = pd.read_parquet(paths.reviews)
        store = FeatureStore.open(paths.features)
        if not np.array_equal(store.review_ids, reviews["review_id"].to_numpy()):
            raise StaleArtifactError(
                f"the feature store of run {paths.name} does not match its prepared reviews",
                f"run `douban features --run {paths.name}`",
            )
        return cls(paths, reviews, store, StoreSource(store, reviews))

    @property
    def fingerprint(self) -> str:
        """The feature store's fingerprint: it covers the prepared reviews and the encoder."""
        return self.store.fingerprint

    @property
    def stars(self) -> np.ndarray:
        return self.reviews["star"].to_numpy().astype(np.int64)

    def rows(self, split: str, need_tokens: bool = False) -> np.ndarray:
        mask = self.reviews["split"].to_numpy() == split
        if need_tokens:
            mask &= self.store.has_tokens()
        return np.flatnonzero(mask)

    def encoder_info(self) -> dict[str, Any]:
        spec = self.store.encoder
        return {"name": spec.get("name"), "fingerprint": spec.get("fingerprint"), "spec": spec}


def saved_fingerprint(model_dir: Path) -> str | None:
    """The fingerprint a saved model's config records (None: absent or unreadable, so stale)."""
    try:
        return read_json(model_dir / MODEL_CONFIG).get("fingerprint")
    except (OSError, ValueError):
        return None

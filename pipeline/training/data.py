"""What the train and evaluate stages read: a run's prepared reviews beside its feature store, when
it has one. Text models (majority, TF-IDF) need none, so a run can train them on every prepared
review before (or without) paying for the encoder; encoder models read the reviews the store
holds (all of them, or the sample an encode budget chose)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.artifacts import MODEL_CONFIG, read_frame, read_json, read_manifest
from pipeline.config import RunPaths
from pipeline.errors import StageMissingError, StaleArtifactError
from pipeline.features.store import FeatureStore
from pipeline.modeling.inputs import FeatureSource, StoreSource, TextSource

# models that read only the prepared text: trained without a feature store
TEXT_MODELS = ("majority", "tfidf_lr", "tfidf_ridge")


@dataclass
class TrainingData:
    """A run's prepared reviews and feature store (None before `douban features`), row i =
    review_id i."""

    paths: RunPaths
    reviews: pd.DataFrame
    store: FeatureStore | None
    source: FeatureSource
    prepared_fingerprint: str

    @classmethod
    def load(cls, paths: RunPaths) -> TrainingData:
        prepared = read_manifest(paths.prepared)
        if not paths.reviews.exists() or prepared is None:
            raise StageMissingError(
                f"no prepared reviews in {paths.prepared}",
                f"run `douban prepare --run {paths.name} --input <csv>`",
            )
        reviews = read_frame(paths.reviews)
        fp = prepared["fingerprint"]
        if read_manifest(paths.features) is None:
            return cls(paths, reviews, None, TextSource(reviews, paths.name), fp)
        store = FeatureStore.open(paths.features)
        if store.num_prepared != len(reviews) or not np.array_equal(
            reviews["review_id"].to_numpy(), np.arange(len(reviews))
        ):
            raise StaleArtifactError(
                f"the feature store of run {paths.name} does not match its prepared reviews",
                f"run `douban features --run {paths.name}`",
            )
        return cls(paths, reviews, store, StoreSource(store, reviews, paths.name), fp)

    @property
    def fingerprint(self) -> str:
        """The feature store's fingerprint (it covers the prepared reviews and the encoder), or
        the prepared reviews' for a run without features."""
        return self.prepared_fingerprint if self.store is None else self.store.fingerprint

    def require_store(self, models: str = "encoder models") -> FeatureStore:
        if self.store is None:
            raise StageMissingError(
                f"run {self.paths.name} has no feature store: {models} read encoder features",
                f"run `douban features --run {self.paths.name}` - text models train without it",
            )
        return self.store

    def feature_mask(self) -> np.ndarray:
        """Which reviews the store holds (none without a store)."""
        mask = np.zeros(len(self.reviews), dtype=bool)
        if self.store is not None:
            mask[self.store.review_ids] = True
        return mask

    def token_mask(self) -> np.ndarray:
        """Which reviews have stored token states (none without a store)."""
        mask = np.zeros(len(self.reviews), dtype=bool)
        if self.store is not None:
            mask[self.store.review_ids] = self.store.has_tokens()
        return mask

    def token_lengths(self) -> np.ndarray:
        """Encoder tokens per review (0 where the store does not hold it)."""
        lengths = np.zeros(len(self.reviews), dtype=np.int64)
        store = self.require_store()
        lengths[store.review_ids] = store.lengths()
        return lengths

    def input_mask(self, needs: str | None) -> np.ndarray:
        """Which reviews a model can read: ``needs`` is what it reads from the store
        (a model's ``store_needs``: "tokens", "pooled" or None for text)."""
        if needs == "tokens":
            return self.token_mask()
        if needs == "pooled":
            return self.feature_mask()
        return np.ones(len(self.reviews), dtype=bool)

    @property
    def stars(self) -> np.ndarray:
        return self.reviews["star"].to_numpy().astype(np.int64)

    def rows(self, split: str, needs: str | None = None) -> np.ndarray:
        """The reviews of ``split`` that a model reading ``needs`` can read."""
        mask = self.reviews["split"].to_numpy() == split
        return np.flatnonzero(mask & self.input_mask(needs))

    def encoder_info(self) -> dict[str, Any]:
        if self.store is None:
            return {"name": None, "fingerprint": None, "spec": {}}
        spec = self.store.encoder
        return {"name": spec.get("name"), "fingerprint": spec.get("fingerprint"), "spec": spec}


def saved_fingerprint(model_dir: Path) -> str | None:
    """The fingerprint a saved model's config records (None: absent or unreadable, so stale)."""
    try:
        return read_json(model_dir / MODEL_CONFIG).get("fingerprint")
    except (OSError, ValueError):
        return None

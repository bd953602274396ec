"""What a model reads, whether the reviews come from a run's feature store or were just encoded.

Every model (baseline or head) predicts from a :class:`FeatureSource` and a list of row indices,
so training, evaluation and scoring of new text share one code path per model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pipeline.errors import StageMissingError, StaleArtifactError


@dataclass
class Predictions:
    """One model's output for a list of reviews."""

    pred_star: np.ndarray  # int8 (N,), 1..5
    score: np.ndarray  # float32 (N,): regression value or expected star
    probs: np.ndarray | None = None  # float32 (N, 5)
    attention: list[np.ndarray] | None = None  # per review (n_tokens,), summed over hops

    @property
    def expected_star(self) -> np.ndarray | None:
        if self.probs is None:
            return None
        return (self.probs @ np.arange(1, 6, dtype=np.float32)).astype(np.float32)

    @staticmethod
    def concat(parts: Sequence[Predictions]) -> Predictions:
        first = parts[0]
        return Predictions(
            np.concatenate([p.pred_star for p in parts]),
            np.concatenate([p.score for p in parts]),
            None if first.probs is None else np.concatenate([p.probs for p in parts]),
            None if first.attention is None else [a for p in parts for a in p.attention],
        )


class StarModel(Protocol):
    """What every model kind answers, so callers ask the model instead of testing its kind:
    ``store_needs`` is what it reads from a run's feature store ("tokens": heads; "pooled":
    pooled_lr; None: TF-IDF, majority, and fine-tuned models, which encode text themselves),
    ``token_layers`` the encoder layers whose token states it reads, ``reads_words`` whether it
    needs jieba words (TF-IDF), ``reads_text`` whether it encodes the reviews' text itself.
    An ensemble answers for its members."""

    kind: str
    config: dict[str, Any]
    store_needs: str | None
    token_layers: list[int]
    reads_words: bool
    reads_text: bool

    def predict(self, source: FeatureSource, rows: Sequence[int]) -> Predictions: ...


def members_need(members: Iterable[StarModel]) -> str | None:
    """What a mix of ``members`` reads from the store: the most that any of them reads."""
    needs = {m.store_needs for m in members}
    return "tokens" if "tokens" in needs else "pooled" if "pooled" in needs else None


class FeatureSource(Protocol):
    """Inputs for a set of reviews, addressed by row index 0..len-1."""

    fingerprint: str | None

    def __len__(self) -> int: ...

    def texts(self, rows: Sequence[int]) -> list[str]: ...

    def tokens(self, rows: Sequence[int]) -> list[list[str]]: ...

    def pooled(self, rows: Sequence[int], layers: Sequence[int]) -> np.ndarray: ...

    def token_states(self, rows: Sequence[int], layers: Sequence[int]) -> list[np.ndarray]: ...


class TextSource:
    """A run's reviews without a feature store: text and jieba tokens only (what text models
    read); asking for encoder features says how to get them."""

    fingerprint: str | None = None

    def __init__(self, reviews: Any, run: str) -> None:
        self._tokens = reviews["tokens"].tolist()
        self._texts = reviews["text"].tolist()
        self.run = run

    def __len__(self) -> int:
        return len(self._tokens)

    def texts(self, rows: Sequence[int]) -> list[str]:
        return [self._texts[r] for r in rows]

    def tokens(self, rows: Sequence[int]) -> list[list[str]]:
        return [list(self._tokens[r]) for r in rows]

    def _missing(self) -> StageMissingError:
        return StageMissingError(
            f"run {self.run} has no feature store", f"run `douban features --run {self.run}`"
        )

    def pooled(self, rows: Sequence[int], layers: Sequence[int]) -> np.ndarray:
        raise self._missing()

    def token_states(self, rows: Sequence[int], layers: Sequence[int]) -> list[np.ndarray]:
        raise self._missing()


class StoreSource(TextSource):
    """A run's reviews: jieba tokens from the prepared table, vectors from the memory-mapped store.

    ``reviews`` must be the prepared table (row i is review_id i); the store may hold all of
    them or a sample, and asking for vectors of a review it does not hold is an error.
    """

    def __init__(self, store: Any, reviews: Any, run: str = "") -> None:
        if len(reviews) != store.num_prepared:
            raise StaleArtifactError(
                f"feature store was made from {store.num_prepared} reviews but the prepared "
                f"table has {len(reviews)}; re-run `douban features`"
            )
        super().__init__(reviews, run)
        self.store = store
        self.fingerprint = store.encoder.get("fingerprint")  # the encoder's, not the store's
        self._pooled: dict[int, np.ndarray] = {}

    def pooled(self, rows: Sequence[int], layers: Sequence[int]) -> np.ndarray:
        idx = self.store.rows_of(rows)
        parts = []
        for layer in layers:
            if layer not in self._pooled:
                self._pooled[layer] = self.store.pooled("mean", layer)
            parts.append(np.asarray(self._pooled[layer][idx], dtype=np.float32))
        return np.concatenate(parts, axis=1)

    def token_states(self, rows: Sequence[int], layers: Sequence[int]) -> list[np.ndarray]:
        return self.store.token_states(list(rows), layers=list(layers))


class EncodedSource:
    """Freshly encoded texts (``features.encode_texts``) with their jieba tokens."""

    def __init__(
        self,
        texts: Sequence[str],
        encoded: Sequence[Any],
        tokens: Sequence[Sequence[str]],
        token_layers: Sequence[int],
        fingerprint: str | None,
    ) -> None:
        self._texts = list(texts)
        self.encoded = list(encoded)
        self._tokens = [list(t) for t in tokens]
        self.token_layers = list(token_layers)
        self.fingerprint = fingerprint

    def __len__(self) -> int:
        return len(self.encoded)

    def texts(self, rows: Sequence[int]) -> list[str]:
        return [self._texts[r] for r in rows]

    def tokens(self, rows: Sequence[int]) -> list[list[str]]:
        return [self._tokens[r] for r in rows]

    def pooled(self, rows: Sequence[int], layers: Sequence[int]) -> np.ndarray:
        return np.stack(
            [
                np.concatenate([np.asarray(self.encoded[r].pooled_mean[la]) for la in layers])
                for r in rows
            ]
        ).astype(np.float32)

    def token_states(self, rows: Sequence[int], layers: Sequence[int]) -> list[np.ndarray]:
        try:
            pos = [self.token_layers.index(la) for la in layers]
        except ValueError as exc:
            raise ValueError(
                f"layers {list(layers)} were not encoded (have {self.token_layers})"
            ) from exc
        return [self.encoded[r].token_states[:, pos] for r in rows]

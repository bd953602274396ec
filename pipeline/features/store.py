"""The sharded, memory-mapped feature store: its layout and the reader (``extract`` writes it).

Layout of ``runs/<run>/features/``::

    manifest.json               fingerprint, encoder spec, layers, shard list, engine
    sample.json                 the timing that chose a budgeted sample (features/sample.py)
    shard-00000/meta.json       shard fingerprint, rows [start, stop), rows with token states
    shard-00000/review_ids.npy  (n,) int64, ascending: all prepared reviews, or a sample
    shard-00000/token_index.npy (n+1,) int64: row i's tokens are [index[i], index[i+1])
    shard-00000/input_ids.npy   (tokens, ) int32
    shard-00000/offsets.npy     (tokens, 2) int32 character offsets into `text`; -1: not text
    shard-00000/token_states.npy (tokens of the first n_states rows, layers, d) float16
    shard-00000/pooled_mean.npy (n, L+1, d) float16, hidden state 0 = embeddings
    shard-00000/pooled_cls.npy  (n, L+1, d) float16
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import artifacts
from pipeline.encoding.encode import normalize_layers
from pipeline.errors import CorruptArtifactError, StageMissingError, StaleArtifactError

CODE_VERSION = "features-2"  # bump when stored content changes (2: budgeted samples)
STAGE = "features"
POOLED_KINDS = ("mean", "cls")
SHARD_FILES = (
    "meta.json",
    "review_ids.npy",
    "token_index.npy",
    "input_ids.npy",
    "offsets.npy",
    "token_states.npy",
    "pooled_mean.npy",
    "pooled_cls.npy",
)


class StaleFeaturesError(StaleArtifactError):
    """The feature store exists but was built from other settings, encoder or data."""


# ---------------------------------------------------------------------------------------------
# the store: reading


class RowConcat:
    """Read-only view that stacks per-shard arrays along rows without loading them; index it
    with ints, slices, index arrays or boolean masks (then a copy of just those rows)."""

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        self._parts = list(parts)
        self._starts = np.cumsum([0] + [len(p) for p in self._parts])
        self.shape = (int(self._starts[-1]), *self._parts[0].shape[1:])
        self.dtype = self._parts[0].dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if isinstance(rows, (int, np.integer)):
            row = int(rows) + (len(self) if rows < 0 else 0)
            if not 0 <= row < len(self):
                raise IndexError(f"row {rows} out of range for {len(self)} rows")
            part = int(np.searchsorted(self._starts, row, side="right")) - 1
            return self._parts[part][(row - self._starts[part], *rest)]
        index = np.arange(len(self))[rows]
        out = np.empty((len(index), *self.shape[1:]), dtype=self.dtype)
        part_of = np.searchsorted(self._starts, index, side="right") - 1
        for part in np.unique(part_of):
            where = part_of == part
            out[where] = self._parts[part][index[where] - self._starts[part]]
        return out[(slice(None), *rest)] if rest else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.concatenate(self._parts)
        return out if dtype is None else out.astype(dtype)


def _load_array(path: Path, run: str) -> np.ndarray:
    """One memory-mapped shard array; a truncated or garbled file names itself."""
    try:
        return artifacts.read_array(path, mmap=True)
    except (OSError, ValueError, EOFError) as err:
        raise CorruptArtifactError(
            f"feature shard file {path} cannot be read ({err})",
            f"run `douban features --run {run} --force`",
        ) from err


@dataclasses.dataclass
class _Shard:
    start: int
    stop: int
    n_states: int
    arrays: dict[str, np.ndarray]


class FeatureStore:
    """Memory-mapped reader of ``runs/<run>/features``.

    A store holds every prepared review, or (with an encode budget) a sample of them. Its rows
    are the encoded reviews in review_id order: :meth:`pooled`, :meth:`pooled_all`,
    :meth:`has_tokens` and :meth:`lengths` are per row (``review_ids[row]`` says whose), while
    :meth:`token_states`, :meth:`input_ids` and :meth:`offsets` take review_ids. For a store of
    every review, rows and review_ids are the same numbers."""

    def __init__(self, root: Path, manifest: dict[str, Any], shards: list[_Shard]) -> None:
        self.root = root
        self.manifest = manifest
        self.fingerprint: str = manifest["fingerprint"]
        self.encoder: dict[str, Any] = manifest["encoder"]
        self.num_layers: int = manifest["num_hidden_states"]
        self.hidden_size: int = manifest["hidden_size"]
        self.token_layers: list[int] = manifest["token_layers"]
        self.max_length: int = manifest["max_length"]
        self._shards = shards
        self._starts = np.array([s.start for s in shards], dtype=np.int64)
        self.review_ids = np.concatenate([s.arrays["review_ids"] for s in shards])
        self.num_prepared: int = manifest.get("num_prepared", len(self.review_ids))
        self._row_of = np.full(self.num_prepared, -1, dtype=np.int64)
        self._row_of[self.review_ids] = np.arange(len(self.review_ids))

    @property
    def is_sample(self) -> bool:
        """Whether only some of the prepared reviews were encoded (an encode budget)."""
        return len(self.review_ids) < self.num_prepared

    def covers(self, review_ids: Any) -> np.ndarray:
        """Bool per review_id: whether it was encoded."""
        ids = np.asarray(review_ids, dtype=np.int64)
        inside = (ids >= 0) & (ids < self.num_prepared)
        return inside & (self._row_of[np.where(inside, ids, 0)] >= 0)

    def rows_of(self, review_ids: Any) -> np.ndarray:
        """The store rows of ``review_ids``; a review that was not encoded is an error."""
        ids = np.asarray(review_ids, dtype=np.int64)
        covered = self.covers(ids)
        if not covered.all():
            missing = ids[~covered][:5].tolist()
            raise IndexError(
                f"review_id(s) {missing} are not in the feature store ({len(self):,} of "
                f"{self.num_prepared:,} reviews encoded); check covers() first"
            )
        return self._row_of[ids]

    @classmethod
    def open(cls, features_dir: Path, expect_fingerprint: str | None = None) -> FeatureStore:
        """Open a complete store; refuses a missing, incomplete or stale one with what to run."""
        features_dir = Path(features_dir)
        run = features_dir.parent.name
        manifest = artifacts.read_manifest(features_dir)
        if manifest is None or manifest.get("stage") != STAGE:
            raise StageMissingError(
                f"no complete feature store in {features_dir}", f"run `douban features --run {run}`"
            )
        if expect_fingerprint is not None and manifest["fingerprint"] != expect_fingerprint:
            raise StaleFeaturesError(
                f"the feature store in {features_dir} is stale (fingerprint "
                f"{manifest['fingerprint']}, expected {expect_fingerprint}): the encoder, its "
                f"settings or the prepared data changed; run `douban features --run {run}`"
            )
        shards = []
        for info in manifest["shards"]:
            shard_dir = features_dir / info["name"]
            missing = [f for f in SHARD_FILES if not (shard_dir / f).exists()]
            if missing:
                raise StageMissingError(
                    f"feature shard {shard_dir} is incomplete (missing {', '.join(missing)})",
                    f"run `douban features --run {run} --force`",
                )
            arrays = {
                f.removesuffix(".npy"): _load_array(shard_dir / f, run)
                for f in SHARD_FILES
                if f.endswith(".npy")
            }
            shards.append(_Shard(info["start"], info["stop"], info["n_states"], arrays))
        return cls(features_dir, manifest, shards)

    def __len__(self) -> int:
        return len(self.review_ids)

    def _locate(self, review_id: int) -> tuple[_Shard, int]:
        row = int(self._row_of[review_id]) if 0 <= review_id < self.num_prepared else -1
        if row < 0:
            self.rows_of([review_id])  # raises with the message
        shard = self._shards[int(np.searchsorted(self._starts, row, side="right")) - 1]
        return shard, row - shard.start

    def _layer(self, layer: int) -> int:
        return normalize_layers([layer], self.num_layers)[0]

    def _check_kind(self, kind: str) -> None:
        if kind not in POOLED_KINDS:
            raise ValueError(f"pooled kind must be one of {POOLED_KINDS}, got {kind!r}")

    def pooled(self, kind: str = "mean", layer: int = -1) -> np.ndarray:
        """(N, d) float32 pooled vectors of one hidden state (0 = embeddings, -1 = last)."""
        self._check_kind(kind)
        layer = self._layer(layer)
        return np.concatenate(
            [s.arrays[f"pooled_{kind}"][:, layer].astype(np.float32) for s in self._shards]
        )

    def pooled_all(self, kind: str = "mean") -> np.ndarray | RowConcat:
        """(N, L+1, d) float16 pooled vectors of every hidden state, memory-mapped (a
        :class:`RowConcat` view when the store has several shards)."""
        self._check_kind(kind)
        parts = [s.arrays[f"pooled_{kind}"] for s in self._shards]
        return parts[0] if len(parts) == 1 else RowConcat(parts)

    def has_tokens(self) -> np.ndarray:
        """(N,) bool: rows whose token states were kept (see features.token_state_limit)."""
        flags = np.zeros(len(self), dtype=bool)
        for s in self._shards:
            flags[s.start : s.start + s.n_states] = True
        return flags

    def lengths(self) -> np.ndarray:
        """(N,) int64 tokens per review, special and prefix tokens included."""
        return np.concatenate([np.diff(s.arrays["token_index"]) for s in self._shards])

    def token_states(
        self, review_ids: Sequence[int], layers: Sequence[int] | None = None
    ) -> list[np.ndarray]:
        """Per review a (n_i, len(layers), d) float16 array (memory-mapped when all stored
        layers are asked for); ``layers`` are hidden-state indices among :attr:`token_layers`."""
        positions = None
        if layers is not None:
            wanted = normalize_layers(layers, self.num_layers)
            missing = [layer for layer in wanted if layer not in self.token_layers]
            if missing:
                raise StaleArtifactError(
                    f"token states of layer(s) {missing} are not stored (stored: "
                    f"{self.token_layers}); rerun `douban features --layers ...`"
                )
            positions = [self.token_layers.index(layer) for layer in wanted]
        out = []
        for review_id in review_ids:
            shard, local = self._locate(int(review_id))
            if local >= shard.n_states:
                raise ValueError(
                    f"review {review_id} has no stored token states (features.token_state_limit="
                    f"{self.manifest['token_state_limit']}); check has_tokens() first"
                )
            index = shard.arrays["token_index"]
            states = shard.arrays["token_states"][index[local] : index[local + 1]]
            out.append(states if positions is None else states[:, positions])
        return out

    def input_ids(self, review_id: int) -> np.ndarray:
        shard, local = self._locate(review_id)
        index = shard.arrays["token_index"]
        return shard.arrays["input_ids"][index[local] : index[local + 1]]

    def offsets(self, review_id: int) -> np.ndarray:
        """(n, 2) character offsets of the review's tokens into its ``text``; (-1, -1) for
        special and prefix tokens."""
        shard, local = self._locate(review_id)
        index = shard.arrays["token_index"]
        return shard.arrays["offsets"][index[local] : index[local + 1]]

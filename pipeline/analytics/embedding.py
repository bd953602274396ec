"""t-SNE map of pooled encoder features, coloured by star.

t-SNE costs grow faster than linearly, so a film's 27,000 reviews are sampled down to a cap,
stratified by star so rare stars keep their share, and the result is seeded and reproducible.
scikit-learn's TSNE is used: openTSNE measured about the same CPU time on 2,000 x 384 features
(7-8 s against 8.5-10 s, single-threaded) and is not worth a dependency. It runs on one thread:
on a busy 2-core machine OpenMP's spinning threads made 50 points take 60+ s instead of 0.7 s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

DEFAULT_CAP = 2000
PCA_DIMS = 50  # t-SNE on a 50-d PCA projection is the usual speed-up, with the same map


def stratified_sample(
    df: pd.DataFrame, by: str = "star", cap: int = DEFAULT_CAP, seed: int = 0
) -> pd.DataFrame:
    """At most ``cap`` rows, each ``by`` group keeping its share (at least one row per group)."""
    if len(df) <= cap:
        return df
    rng = np.random.default_rng(seed)
    shares = df[by].value_counts(normalize=True)
    parts = []
    for value, share in shares.sort_index().items():
        group = df.index[df[by] == value].to_numpy()
        take = min(len(group), max(1, round(share * cap)))
        parts.append(rng.choice(group, size=take, replace=False))
    chosen = np.sort(np.concatenate(parts))[:cap] if parts else np.array([], dtype=int)
    return df.loc[chosen]


def tsne_coordinates(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, 2) t-SNE coordinates of (n, d) features; perplexity shrinks for small n."""
    n = len(features)
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {n}")
    x = np.asarray(features, dtype=np.float32)
    perplexity = float(min(30.0, (n - 1) / 3))
    tsne = TSNE(
        n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed
    )
    with threadpool_limits(limits=1):
        if x.shape[1] > PCA_DIMS and n > PCA_DIMS:
            x = PCA(n_components=PCA_DIMS, random_state=seed).fit_transform(x)
        return tsne.fit_transform(x).astype(np.float32)


class RowIndexed(Protocol):
    """(N, d) features indexable by an array of rows: an array, or a lazy view of a store."""

    def __len__(self) -> int: ...

    def __getitem__(self, rows: np.ndarray) -> np.ndarray: ...


def tsne_points(
    features: np.ndarray | RowIndexed,
    reviews: pd.DataFrame,
    predictions: pd.DataFrame | None = None,
    cap: int = DEFAULT_CAP,
    seed: int = 0,
    coordinates: Callable[[np.ndarray, int], np.ndarray] = tsne_coordinates,
) -> pd.DataFrame:
    """t-SNE of a stratified sample of ``reviews`` (rows of ``features`` are indexed by
    ``review_id``). Returns ``review_id, x, y, star, pred_star, text, film``; ``pred_star`` is
    <NA> for reviews the model did not predict (e.g. training reviews). ``coordinates`` maps
    (features, seed) to points: a caller may keep them, since they depend on the encoder only,
    not on the model whose predictions colour them."""
    if len(features) <= reviews["review_id"].max():
        raise ValueError(
            f"features have {len(features)} rows but review_id goes up to "
            f"{reviews['review_id'].max()}: re-run `douban features` for this run"
        )
    sample = stratified_sample(reviews.reset_index(drop=True), "star", cap, seed)
    coords = coordinates(features[sample["review_id"].to_numpy()], seed)
    points = pd.DataFrame(
        {
            "review_id": sample["review_id"].to_numpy(),
            "x": coords[:, 0],
            "y": coords[:, 1],
            "star": sample["star"].to_numpy(),
            "text": sample["text"].to_numpy(),
            "film": sample["film"].to_numpy(),
        }
    )
    pred = pd.Series(pd.NA, index=points.index, dtype="Int8")
    if predictions is not None and len(predictions):
        by_id = predictions.drop_duplicates("review_id").set_index("review_id")["pred_star"]
        pred = points["review_id"].map(by_id).astype("Int8")
    points.insert(4, "pred_star", pred)
    return points

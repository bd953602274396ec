"""Geometry of sentence vectors per layer: how far apart the stars sit, and how similar two
models' layers are.

- separation: mean distance between the five star centroids divided by the mean distance of a
  review to its own star's centroid (scale-free; larger = stars further apart relative to their
  spread), plus the 1-star-to-5-star centroid distance on the same scale;
- silhouette: sklearn's silhouette with the star as the cluster label (-1..1; near 0 for the
  overlapping clouds real reviews form, so watch its change rather than its level);
- linear CKA (Kornblith et al. 2019): similarity of two representations of the same reviews,
  invariant to rotations and isotropic scaling; 1 = same geometry. Between corresponding layers of
  the frozen and the fine-tuned encoder it shows which layers fine-tuning rewrote.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import silhouette_score

from pipeline.lab.probes import single_thread


def _centered(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(axis=0, keepdims=True)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of ``(N, d1)`` and ``(N, d2)`` representations of the same N items."""
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same items on both sides, got {len(x)} and {len(y)}")
    x, y = _centered(x), _centered(y)
    # ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), computed through N x N Gram matrices when d > N
    if x.shape[1] > len(x) or y.shape[1] > len(y):
        kx, ky = x @ x.T, y @ y.T
        cross, nx, ny = (kx * ky).sum(), np.linalg.norm(kx), np.linalg.norm(ky)
    else:
        cross = np.linalg.norm(y.T @ x) ** 2
        nx, ny = np.linalg.norm(x.T @ x), np.linalg.norm(y.T @ y)
    if nx == 0 or ny == 0:
        return float("nan")
    return float(cross / (nx * ny))


def cka_per_layer(a: np.ndarray, b: np.ndarray) -> list[float]:
    """CKA between layer l of ``a`` and layer l of ``b``, both ``(N, L, d)``."""
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return [linear_cka(a[:, la], b[:, la]) for la in range(a.shape[1])]


def cka_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CKA between every layer of ``a`` (rows) and every layer of ``b`` (columns)."""
    return np.array(
        [[linear_cka(a[:, i], b[:, j]) for j in range(b.shape[1])] for i in range(a.shape[1])]
    )


def separation(x: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Between-centroid distance over within-class spread for one layer ``(N, d)``."""
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError("separation needs at least two labels")
    centroids = np.stack([x[labels == c].mean(axis=0) for c in classes])
    within = float(
        np.mean(
            [
                np.linalg.norm(x[labels == c] - centroids[k], axis=1).mean()
                for k, c in enumerate(classes)
            ]
        )
    )
    diffs = centroids[:, None] - centroids[None, :]
    pair = np.linalg.norm(diffs, axis=-1)[np.triu_indices(len(classes), k=1)]
    between = float(pair.mean())
    extreme = float(np.linalg.norm(centroids[0] - centroids[-1]))  # lowest vs highest label
    if within == 0:
        return {"between": between, "within": 0.0, "ratio": np.inf, "extreme_ratio": np.inf}
    return {
        "between": between,
        "within": within,
        "ratio": between / within,
        "extreme_ratio": extreme / within,
    }


def silhouette(x: np.ndarray, labels: np.ndarray, *, sample: int = 2000, seed: int = 0) -> float:
    """Silhouette with labels as clusters, on at most ``sample`` items (it is O(N^2))."""
    return float(
        silhouette_score(
            np.asarray(x, dtype=np.float32),
            np.asarray(labels),
            metric="euclidean",
            sample_size=min(sample, len(x)),
            random_state=seed,
        )
    )


def layer_geometry(pooled: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> list[dict]:
    """Separation and silhouette for every layer of ``(N, L, d)``."""
    out = []
    with single_thread():
        for layer in range(pooled.shape[1]):
            row = separation(pooled[:, layer], labels)
            row["silhouette"] = silhouette(pooled[:, layer], labels, seed=seed)
            out.append(row)
    return out

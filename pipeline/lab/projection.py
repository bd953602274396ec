"""2-D maps of sentence vectors (PCA or t-SNE), per layer, frozen and fine-tuned side by side.

Each model is projected on its own; the fine-tuned map is then rotated/reflected/scaled onto the
frozen one (orthogonal Procrustes), so the two panels are oriented alike and a reader compares
shapes instead of arbitrary axis flips. Projections are for looking; the numbers to quote are in
probes.py and geometry.py.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.linalg import orthogonal_procrustes
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from tqdm.auto import tqdm

from pipeline.lab.probes import single_thread

Method = Literal["pca", "tsne"]


def project(x: np.ndarray, method: Method = "pca", *, seed: int = 0) -> np.ndarray:
    """``(N, d)`` -> ``(N, 2)`` float32."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) < 3:
        raise ValueError(f"a projection needs at least 3 points, got {len(x)}")
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)
    if method == "tsne":
        reduced = PCA(n_components=min(50, *x.shape), random_state=seed).fit_transform(x)
        perplexity = min(30.0, (len(x) - 1) / 3)
        tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
        return tsne.fit_transform(reduced).astype(np.float32)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def align(reference: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``y`` rotated, reflected and scaled to best match ``reference`` (both centred ``(N, 2)``)."""
    ref = reference - reference.mean(axis=0)
    yc = y - y.mean(axis=0)
    rotation, scale = orthogonal_procrustes(yc, ref)
    norm = (yc**2).sum()
    return (yc @ rotation * (scale / norm if norm else 1.0)).astype(np.float32)


def project_layers(
    pooled: np.ndarray,
    method: Method = "pca",
    *,
    reference: np.ndarray | None = None,
    seed: int = 0,
    progress: bool = True,
    desc: str = "projection",
) -> np.ndarray:
    """``(N, L, d)`` -> ``(L, N, 2)``; aligned layer by layer to ``reference`` ``(L, N, 2)``."""
    out = []
    with single_thread():
        for layer in tqdm(range(pooled.shape[1]), desc=desc, unit="layer", disable=not progress):
            xy = project(pooled[:, layer], method, seed=seed)
            xy -= xy.mean(axis=0)
            if reference is not None:
                xy = align(reference[layer], xy)
            out.append(xy)
    return np.stack(out)

"""Linear probes per layer: how much star information a linear classifier can read off each
layer's pooled sentence vector.

A probe is deliberately weak (standardised features + multinomial logistic regression), so its
accuracy measures what the representation makes linearly available, not what a strong classifier
could dig out. It is strongly regularised (C = 0.01): 384 dimensions learnt from a few thousand
reviews overfit otherwise (on dmsc_sample, 3,000 reviews: C = 0.001..0.01 within a point of each
other, C = 1 about five points lower at every layer). Trained on one set of reviews and measured
on held-out ones, per layer, for the frozen and the fine-tuned encoder: the two curves show where
fine-tuning added information.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm


@dataclass
class ProbeCurve:
    """Held-out scores of one probe per layer (index 0 = embeddings output)."""

    accuracy: list[float]
    macro_f1: list[float]
    off_by_one: list[float]
    majority: float  # accuracy of always predicting the most frequent training label
    n_train: int
    n_test: int

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def best_layer(self) -> int:
        return int(np.argmax(self.accuracy))


def probe_layers(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    c: float = 0.01,
    max_iter: int = 500,
    seed: int = 0,
    progress: bool = True,
    desc: str = "probes",
) -> ProbeCurve:
    """Fit one probe per layer on ``train_x`` ``(N, L, d)`` and score it on ``test_x``."""
    train_x, test_x = np.asarray(train_x), np.asarray(test_x)
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    if train_x.ndim != 3 or test_x.ndim != 3 or train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(
            f"probe features must be (N, layers, dim) with equal layers and dim; got "
            f"{train_x.shape} and {test_x.shape}"
        )
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError("features and labels differ in length")
    if len(np.unique(train_y)) < 2:
        raise ValueError("probes need at least two different labels in the training set")
    acc, f1, near = [], [], []
    with single_thread():
        for layer in tqdm(range(train_x.shape[1]), desc=desc, unit="layer", disable=not progress):
            pred = _fit_predict(train_x[:, layer], train_y, test_x[:, layer], c, max_iter, seed)
            acc.append(float((pred == test_y).mean()))
            f1.append(float(f1_score(test_y, pred, average="macro", zero_division=0)))
            near.append(
                float((np.abs(pred.astype(np.int64) - test_y.astype(np.int64)) <= 1).mean())
            )
    values, counts = np.unique(train_y, return_counts=True)
    majority = float((test_y == values[np.argmax(counts)]).mean())
    return ProbeCurve(acc, f1, near, majority, len(train_y), len(test_y))


def _fit_predict(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, c: float, max_iter: int, seed: int
) -> np.ndarray:
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    )
    probe.fit(train_x.astype(np.float32), train_y)
    return probe.predict(test_x.astype(np.float32))


def single_thread() -> threadpool_limits:
    """One BLAS / OpenMP thread for the small problems of probes, silhouettes and maps: on a busy
    shared 2-core CPU the spinning second thread made a 3,000 x 384 logistic regression ten times
    slower (15 s vs 1.6 s) and a 1,500-point t-SNE three times slower (46 s vs 14 s); on an idle
    one it gains little at these sizes."""
    return threadpool_limits(limits=1)

"""A saved self-attentive head run in numpy, for scoring: in eval mode the head is a handful of
matmuls, so scoring new text needs no torch import (~1-2 s of a new process's start).

The arithmetic is :class:`pipeline.modeling.heads.SelfAttentiveHead`'s ``forward`` with dropout
off, and :func:`pipeline.modeling.heads.decode`; tests/test_onnx.py checks it gives that torch
head's probabilities and attention on the demo run. Training and evaluation keep the torch head.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from pipeline.modeling.inputs import FeatureSource, Predictions

STAR_VALUES = np.arange(1, 6, dtype=np.float32)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()  # finds the BLAS libraries once (~1 ms), not per call


class NumpyHead:
    """``predict(source, rows)`` of a saved head, as :class:`~pipeline.modeling.heads.HeadModel`
    answers it (stars, score, probabilities, attention per review summed over hops)."""

    kind = "head"
    store_needs, reads_words, reads_text = "tokens", False, False

    def __init__(self, tensors: dict[str, np.ndarray], config: dict[str, Any]) -> None:
        self.config = {"kind": self.kind, **config}
        self.layers: list[int] = list(config["layers"])
        self.token_layers = self.layers
        self.pooled_layers: list[int] = list(config.get("pooled_layers", []))
        self.output: str = config["output"]
        w = {k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()}
        self.mix = _softmax(w["mix.weights"], 0) * w["mix.gamma"] if "mix.weights" in w else None
        # transposed once into contiguous (in, out) arrays: numpy's matmul on strided views
        # leaves BLAS (18 ms instead of 0.05 ms for one review)
        t = {k: np.ascontiguousarray(w[k].T) for k in w if k.endswith(".weight")}
        self.w_s1, self.w_s2 = t["w_s1.weight"], t["w_s2.weight"]  # (d, a), (a, r)
        self.w_0, self.b_0 = t["mlp.0.weight"], w["mlp.0.bias"]
        self.w_3, self.b_3 = t["mlp.3.weight"], w["mlp.3.bias"]

    @classmethod
    def from_saved(cls, tensors: dict[str, np.ndarray], config: dict[str, Any]) -> NumpyHead:
        return cls(tensors, config)

    def _forward(
        self, states: list[np.ndarray], pooled: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw outputs (B, k), attention (B, r, T) and the padding mask (B, T)."""
        lengths = np.fromiter((len(s) for s in states), np.int64, len(states))
        if lengths.min(initial=1) == 0:
            raise ValueError("every review needs at least one token state")
        mask = np.arange(lengths.max()) < lengths[:, None]
        padded = np.zeros((*mask.shape, *states[0].shape[1:]), dtype=np.float32)  # (B, T, L, d)
        padded[mask] = np.concatenate(states)
        h = self.mix @ padded if self.mix is not None else padded[:, :, 0]  # (B, T, d)
        flat = np.ascontiguousarray(h).reshape(-1, h.shape[-1])  # one 2-D BLAS matmul
        scores = (np.tanh(flat @ self.w_s1) @ self.w_s2).reshape(*mask.shape, -1)
        scores = scores.transpose(0, 2, 1)  # (B, r, T)
        scores = np.where(mask[:, None, :], scores, -np.inf)
        attention = _softmax(scores, -1)
        m = (attention @ h).reshape(len(states), -1)  # (B, r*d)
        if pooled is not None:
            m = np.concatenate([m, pooled], axis=1)
        raw = np.maximum(m @ self.w_0 + self.b_0, 0.0) @ self.w_3 + self.b_3
        return raw, attention, mask

    def _decode(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if self.output == "regression":
            value = np.clip(raw[:, 0], 1.0, 5.0)
            return np.round(value).astype(np.int8), value.astype(np.float32), None
        if self.output == "classification":
            probs = _softmax(raw, 1)
            pred = probs.argmax(axis=1) + 1
        else:  # CORN: P(y > k) is the running product of the conditional sigmoids
            above = np.cumprod(_sigmoid(raw), axis=1)
            ones, zeros = np.ones_like(above[:, :1]), np.zeros_like(above[:, :1])
            probs = np.concatenate([ones, above], 1) - np.concatenate([above, zeros], 1)
            pred = (above > 0.5).sum(axis=1) + 1
        probs = probs.astype(np.float32)
        return pred.astype(np.int8), (probs @ STAR_VALUES).astype(np.float32), probs

    def predict(
        self, source: FeatureSource, rows: Sequence[int], batch_size: int = 256
    ) -> Predictions:
        """Batches of ``batch_size`` rows. The matmuls are tiny: one BLAS thread, as waking a
        second one on a busy 2-core machine cost ~17 ms per review against 0.3 ms."""
        parts = []
        for start in range(0, len(rows), batch_size):
            batch = list(rows[start : start + batch_size])
            pooled = source.pooled(batch, self.pooled_layers) if self.pooled_layers else None
            with _blas().limit(limits=1, user_api="blas"):
                raw, attention, mask = self._forward(
                    source.token_states(batch, self.layers), pooled
                )
            pred, score, probs = self._decode(raw)
            summed = attention.sum(axis=1)
            lengths = mask.sum(axis=1)
            words = [summed[i, : lengths[i]].copy() for i in range(len(batch))]
            parts.append(Predictions(pred, score, probs, words))
        if not parts:
            return Predictions(np.zeros(0, np.int8), np.zeros(0, np.float32))
        return Predictions.concat(parts)

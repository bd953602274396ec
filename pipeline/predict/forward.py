"""Scoring's middle step: cleaned inputs through the encoder and the models, a window of
:data:`~pipeline.predict.batching.LOOKAHEAD` inputs at a time (sorted by length together, cut
into batches), the next batch's jieba and tokenizer work overlapping the encoder's."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.modeling.bundle import encode_tokenized
from pipeline.modeling.inputs import EncodedSource, Predictions
from pipeline.predict.batching import LOOKAHEAD, BatchInputs, length_batches, prefetched
from pipeline.predict.preprocess import Prepared

SCORE_TOKEN_BUDGET = 2_048  # padded tokens per encoder batch: small, length-sorted batches on CPU


class LoadedModels(Protocol):
    """What a forward pass reads of a :class:`~pipeline.predict.scorer.Scorer`."""

    model: Any
    attention_model: Any
    encoder: Any
    segmenter: Any
    max_length: int
    fingerprint: str | None

    def models_for(self, explain: bool) -> list[Any]: ...


@dataclass
class BatchOutputs:
    """A batch's model outputs: the model's predictions, the explaining head's (when asked),
    each text's encoder tokens, whether the encoder cut it short, and its jieba spans."""

    main: Predictions
    attention: Predictions | None
    encoded: list[Any]
    truncated: list[bool]
    spans: list[Any] | None


@dataclass
class Window:
    """Inputs scored together, in their order, and the outputs of each batch cut from them
    (``rows``: indices into ``prepared``), computed as they are read: a batch's encoder states
    are dropped once its records are made, so memory holds one batch of them, not a window."""

    prepared: list[Prepared]
    batches: Iterator[tuple[list[int], BatchOutputs]]


def forward(
    loaded: LoadedModels, prepared: Iterator[Prepared], batch_size: int, explain: bool
) -> Iterator[Window]:
    """The windows of ``prepared`` with their model outputs; inputs that cannot be scored
    stay in their window with no output. Read each window's batches before the next window."""
    models = loaded.models_for(explain)
    reads = any(m.store_needs is not None for m in models)
    words = any(m.reads_words for m in models)

    def batch_inputs(texts: list[str]) -> BatchInputs:  # runs on the prefetch thread
        return BatchInputs(
            texts=texts,
            tokens=[loaded.segmenter.tokens(t) for t in texts] if words else [[] for _ in texts],
            spans=[loaded.segmenter.spans(t) for t in texts] if explain else None,
            tokenized=loaded.encoder.tokenize(texts, loaded.max_length) if reads else None,
        )

    def outputs(texts: list[str | None]) -> Iterator[tuple[list[int], BatchOutputs]]:
        ok = [i for i, t in enumerate(texts) if t is not None]
        batches = length_batches(ok, [len(t or "") for t in texts], batch_size)
        prepare = lambda rows: batch_inputs([texts[i] or "" for i in rows])  # noqa: E731
        for rows, batch in prefetched(batches, prepare):
            yield rows, _run_models(loaded, models, batch)

    while chunk := list(itertools.islice(prepared, LOOKAHEAD)):
        yield Window(chunk, outputs([p.text for p in chunk]))


def _run_models(loaded: LoadedModels, models: list[Any], batch: BatchInputs) -> BatchOutputs:
    """Encode (when a model reads encoder features) and predict one batch of clean texts."""
    texts, rows = batch.texts, list(range(len(batch.texts)))
    encoded: list[Any] = [None] * len(texts)
    truncated = [False] * len(texts)
    layers: list[int] = []
    if batch.tokenized is not None:
        layers = sorted({x for m in models for x in m.token_layers}) or [loaded.encoder.num_layers]
        encoded = encode_tokenized(loaded.encoder, batch.tokenized, layers, SCORE_TOKEN_BUDGET)
        truncated = [
            len(enc.input_ids) >= loaded.max_length
            and int(enc.offsets[:, 1].max(initial=0)) < len(text.rstrip())
            for text, enc in zip(texts, encoded, strict=True)
        ]
    source = EncodedSource(texts, encoded, batch.tokens, layers, loaded.fingerprint)
    main = models[0].predict(source, rows)
    attended = None
    if batch.spans is not None and loaded.attention_model is not None:
        attended = main if len(models) == 1 else models[-1].predict(source, rows)
    return BatchOutputs(main, attended, encoded, truncated, batch.spans)

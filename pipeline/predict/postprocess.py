"""Scoring's last step: one typed :class:`~pipeline.predict.records.ScoreRecord` per input, in
the inputs' order, from its window's model outputs (an error record where it could not be
scored), with the attention of each jieba word when explained."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from pipeline.predict.forward import BatchOutputs, Window
from pipeline.predict.preprocess import Prepared
from pipeline.predict.records import ScoreRecord

TOP_WORDS = 8


class ScoringModel(Protocol):
    """What a record names of the :class:`~pipeline.predict.scorer.Scorer` that made it."""

    model_name: str
    attention_model_name: str | None
    max_length: int


def scored_records(
    scorer: ScoringModel, windows: Iterator[Window], explain: bool
) -> Iterator[ScoreRecord]:
    """Every input's record, numbered from 0 in input order, a window at a time."""
    row = 0
    for window in windows:
        records: list[ScoreRecord | None] = [None] * len(window.prepared)
        for rows, out in window.batches:
            for j, i in enumerate(rows):
                records[i] = _record(scorer, window.prepared[i], out, j, explain)
        for record, prep in zip(records, window.prepared, strict=True):
            done = record or ScoreRecord(
                row=0, text=prep.original, pred_star=None, probs=None, expected_star=None,
                regression=None, model=scorer.model_name, attention_model=None, top_words=[],
                warnings=prep.warnings, error=prep.error, clean_text=prep.text,
            )  # fmt: skip
            done.row = row
            row += 1
            yield done


def _record(
    scorer: ScoringModel, prep: Prepared, out: BatchOutputs, j: int, explain: bool
) -> ScoreRecord:
    """The record of row ``j`` of a batch."""
    main = out.main
    text = prep.text or ""
    warnings = list(prep.warnings)
    if out.truncated[j]:
        seen = int(out.encoded[j].offsets[:, 1].max(initial=0))
        warnings.append(
            f"truncated to the first {scorer.max_length} tokens ({seen:,} of "
            f"{len(text):,} characters) for the encoder"
        )
    words: list[tuple[str, int, int, float]] = []
    if out.attention is not None and out.attention.attention is not None and out.spans:
        offsets = out.encoded[j].offsets
        words = word_attention(text, offsets, out.attention.attention[j], out.spans[j])
    top = sorted(words, key=lambda w: -w[3])[:TOP_WORDS]
    regresses = main.probs is None
    return ScoreRecord(
        row=0,
        text=prep.original,
        pred_star=int(main.pred_star[j]),
        probs=None if regresses else [float(p) for p in main.probs[j]],
        expected_star=None if regresses else float(main.expected_star[j]),
        regression=float(main.score[j]) if regresses else None,
        model=scorer.model_name,
        attention_model=scorer.attention_model_name if explain else None,
        top_words=[{"word": w, "weight": round(a, 4)} for w, _, _, a in top],
        warnings=warnings,
        error=None,
        clean_text=prep.text,
        words=words,
    )


def word_attention(
    text: str, offsets: np.ndarray, attention: np.ndarray, spans: Sequence[tuple[str, int, int]]
) -> list[tuple[str, int, int, float]]:
    """Attention per jieba word, normalised to sum to 1 over the words.

    Each token's weight (summed over hops) is spread evenly over its characters; a word gets the
    sum over its characters. Special and prefix tokens (offset -1) carry no characters.
    """
    chars = np.zeros(len(text), dtype=np.float64)
    for (start, end), weight in zip(offsets, attention, strict=False):
        if start < 0 or end <= start:
            continue
        chars[start:end] += weight / (end - start)
    words = [(w, s, e, float(chars[s:e].sum())) for w, s, e in spans]
    total = sum(x[3] for x in words)
    return [(w, s, e, a / total if total > 0 else 0.0) for w, s, e, a in words]

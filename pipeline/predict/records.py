"""What scoring gives back: the typed :class:`ScoreRecord`, its transformers-style answer and
its :class:`Explanation`, and the checks of the call's own arguments."""

from __future__ import annotations

import html
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from pipeline.errors import InputError
from pipeline.markup import highlight_html

FIELDS = (
    "row", "text", "pred_star", "probs", "expected_star", "regression", "model",
    "attention_model", "top_words", "warnings", "error",
)  # fmt: skip
STARS = (1, 2, 3, 4, 5)


class _RecordMapping(Mapping[str, Any]):
    """Read a typed record like the dict it serialises to (``record["pred_star"]``), as
    transformers' ``ModelOutput`` does, so callers written for dicts keep working."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self.to_dict():
            raise KeyError(key)
        setattr(self, key, value)

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass(eq=False)
class ScoreRecord(_RecordMapping):
    """One scored text. ``probs`` (stars 1..5) and ``expected_star`` are None for models that
    give no probabilities; ``regression`` is the model's continuous star when it regresses;
    ``top_words`` come from ``attention_model`` (None when not explained)."""

    row: int
    text: str
    pred_star: int | None
    probs: list[float] | None
    expected_star: float | None
    regression: float | None
    model: str
    attention_model: str | None
    top_words: list[dict[str, Any]]
    warnings: list[str]
    error: str | None
    # for explanations (:meth:`explanation`), not part of the record's dict
    clean_text: str | None = field(default=None, repr=False)
    words: list[tuple[str, int, int, float]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in FIELDS}

    def labels(self, top_k: int | None = 1) -> list[dict[str, Any]]:
        """transformers' text-classification answer: ``[{"label": star, "score": p}]``, most
        probable first (``top_k=None``: all five)."""
        if self.error is not None:
            return [{"label": None, "score": None, "error": self.error}]
        if self.probs is None:  # a regression model: one star, no probability
            return [{"label": self.pred_star, "score": None}]
        ranked = sorted(zip(STARS, self.probs, strict=True), key=lambda sp: -sp[1])
        return [{"label": s, "score": p} for s, p in ranked[:top_k]]

    def answer(self, top_k: int | None, one_text: bool) -> Any:
        """What a transformers pipeline answers for this text: its :meth:`labels`, or, for a
        text among many with ``top_k=1``, its one label."""
        labels = self.labels(top_k)
        return labels[0] if top_k == 1 and not one_text else labels

    def explanation(self) -> Explanation:
        return Explanation(self)


@dataclass
class Explanation(_RecordMapping):
    """A score with every word's attention: ``words`` (word, start, end, weight; offsets into
    ``clean_text``, the text the model saw) from the head ``attention_model``. Shows as
    highlighted text in notebooks (``_repr_html_``; the review is escaped, never markup)."""

    record: ScoreRecord = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        words = [
            {"word": w, "start": s, "end": e, "weight": round(a, 6)} for w, s, e, a in self.words
        ]
        return {**self.record.to_dict(), "clean_text": self.clean_text, "words": words}

    def __getattr__(self, name: str) -> Any:
        if name == "record":  # not set yet (copy, unpickling)
            raise AttributeError(name)
        return getattr(self.record, name)

    def _repr_html_(self) -> str:
        if self.record.error is not None:
            return f"<p>{html.escape(self.record.error)}</p>"
        highlighted = highlight_html(self.record.clean_text or "", self.record.words)
        return f'<div class="attention">{highlighted}</div>'


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)

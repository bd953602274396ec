"""What scoring takes in and gives back: inputs checked and cleaned one by one
(:func:`prepare_input`: a missing value, bytes or a non-string is an error record, never an
exception, so a batch keeps one answer per input), the typed :class:`ScoreRecord` and its
:class:`Explanation`, and the checks of the call's own arguments."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from pipeline.data.text import clean_text
from pipeline.errors import InputError
from pipeline.markup import highlight_html

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SURROGATE = re.compile(r"[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)
MAX_CHARS = 5_000  # characters kept before tokenizing; far beyond any encoder's max_length
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


@dataclass
class Prepared:
    """One input after cleaning: ``text`` is None when it cannot be scored (see ``error``)."""

    original: str
    text: str | None
    warnings: list[str]
    error: str | None = None


def _is_missing(raw: Any) -> bool:
    """None, NaN (any float type), pandas' NA and NaT: a missing review, not text."""
    if raw is None or type(raw).__name__ in ("NAType", "NaTType"):
        return True
    return isinstance(raw, (float, np.floating)) and bool(np.isnan(raw))


@dataclass(frozen=True)
class Unreadable:
    """An input row that holds no review text (a JSON Lines line that is not JSON, or lacks
    the review key): scored as an error record with ``reason``, so rows stay aligned."""

    raw: str
    reason: str


def prepare_input(raw: Any) -> Prepared:
    if isinstance(raw, Unreadable):
        return Prepared(raw.raw[:200], None, [], raw.reason)
    if _is_missing(raw):
        return Prepared("", None, [], "empty review")
    if isinstance(raw, (bytes, bytearray)):
        return Prepared("", None, [], "bytes, not text: decode them first (.decode('utf-8'))")
    if not isinstance(raw, str):
        return Prepared(repr(raw)[:80], None, [], f"not text ({type(raw).__name__})")
    original = str(raw)
    if _SURROGATE.search(original):
        return Prepared(_SURROGATE.sub("\ufffd", original), None, [], "invalid UTF-8")
    if not original.strip():
        return Prepared(original, None, [], "empty review")
    warnings = []
    if len(original) > MAX_CHARS:
        warnings.append(f"review has {len(original):,} characters; only the start is scored")
    text = clean_text(original[:MAX_CHARS])
    if not text:
        return Prepared(original, None, [], "no text left after cleaning (only markup or URLs)")
    if not _HAN.search(text):
        warnings.append("no Chinese characters: the models were trained on Chinese reviews")
    return Prepared(original, text, warnings)


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


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def texts_of(inputs: Any, lazy: bool = False) -> Any:
    """The texts of a list, tuple, numpy array, pandas Series or (``lazy``) any iterable;
    one string, bytes or a non-iterable is a clear error, never one answer per character."""
    if isinstance(inputs, (bytes, bytearray)):
        raise InputError("texts are bytes", "decode them first: data.decode('utf-8')")
    if hasattr(inputs, "tolist"):  # numpy, pandas (NA stays NA: an error record)
        inputs = inputs.tolist()
    try:
        return iter(inputs) if lazy else list(inputs)
    except TypeError:
        raise InputError(
            f"cannot score a {type(inputs).__name__}",
            "pass a review string, a list of them, a pandas Series or an iterable of strings",
        ) from None

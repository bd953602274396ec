"""Scoring's first step: the inputs, checked and cleaned one by one. A missing value, bytes or a
non-string becomes an error record, never an exception, so a batch keeps one answer per input;
only a call whose inputs are not texts at all (one bytes object, a number) is refused."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.data.text import clean_text
from pipeline.errors import InputError

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SURROGATE = re.compile(r"[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)
MAX_CHARS = 5_000  # characters kept before tokenizing; far beyond any encoder's max_length


@dataclass
class Prepared:
    """One input after cleaning: ``text`` is None when it cannot be scored (see ``error``)."""

    original: str
    text: str | None
    warnings: list[str]
    error: str | None = None


@dataclass(frozen=True)
class Unreadable:
    """An input row that holds no review text (a JSON Lines line that is not JSON, or lacks
    the review key): scored as an error record with ``reason``, so rows stay aligned."""

    raw: str
    reason: str


def prepared_inputs(inputs: Any) -> Iterator[Prepared]:
    """Each input cleaned and flagged, lazily (a generator is read as it is scored): one
    string, or the texts of a list, tuple, numpy array, pandas Series or any iterable. Bytes
    or a non-iterable is refused here, at the call, never scored one character at a time."""
    if isinstance(inputs, (bytes, bytearray)):
        raise InputError("texts are bytes", "decode them first: data.decode('utf-8')")
    if isinstance(inputs, str):
        inputs = [inputs]
    elif hasattr(inputs, "tolist"):  # numpy, pandas (NA stays NA: an error record)
        inputs = inputs.tolist()
    try:
        texts = iter(inputs)
    except TypeError:
        raise InputError(
            f"cannot score a {type(inputs).__name__}",
            "pass a review string, a list of them, a pandas Series or an iterable of strings",
        ) from None
    return (prepare_input(t) for t in texts)


def _is_missing(raw: Any) -> bool:
    """None, NaN (any float type), pandas' NA and NaT: a missing review, not text."""
    if raw is None or type(raw).__name__ in ("NAType", "NaTType"):
        return True
    return isinstance(raw, (float, np.floating)) and bool(np.isnan(raw))


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

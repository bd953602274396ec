"""Feeding the encoder well: length-sorted batches over a bounded look-ahead, and the Python part
of the next batch (jieba, the tokenizer) done while the encoder runs the current one.

Sorting only inside each batch of inputs leaves much of every batch padding: on 1,000 dmsc_sample
reviews the ONNX encoder ran 1.7x faster on batches cut from length-sorted input (164 vs 95
reviews/s, same process). Order is restored by the caller, which keeps every input's index.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
U = TypeVar("U")

LOOKAHEAD = 1_024  # inputs sorted together: a stream waits for at most this many before scoring


@dataclass
class BatchInputs:
    """What a batch needs besides the encoder: jieba words (TF-IDF), jieba spans (attention per
    word, when explaining) and encoder tokens (when a model reads encoder features)."""

    texts: list[str]
    tokens: list[list[str]]
    spans: list[Any] | None
    tokenized: Any


def length_batches(
    items: Sequence[int], lengths: Sequence[int], batch_size: int, lookahead: int = LOOKAHEAD
) -> Iterator[list[int]]:
    """``items`` (indices into ``lengths``) in batches of ``batch_size``, longest first within
    each window of ``lookahead`` items; one window's batches all come before the next window's,
    so only one window needs to be in memory."""
    for start in range(0, len(items), lookahead):
        window = sorted(items[start : start + lookahead], key=lambda i: -lengths[i])
        for first in range(0, len(window), batch_size):
            yield window[first : first + batch_size]


def prefetched(batches: Iterable[T], prepare: Callable[[T], U]) -> Iterator[tuple[T, U]]:
    """``(batch, prepare(batch))`` in order, the next batch prepared on a worker thread while the
    caller works on the current one (ONNX Runtime releases the GIL while it encodes); a single
    batch (a service request, one review) is prepared here, without a thread."""
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return
    second = next(batches, None)
    if second is None:
        yield first, prepare(first)
        return
    batches = itertools.chain((first, second), batches)
    with ThreadPoolExecutor(1, thread_name_prefix="douban-prepare") as pool:
        pending: deque[tuple[T, Future[U]]] = deque()
        for batch in batches:
            pending.append((batch, pool.submit(prepare, batch)))
            if len(pending) > 1:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()

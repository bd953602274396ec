"""Micro-batching: concurrent requests share one encoder pass.

One review alone leaves most of a forward pass's fixed cost unused; sixteen clients each sending
one review are, batched together, nearly as cheap as one. Requests wait in a bounded queue; one
loop takes the oldest and, when it finds the queue otherwise idle, waits ``max_wait_s`` for more,
then takes requests in arrival order until about ``token_budget`` tokens are gathered. Requests
with the same key (model and options) run as one scorer call on the single inference thread,
whose encoder splits the texts into length-sorted padded batches. A full queue answers
:class:`Overloaded` at once, so overload costs a retry, never memory.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_TOKENS_PER_TEXT = 512  # a text's estimate is capped: the encoder truncates anyway


class Overloaded(Exception):
    """The queue is full or the service is shutting down; retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def estimate_tokens(texts: Sequence[str]) -> int:
    """Encoder tokens of ``texts``, roughly: one per character (Chinese) plus two specials."""
    return sum(min(len(t), MAX_TOKENS_PER_TEXT) + 2 for t in texts)


@dataclass
class _Job:
    key: Hashable
    texts: list[str]
    future: asyncio.Future[list[Any]]
    tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = estimate_tokens(self.texts)


class MicroBatcher:
    """Gathers :meth:`submit` calls into batches for ``run_batch(key, texts) -> results`` (one
    result per text, in order), called on one dedicated thread."""

    def __init__(
        self,
        run_batch: Callable[[Hashable, list[str]], list[Any]],
        *,
        max_wait_s: float = 0.004,
        token_budget: int = 8_192,
        max_queued_texts: int = 2_048,
    ) -> None:
        self._run_batch = run_batch
        self.max_wait_s = max_wait_s
        self.token_budget = token_budget
        self.max_queued_texts = max_queued_texts
        self._jobs: collections.deque[_Job] = collections.deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="douban-score")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.queued = 0  # texts waiting
        self.in_flight = 0  # texts being scored now
        self.batches = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="micro-batcher")

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the inference thread (loading a model, warming up), in turn with
        the batches."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def close(self) -> None:
        """Refuse new work, finish every queued request, stop the inference thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ requests

    async def submit(self, key: Hashable, texts: list[str]) -> list[Any]:
        """Score ``texts`` in the next batch of ``key``; :class:`Overloaded` when the queue
        cannot take them."""
        if self._closing:
            raise Overloaded("the service is shutting down", retry_after=5)
        if self.queued + len(texts) > self.max_queued_texts:
            raise Overloaded(
                f"{self.queued:,} texts are waiting (at most {self.max_queued_texts:,})"
            )
        job = _Job(key, texts, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self.queued += len(texts)
        self._wakeup.set()
        return await job.future

    async def _loop(self) -> None:
        while True:
            if not self._jobs:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if len(self._jobs) == 1 and not self._closing:
                await self._gather_window()
            batch = self._take()
            await self._run(batch)

    async def _gather_window(self) -> None:
        """Give concurrent requests ``max_wait_s`` to arrive, unless the budget fills first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while sum(j.tokens for j in self._jobs) < self.token_budget:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Job]:
        """The oldest requests up to the token budget (always at least one)."""
        batch, tokens = [], 0
        while self._jobs and (not batch or tokens + self._jobs[0].tokens <= self.token_budget):
            job = self._jobs.popleft()
            batch.append(job)
            tokens += job.tokens
        return batch

    async def _run(self, batch: list[_Job]) -> None:
        groups: dict[Hashable, list[_Job]] = {}
        for job in batch:
            groups.setdefault(job.key, []).append(job)
        size = sum(len(j.texts) for j in batch)
        self.queued -= size
        self.in_flight = size
        self.batches += 1
        try:
            for key, jobs in groups.items():
                texts = [t for j in jobs for t in j.texts]
                try:
                    results = await self.call(lambda k=key, t=texts: self._run_batch(k, t))
                except Exception as error:  # handed to each waiting request, not swallowed
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(error)
                    continue
                start = 0
                for job in jobs:
                    part = results[start : start + len(job.texts)]
                    start += len(job.texts)
                    if not job.future.done():  # a client that went away cancels its future
                        job.future.set_result(part)
        finally:
            self.in_flight = 0

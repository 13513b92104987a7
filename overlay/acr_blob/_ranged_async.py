"""Parallel ranges for :meth:`AsyncBlobClient.download_blob_to_file`: one task per connection.

The async twin of :mod:`acr_blob._ranged_sync`: tasks fetch parts in order and write them in
place; the calling task hashes the complete prefix of the file in a worker thread (hashlib
releases the GIL, so the event loop keeps receiving meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator

import httpx

from ._body import abody_chunks
from ._files import PartialFile
from ._progress import INTERVAL, ProgressReporter
from ._ranges import HASH_READ, Frontier
from ._verify import BodyVerifier
from .errors import DeadlineExceededError, TransportError
from .retry import RetryPolicy, retryable_transport_error

logger = logging.getLogger("acr_blob")

AsyncOpenPart = Callable[[int, int], Awaitable[httpx.Response]]

# Bytes hashed per trip to the worker thread.
_HASH_SPAN = 16 << 20


class AsyncRangedDownload:
    """Fetches ``parts`` over ``concurrency`` connections into ``partial``."""

    def __init__(
        self,
        partial: PartialFile,
        verifier: BodyVerifier,
        parts: list[tuple[int, int]],
        first_responses: list[httpx.Response],
        open_part: AsyncOpenPart,
        *,
        concurrency: int,
        policy: RetryPolicy,
        deadline: float | None,
        reporter: ProgressReporter | None,
    ) -> None:
        self._partial = partial
        self._verifier = verifier
        self._parts = parts
        self._open_part = open_part
        self._policy = policy
        self._deadline = deadline
        self._reporter = reporter
        self._start = verifier.received
        self._frontier = Frontier(self._start, parts)
        self._first = list(zip(parts, first_responses, strict=False))
        self._queue: Iterator[tuple[int, int]] = iter(parts[len(first_responses) :])
        self._tasks = max(concurrency, len(first_responses))
        self._changed = asyncio.Event()

    async def run(self) -> None:
        """Download every part and feed the verifier in order; raise the first failure."""
        starts: list[tuple[tuple[int, int] | None, httpx.Response | None]] = list(self._first)
        starts += [(next(self._queue, None), None) for _ in range(self._tasks - len(starts))]
        workers = [asyncio.create_task(self._work(*start)) for start in starts]
        failed = True
        try:
            await self._hash_in_order(workers)
            failed = False
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            for _, response in self._first:
                await response.aclose()
            if failed:
                # Keep only the complete prefix, so that the next call resumes from its end.
                self._partial.truncate(self._frontier.prefix)

    async def _hash_in_order(self, workers: list[asyncio.Task[None]]) -> None:
        size = self._parts[-1][1]
        hashed = self._start
        while hashed < size:
            while self._frontier.prefix == hashed:
                for task in workers:
                    error = task.exception() if task.done() else None
                    if error is not None:
                        raise error
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), INTERVAL)
                self._tick()
            span = min(self._frontier.prefix, hashed + _HASH_SPAN) - hashed
            await asyncio.to_thread(self._hash, hashed, span)
            hashed += span
            self._tick()

    def _hash(self, offset: int, length: int) -> None:
        fd = self._partial.file.fileno()
        end = offset + length
        while offset < end:
            chunk = os.pread(fd, min(HASH_READ, end - offset), offset)
            if not chunk:
                raise TransportError(f"the partial file ended at byte {offset}")
            self._verifier.feed(chunk)
            offset += len(chunk)

    def _tick(self) -> None:
        if self._reporter is not None:
            self._reporter.update(self._start + self._frontier.written, self._parts[-1][1])
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise DeadlineExceededError(
                f"deadline passed after {self._start + self._frontier.written} of "
                f"{self._parts[-1][1]} bytes; the server is too slow"
            )

    async def _work(self, part: tuple[int, int] | None, response: httpx.Response | None) -> None:
        while part is not None:
            await self._fetch(*part, response)
            self._frontier.complete(part[0])
            self._changed.set()
            part, response = next(self._queue, None), None

    async def _fetch(self, first: int, end: int, response: httpx.Response | None) -> None:
        position, failures, mark = first, 0, first
        while position < end:
            if response is None:
                response = await self._open_part(position, end)
            try:
                async for chunk in abody_chunks(response):
                    piece = memoryview(chunk)[: end - position]
                    self._partial.write_at(piece, position)
                    position += len(piece)
                    self._frontier.add(len(piece))
                    if position >= end:
                        break
                else:
                    if position < end:
                        raise httpx.RemoteProtocolError("the part ended early")
            except httpx.TransportError as error:
                if position > mark:
                    failures, mark = 0, position
                failures += 1
                delay = self._policy.resume_delay(failures)
                if delay is None or not retryable_transport_error(error):
                    raise TransportError(
                        f"bytes {first}-{end - 1} broke off at {position}: {error!r}"
                    ) from error
                logger.debug("resuming part %d-%d at %d after %r", first, end - 1, position, error)
                if delay:
                    await self._policy.async_sleep(delay)
            finally:
                await response.aclose()
                response = None

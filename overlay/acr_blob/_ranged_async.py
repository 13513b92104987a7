"""Parallel ranges for :meth:`AsyncBlobClient.download_blob_to_file`: one task per connection.

The async twin of :mod:`acr_blob._ranged_sync`: tasks fetch parts in order and write them in
place; the calling task hashes the complete prefix of the file in a worker thread (hashlib
releases the GIL, so the event loop keeps receiving meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator

import httpx

from ._body import abody_chunks
from ._progress import INTERVAL
from ._ranges import RangedBase, part_resume_delay
from .retry import Resumptions, RetryPolicy

logger = logging.getLogger("acr_blob")

AsyncOpenPart = Callable[[int, int], Awaitable[httpx.Response]]

# Bytes hashed per trip to the worker thread.
_HASH_SPAN = 16 << 20


class AsyncRangedDownload(RangedBase):
    """Fetches ``parts`` over ``concurrency`` tasks into the partial file."""

    _open_part: AsyncOpenPart

    def _prepare(self) -> None:
        self._queue: Iterator[tuple[int, int]] = iter(self._parts[len(self._first) :])
        self._changed = asyncio.Event()

    async def run(self) -> None:
        """Download every part and feed the verifier in order; raise the first failure."""
        starts: list[tuple[tuple[int, int] | None, httpx.Response | None]] = list(self._first)
        starts += [(next(self._queue, None), None) for _ in range(self._workers - len(starts))]
        # Before any hole: the map is what tells holes from data.
        await asyncio.to_thread(self._save_progress)
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
                await asyncio.to_thread(self._keep_what_arrived)

    async def _hash_in_order(self, workers: list[asyncio.Task[None]]) -> None:
        hashed = self._start
        while hashed < self._size:
            while self._frontier.prefix == hashed:
                for task in workers:
                    error = task.exception() if task.done() else None
                    if error is not None:
                        raise error
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), INTERVAL)
                self._tick()
            end = min(self._frontier.prefix, hashed + _HASH_SPAN)
            await asyncio.to_thread(self._hash, hashed, end)
            hashed = end
            self._tick()
            if self._map_due():
                await asyncio.to_thread(self._save_progress)

    async def _work(self, part: tuple[int, int] | None, response: httpx.Response | None) -> None:
        while part is not None:
            await self._fetch(*part, response)
            self._frontier.complete(part[0])
            self._changed.set()
            part, response = next(self._queue, None), None

    async def _fetch(self, first: int, end: int, response: httpx.Response | None) -> None:
        position = first
        pieces = apart_pieces(first, end, response, self._open_part, self._policy)
        try:
            async for piece in pieces:
                position += self._write(piece, first, position)
        finally:
            await pieces.aclose()


async def apart_pieces(
    first: int,
    end: int,
    response: httpx.Response | None,
    open_part: AsyncOpenPart,
    policy: RetryPolicy,
) -> AsyncGenerator[bytes, None]:
    """The async twin of :func:`acr_blob._ranged_sync.part_pieces`."""
    position, resumptions = first, Resumptions(policy, first)
    while position < end:
        if response is None:
            response = await open_part(position, end)
        try:
            async for chunk in abody_chunks(response):
                piece = chunk[: end - position]
                position += len(piece)
                yield piece
                if position >= end:
                    break
            else:
                if position < end:
                    raise httpx.RemoteProtocolError("the part ended early")
        except httpx.TransportError as error:
            delay = part_resume_delay(resumptions, error, (first, end), position)
            logger.debug("resuming part %d-%d at %d after %r", first, end - 1, position, error)
            if delay:
                await policy.async_sleep(delay)
        finally:
            await response.aclose()
            response = None

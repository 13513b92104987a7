"""Parallel ranges for iterating a blob with :class:`~acr_blob.AsyncBlobClient`: the async twin
of :mod:`acr_blob._ranged_stream`, with one task per connection and the same window of parts in
memory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

from ._progress import INTERVAL
from ._ranged_async import AsyncOpenPart, apart_pieces
from ._ranges import ParallelChunksBase


class AsyncParallelChunks(ParallelChunksBase):
    """The bytes of ``parts``, in order, fetched over ``concurrency`` tasks; see
    :class:`~acr_blob._ranged_stream.ParallelChunks`."""

    _open_part: AsyncOpenPart

    def _prepare(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []
        self._arrived = asyncio.Event()  # the caller waits for bytes
        self._freed = asyncio.Event()  # tasks wait for room in the window

    async def chunks(self) -> AsyncIterator[bytes]:
        """Iterate once; :meth:`aclose` stops the tasks and closes what is open."""
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]
        try:
            for index, slot in enumerate(self._slots):
                while True:
                    if not slot.chunks and not slot.done and self._error is None:
                        self._arrived.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._arrived.wait(), INTERVAL)
                    if self._error is not None:
                        raise self._error
                    chunks, slot.chunks = slot.chunks, []
                    finished = slot.done and not chunks
                    self._on_wait()
                    for chunk in chunks:
                        yield chunk
                    if finished:
                        break
                self._head = index + 1
                self._freed.set()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop the tasks, wait for them, and close the answers no task took."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for response in self._opened.values():
            await response.aclose()
        self._opened.clear()

    async def _take(self) -> tuple[int, httpx.Response | None] | None:
        while self._beyond_window():
            self._freed.clear()
            await self._freed.wait()
        return self._claim()

    async def _work(self) -> None:
        try:
            while (job := await self._take()) is not None:
                await self._fetch(*job)
        except Exception as error:  # handed to the caller's task
            if self._error is None:
                self._error = error
            self._arrived.set()

    async def _fetch(self, index: int, response: httpx.Response | None) -> None:
        first, end = self._parts[index]
        slot = self._slots[index]
        pieces = apart_pieces(first, end, response, self._open_part, self._policy)
        try:
            async for piece in pieces:
                slot.chunks.append(piece)
                self._arrived.set()
        finally:
            await pieces.aclose()
        slot.done = True
        self._arrived.set()

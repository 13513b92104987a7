"""Parallel ranges: workers fetch disjoint ``Range`` parts of one blob over several connections.

To a file (:class:`AsyncRangedDownload`), each worker fetches parts in order, receives them into
a buffer of its own and writes them in place (whole blocks bypassing the page cache where the
filesystem allows, :mod:`acr_blob._direct_io`); the caller hashes the complete prefix of the
file as it grows (read back, a read ahead of the hash), reports progress, watches the deadline
and keeps the part map. Iterating (:class:`AsyncParallelChunks`), workers fetch small parts into
memory, at most a window of parts ahead of the one being handed out, and the caller hands them
out in order. A part that breaks off is resumed from its last byte, through the registry again
(a fresh redirect).

With a :class:`~acr_blob._adaptive.ConcurrencyController` (``max_concurrency="auto"``), the
caller's loop samples the rate and starts workers up to the controller's target; a worker
above the target stops before it takes its next part. A target of one hands the rest back to
one stream: the workers finish their parts, and the drivers say where the stream is to go on
(:meth:`AsyncRangedDownload.run` returns it; :attr:`AsyncParallelChunks.handed_back`).

Workers are threads for the sync client and tasks for the async one; disk work runs in a worker
thread there, so that the event loop keeps receiving (:mod:`acr_blob._concurrency`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import overload

import httpx

from .._adaptive import ConcurrencyController
from .._concurrency import AsyncLock, AsyncSignal, AsyncWorkers, WorkersStopped, arun_blocking
from .._direct_io import PartBuffer
from .._fast_read import Lend
from .._files import PartialFile
from .._part_map import Span
from .._progress import INTERVAL, ProgressReporter
from .._ranges import MAP_INTERVAL, Frontier, part_resume_delay, stream_window
from .._verify import BodyVerifier
from ..errors import DeadlineExceededError
from ..retry import Resumptions, RetryPolicy
from .body import abody_chunks

logger = logging.getLogger("acr_blob")

AsyncOpenPart = Callable[[int, int], Awaitable[httpx.Response]]
"""``open_part(first, end)``: a checked 206 answer for bytes ``first`` to ``end - 1``."""

# Bytes hashed per step (one trip to a worker thread for the async client).
HASH_SPAN = 64 << 20


@overload
def apart_pieces(
    first: int,
    end: int,
    response: httpx.Response | None,
    open_part: AsyncOpenPart,
    policy: RetryPolicy,
    workers: AsyncWorkers,
    controller: ConcurrencyController | None = None,
) -> AsyncGenerator[bytes, None]: ...
@overload
def apart_pieces(
    first: int,
    end: int,
    response: httpx.Response | None,
    open_part: AsyncOpenPart,
    policy: RetryPolicy,
    workers: AsyncWorkers,
    controller: ConcurrencyController | None,
    lend: Lend,
) -> AsyncGenerator[bytes | memoryview, None]: ...
async def apart_pieces(
    first: int,
    end: int,
    response: httpx.Response | None,
    open_part: AsyncOpenPart,
    policy: RetryPolicy,
    workers: AsyncWorkers,
    controller: ConcurrencyController | None = None,
    lend: Lend | None = None,
) -> AsyncGenerator[bytes | memoryview, None]:
    """Bytes ``first`` to ``end - 1`` in order, from ``response`` (or a part opened for them),
    received into ``lend``'s views where it can; a part that breaks off is resumed from its last
    byte (and ``controller`` told). Close the generator to stop early."""
    position, resumptions = first, Resumptions(policy, first)
    while position < end:
        if response is None:
            response = await open_part(position, end)
        try:
            workers.watch(response)
            async for chunk in abody_chunks(response, lend):
                piece = chunk[: end - position]
                position += len(piece)
                yield piece
                if position >= end:
                    break
            else:
                if position < end:
                    raise httpx.RemoteProtocolError("the part ended early")
        except httpx.TransportError as error:
            if workers.stopped:  # its socket was shut on purpose
                raise WorkersStopped from error
            if controller is not None:
                controller.connection_failed(time.monotonic())
            delay = part_resume_delay(resumptions, error, (first, end), position)
            logger.debug("resuming part %d-%d at %d after %r", first, end - 1, position, error)
            if delay:
                await policy.async_sleep(delay)
        finally:
            workers.unwatch(response)
            await response.aclose()
            response = None


class AsyncRangedDownload:
    """Fetches ``parts`` of the blob over ``concurrency`` workers into ``partial``.

    ``first_responses`` are answers already open for the first parts; ``done`` are spans
    complete before the download began (from a part map). :meth:`run` feeds ``verifier`` the
    bytes in order and raises the first failure. With ``controller``, ``concurrency`` is only
    the number of workers to start with; without ``done`` spans, the parts then tile the rest
    of the blob, and a target of one hands what is left back to one stream.
    """

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
        done: Sequence[Span] = (),
        controller: ConcurrencyController | None = None,
    ) -> None:
        assert verifier.size is not None
        self._partial = partial
        self._verifier = verifier
        self._size = verifier.size
        self._open_part = open_part
        self._policy = policy
        self._deadline = deadline
        self._reporter = reporter
        self._start = verifier.received
        self._frontier = Frontier(self._start, parts, done)
        self._saved = -1  # the frontier's completions when the part map was last written
        self._saved_at = 0.0
        self._first = list(zip(parts, first_responses, strict=False))
        self._count = max(concurrency, len(first_responses))
        self._parts = parts
        self._next = len(self._first)  # the next part a worker takes
        self._running = 0
        self._controller = controller
        self._may_hand_back = controller is not None and not done
        self._handing_back = False
        self._lock = AsyncLock()
        self._changed = AsyncSignal()
        self._workers = AsyncWorkers("acr-blob-range")

    async def run(self) -> int | None:
        """Fetch, write and hash; ``None`` once every byte is in, else the offset from which
        one stream is to go on (every byte before it written and hashed, none after)."""
        # Before any hole: the map is what tells holes from data.
        await self._save_map()
        starts = [*self._first] + [(None, None)] * (self._count - len(self._first))
        for part, response in starts:
            self._start_worker(part, response)
        failed = True
        try:
            handed_back = await self._hash_in_order()
            failed = False
        finally:
            await self._workers.stop()
            for _, response in self._first:
                await response.aclose()
            if failed:
                await arun_blocking(self._keep_what_arrived)
        return handed_back

    async def _hash_in_order(self) -> int | None:
        hashed = self._start
        while hashed < self._size:
            if self._handing_back and not self._running and hashed == self._frontier.prefix:
                return hashed
            self._changed.clear()
            self._workers.raise_failure()
            # As far as the part at the prefix has got: the hash keeps up with the parts.
            prefix = self._frontier.in_order()
            if prefix == hashed:
                await self._changed.wait(INTERVAL)
            else:
                end = min(prefix, hashed + HASH_SPAN)
                await arun_blocking(self._hash, hashed, end)
                hashed = end
            self._tick()
            self._steer()
            await self._save_map()
        return None

    def _start_worker(
        self, part: tuple[int, int] | None = None, response: httpx.Response | None = None
    ) -> None:
        self._running += 1
        self._workers.start(self._work, part, response)

    def _steer(self) -> None:
        """Start workers up to the controller's target, or hand back to one stream."""
        if self._controller is None:
            return
        received = self._start + self._frontier.written
        rest = self._size - self._parts[self._next][0] if self._next < len(self._parts) else 0
        start, hand_back = self._controller.steer(time.monotonic(), received, self._running, rest)
        self._handing_back = self._handing_back or (hand_back and self._may_hand_back)
        for _ in range(0 if self._handing_back else start):
            self._start_worker()

    async def _work(self, part: tuple[int, int] | None, response: httpx.Response | None) -> None:
        buffer = PartBuffer(0)  # one per worker, reused part after part
        try:
            while True:
                if part is None:
                    async with self._lock:
                        if (
                            self._next >= len(self._parts)
                            or self._above_target()
                            or self._handing_back
                        ):
                            self._running -= 1
                            return
                        part, self._next = self._parts[self._next], self._next + 1
                await self._fetch(*part, response, buffer)
                self._frontier.complete(part[0])
                self._changed.set()
                part, response = None, None
        finally:
            self._changed.set()

    def _above_target(self) -> bool:
        return self._controller is not None and self._running > self._controller.target

    async def _fetch(
        self, first: int, end: int, response: httpx.Response | None, buffer: PartBuffer
    ) -> None:
        buffer.restart(first)
        pieces = apart_pieces(
            first,
            end,
            response,
            self._open_part,
            self._policy,
            self._workers,
            self._controller,
            buffer.lend,
        )
        try:
            async for piece in pieces:
                rest = buffer.write(piece)
                while buffer.full:
                    await self._write(first, buffer)
                    rest = buffer.write(rest)
        finally:
            await pieces.aclose()
            if buffer.pending:  # what arrived is kept, whatever ended the part
                await self._write(first, buffer)

    async def _write(self, first: int, buffer: PartBuffer) -> None:
        """Write what ``buffer`` holds of the part starting at ``first``."""
        async with self._workers.guard():  # never once stopped: the file is about to close
            count = await arun_blocking(self._partial.write_part, buffer)
        buffer.written()
        self._frontier.advance(first, buffer.offset, count)
        self._changed.set()  # the hash may go on, and "auto" gets its samples as bytes arrive

    def _hash(self, offset: int, end: int) -> None:
        """Feed bytes ``offset`` to ``end - 1`` of the partial file to the verifier."""
        for chunk in self._partial.read_back(offset, end):
            self._verifier.feed(chunk)

    async def _save_map(self) -> None:
        """Write the part map at the start, then when a part completed since it was last
        written, at most every :data:`MAP_INTERVAL` seconds (each write waits for the disk), so
        that a crash costs only the parts under way and those of the last moments."""
        if self._frontier.completions == self._saved or not self._partial.keeps_parts:
            return
        if self._saved < 0 or time.monotonic() - self._saved_at >= MAP_INTERVAL:
            await arun_blocking(self._write_map)

    def _keep_what_arrived(self) -> None:
        """After a failure: the part map of every span written, for the next call; where there
        can be none, only the bytes in order from the start."""
        if not (self._partial.keeps_parts and self._write_map()):
            self._partial.forget_parts(self._frontier.in_order())

    def _write_map(self) -> bool:
        """Write the part map; ``False`` where it cannot be, which leaves the last one (still
        true)."""
        completions = self._frontier.completions
        try:
            self._partial.save_parts(self._size, self._frontier.complete_spans())
        except OSError as error:
            logger.debug("cannot write the part map of %s: %r", self._partial.partial_path, error)
            return False
        self._saved, self._saved_at = completions, time.monotonic()
        return True

    def _tick(self) -> None:
        """Progress, and the deadline."""
        done = self._start + self._frontier.written
        if self._reporter is not None:
            self._reporter.update(done, self._size)
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise DeadlineExceededError(
                f"deadline passed after {done} of {self._size} bytes; the server is too slow"
            )


class _PartSlot:
    """The bytes of one part that have arrived and not been handed out yet."""

    __slots__ = ("chunks", "done")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.done = False


class AsyncParallelChunks:
    """The bytes of ``parts``, in order, fetched over ``concurrency`` workers.

    Memory stays bounded whatever the blob's size: parts are small (``plan_stream_parts``) and a
    worker starts a part only while it lies less than ``stream_window`` parts ahead of the one
    being handed out. ``first_responses`` are answers already open for the first parts (the
    registry's own answer for part 0, the probe for part 1). ``on_wait`` is called at least
    every :data:`~acr_blob._progress.INTERVAL` seconds while the next bytes have not arrived
    (the deadline). Iterate :meth:`chunks` once; :meth:`aclose` stops the workers and closes
    what is open. With ``controller``, ``concurrency`` is the most workers there may be (the
    window is theirs), and the controller's target how many run; at a target of one,
    :meth:`chunks` ends once the parts taken are handed out, and :attr:`handed_back` says where
    one stream is to go on.
    """

    def __init__(
        self,
        parts: list[tuple[int, int]],
        first_responses: list[httpx.Response],
        open_part: AsyncOpenPart,
        *,
        concurrency: int,
        policy: RetryPolicy,
        on_wait: Callable[[], None],
        controller: ConcurrencyController | None = None,
    ) -> None:
        self._parts = parts
        self._slots = [_PartSlot() for _ in parts]
        self._opened = dict(enumerate(first_responses))
        self._open_part = open_part
        self._policy = policy
        self._on_wait = on_wait
        self._window = stream_window(concurrency)
        self._controller = controller
        start = concurrency if controller is None else controller.target
        self._count = max(start, len(first_responses))
        self._running = 0
        self._received = 0
        self._handing_back = False
        self.handed_back: int | None = None
        """Where :meth:`chunks` stopped for one stream to go on; ``None`` when it ended."""
        self._next = 0  # the next part a worker takes
        self._head = 0  # the part being handed out
        self._lock = AsyncLock()
        self._arrived = AsyncSignal()  # the caller waits for bytes
        self._freed = AsyncSignal()  # workers wait for room in the window
        self._workers = AsyncWorkers("acr-blob-stream-range")

    async def chunks(self) -> AsyncIterator[bytes]:
        for _ in range(self._count):
            self._start_worker()
        try:
            for index, slot in enumerate(self._slots):
                async with self._lock:
                    if self._handing_back and index >= self._next:
                        self.handed_back = self._parts[index][0]
                        return
                finished = False
                while not finished:
                    self._arrived.clear()
                    async with self._lock:
                        chunks, slot.chunks = slot.chunks, []
                        finished = slot.done
                    self._workers.raise_failure()
                    self._on_wait()
                    self._steer()
                    if not (chunks or finished):
                        await self._arrived.wait(INTERVAL)
                    for chunk in chunks:
                        self._received += len(chunk)
                        yield chunk
                async with self._lock:
                    self._head = index + 1
                self._freed.set()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self._workers.stop()
        for response in self._opened.values():
            await response.aclose()
        self._opened.clear()

    def _start_worker(self) -> None:
        self._running += 1
        self._workers.start(self._work)

    def _steer(self) -> None:
        """Start workers up to the controller's target, or hand back to one stream."""
        if self._controller is None:
            return
        received = self._parts[0][0] + self._received
        rest = (
            self._parts[-1][1] - self._parts[self._next][0] if self._next < len(self._parts) else 0
        )
        start, hand_back = self._controller.steer(time.monotonic(), received, self._running, rest)
        self._handing_back = self._handing_back or hand_back
        for _ in range(0 if self._handing_back else start):
            self._start_worker()

    async def _take(self) -> tuple[int, httpx.Response | None] | None:
        """The next part, with its answer if one is already open; ``None`` when all are taken,
        or when this worker is one above the controller's target."""
        while True:
            self._freed.clear()
            async with self._lock:
                above = self._controller is not None and self._running > self._controller.target
                done = self._next >= len(self._parts) or self._handing_back
                if self._workers.stopped or done or above:
                    self._running -= 1
                    return None
                if self._next < self._head + self._window:
                    index, self._next = self._next, self._next + 1
                    return index, self._opened.pop(index, None)
            await self._freed.wait(INTERVAL)

    async def _work(self) -> None:
        try:
            while (job := await self._take()) is not None:
                await self._fetch(*job)
        finally:
            self._arrived.set()

    async def _fetch(self, index: int, response: httpx.Response | None) -> None:
        first, end = self._parts[index]
        slot = self._slots[index]
        pieces = apart_pieces(
            first, end, response, self._open_part, self._policy, self._workers, self._controller
        )
        try:
            async for piece in pieces:
                async with self._lock:
                    slot.chunks.append(piece)
                self._arrived.set()
        finally:
            await pieces.aclose()
        async with self._lock:
            slot.done = True
        self._arrived.set()

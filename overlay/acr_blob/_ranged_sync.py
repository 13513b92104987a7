"""Parallel ranges for :meth:`BlobClient.download_blob_to_file`: one thread per connection.

Each thread fetches parts in order and writes them in place; the calling thread hashes the
complete prefix of the file as it grows, reports progress and watches the deadline. A part that
breaks off is resumed from its last byte, through the registry again (a fresh redirect).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Iterator

import httpx

from ._body import body_chunks
from ._progress import INTERVAL
from ._ranges import RangedBase, part_resume_delay
from .retry import Resumptions, RetryPolicy

logger = logging.getLogger("acr_blob")

OpenPart = Callable[[int, int], httpx.Response]
"""``open_part(first, end)``: a checked 206 answer for bytes ``first`` to ``end - 1``."""


class RangedDownload(RangedBase):
    """Fetches ``parts`` over ``concurrency`` threads into the partial file."""

    _open_part: OpenPart

    def _prepare(self) -> None:
        self._assigned: list[tuple[tuple[int, int], httpx.Response | None]] = list(self._first)
        self._queue: Iterator[tuple[int, int]] = iter(self._parts[len(self._first) :])
        self._queue_lock = threading.Lock()
        self._stop = threading.Event()
        self._error: BaseException | None = None

    def run(self) -> None:
        """Download every part and feed the verifier in order; raise the first failure."""
        threads = [
            threading.Thread(target=self._work, args=(index,), name=f"acr-blob-range-{index}")
            for index in range(self._workers)
        ]
        self._save_progress()  # before any hole: the map is what tells holes from data
        for thread in threads:
            thread.start()
        try:
            self._hash_in_order()
        except BaseException as error:
            self._fail(error)
            raise
        finally:
            self._stop.set()
            for thread in threads:
                thread.join()
            for _, response in self._assigned:
                if response is not None:
                    response.close()
            if self._error is not None:
                self._keep_what_arrived()

    def _hash_in_order(self) -> None:
        hashed = self._start
        frontier = self._frontier
        while hashed < self._size:
            with frontier.changed:
                if frontier.prefix == hashed and self._error is None:
                    frontier.changed.wait(INTERVAL)
                prefix = frontier.prefix
            # Outside the lock: a slow progress callback must not hold up the writers.
            self._tick()
            self._save_progress()
            if self._error is not None:
                raise self._error
            self._hash(hashed, prefix)
            hashed = prefix

    def _fail(self, error: BaseException) -> None:
        with self._frontier.changed:
            if self._error is None:
                self._error = error
            self._stop.set()
            self._frontier.changed.notify_all()

    def _next(self, index: int) -> tuple[tuple[int, int], httpx.Response | None] | None:
        if index < len(self._assigned):
            part, response = self._assigned[index]
            self._assigned[index] = (part, None)
            return part, response
        with self._queue_lock:
            queued = next(self._queue, None)
        return None if queued is None else (queued, None)

    def _work(self, index: int) -> None:
        try:
            while not self._stop.is_set() and (job := self._next(index)) is not None:
                (first, end), response = job
                if not self._fetch(first, end, response):
                    return  # stopped: the part is not complete
                self._frontier.complete(first)
                index = len(self._assigned)  # from now on, take parts from the queue
        except BaseException as error:
            self._fail(error)

    def _fetch(self, first: int, end: int, response: httpx.Response | None) -> bool:
        """Write bytes ``first`` to ``end - 1``; ``False`` if stopped before the end."""
        position = first
        pieces = part_pieces(first, end, response, self._open_part, self._policy)
        try:
            for piece in pieces:
                if self._stop.is_set():
                    return False
                position += self._write(piece, first, position)
        finally:
            pieces.close()
        return True


def part_pieces(
    first: int,
    end: int,
    response: httpx.Response | None,
    open_part: OpenPart,
    policy: RetryPolicy,
) -> Generator[bytes, None, None]:
    """Bytes ``first`` to ``end - 1`` in order, from ``response`` (or a part opened for them);
    a part that breaks off is resumed from its last byte. Close the generator to stop early."""
    position, resumptions = first, Resumptions(policy, first)
    while position < end:
        if response is None:
            response = open_part(position, end)
        try:
            for chunk in body_chunks(response):
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
                policy.sleep(delay)
        finally:
            response.close()
            response = None

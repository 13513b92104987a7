"""Parallel ranges for :meth:`BlobClient.download_blob_to_file`: one thread per connection.

Each thread fetches parts in order and writes them in place; the calling thread hashes the
complete prefix of the file as it grows, reports progress and watches the deadline. A part that
breaks off is resumed from its last byte, through the registry again (a fresh redirect).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

import httpx

from ._body import body_chunks
from ._files import PartialFile
from ._progress import INTERVAL, ProgressReporter
from ._ranges import HASH_READ, Frontier
from ._verify import BodyVerifier
from .errors import DeadlineExceededError, TransportError
from .retry import RetryPolicy, retryable_transport_error

logger = logging.getLogger("acr_blob")

OpenPart = Callable[[int, int], httpx.Response]
"""``open_part(first, end)``: a checked 206 answer for bytes ``first`` to ``end - 1``."""


class RangedDownload:
    """Fetches ``parts`` over ``len(first_responses)`` or more connections into ``partial``."""

    def __init__(
        self,
        partial: PartialFile,
        verifier: BodyVerifier,
        parts: list[tuple[int, int]],
        first_responses: list[httpx.Response],
        open_part: OpenPart,
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
        # The answers already open serve the first parts; the others are requested as needed.
        self._assigned: list[tuple[tuple[int, int], httpx.Response | None]] = list(
            zip(parts, first_responses, strict=False)
        )
        self._queue: Iterator[tuple[int, int]] = iter(parts[len(first_responses) :])
        self._queue_lock = threading.Lock()
        self._threads = max(concurrency, len(first_responses))
        self._stop = threading.Event()
        self._error: BaseException | None = None

    def run(self) -> None:
        """Download every part and feed the verifier in order; raise the first failure."""
        threads = [
            threading.Thread(target=self._work, args=(index,), name=f"acr-blob-range-{index}")
            for index in range(self._threads)
        ]
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
                # Keep only the complete prefix, so that the next call resumes from its end.
                self._partial.truncate(self._frontier.prefix)

    def _hash_in_order(self) -> None:
        size = self._parts[-1][1]
        fd = self._partial.file.fileno()
        hashed = self._start
        frontier = self._frontier
        while hashed < size:
            with frontier.changed:
                while frontier.prefix == hashed and self._error is None:
                    frontier.changed.wait(INTERVAL)
                    self._tick()
                prefix = frontier.prefix
            if self._error is not None:
                raise self._error
            while hashed < prefix:
                chunk = os.pread(fd, min(HASH_READ, prefix - hashed), hashed)
                if not chunk:
                    raise TransportError(f"the partial file ended at byte {hashed}")
                self._verifier.feed(chunk)
                hashed += len(chunk)
            self._tick()

    def _tick(self) -> None:
        if self._reporter is not None:
            self._reporter.update(self._start + self._frontier.written, self._parts[-1][1])
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise DeadlineExceededError(
                f"deadline passed after {self._start + self._frontier.written} of "
                f"{self._parts[-1][1]} bytes; the server is too slow"
            )

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
        position, failures, mark = first, 0, first
        while position < end:
            if self._stop.is_set():
                return False
            if response is None:
                response = self._open_part(position, end)
            try:
                for chunk in body_chunks(response):
                    if self._stop.is_set():
                        return False
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
                    self._policy.sleep(delay)
            finally:
                response.close()
                response = None
        return True

"""Parallel ranges inside one blob: how a blob is cut into parts, and which bytes are in.

Several connections fetch disjoint ``Range`` parts of the same (redirected) URL and write them
in place; the digest is still computed over the bytes in order, by reading back the prefix of
the file that is complete (from the page cache), so memory stays a few reads per connection
whatever the blob's size. An iterated download keeps its parts in memory instead, within a
window of small parts. This module holds what the sync and async drivers of both share.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from ._files import PartialFile
from ._part_map import Span, merge, missing
from ._progress import ProgressReporter
from ._protocol import parse_content_range
from ._verify import BodyVerifier
from .errors import DeadlineExceededError, ResumeError, TransportError
from .retry import Resumptions, RetryPolicy

logger = logging.getLogger("acr_blob")

# Parts are fetched in order, so the complete prefix, and with it the hash, keeps moving; a
# few parts per connection let fast connections take over the work of a slow one.
MIN_PART = 8 << 20
MAX_PART = 64 << 20
PARTS_PER_CONNECTION = 4
HASH_READ = 1 << 20
# Seconds between two writes of a parallel download's part map.
MAP_INTERVAL = 1.0
# Iterating (download_blob) keeps the parts ahead of the caller in memory: at most this much.
STREAM_MEMORY = 32 << 20
STREAM_MIN_PART = 256 << 10
STREAM_MAX_PART = 8 << 20


PlanParts = Callable[[int, int, int], list[tuple[int, int]]]
"""``plan(start, size, concurrency)``: :func:`plan_parts` or :func:`plan_stream_parts`."""


def worth_splitting(remaining: int, concurrency: int) -> bool:
    """Whether parallel ranges can pay for their extra requests."""
    return concurrency > 1 and remaining >= 2 * MIN_PART


def plan_parts(
    start: int, size: int, concurrency: int, done: Sequence[Span] = ()
) -> list[tuple[int, int]]:
    """``[start, size)`` less the spans ``done`` cut into ``(first, end)`` parts, ``end``
    exclusive, in order."""
    gaps = missing(done, start, size)
    wanted = -(-sum(end - first for first, end in gaps) // (concurrency * PARTS_PER_CONNECTION))
    part = min(MAX_PART, max(MIN_PART, wanted))
    return [cut for first, end in gaps for cut in _cut(first, end, part)]


def stream_window(concurrency: int) -> int:
    """How many parts an iterated download may have started ahead of the one handed out."""
    return concurrency + 1


def plan_stream_parts(start: int, size: int, concurrency: int) -> list[tuple[int, int]]:
    """Parts for an iterated download: small enough that a window of them fits
    :data:`STREAM_MEMORY`, for the parts that arrive before their turn wait in memory."""
    part = STREAM_MEMORY // stream_window(concurrency)
    return _cut(
        start, size, min(STREAM_MAX_PART, max(STREAM_MIN_PART, part - part % STREAM_MIN_PART))
    )


def _cut(start: int, size: int, part: int) -> list[tuple[int, int]]:
    return [(first, min(first + part, size)) for first in range(start, size, part)]


def part_resume_delay(
    resumptions: Resumptions, error: httpx.TransportError, part: tuple[int, int], position: int
) -> float:
    """The wait before resuming ``part`` at ``position``; raises when it is time to stop."""
    delay = resumptions.next_delay(error, position)
    if delay is None:
        raise TransportError(
            f"bytes {part[0]}-{part[1] - 1} broke off at {position}: {error!r}"
        ) from error
    return delay


def range_header(first: int, end: int) -> str:
    return f"bytes={first}-{end - 1}"


def check_part(response: httpx.Response, first: int, end: int, size: int) -> None:
    """A part must come back as the 206 of exactly the bytes asked for, of the same blob."""
    if response.status_code != 206:
        raise ResumeError(
            f"asked for bytes {first}-{end - 1}, the server answered {response.status_code}"
        )
    parsed = parse_content_range(response.headers.get("Content-Range"))
    if (
        parsed is None
        or parsed[0] != first
        or parsed[1] != end - 1
        or parsed[2] not in (None, size)
    ):
        raise ResumeError(
            f"asked for bytes {first}-{end - 1} of {size}, the server sent Content-Range "
            f"{response.headers.get('Content-Range', '(none)')[:80]!r}"
        )


class Frontier:
    """Parts that are complete, and the end of the complete prefix; shared by the threads.

    ``done`` are spans complete before the download began (from a part map): the parts and
    they tile ``[start, size)``.
    """

    def __init__(self, start: int, parts: list[tuple[int, int]], done: Sequence[Span] = ()) -> None:
        self._ends = {first: end for first, end in [*parts, *done]}
        self._done: set[int] = set()
        self._positions: dict[int, int] = {}
        self.prefix = start
        self.written = 0
        self.completions = 0
        self.changed = threading.Condition()
        for first, _ in done:
            self._add(first)

    def advance(self, first: int, position: int, count: int) -> None:
        """The part starting at ``first`` is written up to ``position``, ``count`` bytes more."""
        with self.changed:
            self._positions[first] = position
            self.written += count

    def complete(self, first: int) -> None:
        """The part starting at ``first`` is fully written."""
        with self.changed:
            self._positions.pop(first, None)
            self._add(first)
            self.completions += 1
            self.changed.notify_all()

    def _add(self, first: int) -> None:
        self._done.add(first)
        while self.prefix in self._done:
            self._done.discard(self.prefix)
            self.prefix = self._ends[self.prefix]

    def complete_spans(self) -> list[Span]:
        """Every span known to be written: the prefix, the complete parts, and the parts under
        way as far as they have got."""
        with self.changed:
            spans = [(0, self.prefix)]
            spans += [(first, self._ends[first]) for first in self._done]
            spans += list(self._positions.items())
        return merge(spans)

    def in_order(self) -> int:
        """The end of the bytes written in order from the start: the complete parts, and as
        far as the next part has got (parts are written front to back)."""
        with self.changed:
            return self._positions.get(self.prefix, self.prefix)


class RangedBase:
    """What the sync and async drivers share: the parts, the frontier, hashing and progress."""

    def __init__(
        self,
        partial: PartialFile,
        verifier: BodyVerifier,
        parts: list[tuple[int, int]],
        first_responses: list[httpx.Response],
        open_part: Any,
        *,
        concurrency: int,
        policy: RetryPolicy,
        deadline: float | None,
        reporter: ProgressReporter | None,
        done: Sequence[Span] = (),
    ) -> None:
        self._partial = partial
        self._verifier = verifier
        self._parts = parts
        assert verifier.size is not None
        self._size = verifier.size
        self._open_part = open_part
        self._policy = policy
        self._deadline = deadline
        self._reporter = reporter
        self._start = verifier.received
        self._frontier = Frontier(self._start, parts, done)
        self._saved = -1  # the frontier's completions when the part map was last written
        self._saved_at = 0.0
        # The answers already open serve the first parts; the others are requested as needed.
        self._first = list(zip(parts, first_responses, strict=False))
        self._workers = max(concurrency, len(first_responses))
        self._prepare()

    def _prepare(self) -> None:
        """The driver's own state (threads or tasks)."""

    def _hash(self, offset: int, end: int) -> None:
        """Feed bytes ``offset`` to ``end - 1`` of the partial file to the verifier."""
        fd = self._partial.file.fileno()
        while offset < end:
            chunk = os.pread(fd, min(HASH_READ, end - offset), offset)
            if not chunk:
                raise TransportError(f"the partial file ended at byte {offset}")
            self._verifier.feed(chunk)
            offset += len(chunk)

    def _save_progress(self) -> None:
        """Write the part map at the start, then when a part completed since it was last
        written, at most every :data:`MAP_INTERVAL` seconds (each write waits for the disk), so
        that a crash costs only the parts under way and those of the last moments."""
        if self._map_due():
            self._write_map()

    def _map_due(self) -> bool:
        """Whether :meth:`_save_progress` has a part map to write now."""
        if self._frontier.completions == self._saved or not self._partial.keeps_parts:
            return False
        return self._saved < 0 or time.monotonic() - self._saved_at >= MAP_INTERVAL

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

    def _write(self, piece: bytes, first: int, position: int) -> int:
        """Write ``piece`` of the part starting at ``first`` at ``position``; return its length."""
        self._partial.write_at(piece, position)
        self._frontier.advance(first, position + len(piece), len(piece))
        return len(piece)


class PartSlot:
    """The bytes of one part that have arrived and not been handed out yet."""

    __slots__ = ("chunks", "done")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.done = False


class ParallelChunksBase:
    """What the sync and async drivers of an iterated download share: the parts, what has
    arrived of each, and the window that bounds how far ahead the workers may go.

    ``first_responses`` are answers already open for the first parts (the registry's own answer
    for part 0, the probe for part 1). ``on_wait`` is called at least every
    :data:`~._progress.INTERVAL` seconds while the next bytes have not arrived (the deadline).
    """

    def __init__(
        self,
        parts: list[tuple[int, int]],
        first_responses: list[httpx.Response],
        open_part: Any,
        *,
        concurrency: int,
        policy: RetryPolicy,
        on_wait: Callable[[], None],
    ) -> None:
        self._parts = parts
        self._slots = [PartSlot() for _ in parts]
        self._opened = dict(enumerate(first_responses))
        self._open_part = open_part
        self._policy = policy
        self._on_wait = on_wait
        self._window = stream_window(concurrency)
        self._workers = max(concurrency, len(first_responses))
        self._next = 0  # the next part a worker takes
        self._head = 0  # the part being handed out
        self._error: BaseException | None = None
        self._prepare()

    def _prepare(self) -> None:
        """The driver's own state (threads or tasks)."""

    def _beyond_window(self) -> bool:
        """Whether the next part must wait until the caller has taken more."""
        return self._next < len(self._parts) and self._next >= self._head + self._window

    def _claim(self) -> tuple[int, httpx.Response | None] | None:
        """The next part, with its answer if one is already open; ``None`` when all are taken."""
        if self._next >= len(self._parts):
            return None
        index, self._next = self._next, self._next + 1
        return index, self._opened.pop(index, None)

"""Parallel ranges inside one blob: how a blob is cut into parts, and which bytes are in.

Several connections fetch disjoint ``Range`` parts of the same (redirected) URL and write them
in place; the digest is still computed over the bytes in order, by reading back the prefix of
the file that is complete, so memory stays a buffer per connection whatever the blob's size. An
iterated download keeps its parts in memory instead, within a window of small parts. This module
holds the plans and the bookkeeping; the drivers are in ``_async/ranged.py``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import httpx

from ._part_map import Span, merge, missing
from ._protocol import parse_content_range
from .errors import ResumeError, TransportError
from .retry import Resumptions

logger = logging.getLogger("acr_blob")

# Parts are fetched in order, so the complete prefix, and with it the hash, keeps moving; a
# few parts per connection let fast connections take over the work of a slow one.
MIN_PART = 8 << 20
MAX_PART = 64 << 20
PARTS_PER_CONNECTION = 4
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
    parts = [cut for first, end in gaps[:-1] for cut in _cut(first, end, part)]
    if gaps:
        parts += _cut_with_tail(*gaps[-1], part, concurrency)
    return parts


def _cut_with_tail(first: int, end: int, part: int, concurrency: int) -> list[tuple[int, int]]:
    """``[first, end)`` in parts of ``part`` bytes, but the last ``concurrency`` parts' worth
    in parts of :data:`MIN_PART`: the connections then finish close together, and the bytes
    written past the complete prefix, which the hash must still read back once the last byte is
    in, are a few small parts rather than a large part per connection."""
    if part <= MIN_PART:
        return _cut(first, end, part)
    whole = max(0, -(-(end - first) // part) - concurrency)
    tail = first + whole * part
    return _cut(first, tail, part) + _cut(tail, end, MIN_PART)


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
    """Parts that are complete, and the end of the complete prefix; shared by the workers.

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
        self._lock = threading.Lock()
        for first, _ in done:
            self._add(first)

    def advance(self, first: int, position: int, count: int) -> None:
        """The part starting at ``first`` is written up to ``position``, ``count`` bytes more."""
        with self._lock:
            self._positions[first] = position
            self.written += count

    def complete(self, first: int) -> None:
        """The part starting at ``first`` is fully written."""
        with self._lock:
            self._positions.pop(first, None)
            self._add(first)
            self.completions += 1

    def _add(self, first: int) -> None:
        self._done.add(first)
        while self.prefix in self._done:
            self._done.discard(self.prefix)
            self.prefix = self._ends[self.prefix]

    def complete_spans(self) -> list[Span]:
        """Every span known to be written: the prefix, the complete parts, and the parts under
        way as far as they have got."""
        with self._lock:
            spans = [(0, self.prefix)]
            spans += [(first, self._ends[first]) for first in self._done]
            spans += list(self._positions.items())
        return merge(spans)

    def in_order(self) -> int:
        """The end of the bytes written in order from the start: the complete parts, and as
        far as the next part has got (parts are written front to back)."""
        with self._lock:
            return self._positions.get(self.prefix, self.prefix)

"""Parallel ranges inside one blob: how a blob is cut into parts, and which bytes are in.

Several connections fetch disjoint ``Range`` parts of the same (redirected) URL and write them
in place; the digest is still computed over the bytes in order, by reading back the prefix of
the file that is complete (from the page cache), so memory stays a few reads per connection
whatever the blob's size. This module holds what the sync and async drivers share.
"""

from __future__ import annotations

import threading

import httpx

from ._protocol import parse_content_range
from .errors import ResumeError

# Parts are fetched in order, so the complete prefix, and with it the hash, keeps moving; a
# few parts per connection let fast connections take over the work of a slow one.
MIN_PART = 8 << 20
MAX_PART = 64 << 20
PARTS_PER_CONNECTION = 4
HASH_READ = 1 << 20


def worth_splitting(remaining: int, concurrency: int) -> bool:
    """Whether parallel ranges can pay for their extra requests."""
    return concurrency > 1 and remaining >= 2 * MIN_PART


def plan_parts(start: int, size: int, concurrency: int) -> list[tuple[int, int]]:
    """``[start, size)`` cut into ``(first, end)`` parts, ``end`` exclusive, in order."""
    wanted = -(-(size - start) // (concurrency * PARTS_PER_CONNECTION))
    part = min(MAX_PART, max(MIN_PART, wanted))
    return [(first, min(first + part, size)) for first in range(start, size, part)]


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
    """Parts that are complete, and the end of the complete prefix; shared by the threads."""

    def __init__(self, start: int, parts: list[tuple[int, int]]) -> None:
        self._ends = {first: end for first, end in parts}
        self._done: set[int] = set()
        self.prefix = start
        self.written = 0
        self.changed = threading.Condition()

    def add(self, count: int) -> None:
        """``count`` more bytes written somewhere (progress)."""
        with self.changed:
            self.written += count

    def complete(self, first: int) -> None:
        """The part starting at ``first`` is fully written."""
        with self.changed:
            self._done.add(first)
            while self.prefix in self._done:
                self._done.discard(self.prefix)
                self.prefix = self._ends[self.prefix]
            self.changed.notify_all()

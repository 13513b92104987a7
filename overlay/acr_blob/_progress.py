"""Progress reports for downloads, at a bounded rate."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeAlias

__all__ = ["ProgressCallback"]

ProgressCallback: TypeAlias = Callable[[int, int | None], None]
"""``progress(done_bytes, total_bytes)``: ``total_bytes`` is ``None`` while the size is unknown.

Called at most ten times a second and once more, with ``done_bytes == total_bytes``, when the
blob is complete and verified. ``done_bytes`` never goes backwards: bytes that a resumed
download already had count from the start, and bytes that parallel ranges fetch count once.
The callback runs on the downloading thread (or event loop): keep it quick.

Example::

    def show(done: int, total: int | None) -> None:
        print(f"{done} of {total or '?'} bytes")

    client.download_blob_to_file("library/ubuntu", digest, "layer.tgz", progress=show)
"""

INTERVAL = 0.1


class ProgressReporter:
    """Calls a :data:`ProgressCallback` at most every ``interval`` seconds, and at the end."""

    def __init__(
        self,
        callback: ProgressCallback,
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._callback = callback
        self._interval = interval
        self._clock = clock
        self._next = 0.0
        self._done = 0

    def update(self, done: int, total: int | None) -> None:
        """Report ``done`` if enough time has passed since the last report."""
        now = self._clock()
        if now >= self._next and done >= self._done:
            self._next = now + self._interval
            self._done = done
            self._callback(done, total)

    def finish(self, done: int) -> None:
        """The final report: the blob is complete, ``done`` is its size."""
        self._done = done
        self._callback(done, done)


def reporter(callback: ProgressCallback | None) -> ProgressReporter | None:
    if callback is not None and not callable(callback):
        raise TypeError("progress must be a callable taking (done_bytes, total_bytes)")
    return ProgressReporter(callback) if callback is not None else None

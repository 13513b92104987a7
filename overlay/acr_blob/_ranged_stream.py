"""Parallel ranges for iterating a blob (``download_blob`` with ``max_concurrency``): threads
fetch ``Range`` parts into memory, and the caller's thread hands them out in order.

Memory stays bounded whatever the blob's size: parts are small (``plan_stream_parts``) and a
thread starts a part only while it lies less than ``stream_window`` parts ahead of the one being
handed out, so at most a window of parts waits in memory. The part being handed out streams
through as it arrives. A part that breaks off is resumed from its last byte, through the
registry again (a fresh redirect), as for a download to a file.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx

from ._progress import INTERVAL
from ._ranged_sync import OpenPart, part_pieces
from ._ranges import ParallelChunksBase, PartSlot


class ParallelChunks(ParallelChunksBase):
    """The bytes of ``parts``, in order, fetched over ``concurrency`` threads (see
    :class:`~._ranges.ParallelChunksBase`). Iterate once; :meth:`close` stops the threads and
    closes what is open."""

    _open_part: OpenPart

    def _prepare(self) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # the caller waits for bytes
        self._freed = threading.Condition(self._lock)  # threads wait for room in the window
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"acr-blob-stream-range-{index}")
            for index in range(self._workers)
        ]

    def __iter__(self) -> Iterator[bytes]:
        for thread in self._threads:
            thread.start()
        try:
            for index, slot in enumerate(self._slots):
                yield from self._hand_out(slot)
                with self._lock:
                    self._head = index + 1
                    self._freed.notify_all()
        finally:
            self.close()

    def _hand_out(self, slot: PartSlot) -> Iterator[bytes]:
        while True:
            with self._lock:
                if not slot.chunks and not slot.done and self._error is None:
                    self._arrived.wait(INTERVAL)
                if self._error is not None:
                    raise self._error
                chunks, slot.chunks = slot.chunks, []
                finished = slot.done and not chunks
            self._on_wait()
            yield from chunks
            if finished:
                return

    def close(self) -> None:
        """Stop the threads, wait for them, and close the answers no thread took."""
        with self._lock:
            self._stopped = True
            self._freed.notify_all()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join()
        for response in self._opened.values():
            response.close()
        self._opened.clear()

    def _take(self) -> tuple[int, httpx.Response | None] | None:
        with self._lock:
            while not self._stopped and self._beyond_window():
                self._freed.wait()
            return None if self._stopped else self._claim()

    def _work(self) -> None:
        try:
            while (job := self._take()) is not None:
                self._fetch(*job)
        except BaseException as error:  # handed to the caller's thread
            with self._lock:
                if self._error is None:
                    self._error = error
                self._stopped = True
                self._arrived.notify_all()
                self._freed.notify_all()

    def _fetch(self, index: int, response: httpx.Response | None) -> None:
        first, end = self._parts[index]
        slot = self._slots[index]
        pieces = part_pieces(first, end, response, self._open_part, self._policy)
        try:
            for piece in pieces:
                with self._lock:
                    if self._stopped:
                        return
                    slot.chunks.append(piece)
                    self._arrived.notify()
        finally:
            pieces.close()
        with self._lock:
            slot.done = True
            self._arrived.notify()

"""The ``acr-blob`` progress bar: one line on a terminal, redrawn at a bounded rate."""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["ProgressBar"]


def _size(count: float) -> str:
    """``1023 B``, ``1.5 KiB``, ``12.3 MiB``, ``1.2 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class ProgressBar:
    """A one-line progress display on a terminal: percentage, bar, bytes, rate and ETA.

    Use it as the ``progress`` callback of a download; it redraws its line with ``\\r`` at
    most every ``interval`` seconds. :meth:`finish` draws the final line (size, average rate,
    time taken) and ends it; :meth:`abort` ends the line where it is, so that an error message
    starts on a line of its own.
    """

    WINDOW = 3.0

    def __init__(
        self,
        stream: TextIO,
        *,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        columns: Callable[[], int] | None = None,
    ) -> None:
        self._stream = stream
        self._interval = interval
        self._clock = clock
        self._columns = columns or self._terminal_columns
        self._lock = threading.Lock()
        self._started = clock()
        self._first: int | None = None
        self._done = 0
        self._total: int | None = None
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._next_draw = 0.0
        self._shown = 0  # characters of the line now on screen; 0: none
        self._ended = False

    def __call__(self, done: int, total: int | None) -> None:
        with self._lock:
            if self._ended:
                return
            now = self._clock()
            if self._first is None:
                # Bytes a resumed download already had do not count towards the rate.
                self._first, self._started = done, now
            self._done, self._total = done, total
            self._samples.append((now, done))
            while len(self._samples) > 2 and now - self._samples[0][0] > self.WINDOW:
                self._samples.popleft()
            if now >= self._next_draw or done == total:
                self._next_draw = now + self._interval
                self._draw(self._line(now))

    def finish(self) -> None:
        """The final line: the size, the average rate and the time taken."""
        with self._lock:
            if self._ended or self._first is None:
                return
            elapsed = self._clock() - self._started
            received = self._done - self._first
            parts = [f"{_size(self._done)}"]
            if elapsed > 0 and received:
                parts.append(f"{_size(received / elapsed)}/s")
            parts.append(f"in {_duration(elapsed)}")
            self._draw(self._with_bar(100, 1.0, "  ".join(parts)))
            self._end()

    def abort(self) -> None:
        """End the line as it is (the download failed or was interrupted)."""
        with self._lock:
            if not self._ended and self._shown:
                self._end()

    def _end(self) -> None:
        self._ended = True
        self._stream.write("\n")
        self._stream.flush()

    def _rate(self, now: float) -> float | None:
        if len(self._samples) < 2:
            return None
        (then, before), (_, latest) = self._samples[0], self._samples[-1]
        return (latest - before) / (now - then) if now - then >= 0.2 else None

    def _line(self, now: float) -> str:
        rate = self._rate(now)
        speed = f"{_size(rate)}/s" if rate is not None else "--/s"
        total = self._total
        if total is None or total <= 0:
            return f"{_size(self._done)}  {speed}"
        fraction = min(self._done / total, 1.0)
        eta = _duration((total - self._done) / rate) if rate else "--:--"
        text = f"{_size(self._done)} / {_size(total)}  {speed}  ETA {eta}"
        return self._with_bar(int(fraction * 100), fraction, text)

    def _with_bar(self, percent: int, fraction: float, text: str) -> str:
        head = f"{percent:3d}% "
        room = self._columns() - 1 - len(head) - len(text) - 3
        if room < 10:
            return f"{head}{text}"
        width = min(room, 40)
        filled = int(fraction * width)
        bar = "=" * filled + (">" if filled < width else "") + " " * (width - filled - 1)
        return f"{head}[{bar}] {text}"

    def _draw(self, line: str) -> None:
        line = line[: max(self._columns() - 1, 1)]
        self._stream.write("\r" + line.ljust(self._shown))
        self._stream.flush()
        self._shown = len(line)

    def _terminal_columns(self) -> int:
        try:
            return os.get_terminal_size(self._stream.fileno()).columns or 80
        except (OSError, ValueError, AttributeError):
            return 80

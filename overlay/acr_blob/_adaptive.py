"""``max_concurrency="auto"``: how many connections one download uses, decided as it runs.

A download starts as one stream. :class:`ConcurrencyController` is told, between chunks, how
many bytes have arrived and when; every window it measures the rate and the process's CPU
time against wall time, and steers the number of connections by trial:

- up: while there is CPU to spare and the ceiling is not reached, it tries more
  connections (doubling at first, like TCP's slow start, then one at a time) and keeps them
  only when the total rate rose by :data:`GAIN` (for one more of many, by half of what it
  would add at the others' rate); a trial that did not pay is undone, and the next one waits
  longer (a link's cap can change, so it is tried again later);
- down: while CPU-bound with more than one connection, it tries one fewer and
  keeps that unless the rate fell (each connection costs CPU; on a fast link a CPU-bound
  download gets slower with more of them);
- shed: a 429 or 503 from the server, or connection errors that repeat, take one connection
  away at once and hold the count for a while (``Retry-After``, at the least).

CPU-bound means the process uses a core's worth of CPU time: Python's own work on the bytes
(receiving, hashing, writing) runs on one core at a time. The machine's idle time is not a
signal: behind a capped link a machine kept busy by others (or by a throttling proxy) still
gains from more connections, and a trial finds that out where a reading cannot.

The controller only counts; the drivers in ``_async/ranged.py`` start and stop the parts. Its
decisions, with the rates they were made on, are logged at DEBUG. It reads no clock itself and
takes its CPU readings from ``process_time``, so that tests replay recorded sequences.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Literal, TypeAlias

from ._ranges import MIN_PART

logger = logging.getLogger("acr_blob")

AUTO: Literal["auto"] = "auto"
Concurrency: TypeAlias = int | Literal["auto"]
"""``max_concurrency``: a fixed number of connections, or ``"auto"``."""

CEILING = 8
"""The most connections ``"auto"`` uses for one download."""
WINDOW = 0.1
"""Seconds of each measurement."""
SETTLE = 0.5
"""The share of a window after a change that is not measured (new connections need a round
trip or two before they carry bytes); the one stream a download starts with is measured at
once."""
GAIN = 1.15
"""The rise in total rate that more connections must bring to be kept..."""
MIN_GAIN = 1.05
"""...unless half the rise they would bring at the rate of the others is less, but never less
than this: 8 connections bring a seventh more than 7 at best."""
LOSS = 0.95
"""A CPU-bound download keeps one connection fewer unless the rate fell below this share."""
CPU_BOUND = 0.85
"""Process CPU seconds per wall second at or above which the download is CPU-bound."""
# Windows before another trial up after one that did not pay (doubling after each, to a cap).
BACKOFF_FIRST = 10
BACKOFF_MAX = 80
# Windows at the kept count whose best rate a trial must beat.
KEPT_WINDOWS = 5
# The bytes left in parts not yet taken, at least, for parts to hand back to one stream.
HAND_BACK_MIN = 2 * MIN_PART
# Connection errors within this many windows that make the download shed one connection.
ERRORS_TO_SHED = 2
ERROR_WINDOWS = 8


def read_process_time() -> float:
    """The process's CPU time, all threads (a module function, so that tests can stand in)."""
    return time.process_time()


class ConcurrencyController:
    """The target number of connections of one ``"auto"`` download (thread-safe).

    Feed :meth:`observe` with ``(seconds, bytes received so far)`` (``time.monotonic()`` and
    a byte count) as often as convenient; it returns the target, and reads ``process_time``
    (default :func:`read_process_time`) once a window. :meth:`throttled` and
    :meth:`connection_failed` report trouble.
    """

    def __init__(
        self,
        ceiling: int = CEILING,
        *,
        window: float = WINDOW,
        process_time: Callable[[], float] | None = None,
    ) -> None:
        self.ceiling = ceiling
        self.target = 1
        self._window = window
        self._process_time = process_time or read_process_time
        self._lock = threading.Lock()
        # The window being measured: where it started, and whether it only lets a change settle.
        self._start: tuple[float, int, float] | None = None
        self._settling = False
        # The count that was kept, with its last few rates; a trial is `target != kept`. A trial
        # is judged against the best of them: one window that stalled (a busy machine, a
        # garbage collection) must not make any trial look like a gain.
        self._kept = 1
        self._kept_rates: collections.deque[float] = collections.deque(maxlen=KEPT_WINDOWS)
        self._slow_start = True
        self._up_wait = 0  # windows before the next trial up
        self._backoff = BACKOFF_FIRST
        self._down_wait = 0
        self._hold_until = 0.0  # no trial up before this (after a 429/503)
        self._errors: list[int] = []  # the window numbers of recent connection errors
        self._windows = 0
        self.history: list[tuple[float, int]] = []
        """``(seconds, target)`` at the start and at every change, for reports."""

    def observe(self, now: float, received: int, running: int | None = None) -> int:
        """Record a sample; return the number of connections to run. With ``running``, the
        connections under way: more than the target means a change down has not taken
        effect yet (a worker finishes its part first), and nothing is measured till it has."""
        with self._lock:
            if not self.history:
                self.history.append((now, self.target))
            if self._start is None:
                self._start = (now, received, self._process_time())
                return self.target
            if running is not None and running > self.target:
                # Not measured: the connections the rate comes from are not the target's.
                self._start = (now, received, self._process_time())
                self._settling = True
                return self.target
            began, before, cpu_before = self._start
            elapsed = now - began
            if elapsed < self._window * (SETTLE if self._settling else 1.0):
                return self.target
            cpu = self._process_time()
            self._start = (now, received, cpu)
            self._windows += 1
            if self._settling:
                self._settling = False
                return self.target
            rate = (received - before) / elapsed
            busy = (cpu - cpu_before) / elapsed >= CPU_BOUND
            self._decide(now, rate, busy)
            return self.target

    def steer(self, now: float, received: int, running: int, rest: int) -> tuple[int, bool]:
        """:meth:`observe` for a driver with ``running`` workers and ``rest`` bytes in the parts
        no worker has taken: how many workers to start, and whether to hand the rest back to
        one stream (a target of one, and enough left for one stream's lower cost to matter: it
        asks once and reads nothing back to hash)."""
        target = self.observe(now, received, running)
        if not rest:
            return 0, False
        if target == 1 and rest >= HAND_BACK_MIN:
            return 0, True
        return max(0, target - running), False

    def throttled(self, now: float, retry_after: float | None = None) -> int:
        """The server answered 429 or 503: one connection fewer, held for a while."""
        with self._lock:
            hold = max(retry_after or 0.0, self._window * BACKOFF_FIRST)
            self._hold_until = max(self._hold_until, now + hold)
            self._slow_start = False
            if self.target > 1:
                self._change(now, max(1, min(self.target, self._kept) - 1), "shed (throttled)")
                self._keep()
            return self.target

    def connection_failed(self, now: float) -> int:
        """A connection broke: after :data:`ERRORS_TO_SHED` within a few windows, one fewer."""
        with self._lock:
            self._errors = [w for w in self._errors if self._windows - w < ERROR_WINDOWS]
            self._errors.append(self._windows)
            if len(self._errors) >= ERRORS_TO_SHED and self.target > 1:
                self._errors.clear()
                self._slow_start = False
                self._up_wait = max(self._up_wait, self._backoff)
                self._change(now, max(1, min(self.target, self._kept) - 1), "shed (errors)")
                self._keep()
            return self.target

    def _decide(self, now: float, rate: float, busy: bool) -> None:
        self._up_wait = max(0, self._up_wait - 1)
        self._down_wait = max(0, self._down_wait - 1)
        kept_rate = max(self._kept_rates, default=None)
        if self.target > self._kept and kept_rate is not None:
            if rate >= _required_gain(self._kept, self.target) * kept_rate:
                self._accept(rate, f"kept: {_mb(rate)} MB/s vs {_mb(kept_rate)} MB/s")
            else:
                self._slow_start = False
                self._up_wait, self._backoff = self._backoff, min(2 * self._backoff, BACKOFF_MAX)
                self._change(
                    now,
                    self._kept,
                    f"undone: {_mb(rate)} MB/s with {self.target} vs {_mb(kept_rate)} MB/s",
                )
                return
        elif self.target < self._kept and kept_rate is not None:
            if rate >= LOSS * kept_rate:
                self._accept(rate, f"kept: {_mb(rate)} MB/s vs {_mb(kept_rate)} MB/s")
            else:
                self._down_wait = self._backoff
                self._change(
                    now,
                    self._kept,
                    f"undone: {_mb(rate)} MB/s with {self.target} vs {_mb(kept_rate)} MB/s",
                )
                return
        else:
            self._kept_rates.append(rate)
        if busy and self.target > 1 and not self._down_wait:
            self._change(now, self.target - 1, f"CPU-bound at {_mb(rate)} MB/s: try fewer")
        elif (
            not busy
            and self.target < self.ceiling
            and not self._up_wait
            and now >= self._hold_until
        ):
            more = self.target * 2 if self._slow_start else self.target + 1
            self._change(now, min(more, self.ceiling), f"{_mb(rate)} MB/s: try more")
        elif busy:
            logger.debug("auto: CPU-bound at %s MB/s with %d", _mb(rate), self.target)

    def _accept(self, rate: float, why: str) -> None:
        logger.debug("auto: %d connection(s) %s", self.target, why)
        self._keep(rate)
        self._backoff = BACKOFF_FIRST

    def _keep(self, rate: float | None = None) -> None:
        self._kept = self.target
        self._kept_rates.clear()
        if rate is not None:
            self._kept_rates.append(rate)

    def _change(self, now: float, target: int, why: str) -> None:
        logger.debug("auto: %d -> %d connection(s), %s", self.target, target, why)
        self.target = target
        self._settling = True
        self.history.append((now, target))


def _required_gain(kept: int, tried: int) -> float:
    """The share by which ``tried`` connections must beat ``kept`` ones."""
    return max(MIN_GAIN, min(GAIN, 1 + 0.5 * (tried - kept) / kept))


def _mb(rate: float) -> str:
    return f"{rate / 1e6:.1f}"

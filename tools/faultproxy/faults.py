"""What goes wrong (Fault) and to which requests (Rule)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from tools.testbed.proxy import RecordedRequest


@dataclass(frozen=True)
class Fault:
    """Deviations from faithful relaying; build one with the class methods, combine with `|`.

    Body offsets count the bytes of the body as the client receives it (a 206's partial body
    starts at 0), after any chunked framing is removed.
    """

    stall: float = 0.0
    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    drop_range: bool = False
    content_range_shift: int = 0
    range_start_earlier: int = 0
    cut_at: int | None = None
    reset: bool = False
    flips: frozenset[int] = field(default_factory=frozenset)
    drip_size: int | None = None
    drip_interval: float = 0.0
    drip_lasting: float | None = None
    # Where the proxy admits a request, a lasting drip gets the instant it ends (monotonic).
    drip_until: float | None = None
    set_headers: tuple[tuple[str, str], ...] = ()
    stall_at: int | None = None
    stall_at_seconds: float = 0.0

    @classmethod
    def cut_after(cls, n_bytes: int, *, reset: bool = False) -> Fault:
        """Status and headers as the upstream sent them, `n_bytes` of body, then the end.

        The client sees its peer close early (FIN), or with `reset` a connection reset (RST,
        sent once the `n_bytes` have been delivered). A body no longer than `n_bytes` arrives
        whole.
        """
        _require(n_bytes >= 0, f"n_bytes must be >= 0, got {n_bytes}")
        return cls(cut_at=n_bytes, reset=reset)

    @classmethod
    def flip_byte(cls, offset: int) -> Fault:
        """Xor 0xFF into the body byte at `offset`, if the body is that long."""
        _require(offset >= 0, f"offset must be >= 0, got {offset}")
        return cls(flips=frozenset({offset}))

    @classmethod
    def respond(
        cls,
        status: int,
        headers: Mapping[str, str] | None = None,
        body: bytes | str = b"",
    ) -> Fault:
        """Answer this, without asking the upstream (Content-Length is added)."""
        _require(100 <= status <= 599, f"not an HTTP status: {status}")
        data = body.encode() if isinstance(body, str) else body
        return cls(status=status, headers=tuple((headers or {}).items()), body=data)

    @classmethod
    def ignore_range(cls) -> Fault:
        """Forward without Range (and If-Range): the upstream answers 200 with everything."""
        return cls(drop_range=True)

    @classmethod
    def shift_content_range(cls, delta: int) -> Fault:
        """On a 206, move Content-Range's start and end by `delta`; the body stays as it is."""
        return cls(content_range_shift=delta)

    @classmethod
    def start_range_earlier(cls, n_bytes: int) -> Fault:
        """Ask the upstream for `n_bytes` more at the front of a `Range: bytes=X-...`
        (from 0 at the earliest): an honest 206 that starts before the offset the client asked
        for."""
        _require(n_bytes > 0, f"n_bytes must be > 0, got {n_bytes}")
        return cls(range_start_earlier=n_bytes)

    @classmethod
    def drip(cls, chunk_size: int, interval: float, *, lasting: float | None = None) -> Fault:
        """Send the body `chunk_size` bytes at a time, `interval` seconds apart.

        With `lasting`, the drip ends that many seconds after its rule first fired, on every
        connection it paces, those already open included (a wait under way is cut short): the
        rest of each body is relayed at full speed, as a link whose cap is lifted. The rule's
        `first_fired_at` plus `lasting` is the instant.
        """
        _require(chunk_size > 0, f"chunk_size must be > 0, got {chunk_size}")
        _require(interval >= 0, f"interval must be >= 0, got {interval}")
        _require(lasting is None or lasting >= 0, f"lasting must be >= 0, got {lasting}")
        return cls(drip_size=chunk_size, drip_interval=interval, drip_lasting=lasting)

    @classmethod
    def set_header(cls, name: str, value: str) -> Fault:
        """Relay the upstream's answer with this header replaced (added if it was absent)."""
        return cls(set_headers=((name, value),))

    @classmethod
    def stall_before_headers(cls, seconds: float) -> Fault:
        """Wait this long before forwarding the request, so before any byte of the answer."""
        _require(seconds >= 0, f"seconds must be >= 0, got {seconds}")
        return cls(stall=seconds)

    @classmethod
    def stall_after(cls, n_bytes: int, seconds: float) -> Fault:
        """Relay `n_bytes` of body, then send nothing for `seconds` with the connection left
        open, then relay the rest. Stopping the proxy ends the stall with a cut (FIN), so a
        stall far longer than the test never outlives it. A body no longer than `n_bytes`
        arrives whole."""
        _require(n_bytes >= 0, f"n_bytes must be >= 0, got {n_bytes}")
        _require(seconds >= 0, f"seconds must be >= 0, got {seconds}")
        return cls(stall_at=n_bytes, stall_at_seconds=seconds)

    def __or__(self, other: Fault) -> Fault:
        """Both faults at once; where they conflict, the earliest cut, the earliest mid-body
        stall and the first canned answer win, stalls before headers and shifts add up, and
        `other`'s drip replaces this one's."""
        if not isinstance(other, Fault):
            return NotImplemented
        canned = self if self.status is not None else other
        cuts = [f for f in (self, other) if f.cut_at is not None]
        cut = min(cuts, key=lambda f: f.cut_at or 0) if cuts else self
        drip = other if other.drip_size is not None else self
        stalls = [f for f in (self, other) if f.stall_at is not None]
        stall_at = min(stalls, key=lambda f: f.stall_at or 0) if stalls else self
        return replace(
            self,
            stall=self.stall + other.stall,
            status=canned.status,
            headers=canned.headers,
            body=canned.body,
            drop_range=self.drop_range or other.drop_range,
            content_range_shift=self.content_range_shift + other.content_range_shift,
            range_start_earlier=self.range_start_earlier + other.range_start_earlier,
            cut_at=cut.cut_at,
            reset=cut.reset,
            flips=self.flips | other.flips,
            drip_size=drip.drip_size,
            drip_interval=drip.drip_interval,
            drip_lasting=drip.drip_lasting,
            drip_until=drip.drip_until,
            set_headers=self.set_headers + other.set_headers,
            stall_at=stall_at.stall_at,
            stall_at_seconds=stall_at.stall_at_seconds,
        )

    def __str__(self) -> str:
        parts = []
        if self.stall:
            parts.append(f"stall {self.stall:g} s")
        if self.status is not None:
            parts.append(f"respond {self.status}")
        if self.drop_range:
            parts.append("ignore Range")
        if self.content_range_shift:
            parts.append(f"shift Content-Range by {self.content_range_shift:+d}")
        if self.range_start_earlier:
            parts.append(f"start Range {self.range_start_earlier} B earlier")
        if self.flips:
            parts.append("flip byte " + ",".join(map(str, sorted(self.flips))))
        if self.drip_size is not None:
            parts.append(f"drip {self.drip_size} B every {self.drip_interval:g} s")
            if self.drip_lasting is not None:
                parts[-1] += f" for {self.drip_lasting:g} s"
        for name, value in self.set_headers:
            parts.append(f"set {name}: {value}")
        if self.stall_at is not None:
            parts.append(f"stall {self.stall_at_seconds:g} s after {self.stall_at} B")
        if self.cut_at is not None:
            parts.append(f"{'reset' if self.reset else 'cut'} after {self.cut_at} B")
        return "; ".join(parts) or "none"

    def drip_pause(self, now: float) -> float | None:
        """The wait before the next dripped piece at `now`, cut short where the drip ends;
        None when there is no drip (any more)."""
        if self.drip_size is None:
            return None
        if self.drip_until is None:
            return self.drip_interval
        left = self.drip_until - now
        return min(self.drip_interval, left) if left > 0 else None


NO_FAULT = Fault()


class Rule:
    """A fault for the requests that match, the first `times` of them (None: all); with
    `every`, only every `every`-th matching request (the `every`-th, the 2 `every`-th, ...)
    counts, the others pass untouched."""

    def __init__(
        self,
        fault: Fault,
        *,
        method: str | None = None,
        path: str | None = None,
        ranged: bool | None = None,
        headers: Mapping[str, str] | None = None,
        times: int | None = None,
        every: int | None = None,
    ) -> None:
        _require(times is None or times > 0, f"times must be > 0 or None, got {times}")
        _require(every is None or every > 0, f"every must be > 0 or None, got {every}")
        self.fault = fault
        self.method = method.upper() if method is not None else None
        self.path = re.compile(path) if path is not None else None
        self.ranged = ranged
        self.headers = tuple((name, re.compile(value)) for name, value in (headers or {}).items())
        self.remaining = times
        self.every = every
        self.matched = 0
        self.fired = 0
        self.first_fired_at: float | None = None
        """`time.monotonic()` when the rule first fired: where a lasting drip counts from."""

    @property
    def expired(self) -> bool:
        return self.remaining == 0

    def matches(self, request: RecordedRequest) -> bool:
        """Method equal, path regex found in the path (query excluded), Range present or not,
        and each of `headers` present with a value its regex matches in full."""
        return (
            (self.method is None or request.method == self.method)
            and (self.path is None or self.path.search(request.path) is not None)
            and (self.ranged is None or (request.header("Range") is not None) == self.ranged)
            and all(_full_match(pattern, request.header(name)) for name, pattern in self.headers)
        )

    def take(self) -> bool:
        """Count one matching request; whether the rule fires on it (see `every`). The caller
        holds the lock that guards its rules."""
        self.matched += 1
        return self.every is None or self.matched % self.every == 0

    def fire(self) -> Fault:
        """Count one use; returns the fault as it applies now (a lasting drip with the instant
        it ends). The caller holds the lock that guards its rules."""
        self.fired += 1
        if self.remaining is not None:
            self.remaining -= 1
        if self.first_fired_at is None:
            self.first_fired_at = time.monotonic()
        if self.fault.drip_lasting is None:
            return self.fault
        return replace(self.fault, drip_until=self.first_fired_at + self.fault.drip_lasting)

    def __repr__(self) -> str:
        conditions = [
            f"{name}={value!r}"
            for name, value in (
                ("method", self.method),
                ("path", self.path.pattern if self.path else None),
                ("ranged", self.ranged),
                ("remaining", self.remaining),
                ("every", self.every),
            )
            if value is not None
        ]
        conditions += [f"{name}={pattern.pattern!r}" for name, pattern in self.headers]
        return f"Rule({self.fault}; {', '.join(conditions)}; fired={self.fired})"


@dataclass(frozen=True)
class Firing:
    """One rule applied to one request, in the proxy's log."""

    rule: Rule
    request: RecordedRequest


def _full_match(pattern: re.Pattern[str], value: str | None) -> bool:
    return value is not None and pattern.fullmatch(value) is not None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)

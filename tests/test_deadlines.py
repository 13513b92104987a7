"""The deadline, and closing a download, hold while one parallel part (or the one stream)
stalls mid-body.

The fault proxy relays one Range part's first MiB, then sends nothing more while keeping the
connection open, far longer than the test; the client's read timeout is longer than the test
too. So nothing but the deadline (or `close()`) can end the call: a client that waits for the
thread or task stuck on that socket misses the bound. Each call runs in a thread of its own,
so that a call that does wait is measured and reported instead of hanging the test; stopping
the proxy then ends the stall (it cuts the connection) and releases it.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from acr_blob import AsyncBlobClient, BlobClient
from acr_blob._ranges import MIN_PART, plan_parts, plan_stream_parts, range_header, worth_splitting
from acr_blob.errors import DeadlineExceededError
from tests.drivers import NO_WAIT
from tools.faultproxy import Fault, FaultProxy
from tools.testbed import Deployment

SIZE = 5 * MIN_PART + 12345
REPOSITORY = "deadlines/big"
CONCURRENCY = 4
DEADLINE = 2.0
# Seconds from the call's start by which DeadlineExceededError must have been raised.
DEADLINE_BOUND = 3.0
# Seconds close() / aclose() may take while a part is stalled.
CLOSE_BOUND = 1.0
# The client's read timeout: far beyond the bounds, so it cannot be what ends the call.
READ_TIMEOUT = 60.0
# The stalled part relays this much of its body, then nothing for STALL seconds.
STALL_AT = 1 << 20
STALL = 3600.0
# How long past its bound a call is left running before the proxy is stopped (for a measured
# time rather than just "too slow"), and how long it then has to return.
GRACE = 2.0
RELEASE = 30.0
# How long a close test may take to reach the stall before its clock starts.
SETUP = 30.0

FILE_PARTS = plan_parts(0, SIZE, CONCURRENCY)
STREAM_PARTS = plan_stream_parts(0, SIZE, CONCURRENCY)


@pytest.fixture(scope="module")
def big(registry: Deployment) -> str:
    # Parallel ranges need a blob worth splitting, in at least three parts: the first answer
    # serves part 0, the stalled part is the second, and others run beside it.
    assert worth_splitting(SIZE, CONCURRENCY)
    assert len(FILE_PARTS) >= 3 and len(STREAM_PARTS) >= 3
    return registry.push_random(REPOSITORY, SIZE).digest


def stall_second_part(proxy: FaultProxy, parts: list[tuple[int, int]]) -> str:
    """Stall the Range request of the second part (the probe); return its Range header."""
    wanted = range_header(*parts[1])
    proxy.add(
        Fault.stall_after(STALL_AT, STALL),
        path=r"/blobs/",
        headers={"Range": re.escape(wanted)},
        times=1,
    )
    return wanted


class Clock:
    """What the call under test measures: from start() to stop(), or to the end of the call."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.stopped: float | None = None
        self.running = threading.Event()

    def start(self) -> None:
        self.started = time.monotonic()
        self.running.set()

    def stop(self) -> None:
        self.stopped = time.monotonic()


@dataclass
class Outcome:
    what: str
    bound: float
    clock: Clock = field(default_factory=Clock)
    ended: float | None = None
    error: BaseException | None = None
    proxy_stopped: float | None = None

    @property
    def elapsed(self) -> float | None:
        end = self.clock.stopped or self.ended
        if self.clock.started is None or end is None:
            return None
        return end - self.clock.started

    def __str__(self) -> str:
        error = "no error" if self.error is None else f"{type(self.error).__name__}: {self.error}"
        error = error[:300]
        bound = f"bound {self.bound:g} s"
        started = self.clock.started
        if started is None:
            return f"{self.what}: never started its clock ({error})"
        if self.proxy_stopped is None:
            return f"{self.what}: returned after {self.elapsed:.2f} s ({bound}): {error}"
        waited = self.proxy_stopped - started
        if self.elapsed is None:
            return (
                f"{self.what}: still running {waited:.2f} s after its start ({bound}), and "
                f"{RELEASE:g} s after the proxy was stopped"
            )
        return (
            f"{self.what}: still running {waited:.2f} s after its start ({bound}); "
            f"it returned only once the proxy was stopped and the stalled connection cut, "
            f"{self.elapsed - waited:.2f} s later ({self.elapsed:.2f} s in all), with {error}"
        )


def run_timed(what: str, bound: float, proxy: FaultProxy, body: Callable[[Clock], None]) -> Outcome:
    """Run ``body(clock)`` in a thread; past ``bound`` (plus GRACE) stop the proxy to free it."""
    outcome = Outcome(what, bound)

    def target() -> None:
        try:
            body(outcome.clock)
        except BaseException as error:
            outcome.error = error
        finally:
            outcome.ended = time.monotonic()

    thread = threading.Thread(target=target, name=f"timed-{what}", daemon=True)
    thread.start()
    setup_until = time.monotonic() + SETUP
    while not outcome.clock.running.wait(0.05):
        if not thread.is_alive() or time.monotonic() > setup_until:
            break
    if outcome.clock.started is not None:
        thread.join(max(0.0, outcome.clock.started + bound + GRACE - time.monotonic()))
    if thread.is_alive():
        outcome.proxy_stopped = time.monotonic()
        proxy.stop()
        thread.join(RELEASE)
    print(outcome)
    return outcome


def check_deadline(outcome: Outcome) -> None:
    raised = isinstance(outcome.error, DeadlineExceededError)
    assert raised, str(outcome)
    in_time = outcome.elapsed is not None and outcome.elapsed <= outcome.bound
    assert in_time, str(outcome)
    assert outcome.proxy_stopped is None, str(outcome)


def check_stalled(proxy: FaultProxy, wanted: str) -> None:
    """The fault hit the second part's request, so the call really met a stall."""
    assert [f.request.header("Range") for f in proxy.firings] == [wanted]


def sync_client(url: str, deadline: float | None = None) -> BlobClient:
    return BlobClient(url, timeout=READ_TIMEOUT, deadline=deadline, retry=NO_WAIT)


def async_client(url: str, deadline: float | None = None) -> AsyncBlobClient:
    return AsyncBlobClient(url, timeout=READ_TIMEOUT, deadline=deadline, retry=NO_WAIT)


# --- The deadline ------------------------------------------------------------------------


def test_the_deadline_ends_an_iteration_with_a_stalled_part(
    mode: str, proxied: FaultProxy, big: str
) -> None:
    wanted = stall_second_part(proxied, STREAM_PARTS)

    def sync_body(clock: Clock) -> None:
        with sync_client(proxied.url, deadline=DEADLINE) as client:
            clock.start()
            with client.download_blob(REPOSITORY, big, max_concurrency=CONCURRENCY) as download:
                for _ in download:
                    pass

    async def async_run(clock: Clock) -> None:
        async with async_client(proxied.url, deadline=DEADLINE) as client:
            clock.start()
            async with await client.download_blob(
                REPOSITORY, big, max_concurrency=CONCURRENCY
            ) as download:
                async for _ in download:
                    pass

    def async_body(clock: Clock) -> None:
        asyncio.run(async_run(clock))

    body = sync_body if mode == "sync" else async_body
    outcome = run_timed(f"{mode} iterating", DEADLINE_BOUND, proxied, body)
    check_stalled(proxied, wanted)
    check_deadline(outcome)


def test_the_deadline_ends_a_download_to_a_file_with_a_stalled_part(
    mode: str, proxied: FaultProxy, big: str, tmp_path: Path
) -> None:
    wanted = stall_second_part(proxied, FILE_PARTS)
    target = tmp_path / "blob"

    def sync_body(clock: Clock) -> None:
        with sync_client(proxied.url, deadline=DEADLINE) as client:
            clock.start()
            client.download_blob_to_file(REPOSITORY, big, target, max_concurrency=CONCURRENCY)

    async def async_run(clock: Clock) -> None:
        async with async_client(proxied.url, deadline=DEADLINE) as client:
            clock.start()
            await client.download_blob_to_file(REPOSITORY, big, target, max_concurrency=CONCURRENCY)

    def async_body(clock: Clock) -> None:
        asyncio.run(async_run(clock))

    body = sync_body if mode == "sync" else async_body
    outcome = run_timed(f"{mode} download_blob_to_file", DEADLINE_BOUND, proxied, body)
    check_stalled(proxied, wanted)
    # Whatever else went wrong, a failed call leaves nothing at the target.
    assert outcome.error is not None, str(outcome)
    assert not target.exists(), f"{target} exists after {outcome}"
    check_deadline(outcome)


@pytest.mark.parametrize("action", ["iterate", "to_file"])
def test_the_deadline_ends_a_single_stream_that_stalls(
    mode: str, action: str, proxied: FaultProxy, big: str, tmp_path: Path
) -> None:
    # One stream, no parts: the read waiting on the stalled socket is cut short by the deadline.
    proxied.add(Fault.stall_after(STALL_AT, STALL), path=r"/blobs/", ranged=False, times=1)
    target = tmp_path / "blob"

    def sync_body(clock: Clock) -> None:
        with sync_client(proxied.url, deadline=DEADLINE) as client:
            clock.start()
            if action == "to_file":
                client.download_blob_to_file(REPOSITORY, big, target)
                return
            with client.download_blob(REPOSITORY, big) as download:
                for _ in download:
                    pass

    async def async_run(clock: Clock) -> None:
        async with async_client(proxied.url, deadline=DEADLINE) as client:
            clock.start()
            if action == "to_file":
                await client.download_blob_to_file(REPOSITORY, big, target)
                return
            async with await client.download_blob(REPOSITORY, big) as download:
                async for _ in download:
                    pass

    def async_body(clock: Clock) -> None:
        asyncio.run(async_run(clock))

    body = sync_body if mode == "sync" else async_body
    outcome = run_timed(f"{mode} one stream, {action}", DEADLINE_BOUND, proxied, body)
    assert len(proxied.firings) == 1, str(outcome)
    assert not target.exists(), f"{target} exists after {outcome}"
    check_deadline(outcome)


# --- Closing -------------------------------------------------------------------------------


def test_closing_an_iteration_with_a_stalled_part_returns_promptly(
    mode: str, proxied: FaultProxy, big: str
) -> None:
    wanted = stall_second_part(proxied, STREAM_PARTS)
    # The bytes before the stall: the whole first part, then the second up to the stall. The
    # next byte would wait for the stall, so this many taken means the stall is in force.
    before_stall = STREAM_PARTS[1][0] + STALL_AT
    taken = 0

    def sync_body(clock: Clock) -> None:
        nonlocal taken
        with sync_client(proxied.url) as client:
            download = client.download_blob(REPOSITORY, big, max_concurrency=CONCURRENCY)
            chunks = iter(download)
            while taken < before_stall:
                taken += len(next(chunks))
            clock.start()
            download.close()
            clock.stop()

    async def async_run(clock: Clock) -> None:
        nonlocal taken
        async with async_client(proxied.url) as client:
            download = await client.download_blob(REPOSITORY, big, max_concurrency=CONCURRENCY)
            chunks = aiter(download)
            while taken < before_stall:
                taken += len(await anext(chunks))
            clock.start()
            await download.aclose()
            clock.stop()

    def async_body(clock: Clock) -> None:
        asyncio.run(async_run(clock))

    body = sync_body if mode == "sync" else async_body
    what = "sync close()" if mode == "sync" else "async aclose()"
    outcome = run_timed(what, CLOSE_BOUND, proxied, body)
    check_stalled(proxied, wanted)
    assert taken == before_stall, f"took {taken} bytes, expected {before_stall}: {outcome}"
    assert outcome.clock.started is not None, str(outcome)
    assert outcome.error is None, str(outcome)
    assert outcome.proxy_stopped is None, str(outcome)
    in_time = outcome.elapsed is not None and outcome.elapsed <= CLOSE_BOUND
    assert in_time, str(outcome)

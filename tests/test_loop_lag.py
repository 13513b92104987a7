"""The async client leaves its event loop free while it downloads a large blob to a file.

A ticker task in the same loop sleeps 5 ms at a time and records how late each wake-up is; a
client that writes, hashes or fsyncs on the loop's thread shows as a late wake-up. The blob is
256 MiB from the real registry (no proxy), in one stream and in parallel ranges, from scratch
and resuming a partial file of its first half (which the client rehashes before going on).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from acr_blob import AsyncBlobClient, BlobProperties
from tools.testbed import Deployment

SIZE = 256 << 20
HALF = 128 << 20
REPOSITORY = "loop-lag/large"
TICK = 0.005
# The most a wake-up of the ticker may be late.
MAX_LAG = 0.050

T = TypeVar("T")


@dataclass(frozen=True)
class Large:
    digest: str
    source: Path  # the pushed bytes, for the partial file's first half


@pytest.fixture(scope="module")
def large(registry: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Large]:
    source = tmp_path_factory.mktemp("loop-lag") / "blob.bin"
    pushed = registry.push_random_file(REPOSITORY, SIZE, source)
    yield Large(pushed.digest, source)
    source.unlink(missing_ok=True)


@dataclass
class Lag:
    worst: float = 0.0
    worst_at: float = 0.0  # seconds into the call
    ticks: int = 0
    duration: float = 0.0

    def __str__(self) -> str:
        return (
            f"largest ticker lag {self.worst * 1000:.1f} ms (bound {MAX_LAG * 1000:.0f} ms), "
            f"{self.worst_at:.2f} s into a {self.duration:.2f} s call, {self.ticks} ticks"
        )


async def with_ticker(call: Callable[[], Awaitable[T]]) -> tuple[T, Lag]:
    """Await ``call()`` while a ticker in the same loop measures how late its wake-ups are."""
    loop = asyncio.get_running_loop()
    lag = Lag()
    running = True

    async def tick() -> None:
        expected = loop.time() + TICK
        while running:
            await asyncio.sleep(TICK)
            now = loop.time()
            if now - expected > lag.worst:
                lag.worst, lag.worst_at = now - expected, now - started
            lag.ticks += 1
            expected = now + TICK

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)  # the ticker is asleep, its first wake-up due
    started = loop.time()
    try:
        result = await call()
    finally:
        lag.duration = loop.time() - started
        running = False
        await ticker
    return result, lag


def download(
    registry: Deployment, digest: str, target: Path, concurrency: int, seen: list[int]
) -> tuple[BlobProperties, Lag]:
    async def run() -> tuple[BlobProperties, Lag]:
        async with AsyncBlobClient(registry.url) as client:
            return await with_ticker(
                lambda: client.download_blob_to_file(
                    REPOSITORY,
                    digest,
                    target,
                    max_concurrency=concurrency,
                    progress=lambda done, total: seen.append(done),
                )
            )

    return asyncio.run(run())


def check_target(target: Path, digest: str) -> None:
    hasher = hashlib.sha256()
    with target.open("rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    assert f"sha256:{hasher.hexdigest()}" == digest


def test_the_ticker_sees_a_blocked_loop_and_only_that() -> None:
    async def free() -> None:
        await asyncio.sleep(0.3)

    async def blocked() -> None:
        await asyncio.sleep(0.1)
        time.sleep(0.1)  # what a client doing disk work on the loop's thread looks like
        await asyncio.sleep(0.1)

    _, idle = asyncio.run(with_ticker(free))
    _, busy = asyncio.run(with_ticker(blocked))
    print(f"idle: {idle}; blocked 100 ms: {busy}")
    assert idle.ticks >= 10 and idle.worst <= MAX_LAG, f"idle: {idle}"
    assert busy.worst >= 0.09 and 0.09 <= busy.worst_at <= 0.3, f"blocked: {busy}"


@pytest.mark.parametrize("concurrency", [1, 4])
def test_the_loop_keeps_ticking_during_a_download_to_a_file(
    registry: Deployment, large: Large, tmp_path: Path, concurrency: int
) -> None:
    target = tmp_path / "blob"
    seen: list[int] = []
    try:
        properties, lag = download(registry, large.digest, target, concurrency, seen)
        print(f"max_concurrency={concurrency}: {lag}")
        assert properties.size == SIZE
        check_target(target, large.digest)
        assert lag.ticks > 0
        assert lag.worst <= MAX_LAG, f"max_concurrency={concurrency}: {lag}"
    finally:
        target.unlink(missing_ok=True)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_the_loop_keeps_ticking_while_resuming_a_partial_file(
    registry: Deployment, large: Large, tmp_path: Path, concurrency: int
) -> None:
    target = tmp_path / "blob"
    partial = tmp_path / f".sha256-{large.digest.removeprefix('sha256:')}.partial"
    with large.source.open("rb") as source, partial.open("wb") as f:
        remaining = HALF
        while remaining:
            chunk = source.read(min(1 << 20, remaining))
            f.write(chunk)
            remaining -= len(chunk)
    seen: list[int] = []
    try:
        properties, lag = download(registry, large.digest, target, concurrency, seen)
        print(f"resuming, max_concurrency={concurrency}: {lag}")
        assert properties.size == SIZE
        # It went on from the partial file: no report ever counted less than its bytes.
        assert seen and min(seen) >= HALF, f"progress reports from {min(seen, default=None)}"
        assert not partial.exists()
        check_target(target, large.digest)
        assert lag.ticks > 0
        assert lag.worst <= MAX_LAG, f"resuming, max_concurrency={concurrency}: {lag}"
    finally:
        target.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)

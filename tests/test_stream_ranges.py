"""Parallel ranges when iterating a blob (download_blob with max_concurrency), sync and async:
against the real registry, real S3-style storage behind a redirect, and the fault proxy."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import threading
import time

import pytest

from acr_blob import (
    AsyncBlobClient,
    BlobClient,
    DeadlineExceededError,
    DigestMismatchError,
    RetryPolicy,
    TransportError,
)
from acr_blob._ranges import (
    MIN_PART,
    STREAM_MEMORY,
    plan_stream_parts,
    range_header,
    stream_window,
)
from tests.drivers import NO_WAIT, Driver
from tests.test_ranges import Progress
from tools.faultproxy import Fault, FaultProxy
from tools.testbed import BlobFactory, Deployment

SIZE = 5 * MIN_PART + 12345
BLOBS = r"/blobs/"


@pytest.fixture(scope="module")
def big(registry: Deployment) -> tuple[str, str, bytes]:
    pushed = registry.push_random("stream-ranges/big", SIZE)
    return "stream-ranges/big", pushed.digest, pushed.data


@pytest.mark.parametrize("concurrency", [2, 3, 4, 8, 16, 64])
def test_a_window_of_parts_fits_the_memory_bound(concurrency: int) -> None:
    parts = plan_stream_parts(1000, SIZE, concurrency)
    assert parts[0][0] == 1000 and parts[-1][1] == SIZE
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
    largest = max(end - first for first, end in parts)
    assert stream_window(concurrency) * largest <= STREAM_MEMORY


def test_iterating_fetches_disjoint_ranges_and_hands_them_out_in_order(
    mode: str, proxied: FaultProxy, big: tuple[str, str, bytes]
) -> None:
    repository, digest, data = big
    progress = Progress()
    received = Driver(mode, proxied.url, retry=NO_WAIT).iterate(
        repository, digest, max_concurrency=4, progress=progress
    )
    assert received == data
    ranges = [r.header("Range") for r in proxied.requests]
    parts = plan_stream_parts(0, SIZE, 4)
    # The first answer serves the first part; every other part is its own Range request.
    assert ranges[0] is None
    assert sorted(r for r in ranges[1:] if r) == sorted(range_header(*p) for p in parts[1:])
    assert len(ranges) == len(parts)
    progress.check(SIZE)


def test_the_clients_max_concurrency_applies_to_iterating(
    mode: str, proxied: FaultProxy, big: tuple[str, str, bytes]
) -> None:
    repository, digest, data = big
    client = Driver(mode, proxied.url, retry=NO_WAIT, max_concurrency=3)
    assert client.iterate(repository, digest) == data
    assert len(proxied.requests) == len(plan_stream_parts(0, SIZE, 3))
    proxied.clear()
    # Per call, 1 means one stream whatever the client says.
    assert client.iterate(repository, digest, max_concurrency=1) == data
    assert [r.header("Range") for r in proxied.requests] == [None]


def test_iterating_from_storage_sends_no_credentials_with_the_parts(
    mode: str, s3_basic_registry: Deployment, blob_factory: BlobFactory, repository: str
) -> None:
    pushed = blob_factory(s3_basic_registry, SIZE)
    storage = s3_basic_registry.proxy
    assert storage is not None
    storage.clear()
    client = Driver(mode, s3_basic_registry.url, credential=s3_basic_registry.auth, retry=NO_WAIT)
    received = client.iterate(repository, pushed.digest, max_concurrency=3)
    assert hashlib.sha256(received).hexdigest() == pushed.digest[7:]
    fetched = storage.presigned_requests
    assert len(fetched) == len(plan_stream_parts(0, SIZE, 3))
    assert all(r.header("Authorization") is None for r in fetched)


def test_a_server_that_ignores_range_gets_one_stream_when_iterating(
    mode: str, proxied: FaultProxy, big: tuple[str, str, bytes]
) -> None:
    repository, digest, data = big
    proxied.add(Fault.ignore_range(), path=BLOBS, ranged=True)
    received = Driver(mode, proxied.url, retry=NO_WAIT).iterate(
        repository, digest, max_concurrency=4
    )
    assert received == data
    # The first answer, then the probe for the second part (answered 200, so dropped).
    assert [r.header("Range") for r in proxied.requests] == [
        None,
        range_header(*plan_stream_parts(0, SIZE, 4)[1]),
    ]


def test_a_part_that_breaks_off_is_resumed_inside_the_part_when_iterating(
    mode: str, proxied: FaultProxy, big: tuple[str, str, bytes]
) -> None:
    repository, digest, data = big
    proxied.add(Fault.cut_after(1 << 20), path=BLOBS, ranged=True, times=1)
    received = Driver(mode, proxied.url, retry=NO_WAIT).iterate(
        repository, digest, max_concurrency=2
    )
    assert received == data
    probe_first, probe_end = plan_stream_parts(0, SIZE, 2)[1]
    ranges = [r.header("Range") or "" for r in proxied.requests]
    assert f"bytes={probe_first + (1 << 20)}-{probe_end - 1}" in ranges


def test_a_part_that_keeps_failing_ends_the_iteration(
    mode: str, proxied: FaultProxy, big: tuple[str, str, bytes]
) -> None:
    repository, digest, _ = big
    proxied.add(Fault.cut_after(0), path=BLOBS, ranged=True)
    policy = RetryPolicy(resume_attempts=1, sleep=NO_WAIT.sleep, async_sleep=NO_WAIT.async_sleep)
    with pytest.raises(TransportError, match="broke off"):
        Driver(mode, proxied.url, retry=policy).iterate(repository, digest, max_concurrency=2)


def test_a_corrupt_part_fails_the_verification(
    mode: str, proxied: FaultProxy, big: tuple[str, str, bytes]
) -> None:
    repository, digest, _ = big
    proxied.add(Fault.flip_byte(1000), path=BLOBS, ranged=True, times=1)
    with pytest.raises(DigestMismatchError):
        Driver(mode, proxied.url, retry=NO_WAIT).iterate(repository, digest, max_concurrency=3)


def test_a_small_blob_is_one_stream_when_iterating(
    mode: str,
    proxied: FaultProxy,
    blob_factory: BlobFactory,
    registry: Deployment,
    repository: str,
) -> None:
    pushed = blob_factory(registry, 1 << 20)
    received = Driver(mode, proxied.url, retry=NO_WAIT).iterate(
        repository, pushed.digest, max_concurrency=8
    )
    assert received == pushed.data
    assert len(proxied.requests) == 1


def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("acr-blob-stream-range")]


def test_sync_iteration_stopped_early_stops_its_threads(
    registry: Deployment, big: tuple[str, str, bytes]
) -> None:
    repository, digest, data = big
    with BlobClient(registry.url) as client:
        with client.download_blob(repository, digest, max_concurrency=4) as download:
            chunks = iter(download)
            first = next(chunks)
            assert data.startswith(first)
            assert _stream_threads()
        assert _stream_threads() == []
        # The client is still good for another download.
        with client.download_blob(repository, digest, max_concurrency=4) as download:
            assert download.readall() == data


def _part_tasks() -> list[asyncio.Task[object]]:
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "").endswith("ParallelChunks._work")
    ]


def test_async_iteration_stopped_early_cancels_its_tasks(
    registry: Deployment, big: tuple[str, str, bytes]
) -> None:
    repository, digest, data = big

    async def run() -> None:
        async with AsyncBlobClient(registry.url) as client:
            async with await client.download_blob(
                repository, digest, max_concurrency=4
            ) as download:
                async for chunk in download:
                    assert data.startswith(chunk)
                    assert _part_tasks()
                    break
            assert _part_tasks() == []
            async with await client.download_blob(
                repository, digest, max_concurrency=4
            ) as download:
                assert await download.readall() == data

    asyncio.run(run())


def test_iterating_over_https_in_parallel(mode: str, tls_registry: Deployment) -> None:
    pushed = tls_registry.push_random("stream-ranges/tls", 2 * MIN_PART + 777)
    client = Driver(mode, tls_registry.url, verify=tls_registry.verify, retry=NO_WAIT)
    assert client.iterate("stream-ranges/tls", pushed.digest, max_concurrency=3) == pushed.data


def test_the_deadline_holds_while_waiting_for_parts(
    mode: str, proxied: FaultProxy, big: tuple[str, str, bytes]
) -> None:
    repository, digest, _ = big
    # The first answer (part 0) flows; every ranged part drips, so the iteration waits on them.
    proxied.add(Fault.drip(4096, 0.05), path=BLOBS, ranged=True)
    client = Driver(mode, proxied.url, retry=NO_WAIT, deadline=1.0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError, match="deadline passed after"):
        client.iterate(repository, digest, max_concurrency=3)
    assert time.monotonic() - started < 5

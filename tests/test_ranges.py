"""Parallel ranges (max_concurrency) and progress callbacks, against the real registry, real
S3-style storage behind a redirect, and the fault proxy."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from acr_blob import AsyncBlobClient, BlobClient, RetryPolicy, TransportError
from acr_blob._files import PartialFile
from acr_blob._progress import ProgressReporter
from acr_blob._ranges import MIN_PART, Frontier, plan_parts, range_header
from tests.drivers import NO_WAIT, Driver, azure_storage_error
from tools.faultproxy import Fault, FaultProxy
from tools.testbed import BlobFactory, Deployment

SIZE = 5 * MIN_PART + 12345  # several parts, the last one short
BLOBS = r"/blobs/"


@pytest.fixture(scope="module")
def big(registry: Deployment) -> tuple[str, str, bytes]:
    pushed = registry.push_random("ranges/big", SIZE)
    return "ranges/big", pushed.digest, pushed.data


class Progress:
    """Records every progress call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))

    def check(self, size: int, start: int = 0) -> None:
        dones = [done for done, _ in self.calls]
        assert dones == sorted(dones), "progress went backwards"
        assert self.calls[-1] == (size, size)
        assert all(done >= start for done in dones)
        assert all(total in (None, size) for _, total in self.calls)


def test_plan_parts_cover_the_range_in_order() -> None:
    parts = plan_parts(100, SIZE, 4)
    assert parts[0][0] == 100 and parts[-1][1] == SIZE
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
    assert all(end - first <= max(MIN_PART, SIZE // 16 + 1) for first, end in parts)
    assert range_header(0, 10) == "bytes=0-9"


def test_the_last_parts_are_small_so_that_the_connections_finish_together() -> None:
    size = 1 << 30
    parts = plan_parts(0, size, 8)
    sizes = [end - first for first, end in parts]
    assert parts[0][0] == 0 and parts[-1][1] == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
    # 32 MiB parts, but the last 8 of them (one per connection) come as 8 MiB ones.
    assert sizes[:24] == [32 << 20] * 24
    assert sizes[24:] == [MIN_PART] * 32
    # Where parts are no larger than MIN_PART already, nothing changes.
    assert plan_parts(100, SIZE, 4) == [
        (first, min(first + MIN_PART, SIZE)) for first in range(100, SIZE, MIN_PART)
    ]


def test_frontier_moves_only_over_complete_parts() -> None:
    parts = [(0, 10), (10, 20), (20, 30)]
    frontier = Frontier(0, parts)
    frontier.complete(10)
    assert frontier.prefix == 0
    frontier.complete(0)
    assert frontier.prefix == 20
    frontier.complete(20)
    assert frontier.prefix == 30


def test_frontier_keeps_the_bytes_in_order_of_the_part_under_way() -> None:
    frontier = Frontier(0, [(0, 10), (10, 20), (20, 30)])
    frontier.advance(0, 4, 4)
    frontier.advance(20, 25, 5)  # further on, but not in order: not kept
    assert frontier.in_order() == 4
    frontier.advance(0, 10, 6)
    frontier.complete(0)
    assert frontier.in_order() == 10
    frontier.advance(10, 13, 3)
    assert frontier.in_order() == 13
    assert frontier.written == 18


def test_progress_reporter_is_rate_limited_and_final() -> None:
    now = [0.0]
    calls: list[tuple[int, int | None]] = []
    reporter = ProgressReporter(lambda d, t: calls.append((d, t)), clock=lambda: now[0])
    for done in range(1, 101):
        now[0] += 0.01
        reporter.update(done, 100)
    reporter.finish(100)
    assert 9 <= len(calls) <= 12  # one per 0.1 s of a 1 s download, plus the final one
    assert calls[-1] == (100, 100)


def test_parallel_parts_are_disjoint_ranges_that_cover_the_blob(
    mode: str, proxied: FaultProxy, big: tuple[str, str, bytes], tmp_path: Path
) -> None:
    repository, digest, data = big
    target = tmp_path / "blob"
    progress = Progress()
    properties = Driver(mode, proxied.url, retry=NO_WAIT).to_file(
        repository, digest, target, max_concurrency=4, progress=progress
    )
    assert properties.size == SIZE
    assert target.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["blob"]
    ranges = [r.header("Range") for r in proxied.requests]
    parts = plan_parts(0, SIZE, 4)
    # The first answer serves the first part; every other part is its own Range request.
    assert ranges[0] is None
    assert sorted(r for r in ranges[1:] if r) == sorted(range_header(*p) for p in parts[1:])
    progress.check(SIZE)


def test_parallel_ranges_from_storage_carry_no_credentials(
    mode: str,
    s3_basic_registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    tmp_path: Path,
) -> None:
    pushed = blob_factory(s3_basic_registry, SIZE)
    storage = s3_basic_registry.proxy
    assert storage is not None
    storage.clear()
    client = Driver(
        mode,
        s3_basic_registry.url,
        credential=s3_basic_registry.auth,
        retry=NO_WAIT,
        max_concurrency=3,
    )
    client.to_file(repository, pushed.digest, tmp_path / "b")
    assert hashlib.sha256((tmp_path / "b").read_bytes()).hexdigest() == pushed.digest[7:]
    fetched = storage.presigned_requests
    parts = plan_parts(0, SIZE, 3)
    assert len(fetched) == len(parts)
    assert all(r.header("Authorization") is None for r in fetched)
    assert sorted(r.header("Range") or "" for r in fetched)[1:] == sorted(
        range_header(*p) for p in parts[1:]
    )


def test_server_that_ignores_range_gets_one_stream(
    mode: str, proxied: FaultProxy, big: tuple[str, str, bytes], tmp_path: Path
) -> None:
    repository, digest, data = big
    proxied.add(Fault.ignore_range(), path=BLOBS, ranged=True)
    Driver(mode, proxied.url, retry=NO_WAIT).to_file(
        repository, digest, tmp_path / "blob", max_concurrency=4
    )
    assert (tmp_path / "blob").read_bytes() == data
    # The first answer, then the probe for the second part (answered 200, so dropped).
    assert [r.header("Range") for r in proxied.requests] == [
        None,
        range_header(*plan_parts(0, SIZE, 4)[1]),
    ]


def test_a_part_that_breaks_off_is_resumed_inside_the_part(
    mode: str, proxied: FaultProxy, big: tuple[str, str, bytes], tmp_path: Path
) -> None:
    repository, digest, data = big
    proxied.add(Fault.cut_after(3 << 20), path=BLOBS, ranged=True, times=1)
    Driver(mode, proxied.url, retry=NO_WAIT).to_file(
        repository, digest, tmp_path / "blob", max_concurrency=2
    )
    assert (tmp_path / "blob").read_bytes() == data
    ranges = [r.header("Range") or "" for r in proxied.requests]
    probe_first, probe_last = plan_parts(0, SIZE, 2)[1]
    assert f"bytes={probe_first + (3 << 20)}-{probe_last - 1}" in ranges


def test_the_hash_follows_the_part_at_the_prefix_before_it_completes(
    mode: str,
    proxied: FaultProxy,
    big: tuple[str, str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repository, digest, data = big
    first_part_end = plan_parts(0, SIZE, 2)[0][1]
    read_back = PartialFile.read_back
    ends: list[int] = []

    def recorded(partial: PartialFile, offset: int, end: int) -> Iterator[memoryview]:
        ends.append(end)
        return read_back(partial, offset, end)

    monkeypatch.setattr(PartialFile, "read_back", recorded)
    # The first part (the registry's own answer) stops half-way for a while; two whole buffers
    # of it are written by then, and the other connection fetches the parts after it.
    proxied.add(Fault.stall_after((4 << 20) + 5, 1.0), path=BLOBS, ranged=False, times=1)
    Driver(mode, proxied.url, retry=NO_WAIT).to_file(
        repository, digest, tmp_path / "blob", max_concurrency=2
    )
    assert (tmp_path / "blob").read_bytes() == data
    assert 4 << 20 in ends, f"hashed only up to {ends}, not as far as the first part had got"
    assert ends[0] < first_part_end


def test_a_part_that_keeps_failing_keeps_the_complete_prefix_for_the_next_call(
    mode: str, proxied: FaultProxy, big: tuple[str, str, bytes], tmp_path: Path
) -> None:
    repository, digest, data = big
    parts = plan_parts(0, SIZE, 2)
    # Every ranged answer comes late (the first part, from the first answer, is complete by
    # then) and breaks off before its first byte, so no part but the first completes.
    proxied.add(Fault.stall_before_headers(0.5) | Fault.cut_after(0), path=BLOBS, ranged=True)
    policy = RetryPolicy(resume_attempts=1, sleep=NO_WAIT.sleep, async_sleep=NO_WAIT.async_sleep)
    with pytest.raises(TransportError):
        Driver(mode, proxied.url, retry=policy).to_file(
            repository, digest, tmp_path / "blob", max_concurrency=2
        )
    assert not (tmp_path / "blob").exists()
    partials = list(tmp_path.glob(".sha256-*.partial"))
    assert len(partials) == 1
    kept = partials[0].read_bytes()
    # Only the complete prefix is kept: bytes of the blob, in order, ending at a part boundary.
    assert kept == data[: parts[0][1]]
    proxied.clear_faults()
    progress = Progress()
    Driver(mode, proxied.url, retry=NO_WAIT).to_file(
        repository, digest, tmp_path / "blob", progress=progress
    )
    assert (tmp_path / "blob").read_bytes() == data
    progress.check(SIZE, start=len(kept))


def test_small_blob_with_concurrency_is_one_request(
    mode: str,
    proxied: FaultProxy,
    blob_factory: BlobFactory,
    registry: Deployment,
    repository: str,
    tmp_path: Path,
) -> None:
    pushed = blob_factory(registry, 1 << 20)
    Driver(mode, proxied.url, retry=NO_WAIT, max_concurrency=8).to_file(
        repository, pushed.digest, tmp_path / "blob"
    )
    assert (tmp_path / "blob").read_bytes() == pushed.data
    assert len(proxied.requests) == 1


@pytest.mark.parametrize("api", ["iterate", "to_file"])
def test_single_stream_progress(
    mode: str, api: str, registry: Deployment, big: tuple[str, str, bytes], tmp_path: Path
) -> None:
    repository, digest, data = big
    progress = Progress()
    client = Driver(mode, registry.url, retry=NO_WAIT)
    if api == "iterate":
        assert client.iterate(repository, digest, progress=progress) == data
    else:
        client.to_file(repository, digest, tmp_path / "blob", progress=progress)
    progress.check(SIZE)
    # Bounded: far fewer calls than chunks (a local 40 MiB download takes well under 2 s).
    assert len(progress.calls) < 25


@pytest.mark.parametrize("value", [0, -1, 65, True, 2.0, "4"])
def test_bad_max_concurrency_is_refused_before_any_request(mode: str, value: object) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request may be sent")

    with pytest.raises(ValueError, match="max_concurrency"):
        Driver(mode, "http://127.0.0.1:9", handler=handler).to_file(
            "library/x", "sha256:" + "a" * 64, Path("unused"), max_concurrency=value
        )
    with pytest.raises(ValueError, match="max_concurrency"):
        if mode == "sync":
            BlobClient("http://127.0.0.1:9", max_concurrency=value)  # type: ignore[arg-type]
        else:
            AsyncBlobClient("http://127.0.0.1:9", max_concurrency=value)  # type: ignore[arg-type]


def test_progress_must_be_callable(mode: str) -> None:
    with pytest.raises(TypeError, match="progress"):
        Driver(mode, "http://127.0.0.1:9").iterate(
            "library/x", "sha256:" + "a" * 64, progress="not callable"
        )


def test_a_part_whose_signed_url_expired_gets_a_fresh_redirect(mode: str, tmp_path: Path) -> None:
    # A signed URL that expires in the middle of a download: moto's cannot be made to expire
    # mid-test, so storage is a MockTransport here, refusing as Azure Storage refuses an
    # expired SAS. The registry signs each redirect anew.
    data = bytes(range(256)) * (SIZE // 256)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    signatures = iter(range(1, 100))
    storage_log: list[tuple[str, str | None, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "127.0.0.1":
            location = f"http://storage.invalid/blob?sig={next(signatures)}"
            return httpx.Response(307, headers={"Location": location})
        assert "Authorization" not in request.headers
        signature = request.url.params["sig"]
        served = sum(1 for sig, _, status in storage_log if sig == "1" and status != 403)
        if signature == "1" and served >= 2:  # the first signature expires after two answers
            storage_log.append((signature, request.headers.get("Range"), 403))
            message = "Signature not valid in the specified time frame"
            return azure_storage_error(request, 403, "AuthenticationFailed", message, "rid-1")
        ranged = request.headers.get("Range")
        if ranged is None:
            storage_log.append((signature, ranged, 200))
            return httpx.Response(200, content=data)
        first, last = (int(n) for n in ranged.removeprefix("bytes=").split("-"))
        storage_log.append((signature, ranged, 206))
        return httpx.Response(
            206,
            content=data[first : last + 1],
            headers={"Content-Range": f"bytes {first}-{last}/{len(data)}"},
        )

    Driver(mode, "http://127.0.0.1:5000", handler=handler, retry=NO_WAIT).to_file(
        "library/x", digest, tmp_path / "blob", max_concurrency=2
    )
    assert (tmp_path / "blob").read_bytes() == data
    refused = [entry for entry in storage_log if entry[2] == 403]
    assert refused, "the expired signature was never used"
    # Every refused part was fetched again with a later signature, from the registry.
    fetched_later = {r for sig, r, status in storage_log if sig != "1" and status == 206}
    assert {r for _, r, _ in refused} <= fetched_later
    # The parts after those go to the fresh URL at once: the expired one fails once per
    # worker at most, not once per part.
    assert len(refused) <= 2


@pytest.mark.parametrize("api", ["iterate", "to_file"])
def test_a_large_single_stream_is_one_request_plus_the_redirect(
    mode: str,
    api: str,
    s3_basic_registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    tmp_path: Path,
) -> None:
    # Large enough for the direct reads: still one request, never one per chunk.
    pushed = blob_factory(s3_basic_registry, 3 * MIN_PART)
    storage = s3_basic_registry.proxy
    assert storage is not None
    storage.clear()
    sent: list[httpx.Request] = []
    client = Driver(mode, s3_basic_registry.url, credential=s3_basic_registry.auth, record=sent)
    if api == "iterate":
        assert client.iterate(repository, pushed.digest) == pushed.data
    else:
        client.to_file(repository, pushed.digest, tmp_path / "blob")
        assert (tmp_path / "blob").read_bytes() == pushed.data
    # The challenge, the registry with credentials, storage after the 307.
    assert [(r.url.host, "Range" in r.headers) for r in sent] == [
        ("127.0.0.1", False),
        ("127.0.0.1", False),
        ("127.0.0.2", False),
    ]
    assert len(storage.presigned_requests) == 1


@pytest.mark.parametrize("concurrency", [1, 3])
def test_large_downloads_over_https(
    mode: str, tls_registry: Deployment, tmp_path: Path, concurrency: int
) -> None:
    # TLS hands over at most a record (16 KiB) per read: the direct reads must still add up.
    pushed = tls_registry.push_random("ranges/tls", 2 * MIN_PART + 777)
    client = Driver(mode, tls_registry.url, verify=tls_registry.verify, retry=NO_WAIT)
    assert client.iterate("ranges/tls", pushed.digest) == pushed.data
    progress = Progress()
    client.to_file(
        "ranges/tls",
        pushed.digest,
        tmp_path / "blob",
        max_concurrency=concurrency,
        progress=progress,
    )
    assert (tmp_path / "blob").read_bytes() == pushed.data
    progress.check(len(pushed.data))


def test_one_client_downloads_again_after_a_direct_read(
    registry: Deployment, big: tuple[str, str, bytes], blob_factory: BlobFactory, repository: str
) -> None:
    # The connection of a body read past h11 is closed, never handed back to the pool.
    repository_big, digest, data = big
    small = blob_factory(registry, 1000)
    with BlobClient(registry.url) as client:
        for _ in range(2):
            with client.download_blob(repository_big, digest) as download:
                assert download.readall() == data
            assert client.get_blob_properties(repository, small.digest).size == 1000
            with client.download_blob(repository, small.digest) as download:
                assert download.readall() == small.data


def test_one_async_client_downloads_again_after_a_direct_read(
    registry: Deployment, big: tuple[str, str, bytes], blob_factory: BlobFactory, repository: str
) -> None:
    repository_big, digest, data = big
    small = blob_factory(registry, 1000)

    async def run() -> None:
        async with AsyncBlobClient(registry.url) as client:
            for _ in range(2):
                async with await client.download_blob(repository_big, digest) as download:
                    assert await download.readall() == data
                async with await client.download_blob(repository, small.digest) as download:
                    assert await download.readall() == small.data

    asyncio.run(run())

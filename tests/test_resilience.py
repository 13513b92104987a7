"""Downloads that survive the network: the real registry behind the fault-injecting proxy.

Every fault ends in one of two ways: the right bytes, or a typed BlobError with nothing at the
target path. Waits are recorded, not slept, where a test asserts them. The downloads through the
proxy are one stream (``OneStream``): under the default "auto", whether a stream that broke off
goes on as parts depends on timing, and these tests count the requests of its resumptions.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import time
from pathlib import Path

import httpx
import pytest

from acr_blob import (
    BlobError,
    DeadlineExceededError,
    DigestMismatchError,
    RegistryError,
    RetryPolicy,
    TransportError,
)
from tests.drivers import MODES, NO_WAIT, Driver
from tools.faultproxy import Fault, FaultProxy
from tools.testbed import Deployment

SIZE = 64 * 1024 * 1024
REPOSITORY = "resilience/large"
BLOBS = r"/blobs/"

# A client of one stream: max_concurrency=1 whatever the default.
OneStream = functools.partial(Driver, max_concurrency=1)


@pytest.fixture(scope="module")
def large(registry: Deployment, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    data = os.urandom(SIZE)
    return registry.push(REPOSITORY, data), data


def cut_offsets(count: int, seed: int = 20261127) -> list[int]:
    rng = random.Random(seed)
    edges = [1, 65_535, 65_536, SIZE - 1]
    return (edges + [rng.randrange(1, SIZE) for _ in range(count)])[:count]


COMBOS = [(mode, api) for mode in MODES for api in ("iterate", "to_file")]


def check_cut(
    proxy: FaultProxy,
    large: tuple[str, bytes],
    offset: int,
    mode: str,
    api: str,
    tmp_path: Path,
    reset: bool,
) -> None:
    digest, data = large
    proxy.add(Fault.cut_after(offset, reset=reset), path=BLOBS, times=1)
    client = OneStream(mode, proxy.url, retry=NO_WAIT)
    if api == "iterate":
        assert client.iterate(REPOSITORY, digest) == data
    else:
        target = tmp_path / f"blob-{offset}"
        client.to_file(REPOSITORY, digest, target)
        assert hashlib.sha256(target.read_bytes()).hexdigest() == digest[7:]
        assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    ranges = [r.header("Range") for r in proxy.requests]
    assert ranges == [None, f"bytes={offset}-"]


@pytest.mark.parametrize("case", range(20), ids=[f"cut{i}" for i in range(20)])
def test_cut_at_seeded_offsets_resumes_to_identical_bytes(
    proxied: FaultProxy, large: tuple[str, bytes], tmp_path: Path, case: int
) -> None:
    mode, api = COMBOS[case % len(COMBOS)]
    check_cut(proxied, large, cut_offsets(20)[case], mode, api, tmp_path, reset=case % 2 == 1)


@pytest.mark.slow
@pytest.mark.parametrize("case", range(200))
def test_cut_sweep(
    proxied: FaultProxy, large: tuple[str, bytes], tmp_path: Path, case: int
) -> None:
    offset = cut_offsets(200, seed=7)[case]
    mode, api = COMBOS[case % len(COMBOS)]
    check_cut(proxied, large, offset, mode, api, tmp_path, reset=case % 3 == 0)


def test_several_cuts_in_one_download(
    mode: str, proxied: FaultProxy, large: tuple[str, bytes]
) -> None:
    digest, data = large
    # Each answer (the first and two resumptions) breaks 5 MiB in.
    proxied.add(Fault.cut_after(5 * 1024 * 1024), path=BLOBS, times=3)
    assert OneStream(mode, proxied.url, retry=NO_WAIT).iterate(REPOSITORY, digest) == data
    assert [r.header("Range") for r in proxied.requests] == [
        None,
        "bytes=5242880-",
        "bytes=10485760-",
        "bytes=15728640-",
    ]


def test_server_that_ignores_range(
    mode: str, proxied: FaultProxy, large: tuple[str, bytes], tmp_path: Path
) -> None:
    digest, data = large
    proxied.add(Fault.cut_after(1_000_000), path=BLOBS, times=1)
    proxied.add(Fault.ignore_range(), path=BLOBS, ranged=True)
    client = OneStream(mode, proxied.url, retry=NO_WAIT)
    client.to_file(REPOSITORY, digest, tmp_path / "blob")
    assert (tmp_path / "blob").read_bytes() == data
    assert len(proxied.requests) == 2


def test_server_that_ignores_range_and_changed_the_content(
    mode: str, proxied: FaultProxy, large: tuple[str, bytes], tmp_path: Path
) -> None:
    digest, _ = large
    proxied.add(Fault.cut_after(1_000_000), path=BLOBS, times=1)
    # The resent start differs from what came first: no splice of two different bodies.
    proxied.add(Fault.ignore_range() | Fault.flip_byte(10), path=BLOBS, ranged=True)
    with pytest.raises(TransportError, match="resent the start"):
        OneStream(mode, proxied.url, retry=NO_WAIT).to_file(REPOSITORY, digest, tmp_path / "blob")
    assert not (tmp_path / "blob").exists()


def test_wrong_content_range_is_refused_then_resumed(
    mode: str, proxied: FaultProxy, large: tuple[str, bytes]
) -> None:
    digest, data = large
    proxied.add(Fault.cut_after(2_000_000), path=BLOBS, times=1)
    proxied.add(Fault.shift_content_range(7), path=BLOBS, ranged=True, times=1)
    assert OneStream(mode, proxied.url, retry=NO_WAIT).iterate(REPOSITORY, digest) == data
    assert [r.header("Range") for r in proxied.requests] == [None] + ["bytes=2000000-"] * 2


def test_always_wrong_content_range_gives_up_saying_how_far(
    mode: str, proxied: FaultProxy, large: tuple[str, bytes], tmp_path: Path
) -> None:
    digest, _ = large
    proxied.add(Fault.cut_after(2_000_000), path=BLOBS, times=1)
    proxied.add(Fault.shift_content_range(-3), path=BLOBS, ranged=True)
    with pytest.raises(TransportError, match=f"after 2000000 of {SIZE} bytes"):
        OneStream(mode, proxied.url, retry=NO_WAIT).to_file(REPOSITORY, digest, tmp_path / "blob")
    assert not (tmp_path / "blob").exists()


def test_flipped_byte_in_transit(
    mode: str, proxied: FaultProxy, large: tuple[str, bytes], tmp_path: Path
) -> None:
    digest, _ = large
    proxied.add(Fault.flip_byte(SIZE // 2), path=BLOBS, times=1)
    with pytest.raises(DigestMismatchError):
        OneStream(mode, proxied.url, retry=NO_WAIT).to_file(REPOSITORY, digest, tmp_path / "blob")
    assert list(tmp_path.iterdir()) == []


class Recorded:
    def __init__(self) -> None:
        self.waits: list[float] = []

        async def record(seconds: float) -> None:
            self.waits.append(seconds)

        self.policy = RetryPolicy(sleep=self.waits.append, async_sleep=record)


def test_429_with_retry_after_is_honoured(
    mode: str, proxied: FaultProxy, large: tuple[str, bytes]
) -> None:
    digest, data = large
    proxied.add(Fault.respond(429, {"Retry-After": "7"}), path=BLOBS, times=2)
    recorded = Recorded()
    assert OneStream(mode, proxied.url, retry=recorded.policy).iterate(REPOSITORY, digest) == data
    assert recorded.waits == [7.0, 7.0]
    assert len(proxied.requests) == 3


def test_503_storm_gives_up_after_the_policy_attempts(
    mode: str, proxied: FaultProxy, large: tuple[str, bytes]
) -> None:
    digest, _ = large
    proxied.add(Fault.respond(503, body=b"<html>overloaded</html>"), path=BLOBS)
    recorded = Recorded()
    policy = RetryPolicy(
        attempts=3, sleep=recorded.waits.append, async_sleep=recorded.policy.async_sleep
    )
    with pytest.raises(RegistryError) as caught:
        OneStream(mode, proxied.url, retry=policy).iterate(REPOSITORY, digest)
    assert caught.value.status_code == 503
    assert len(proxied.requests) == 3
    assert len(recorded.waits) == 2


def test_slow_drip_ends_at_the_deadline(
    mode: str, proxied: FaultProxy, large: tuple[str, bytes], tmp_path: Path
) -> None:
    digest, _ = large
    proxied.add(Fault.drip(4096, 0.05), path=BLOBS)
    client = OneStream(mode, proxied.url, retry=NO_WAIT, deadline=0.5)
    with pytest.raises(DeadlineExceededError, match="deadline passed after"):
        client.to_file(REPOSITORY, digest, tmp_path / "blob")
    assert not (tmp_path / "blob").exists()


def test_silent_server_ends_in_a_read_timeout(
    mode: str, proxied: FaultProxy, large: tuple[str, bytes]
) -> None:
    digest, _ = large
    proxied.add(Fault.stall_before_headers(5), path=BLOBS)
    client = OneStream(
        mode, proxied.url, retry=RetryPolicy.never(), timeout=httpx.Timeout(5, read=0.3)
    )
    with pytest.raises(TransportError, match="ReadTimeout"):
        client.iterate(REPOSITORY, digest)


def test_stall_once_is_retried(mode: str, proxied: FaultProxy, large: tuple[str, bytes]) -> None:
    digest, data = large
    proxied.add(Fault.stall_before_headers(2), path=BLOBS, times=1)
    client = OneStream(mode, proxied.url, retry=NO_WAIT, timeout=httpx.Timeout(5, read=0.3))
    assert client.iterate(REPOSITORY, digest) == data


STALL_AT = 8 << 20  # past the first bytes, so inside the direct socket reads of _body


@pytest.mark.parametrize("api", ["iterate", "to_file"])
def test_a_stall_inside_the_body_ends_in_a_read_timeout(
    mode: str, api: str, proxied: FaultProxy, large: tuple[str, bytes], tmp_path: Path
) -> None:
    digest, _ = large
    proxied.add(Fault.drip(STALL_AT, 30), path=BLOBS)
    client = OneStream(
        mode, proxied.url, retry=RetryPolicy.never(), timeout=httpx.Timeout(5, read=0.3)
    )
    started = time.monotonic()
    with pytest.raises(TransportError, match="ReadTimeout"):
        if api == "iterate":
            client.iterate(REPOSITORY, digest)
        else:
            client.to_file(REPOSITORY, digest, tmp_path / "blob")
    assert time.monotonic() - started < 5
    assert not (tmp_path / "blob").exists()


@pytest.mark.parametrize("api", ["iterate", "to_file"])
def test_a_stall_inside_the_body_is_resumed_where_it_stopped(
    mode: str, api: str, proxied: FaultProxy, large: tuple[str, bytes], tmp_path: Path
) -> None:
    digest, data = large
    proxied.add(Fault.drip(STALL_AT, 30), path=BLOBS, times=1)
    client = OneStream(mode, proxied.url, retry=NO_WAIT, timeout=httpx.Timeout(5, read=0.3))
    if api == "iterate":
        assert client.iterate(REPOSITORY, digest) == data
    else:
        client.to_file(REPOSITORY, digest, tmp_path / "blob")
        assert (tmp_path / "blob").read_bytes() == data
    assert [r.header("Range") for r in proxied.requests] == [None, f"bytes={STALL_AT}-"]


def test_a_restart_resumes_the_partial_file(
    mode: str, proxied: FaultProxy, large: tuple[str, bytes], tmp_path: Path
) -> None:
    digest, data = large
    target = tmp_path / "layer.bin"
    proxied.add(Fault.cut_after(9_000_000), path=BLOBS, times=1)
    with pytest.raises(TransportError):
        OneStream(mode, proxied.url, retry=RetryPolicy.never()).to_file(REPOSITORY, digest, target)
    (partial,) = tmp_path.iterdir()
    assert partial.stat().st_size == 9_000_000
    proxied.clear()
    OneStream(mode, proxied.url, retry=NO_WAIT).to_file(REPOSITORY, digest, target)
    assert target.read_bytes() == data
    assert [r.header("Range") for r in proxied.requests] == ["bytes=9000000-"]
    assert list(tmp_path.iterdir()) == [target]


def test_a_bad_partial_file_is_discarded_and_downloaded_again(
    mode: str, proxied: FaultProxy, large: tuple[str, bytes], tmp_path: Path
) -> None:
    digest, data = large
    target = tmp_path / "layer.bin"
    (tmp_path / f".sha256-{digest[7:]}.partial").write_bytes(b"not the blob's first bytes")
    OneStream(mode, proxied.url, retry=NO_WAIT).to_file(REPOSITORY, digest, target)
    assert target.read_bytes() == data
    assert [r.header("Range") for r in proxied.requests] == ["bytes=26-", None]
    assert list(tmp_path.iterdir()) == [target]


def test_a_complete_partial_file_needs_no_body(
    mode: str, proxied: FaultProxy, large: tuple[str, bytes], tmp_path: Path
) -> None:
    digest, data = large
    target = tmp_path / "layer.bin"
    (tmp_path / f".sha256-{digest[7:]}.partial").write_bytes(data)
    properties = OneStream(mode, proxied.url, retry=NO_WAIT).to_file(REPOSITORY, digest, target)
    assert (properties.digest, properties.size) == (digest, SIZE)
    assert target.read_bytes() == data
    assert [r.header("Range") for r in proxied.requests] == [f"bytes={SIZE}-"]


def test_redirected_storage_failing_mid_body_gets_a_fresh_redirect(
    mode: str, s3_registry: Deployment, tmp_path: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024)
    digest = s3_registry.push("resilience/s3", data)
    assert s3_registry.proxy is not None
    s3_registry.proxy.cut_presigned(1_500_000, times=1)
    sent: list[httpx.Request] = []
    client = Driver(mode, s3_registry.url, retry=NO_WAIT, record=sent)
    assert client.iterate("resilience/s3", digest) == data
    hosts = [(r.url.host, r.headers.get("Range")) for r in sent]
    assert hosts == [
        ("127.0.0.1", None),
        ("127.0.0.2", None),
        ("127.0.0.1", "bytes=1500000-"),  # back to the registry, not the old signed URL
        ("127.0.0.2", "bytes=1500000-"),
    ]


def test_every_fault_is_typed(
    mode: str, proxied: FaultProxy, large: tuple[str, bytes], tmp_path: Path
) -> None:
    """A fault that never clears ends in a BlobError, whatever it is."""
    digest, _ = large
    for fault in (Fault.cut_after(0), Fault.respond(502, body=b"<html/>"), Fault.flip_byte(0)):
        proxied.clear_faults()
        proxied.add(fault, path=BLOBS)
        with pytest.raises(BlobError):
            OneStream(mode, proxied.url, retry=NO_WAIT).to_file(REPOSITORY, digest, tmp_path / "b")
        assert not (tmp_path / "b").exists()

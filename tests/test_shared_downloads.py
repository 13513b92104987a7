"""Many callers, one blob: processes, threads and tasks that download the same digest into the
same folder take turns, and a dead holder's bytes are resumed by the next one.

The real registry sits behind the fault proxy, its bodies throttled so that the downloads
overlap; the proxy's request log says how many bytes the registry was asked for in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from acr_blob import (
    AsyncBlobClient,
    BlobClient,
    BlobProperties,
    DeadlineExceededError,
    RetryPolicy,
    TransportError,
)
from acr_blob._file_lock import Completion, DownloadLock
from acr_blob._verify import BodyVerifier
from acr_blob.errors import ResumeError
from acr_blob.references import parse_digest
from tests.drivers import MODES, Driver
from tools.faultproxy import Fault, FaultProxy
from tools.testbed import Deployment

SIZE = 8 * 1024 * 1024
REPOSITORY = "shared/blob"
BLOBS = r"/blobs/"
# About 2.6 MB/s: the 8 MiB body takes some 3 s, so that every racer arrives while it runs.
THROTTLE = Fault.drip(128 * 1024, 0.05)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def blob(registry: Deployment) -> tuple[str, bytes]:
    data = os.urandom(SIZE)
    return registry.push(REPOSITORY, data), data


def requested_bytes(proxy: FaultProxy, size: int) -> int:
    """The body bytes the blob GETs asked for, from their Range starts."""
    total = 0
    for request in proxy.requests:
        if request.method != "GET" or "/blobs/" not in request.path:
            continue
        header = request.header("Range")
        start = int(header.removeprefix("bytes=").partition("-")[0]) if header else 0
        total += size - start
    return total


def blob_gets(proxy: FaultProxy) -> list[str | None]:
    return [r.header("Range") for r in proxy.requests if r.method == "GET" and BLOBS in r.path]


def check_downloaded_once(proxy: FaultProxy, target: Path, data: bytes) -> None:
    """The target holds the blob, nothing else is left beside it, and the registry was asked
    for one blob's bytes."""
    assert target.read_bytes() == data
    assert list(target.parent.iterdir()) == [target]
    assert len(blob_gets(proxy)) == 1
    assert requested_bytes(proxy, SIZE) <= 1.25 * SIZE


def cli(proxy: FaultProxy, digest: str, target: Path, *extra: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "overlay"), str(ROOT / "generated"), str(ROOT)]),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "acr_blob",
            "get",
            f"{proxy.url}/{REPOSITORY}@{digest}",
            "-o",
            str(target),
            "--anonymous",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.parametrize("count", [2, 4])
def test_racing_processes_download_once(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path, count: int
) -> None:
    digest, data = blob
    proxied.add(THROTTLE, path=BLOBS)
    target = tmp_path / "layer.bin"
    processes = [cli(proxied, digest, target) for _ in range(count)]
    outcomes = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    assert [code for code, _, _ in outcomes] == [0] * count, outcomes
    check_downloaded_once(proxied, target, data)
    waiting = [err for _, _, err in outcomes if "waiting for another download of" in err]
    assert len(waiting) == count - 1, outcomes
    assert all(f"{digest} into {target}" in err for err in waiting)
    assert all(err.count("\n") <= 2 for err in waiting)  # that line, and "verified ..."


def test_racing_threads_download_once(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path
) -> None:
    digest, data = blob
    proxied.add(THROTTLE, path=BLOBS)
    target = tmp_path / "layer.bin"
    results: list[BlobProperties | BaseException] = []

    def download() -> None:
        try:
            with BlobClient(proxied.url) as client:
                results.append(client.download_blob_to_file(REPOSITORY, digest, target))
        except BaseException as error:
            results.append(error)

    threads = [threading.Thread(target=download) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 4 and all(isinstance(r, BlobProperties) for r in results), results
    assert len(set(results)) == 1  # the same properties, the waiters' from the holder
    check_downloaded_once(proxied, target, data)


def test_racing_tasks_download_once_without_blocking_the_loop(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path
) -> None:
    digest, data = blob
    proxied.add(THROTTLE, path=BLOBS)
    target = tmp_path / "layer.bin"

    async def race() -> tuple[list[BlobProperties], float]:
        longest = 0.0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal longest
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                longest, last = max(longest, now - last), now

        tick = asyncio.create_task(ticker())
        async with AsyncBlobClient(proxied.url) as client:
            racers = (client.download_blob_to_file(REPOSITORY, digest, target) for _ in range(4))
            results = await asyncio.wait_for(asyncio.gather(*racers), 60)
        done.set()
        await tick
        return list(results), longest

    results, longest = asyncio.run(race())
    assert len(set(results)) == 1
    check_downloaded_once(proxied, target, data)
    # The waiters sleep between tries of the lock; a blocking wait would stall the loop for
    # the whole download (some 3 s).
    assert longest < 0.5


@pytest.mark.parametrize("mode", MODES)
def test_the_deadline_bounds_the_wait(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path, mode: str
) -> None:
    digest, _ = blob
    lock = DownloadLock(tmp_path, parse_digest(digest))
    assert lock.try_acquire()
    try:
        began = time.monotonic()
        with pytest.raises(DeadlineExceededError, match="waiting for another download"):
            Driver(mode, proxied.url, deadline=0.5).to_file(REPOSITORY, digest, tmp_path / "b")
        assert 0.5 <= time.monotonic() - began < 5
    finally:
        lock.release()
    assert proxied.requests == []
    assert list(tmp_path.iterdir()) == []


@contextlib.contextmanager
def held_lock(folder: Path, digest: str) -> Iterator[DownloadLock]:
    lock = DownloadLock(folder, parse_digest(digest))
    assert lock.try_acquire()
    try:
        yield lock
    finally:
        lock.release()


def wait_for_waiter(proxy: FaultProxy, thread: threading.Thread) -> None:
    time.sleep(0.3)  # long enough for the waiter to open the lock file and start polling
    assert thread.is_alive() and proxy.requests == []


@pytest.mark.parametrize("replaced", [False, True], ids=["kept", "replaced"])
def test_a_waiter_trusts_the_holders_target_only_while_it_is_that_file(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path, replaced: bool
) -> None:
    digest, data = blob
    target = tmp_path / "layer.bin"
    results: list[BlobProperties] = []
    waiter = threading.Thread(
        target=lambda: results.append(
            Driver("sync", proxied.url).to_file(REPOSITORY, digest, target)
        )
    )
    with held_lock(tmp_path, digest) as lock:
        waiter.start()
        wait_for_waiter(proxied, waiter)
        target.write_bytes(data)
        made = BlobProperties(digest, SIZE, "application/octet-stream", "made")
        lock.record(Completion.of(target.name, os.stat(target), made))
        if replaced:
            # Same name, same size, other bytes: only the file's identity tells.
            (tmp_path / "other").write_bytes(bytes(SIZE))
            os.replace(tmp_path / "other", target)
    waiter.join(timeout=60)
    assert target.read_bytes() == data
    assert list(tmp_path.iterdir()) == [target]
    if replaced:
        assert len(blob_gets(proxied)) == 1 and results[0].etag != "made"
    else:
        assert proxied.requests == [] and results == [made]


def test_a_record_in_a_lock_file_still_in_place_is_not_trusted(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path
) -> None:
    """A holder that died after its record but before deleting the lock file completed
    nothing a new caller can rely on (and anyone could have written it)."""
    digest, data = blob
    target = tmp_path / "layer.bin"
    target.write_bytes(bytes(SIZE))
    lock = DownloadLock(tmp_path, parse_digest(digest))
    made = BlobProperties(digest, SIZE, None, "made")
    lock.path.write_bytes(Completion.of(target.name, os.stat(target), made).to_json())
    properties = Driver("sync", proxied.url).to_file(REPOSITORY, digest, target)
    assert properties.etag != "made" and target.read_bytes() == data
    assert list(tmp_path.iterdir()) == [target]


def test_completion_holds_only_for_the_same_file(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"abc")
    done = Completion.of("t", os.stat(target), BlobProperties("sha256:" + "0" * 64, 3))
    assert done.holds(target)
    assert Completion.from_json(done.to_json()) == done
    assert not done.holds(tmp_path / "u")  # another name
    time.sleep(0.01)
    target.write_bytes(b"abd")  # rewritten in place: same inode and size, new times
    assert not done.holds(target)
    done = Completion.of("t", os.stat(target), done.properties)
    os.chmod(target, 0o600)  # ctime moves
    assert not done.holds(target)
    done = Completion.of("t", os.stat(target), done.properties)
    target.unlink()
    target.symlink_to(tmp_path)
    assert not done.holds(target)
    assert Completion.from_json(b"{not json") is None


def test_kill_9_then_the_next_caller_resumes_the_dead_holders_bytes(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path
) -> None:
    digest, data = blob
    proxied.add(THROTTLE, path=BLOBS)
    target = tmp_path / "layer.bin"
    partial = tmp_path / f".sha256-{digest.removeprefix('sha256:')}.partial"
    holder = cli(proxied, digest, target)
    try:
        deadline = time.monotonic() + 30
        while not (partial.exists() and partial.stat().st_size >= 1_000_000):
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.05)
        # A waiter arrives while the holder runs, and takes over when it dies.
        results: list[BlobProperties] = []
        waiter = threading.Thread(
            target=lambda: results.append(
                Driver("sync", proxied.url).to_file(REPOSITORY, digest, target)
            )
        )
        waiter.start()
        time.sleep(0.3)
        holder.send_signal(signal.SIGKILL)
    finally:
        holder.wait(timeout=30)
        holder.communicate()
    kept = partial.stat().st_size if partial.exists() else 0
    waiter.join(timeout=60)
    assert results and target.read_bytes() == data
    assert list(tmp_path.iterdir()) == [target]
    ranges = blob_gets(proxied)
    assert ranges[0] is None and len(ranges) == 2
    # It went on from the dead holder's last byte on disk, not from the start.
    assert ranges[1] is not None and kept >= 1_000_000
    assert int(ranges[1].removeprefix("bytes=").rstrip("-")) == kept


def _flock_refused(fd: int, operation: int) -> None:
    raise OSError(errno.ENOLCK, "No locks available")


def _flock_granted(fd: int, operation: int) -> None:
    pass  # as Lustre or GPFS without the flock mount option do: granted to everyone


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("flock", [_flock_refused, _flock_granted], ids=["ENOLCK", "no-exclusion"])
def test_without_working_locks_each_caller_downloads_into_a_private_partial(
    proxied: FaultProxy,
    blob: tuple[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    flock: object,
) -> None:
    digest, data = blob
    monkeypatch.setattr(fcntl, "flock", flock)
    target = tmp_path / "layer.bin"
    shared = tmp_path / f".sha256-{digest.removeprefix('sha256:')}.partial"
    shared.write_bytes(data[:1_000_000])  # what a caller with working locks left
    seen: list[str] = []
    real_replace = os.replace

    def replace(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> None:
        seen.append(Path(source).name)
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    caplog.set_level(logging.WARNING, logger="acr_blob")
    Driver(mode, proxied.url).to_file(REPOSITORY, digest, target)
    assert target.read_bytes() == data
    # Not the shared partial: neither resumed (no Range) nor renamed.
    assert blob_gets(proxied) == [None]
    assert len(seen) == 1 and seen[0] != shared.name and seen[0].endswith(".partial")
    assert shared.read_bytes() == data[:1_000_000]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, shared.name])
    assert "private partial file" in caplog.text


def test_without_locks_a_failed_download_leaves_nothing(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A private partial is never resumed, so it is never kept."""
    digest, _ = blob
    monkeypatch.setattr(fcntl, "flock", _flock_refused)
    proxied.add(Fault.cut_after(1_000_000), path=BLOBS)
    driver = Driver("sync", proxied.url, retry=RetryPolicy.never())
    with pytest.raises(TransportError, match="broke off after 1000000 of"):
        driver.to_file(REPOSITORY, digest, tmp_path / "b")
    assert list(tmp_path.iterdir()) == []
    # With working locks, the same failure keeps the partial for the next call.
    monkeypatch.undo()
    with pytest.raises(TransportError, match="broke off after 1000000 of"):
        driver.to_file(REPOSITORY, digest, tmp_path / "b")
    assert [p.stat().st_size for p in tmp_path.iterdir()] == [1_000_000]


@pytest.mark.parametrize("api", ["to_file", "iterate"])
def test_an_honest_206_that_starts_early_is_used(
    mode: str, proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path, api: str
) -> None:
    digest, data = blob
    proxied.add(Fault.cut_after(2_000_000), path=BLOBS, times=1)
    proxied.add(Fault.start_range_earlier(1000), path=BLOBS, ranged=True)
    driver = Driver(mode, proxied.url)
    if api == "to_file":
        driver.to_file(REPOSITORY, digest, tmp_path / "b")
        assert (tmp_path / "b").read_bytes() == data
    else:
        assert driver.iterate(REPOSITORY, digest) == data
    # One resumption, taken at once: no retries of an answer that was usable.
    assert blob_gets(proxied) == [None, "bytes=2000000-"]


def _answer(status: int, content_range: str | None, length: int) -> httpx.Response:
    headers = {"Content-Length": str(length)}
    if content_range is not None:
        headers["Content-Range"] = content_range
    return httpx.Response(status, headers=headers)


def test_early_206_rules() -> None:
    digest = parse_digest("sha256:" + "0" * 64)
    # Starts 10 bytes early and runs to the blob's end: the head is dropped.
    verifier = BodyVerifier(digest)
    verifier.accept(_answer(206, "bytes 90-999/1000", 910), 100)
    assert verifier.feed(b"x" * 4) == b"" and verifier.feed(b"y" * 10) == b"y" * 4
    assert verifier.received == 4
    for content_range, length in [
        ("bytes 110-999/1000", 890),  # later than asked
        ("bytes 90-899/1000", 810),  # early, and stops before the end
        ("bytes 90-999/1000", 900),  # early, and fewer bytes than it says
        ("bytes 90-999/*", 910),  # early, with no size to check the end against
    ]:
        with pytest.raises(ResumeError):
            BodyVerifier(digest).accept(_answer(206, content_range, length), 100)
    # A body that ends inside the dropped head is not complete.
    verifier = BodyVerifier(digest)
    verifier.accept(_answer(206, "bytes 90-999/1000", 910), 100)
    verifier.feed(b"x" * 5)
    with pytest.raises(ResumeError):
        verifier.finish()


@pytest.mark.parametrize("planted", ["symlink", "fifo", "directory"])
def test_something_planted_at_the_lock_files_name_is_never_followed_or_waited_on(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path, planted: str
) -> None:
    digest, data = blob
    lock = DownloadLock(tmp_path, parse_digest(digest)).path
    victim = tmp_path / "elsewhere" / "victim"
    victim.parent.mkdir()
    victim.write_bytes(b"keep me")
    if planted == "symlink":
        lock.symlink_to(victim)
    elif planted == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    target = tmp_path / "layer.bin"
    Driver("sync", proxied.url).to_file(REPOSITORY, digest, target)
    assert target.read_bytes() == data
    assert victim.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [lock.name, "elsewhere", target.name]
    )


def test_a_partial_swapped_before_its_rename_never_becomes_the_target(tmp_path: Path) -> None:
    from acr_blob import BlobError
    from acr_blob._files import PartialFile

    digest = parse_digest("sha256:" + "0" * 64)
    target = tmp_path / "layer.bin"
    swapped = pytest.raises(BlobError, match="replaced by another file")
    with swapped, PartialFile(target, digest) as partial:
        partial.write(b"verified bytes")
        os.rename(partial.partial_path, tmp_path / "moved-away")
        partial.partial_path.write_bytes(b"someone else's")
        partial.commit()
    assert not target.exists()
    assert partial.partial_path.read_bytes() == b"someone else's"
    assert (tmp_path / "moved-away").read_bytes() == b"verified bytes"


def test_a_partial_swapped_during_its_rename_is_taken_away_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from acr_blob import BlobError
    from acr_blob._files import PartialFile

    digest = parse_digest("sha256:" + "0" * 64)
    target = tmp_path / "layer.bin"
    real_replace = os.replace

    def swap_then_replace(
        source: str | os.PathLike[str], destination: str | os.PathLike[str]
    ) -> None:
        os.rename(source, tmp_path / "moved-away")
        Path(source).write_bytes(b"someone else's")
        real_replace(source, destination)

    swapped = pytest.raises(BlobError, match="replaced by another file")
    with swapped, PartialFile(target, digest) as partial:
        partial.write(b"verified bytes")
        monkeypatch.setattr(os, "replace", swap_then_replace)
        partial.commit()
    assert not target.exists()

"""The partial file beside the target is never a way into someone else's file (issue 13).

Whatever sits at the partial file's name (a symbolic link, a FIFO, a directory, another user's
file, a second link to a file) is never written through: it is removed and a fresh file made,
or, where it cannot be removed, the download goes to a private partial file and leaves it be.
The partial has mode 0600; the target gets the mode ``open(path, "wb")`` would give it. A disk
without room raises DiskFullError and leaves nothing behind; ``resume=False`` neither continues
nor keeps a partial file, and one older than 7 days is started again.

Every download runs with the sync and the async client, against the real registry (through the
fault proxy where the test needs to see or bend the traffic).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

import acr_blob._files
from acr_blob import BlobError, DiskFullError, TransportError
from acr_blob._files import Appender, PartialFile
from tests.conftest import skip_or_fail
from tests.drivers import NO_WAIT, Driver
from tools.faultproxy import Fault, FaultProxy
from tools.testbed import Deployment, PushedBlob

BLOBS = r"/blobs/"
SIZE = 4 * 1024 * 1024
MIB = 1024 * 1024
# Fails the first time a body breaks off: no resumption within the call.
NO_RESUME = attrs.evolve(NO_WAIT, resume_attempts=0)
NOBODY = 65534  # the user the sticky-folder download runs as
OTHER_USER = 65533  # the owner of the file planted there


def partial_name(digest: str) -> str:
    algorithm, hex_digest = digest.split(":")
    return f".{algorithm}-{hex_digest}.partial"


def names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def get_ranges(proxy: FaultProxy) -> list[str | None]:
    return [r.header("Range") for r in proxy.requests if r.method == "GET"]


@pytest.fixture
def blob(registry: Deployment, blob_factory: Callable[..., PushedBlob]) -> PushedBlob:
    return blob_factory(registry, SIZE)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "downloads"
    path.mkdir()
    return path


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


def in_child(action: Callable[[], object], *, user: int | None = None, timeout: float = 60) -> None:
    """Run ``action`` in a forked child (as ``user``, uid and gid, when given); fail the test
    with the child's error, or when it has not finished within ``timeout`` seconds (it is
    killed). The child has the modules already imported: as another user it could not read
    the interpreter's own library under /root."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read_end)
            if user is not None:
                os.setgroups([])
                os.setgid(user)
                os.setuid(user)
            action()
            code = 0
        except BaseException as error:
            with contextlib.suppress(BaseException):
                os.write(write_end, repr(error).encode()[:4000])
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"the download did not finish within {timeout} s: it hangs")
            time.sleep(0.02)
        message = os.read(read_end, 4096).decode(errors="replace")
    finally:
        os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0, f"the child failed: {message}"


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "16m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (created), unmounted afterwards."""
    path.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        refused = "" if result.returncode == 0 else result.stderr.strip() or "refused"
    except OSError as error:
        refused = str(error)
    if refused:
        skip_or_fail(f"cannot mount a small tmpfs for the disk-full tests: {refused}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True, capture_output=True)


LARGE = 64 * MIB
LARGE_REPOSITORY = "partial-files/large"


@pytest.fixture(scope="module")
def large(registry: Deployment) -> PushedBlob:
    data = os.urandom(LARGE)
    return PushedBlob(registry.push(LARGE_REPOSITORY, data), data)


# --- What is at the partial file's name -----------------------------------------------------


def test_a_symlink_at_the_partial_name_is_not_followed(
    mode: str,
    registry: Deployment,
    repository: str,
    blob: PushedBlob,
    folder: Path,
    elsewhere: Path,
) -> None:
    victim = elsewhere / "victim"
    victim.write_bytes(b"the victim's own content")
    victim.chmod(0o644)
    (folder / partial_name(blob.digest)).symlink_to(victim)
    target = folder / "blob"
    Driver(mode, registry.url).to_file(repository, blob.digest, target)
    assert victim.read_bytes() == b"the victim's own content"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert not target.is_symlink()
    assert target.read_bytes() == blob.data
    assert names(folder) == ["blob"]  # the link is gone, and so is the lock file


def test_a_dangling_symlink_at_the_partial_name_creates_nothing_where_it_points(
    mode: str,
    registry: Deployment,
    repository: str,
    blob: PushedBlob,
    folder: Path,
    elsewhere: Path,
) -> None:
    (folder / partial_name(blob.digest)).symlink_to(elsewhere / "not-there")
    target = folder / "blob"
    Driver(mode, registry.url).to_file(repository, blob.digest, target)
    assert names(elsewhere) == []
    assert not target.is_symlink()
    assert target.read_bytes() == blob.data
    assert names(folder) == ["blob"]


def test_a_fifo_at_the_partial_name_is_replaced_without_hanging(
    mode: str, registry: Deployment, repository: str, blob: PushedBlob, folder: Path
) -> None:
    fifo = folder / partial_name(blob.digest)
    os.mkfifo(fifo)
    target = folder / "blob"
    driver = Driver(mode, registry.url)
    driver.properties(repository, blob.digest)  # every module the child needs, imported here
    in_child(lambda: driver.to_file(repository, blob.digest, target), timeout=30)
    assert stat.S_ISREG(os.lstat(target).st_mode)
    assert target.read_bytes() == blob.data
    assert names(folder) == ["blob"]


def test_an_empty_directory_at_the_partial_name_is_removed(
    mode: str, registry: Deployment, repository: str, blob: PushedBlob, folder: Path
) -> None:
    (folder / partial_name(blob.digest)).mkdir()
    target = folder / "blob"
    Driver(mode, registry.url).to_file(repository, blob.digest, target)
    assert target.read_bytes() == blob.data
    assert names(folder) == ["blob"]


def test_a_directory_that_cannot_be_removed_means_a_private_partial(
    mode: str,
    proxied: FaultProxy,
    repository: str,
    blob: PushedBlob,
    folder: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    squatter = folder / partial_name(blob.digest)
    squatter.mkdir()
    (squatter / "inside").write_bytes(b"someone's data")
    target = folder / "blob"
    caplog.set_level(logging.WARNING, logger="acr_blob")
    # A private partial is nobody's to resume: a broken download removes it.
    proxied.add(Fault.cut_after(1_000_000), path=BLOBS, times=1)
    with pytest.raises(TransportError):
        Driver(mode, proxied.url, retry=NO_RESUME).to_file(repository, blob.digest, target)
    assert names(folder) == [squatter.name]
    Driver(mode, proxied.url).to_file(repository, blob.digest, target)
    assert target.read_bytes() == blob.data
    assert names(folder) == [squatter.name, "blob"]
    assert names(squatter) == ["inside"]
    assert (squatter / "inside").read_bytes() == b"someone's data"
    assert f"cannot remove {squatter}" in caplog.text
    assert get_ranges(proxied) == [None, None]


def test_another_users_file_at_the_partial_name_is_not_written_to(
    mode: str, registry: Deployment, repository: str, blob: PushedBlob, folder: Path
) -> None:
    planted = folder / partial_name(blob.digest)
    junk = b"junk that is not the blob" * 1000
    planted.write_bytes(junk)
    os.chown(planted, NOBODY, NOBODY)
    planted.chmod(0o666)
    fd = os.open(planted, os.O_RDONLY)  # the planted file, wherever its name goes
    try:
        target = folder / "blob"
        Driver(mode, registry.url).to_file(repository, blob.digest, target)
        assert os.pread(fd, len(junk) + 1, 0) == junk
        planted_status = os.fstat(fd)
    finally:
        os.close(fd)
    assert (planted_status.st_uid, planted_status.st_size) == (NOBODY, len(junk))
    assert target.read_bytes() == blob.data
    assert os.stat(target).st_uid == os.geteuid()
    assert os.stat(target).st_ino != planted_status.st_ino
    assert names(folder) == ["blob"]  # root may remove it, and did


def test_another_users_file_in_a_sticky_folder_is_left_alone(
    mode: str, registry: Deployment, repository: str, blob: PushedBlob
) -> None:
    """As a user who may neither write nor remove the planted file (sticky, world-writable
    folder, the file another user's), the download goes to a private partial file."""
    if os.geteuid() != 0:
        skip_or_fail("needs root, to plant another user's file and become a third user")
    # pytest's tmp_path is root's alone (0700): this folder must be reachable by nobody.
    shared = Path(tempfile.mkdtemp(prefix="acr-blob-sticky-", dir="/tmp"))
    try:
        shared.chmod(0o1777)
        planted = shared / partial_name(blob.digest)
        junk = b"another user's partial file" * 100
        planted.write_bytes(junk)
        os.chown(planted, OTHER_USER, OTHER_USER)
        planted.chmod(0o666)  # even writable: its owner is not the downloading user
        before = os.stat(planted)
        target = shared / "blob"
        driver = Driver(mode, registry.url)
        driver.properties(repository, blob.digest)  # every module the child needs, imported here
        in_child(lambda: driver.to_file(repository, blob.digest, target), user=NOBODY)
        after = os.stat(planted)
        assert planted.read_bytes() == junk
        assert (after.st_ino, after.st_uid, after.st_mtime_ns) == (
            before.st_ino,
            OTHER_USER,
            before.st_mtime_ns,
        )
        assert target.read_bytes() == blob.data
        assert os.stat(target).st_uid == NOBODY
        assert names(shared) == sorted([planted.name, "blob"])
    finally:
        shutil.rmtree(shared)


def test_a_hard_link_at_the_partial_name_is_not_written_through(
    mode: str,
    registry: Deployment,
    repository: str,
    blob: PushedBlob,
    folder: Path,
    elsewhere: Path,
) -> None:
    victim = elsewhere / "victim"
    # Even bytes that look like the blob's start: a link is not our partial file.
    victim.write_bytes(blob.data[:100_000])
    os.link(victim, folder / partial_name(blob.digest))
    target = folder / "blob"
    Driver(mode, registry.url).to_file(repository, blob.digest, target)
    assert victim.read_bytes() == blob.data[:100_000]
    assert victim.stat().st_nlink == 1
    assert target.read_bytes() == blob.data
    assert target.stat().st_ino != victim.stat().st_ino
    assert names(folder) == ["blob"]


def test_the_direct_io_appender_reopens_the_partial_file_not_its_name(
    mode: str,
    registry: Deployment,
    large: PushedBlob,
    folder: Path,
    elsewhere: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the appender for a large body is set up, a link to a victim is at the partial's
    name (the partial itself moved aside): the O_DIRECT descriptor must be the file's own."""
    victim = elsewhere / "victim"
    victim.write_bytes(b"the victim's own content")
    partial = folder / partial_name(large.digest)
    aside = folder / "moved-aside"
    original = PartialFile.appending
    direct = []

    def swapped(self: PartialFile, size: int | None) -> Appender:
        partial.rename(aside)
        partial.symlink_to(victim)
        try:
            appender = original(self, size)
        finally:
            partial.unlink()
            aside.rename(partial)
        direct.append(appender.lend is not None)
        return appender

    monkeypatch.setattr(PartialFile, "appending", swapped)
    target = folder / "blob"
    Driver(mode, registry.url).to_file(LARGE_REPOSITORY, large.digest, target)
    if direct == [False]:
        skip_or_fail(f"{folder}'s filesystem refuses O_DIRECT")
    assert direct == [True]
    assert victim.read_bytes() == b"the victim's own content"
    assert target.read_bytes() == large.data
    assert names(folder) == ["blob"]


# --- Modes ----------------------------------------------------------------------------------


class Watcher:
    """Notes the partial file's modes and sizes, and whether the lock file exists, while a
    download runs."""

    def __init__(self, folder: Path, digest: str) -> None:
        self.partial = folder / partial_name(digest)
        self.lock = self.partial.with_suffix(".lock")
        self.seen: set[tuple[int, int]] = set()  # (st_mode, st_size)
        self.saw_lock = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                status = os.lstat(self.partial)
                self.seen.add((status.st_mode, status.st_size))
            self.saw_lock = self.saw_lock or self.lock.exists()
            time.sleep(0.005)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("mask", [0o022, 0o002], ids=["umask-022", "umask-002"])
def test_the_partial_is_0600_and_the_target_gets_the_umasks_mode(
    mode: str, proxied: FaultProxy, repository: str, blob: PushedBlob, folder: Path, mask: int
) -> None:
    proxied.add(Fault.drip(256 * 1024, 0.05), path=BLOBS)  # about 0.8 s for the body
    target = folder / "blob"
    with umask(mask), Watcher(folder, blob.digest) as watcher:
        Driver(mode, proxied.url).to_file(repository, blob.digest, target)
    # 0600 while the bytes arrive; the whole, verified blob takes its final mode just before
    # its rename (so that the fsync makes the mode durable with the data).
    arriving = {st_mode for st_mode, size in watcher.seen if size < SIZE}
    assert arriving == {stat.S_IFREG | 0o600}
    assert len({size for _, size in watcher.seen}) > 3  # it was watched throughout
    assert {st_mode for st_mode, size in watcher.seen if size == SIZE} <= {
        stat.S_IFREG | 0o600,
        stat.S_IFREG | (0o666 & ~mask),
    }
    assert watcher.saw_lock
    assert stat.S_IMODE(os.lstat(target).st_mode) == 0o666 & ~mask
    assert target.read_bytes() == blob.data
    assert names(folder) == ["blob"]


def test_a_partial_with_a_wider_mode_is_made_0600_and_resumed(
    mode: str, proxied: FaultProxy, repository: str, blob: PushedBlob, folder: Path
) -> None:
    partial = folder / partial_name(blob.digest)
    partial.write_bytes(blob.data[:1_000_000])
    partial.chmod(0o644)  # as an older release left it
    proxied.add(Fault.drip(256 * 1024, 0.05), path=BLOBS)
    target = folder / "blob"
    with umask(0o022), Watcher(folder, blob.digest) as watcher:
        Driver(mode, proxied.url).to_file(repository, blob.digest, target)
    arriving = {st_mode for st_mode, size in watcher.seen if 1_000_000 < size < SIZE}
    assert arriving == {stat.S_IFREG | 0o600}
    assert get_ranges(proxied) == ["bytes=1000000-"]
    assert target.read_bytes() == blob.data
    assert names(folder) == ["blob"]


def test_a_replaced_target_keeps_its_mode(
    mode: str, registry: Deployment, repository: str, blob: PushedBlob, folder: Path
) -> None:
    target = folder / "blob"
    target.write_bytes(b"an older download")
    target.chmod(0o640)
    with umask(0o022):
        Driver(mode, registry.url).to_file(repository, blob.digest, target)
    assert stat.S_IMODE(os.lstat(target).st_mode) == 0o640
    assert target.read_bytes() == blob.data


def test_a_target_that_is_a_symlink_is_replaced_not_followed(
    mode: str,
    registry: Deployment,
    repository: str,
    blob: PushedBlob,
    folder: Path,
    elsewhere: Path,
) -> None:
    destination = elsewhere / "destination"
    destination.write_bytes(b"the link's destination")
    destination.chmod(0o600)
    target = folder / "blob"
    target.symlink_to(destination)
    with umask(0o022):
        Driver(mode, registry.url).to_file(repository, blob.digest, target)
    status = os.lstat(target)
    assert stat.S_ISREG(status.st_mode)
    # A link's destination's mode is not the target's to keep.
    assert stat.S_IMODE(status.st_mode) == 0o644
    assert target.read_bytes() == blob.data
    assert destination.read_bytes() == b"the link's destination"
    assert stat.S_IMODE(destination.stat().st_mode) == 0o600
    assert names(folder) == ["blob"]


# --- A full disk ----------------------------------------------------------------------------


def check_disk_full(
    error: DiskFullError, target: Path, size: int, *, free_known: bool = True
) -> None:
    assert isinstance(error, OSError)
    assert isinstance(error, BlobError)
    assert error.errno == errno.ENOSPC
    assert error.path == str(target)
    assert error.needed == size  # nothing was written, or what was is gone again
    if not free_known:  # statfs said nothing
        assert error.free is None
        assert str(error) == (
            f"no room for {target}: the blob needs {size} more bytes, an unknown number of bytes"
            " free"
        )
        return
    assert error.free is not None
    assert error.free < error.needed
    assert error.free <= 16 * MIB
    assert str(error) == (
        f"no room for {target}: the blob needs {size} more bytes, {error.free} bytes free"
    )


# Which of the two checks before the body is left to find the shortage: both, the free-space
# check alone (no fallocate), the reservation alone (statfs says nothing).
PRECHECKS = ["both", "free-space", "fallocate"]


@pytest.mark.parametrize("precheck", PRECHECKS)
def test_a_disk_without_room_is_refused_before_the_body(
    mode: str,
    proxied: FaultProxy,
    large: PushedBlob,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    precheck: str,
) -> None:
    if precheck == "free-space":
        monkeypatch.setattr(acr_blob._files, "_fallocate", None)
    elif precheck == "fallocate":
        monkeypatch.setattr(acr_blob._files, "_free_bytes", lambda fd: None)
    # 64 KiB every 50 ms: 13 s to fill the 16 MiB, 51 s for the whole body.
    proxied.add(Fault.drip(64 * 1024, 0.05), path=BLOBS)
    with small_tmpfs(tmp_path / "small") as small:
        target = small / "blob"
        started = time.monotonic()
        with pytest.raises(DiskFullError) as caught:
            Driver(mode, proxied.url, retry=NO_WAIT).to_file(LARGE_REPOSITORY, large.digest, target)
        elapsed = time.monotonic() - started
        check_disk_full(caught.value, target, LARGE, free_known=precheck != "fallocate")
        assert names(small) == []
    assert elapsed < 5, f"took {elapsed:.1f} s: the body was read"
    assert len(get_ranges(proxied)) == 1  # and not tried again


@pytest.mark.parametrize("size", [LARGE, 24 * MIB], ids=["direct-io", "buffered"])
def test_a_disk_that_fills_during_the_body_is_disk_full(
    mode: str,
    registry: Deployment,
    large: PushedBlob,
    blob_factory: Callable[..., PushedBlob],
    repository: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
) -> None:
    # Neither check before the body sees the shortage: the writes themselves hit ENOSPC.
    monkeypatch.setattr(acr_blob._files, "_fallocate", None)
    monkeypatch.setattr(acr_blob._files, "_free_bytes", lambda fd: None)
    if size == LARGE:
        repository, digest = LARGE_REPOSITORY, large.digest
    else:
        digest = blob_factory(registry, size).digest
    with small_tmpfs(tmp_path / "small") as small:
        target = small / "blob"
        with pytest.raises(DiskFullError) as caught:
            Driver(mode, registry.url, retry=NO_WAIT).to_file(repository, digest, target)
        check_disk_full(caught.value, target, size)
        assert isinstance(caught.value.__cause__, OSError)
        assert caught.value.__cause__.errno == errno.ENOSPC
        assert names(small) == []
        assert os.statvfs(small).f_bfree * os.statvfs(small).f_frsize == 16 * MIB


# --- resume=False and old partial files -----------------------------------------------------


@pytest.mark.parametrize(
    ("client_resume", "call_resume", "kept"),
    [
        (True, None, True),
        (False, None, False),
        (True, False, False),
        (False, True, True),
    ],
    ids=["default", "client-off", "call-off", "call-on-over-client-off"],
)
def test_a_broken_download_keeps_a_partial_only_with_resume(
    mode: str,
    proxied: FaultProxy,
    repository: str,
    blob: PushedBlob,
    folder: Path,
    client_resume: bool,
    call_resume: bool | None,
    kept: bool,
) -> None:
    proxied.add(Fault.cut_after(1_000_000), path=BLOBS)
    target = folder / "blob"
    options = {} if call_resume is None else {"resume": call_resume}
    driver = Driver(mode, proxied.url, retry=NO_RESUME, resume=client_resume)
    with pytest.raises(TransportError):
        driver.to_file(repository, blob.digest, target, **options)
    partial = folder / partial_name(blob.digest)
    if kept:
        assert names(folder) == [partial.name]
        assert partial.read_bytes() == blob.data[:1_000_000]
    else:
        assert names(folder) == []


@pytest.mark.parametrize("where", ["client", "call"])
def test_resume_false_does_not_continue_a_partial(
    mode: str,
    proxied: FaultProxy,
    repository: str,
    blob: PushedBlob,
    folder: Path,
    where: str,
) -> None:
    (folder / partial_name(blob.digest)).write_bytes(blob.data[:1_000_000])
    target = folder / "blob"
    if where == "client":
        Driver(mode, proxied.url, resume=False).to_file(repository, blob.digest, target)
    else:
        Driver(mode, proxied.url).to_file(repository, blob.digest, target, resume=False)
    assert get_ranges(proxied) == [None]
    assert target.read_bytes() == blob.data
    assert names(folder) == ["blob"]


def test_a_partial_older_than_7_days_is_started_again(
    mode: str,
    proxied: FaultProxy,
    repository: str,
    blob: PushedBlob,
    folder: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    partial = folder / partial_name(blob.digest)
    partial.write_bytes(blob.data[:1_000_000])
    eight_days_ago = time.time() - 8 * 24 * 3600
    os.utime(partial, (eight_days_ago, eight_days_ago))
    caplog.set_level(logging.INFO, logger="acr_blob")
    target = folder / "blob"
    Driver(mode, proxied.url).to_file(repository, blob.digest, target)
    assert get_ranges(proxied) == [None]
    assert f"{partial} is older than 7 days; starting again" in caplog.text
    assert "resuming" not in caplog.text
    assert target.read_bytes() == blob.data
    assert names(folder) == ["blob"]


@pytest.mark.parametrize("days", [0, 6])
def test_a_partial_younger_than_7_days_is_resumed(
    mode: str,
    proxied: FaultProxy,
    repository: str,
    blob: PushedBlob,
    folder: Path,
    caplog: pytest.LogCaptureFixture,
    days: int,
) -> None:
    partial = folder / partial_name(blob.digest)
    partial.write_bytes(blob.data[:1_000_000])
    then = time.time() - days * 24 * 3600
    os.utime(partial, (then, then))
    caplog.set_level(logging.INFO, logger="acr_blob")
    target = folder / "blob"
    Driver(mode, proxied.url).to_file(repository, blob.digest, target)
    assert get_ranges(proxied) == ["bytes=1000000-"]
    assert f"resuming {blob.digest} at byte 1000000 of {SIZE}" in caplog.messages
    assert "starting again" not in caplog.text
    assert target.read_bytes() == blob.data
    assert names(folder) == ["blob"]

"""One download per digest and folder, whoever asks: threads, async tasks and processes.

The lock is an ``flock`` on ``.<algorithm>-<hex>.lock`` beside the target. ``flock`` excludes
every other open file description, so two threads of one process exclude each other as two
processes do, and the kernel drops the lock of a holder that dies: there is no stale lock to
break. The file exists only while someone holds it: a holder deletes it before letting go, and
whoever then gets the lock on the deleted file sees that it is no longer the one at the path and
tries again (the usual way to remove lock files without letting two holders in).

Before it lets go, a holder that completed the download writes into the lock file what it put
at the target: the target's name, device, inode, size and times, and the blob's properties. A
waiter that was already blocked on that file reads it and returns the same properties if the
target is still that very file (an ``lstat`` that matches in device, inode, size, mtime and
ctime): replacing or rewriting the target in the meantime changes at least one of them.

Where locks do not work (``ENOLCK`` or ``EOPNOTSUPP`` from some NFS, Lustre and GPFS mounts, or
a lock that a second open of the same file is also granted), or something other than a regular
file is at the lock file's name (a link, a FIFO, a directory), :class:`LocksUnavailable` is
raised and the caller must not share a partial file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
import time
from pathlib import Path

import attrs

from ._files import PartialFile
from ._fs import is_at
from .errors import DeadlineExceededError
from .models import BlobProperties
from .references import Digest

logger = logging.getLogger("acr_blob")
# Its own logger, so that the CLI can show just this line without a log set up.
wait_logger = logging.getLogger("acr_blob.wait")

# errnos of filesystems that have no working flock.
_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})
_RECORD_LIMIT = 64 * 1024
# Between tries of a held lock: soon at first (a holder that is about to finish), then seldom.
_FIRST_POLL = 0.02
_LAST_POLL = 0.5


class LocksUnavailable(OSError):
    """This folder's filesystem cannot lock files, or its locks do not exclude."""


@attrs.frozen
class Completion:
    """What a finished download put at its target, as its holder left it in the lock file."""

    name: str
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    properties: BlobProperties

    @classmethod
    def of(cls, name: str, status: os.stat_result, properties: BlobProperties) -> Completion:
        """The completion of a download that put the file with ``status`` at target ``name``."""
        return cls(
            name,
            status.st_dev,
            status.st_ino,
            status.st_size,
            status.st_mtime_ns,
            status.st_ctime_ns,
            properties,
        )

    def holds(self, target: Path) -> bool:
        """Whether ``target`` is still the very file this download completed."""
        if target.name != self.name:
            return False
        try:
            status = os.stat(target, follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISREG(status.st_mode) and (
            status.st_dev,
            status.st_ino,
            status.st_size,
            status.st_mtime_ns,
            status.st_ctime_ns,
        ) == (self.device, self.inode, self.size, self.mtime_ns, self.ctime_ns)

    def to_json(self) -> bytes:
        return json.dumps(attrs.asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Completion | None:
        try:
            fields = json.loads(data)
            properties = BlobProperties(**fields.pop("properties"))
            return cls(properties=properties, **fields)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


class DownloadLock:
    """The lock for downloading ``digest`` into ``folder``; :meth:`try_acquire` until held."""

    def __init__(self, folder: Path, digest: Digest) -> None:
        self.path = folder / f".{digest.algorithm}-{digest.hex}.lock"
        self._fd: int | None = None  # held
        self._waiting: int | None = None  # open, not yet held
        self._completion: Completion | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def completion(self) -> Completion | None:
        """What the holder before this one completed, when it completed while this one waited."""
        return self._completion

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; ``False`` if somebody does.

        Between tries the lock file stays open, so that the holder's record reaches this
        waiter even after the holder deleted the file. Raises :class:`LocksUnavailable` where
        the filesystem's locks cannot be trusted.
        """
        assert self._fd is None, "already held"
        while True:
            if self._waiting is None:
                self._waiting = self._open()
            fd = self._waiting
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            except OSError as error:
                self._waiting = None
                if error.errno in _NO_LOCKS:
                    self._delete_and_close(fd)
                    raise LocksUnavailable(error.errno, f"cannot lock {self.path}") from error
                os.close(fd)
                raise
            self._waiting = None
            status = os.fstat(fd)
            if is_at(self.path, status):
                self._check_excludes(fd)
                self._fd = fd
                return True
            # A holder finished and deleted this file before we got it: its record, if it
            # wrote one, tells whether there is anything left to do.
            record = self._read_record(fd, status)
            os.close(fd)
            if record is not None:
                self._completion = record
            # Try again with the file now at the path (or a new one).

    def record(self, completion: Completion) -> None:
        """Leave ``completion`` for those waiting on this lock (call before :meth:`release`)."""
        assert self._fd is not None
        data = completion.to_json()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError:
            pass  # opened read-only (another user's lock file): the waiters download themselves

    def release(self) -> None:
        """Delete the lock file, then let go: a waiter on it then looks at the path again.

        A caller that gave up waiting just closes the file."""
        fd, self._fd = self._fd, None
        if fd is not None:
            self._delete_and_close(fd)
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            os.close(waiting)

    def _open(self) -> int:
        flags = os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(self.path, os.O_RDWR | flags, 0o644)
        except PermissionError:
            # Another user's lock file in a shared folder: a read-only descriptor locks too.
            fd = os.open(self.path, os.O_RDONLY | flags)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                # Planted, most likely: never follow it, and never wait on it.
                raise LocksUnavailable(error.errno, f"{self.path} is no lock file") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LocksUnavailable(errno.EINVAL, f"{self.path} is no lock file")
        return fd

    @staticmethod
    def _read_record(fd: int, status: os.stat_result) -> Completion | None:
        # Only a record from this user counts: anyone may create a lock file in a shared folder.
        if status.st_uid != os.geteuid():
            return None
        return Completion.from_json(os.pread(fd, _RECORD_LIMIT, 0))

    def _check_excludes(self, fd: int) -> None:
        """Raise :class:`LocksUnavailable` when a second open of the file is granted the lock too.

        On Lustre, GPFS and some NFS mounts ``flock`` succeeds without excluding anyone. The
        second descriptor is opened through this one, not by path.
        """
        try:
            probe = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # no /proc: trust the lock, as every other tool does
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: excluded, as it should be
            return
        finally:
            os.close(probe)
        self._delete_and_close(fd)
        raise LocksUnavailable(errno.ENOLCK, f"locks on {self.path} do not exclude")

    def _delete_and_close(self, fd: int) -> None:
        """Delete the lock file if ``fd`` is still the one at the path, then close ``fd``."""
        try:
            if is_at(self.path, os.fstat(fd)):
                self.path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(fd)


class LockWait:
    """One caller's wait for a :class:`DownloadLock`: the tries, their spacing and the deadline.

    The sync client sleeps, the async one awaits, between the tries that :meth:`next_delay`
    makes; the wait lasts while the holder lives (its death releases the lock), or until
    ``deadline`` (a ``time.monotonic()`` value).
    """

    def __init__(self, lock: DownloadLock, deadline: float | None, what: str) -> None:
        self._lock = lock
        self._deadline = deadline
        self._what = what
        self._delay = _FIRST_POLL
        self._announced = False

    def next_delay(self) -> float | None:
        """Try the lock once: ``None`` when the wait is over, else the seconds to wait first.

        The wait is over when the lock is held, or when locks do not work here (the lock is
        then not held, and the download must not share its partial file).
        """
        try:
            if self._lock.try_acquire():
                return None
        except LocksUnavailable as error:
            logger.warning("%s; downloading %s into a private partial file", error, self._what)
            return None
        if not self._announced:
            self._announced = True
            wait_logger.info("waiting for another download of %s", self._what)
        now = time.monotonic()
        if self._deadline is not None and now >= self._deadline:
            raise DeadlineExceededError(
                f"deadline passed while waiting for another download of {self._what}"
            )
        delay = self._delay
        self._delay = min(self._delay * 2, _LAST_POLL)
        if self._deadline is not None:
            delay = min(delay, self._deadline - now)
        return delay


class DownloadTurn:
    """One call's turn at downloading ``digest`` into ``target``, the same for both clients.

    Wait first (:meth:`next_delay`, slept or awaited by the client), then take either the result
    of a download that completed the target meanwhile (:meth:`completed_meanwhile`) or the
    partial file to download into (:meth:`partial`), whose result :meth:`record` leaves for
    whoever waits next. A context manager that lets go of the lock.
    """

    def __init__(self, target: Path, digest: Digest, deadline: float | None) -> None:
        self._target = target
        self._digest = digest
        self._lock = DownloadLock(target.parent, digest)
        self._wait = LockWait(self._lock, deadline, f"{digest} into {target}")

    def next_delay(self) -> float | None:
        """See :meth:`LockWait.next_delay`."""
        return self._wait.next_delay()

    def completed_meanwhile(self) -> BlobProperties | None:
        """The properties of the download that put the target there while this call waited,
        when the target is still that file."""
        done = self._lock.completion
        if done is None or not done.holds(self._target):
            return None
        logger.info("%s was downloaded into %s meanwhile", self._digest, self._target)
        return done.properties

    def partial(self, resume: bool, *, read_only: bool = False) -> PartialFile:
        """The partial file: the shared one when the lock is held, else a private one
        (``read_only``: the target gets no write permission)."""
        return PartialFile(
            self._target, self._digest, shared=self._lock.held, resume=resume, read_only=read_only
        )

    def record(self, partial: PartialFile, properties: BlobProperties) -> None:
        """Leave the committed ``partial``'s result for the callers waiting on this lock."""
        if self._lock.held and partial.status is not None:
            self._lock.record(Completion.of(self._target.name, partial.status, properties))

    def __enter__(self) -> DownloadTurn:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

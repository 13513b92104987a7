"""Writing a download to a path so that the path only ever holds a complete, verified blob.

The bytes go first to a partial file beside the target, named after the digest, so that a
later download of the same digest into the same folder continues where this one stopped (the
way containerd's content store resumes an ingest); it becomes the target only once verified.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import attrs

from ._direct_io import BlockFile, PartBuffer, open_block_file, open_direct_appender
from ._fast_read import Lend
from ._fs import is_at, is_own_file, same_file
from ._part_map import PartMap, Span
from ._verify import BodyVerifier
from .errors import BlobError, DiskFullError, TransportError
from .references import Digest

logger = logging.getLogger("acr_blob")

_REPLAY_CHUNK = 1024 * 1024
# Written data is handed to the disk in the background every this many bytes, so that the
# fsync before the rename finds little left to write.
_SYNC_EVERY = 64 << 20
_FALLOC_FL_KEEP_SIZE = 1
# From this many bytes to go, appends bypass the page cache (see _direct_io); a smaller blob
# is cheap to cache and likely to be read soon.
_DIRECT_MIN_SIZE = 32 << 20
_READ_BACK = 1 << 20  # per read, where the file cannot bypass the page cache
# Failures after which the partial data is still good and worth keeping for the next call
# (asyncio's CancelledError too: see _resumable).
_RESUMABLE = (TransportError, KeyboardInterrupt)
# A partial file untouched for this long is started again rather than resumed.
PARTIAL_MAX_AGE = 7 * 24 * 3600
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
# What opening a name that holds no regular file of ours fails with.
_NOT_A_FILE = frozenset({errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EACCES, errno.EPERM})


@attrs.frozen
class Appender:
    """How to append to a partial file: ``write(data)``, ``lend`` when the bytes can be
    received straight into the appender's own buffers (see :mod:`._fast_read`), and
    ``may_wait(count)``: whether writing ``count`` bytes may wait for the disk (the async client
    then writes from a worker thread)."""

    write: Callable[[bytes | memoryview], None]
    lend: Lend | None
    may_wait: Callable[[int], bool]
    close: Callable[[], None]

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_target(path: str | os.PathLike[str]) -> Path:
    """``path`` as a target for a download: a file's path, not a directory's."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a directory; give a file path")
    return target


class PartialFile:
    """The partial file for ``digest`` beside ``path``, for the download that holds its lock.

    ``shared`` (the caller holds the :class:`~._file_lock.DownloadLock`): the partial is
    ``.<algorithm>-<hex>.partial``, which a later call resumes from. Otherwise it is a private,
    uniquely named one that nobody resumes. Either way it is opened without following links and
    only used when it is a regular file of this user's with no other link to it: anything else
    at its name (a planted symbolic link, a FIFO, a directory, another user's file) is removed
    and a fresh file made, or, where it cannot be removed, the download goes to a private
    partial instead. It has mode 0600 until it becomes the target (read-only with
    ``read_only``, as cache entries are).

    Leaving the ``with`` block without :meth:`commit` keeps a shared partial when ``resume`` is
    on and the failure was one a later call can resume from (a broken connection, a deadline,
    Ctrl-C), and deletes it otherwise (a refused request, a digest mismatch, a full disk).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        digest: Digest,
        *,
        shared: bool = True,
        resume: bool = True,
        read_only: bool = False,
    ) -> None:
        self.path = check_target(path)
        self._resume = resume
        self._read_only = read_only
        fd = None
        if shared:
            self.partial_path = self.path.with_name(f".{digest.algorithm}-{digest.hex}.partial")
            fd = _open_own_file(self.partial_path)
        self._shared = fd is not None
        self._map = PartMap(self.partial_path, digest) if self._shared else None
        # Complete spans past the in-order prefix, from the part map (see replay).
        self.done: list[Span] = []
        self._prefix = 0
        if fd is None:
            fd, name = tempfile.mkstemp(
                prefix=f".{digest.algorithm}-{digest.hex}.", suffix=".partial", dir=self.path.parent
            )
            self.partial_path = Path(name)
        self.file: BinaryIO = os.fdopen(fd, "r+b")
        self._committed = False
        self.status: os.stat_result | None = None  # the target's, once committed
        self._size: int | None = None
        self._unsynced = 0
        self._syncer: threading.Thread | None = None
        self._sync_lock = threading.Lock()  # parallel parts write from several threads
        self._blocks: BlockFile | None = None  # for parallel parts, once they write
        self._blocks_opened = False
        if self._shared and not resume:
            self.restart()
        elif self._shared and _age(fd) > PARTIAL_MAX_AGE and os.fstat(fd).st_size:
            logger.info("%s is older than 7 days; starting again", self.partial_path)
            self.restart()

    def replay(self, verifier: BodyVerifier) -> int:
        """Feed the bytes already here to ``verifier``; return where the download continues.

        A partial file that parallel ranges left with holes has a part map: only its in-order
        prefix is fed, and :attr:`done` lists the complete spans beyond it. A map that cannot
        be used means the holes cannot be told from data: the partial starts again.
        """
        self.done = []
        end = None  # without a map: all there is, in order
        if self._map is not None and self._map.exists():
            spans = self._map.load(os.fstat(self.file.fileno()).st_size)
            if spans is None:
                logger.info("the part map of %s is unusable; starting again", self.partial_path)
                self.restart()
                return 0
            end = spans.pop(0)[1] if spans and spans[0][0] == 0 else 0
            self.done = spans
        self.file.seek(0)
        while chunk := self.file.read(
            _REPLAY_CHUNK if end is None else min(_REPLAY_CHUNK, end - verifier.received)
        ):
            verifier.feed(chunk)
        self._prefix = verifier.received
        return verifier.received

    def restart(self) -> None:
        """Throw away the partial data (and its part map) and start from byte 0."""
        self.forget_parts(0)

    def forget_parts(self, keep: int | None = None) -> None:
        """Keep the first ``keep`` bytes (default: the in-order prefix) and drop the part map:
        the download goes on as one stream from there."""
        keep = self._prefix if keep is None else keep
        self.truncate(keep)
        self._prefix = min(self._prefix, keep)
        self.done = []
        if self._map is not None:
            self._map.remove()

    @property
    def keeps_parts(self) -> bool:
        """Whether :meth:`save_parts` records anything (a shared partial, resume on)."""
        return self._map is not None and self._resume

    def save_parts(self, size: int, done: list[Span]) -> None:
        """Record ``done`` as the complete spans of the ``size``-byte blob, for the next call
        (once they are on disk); nothing for a private partial or with resume off."""
        if not self.keeps_parts:
            return
        assert self._map is not None
        self.file.flush()
        self._map.save(self.file.fileno(), size, done)

    def ensure_space(self, size: int | None) -> None:
        """Raise :class:`~acr_blob.errors.DiskFullError` now, before any byte of the body is
        read, when the disk has less room than the ``size``-byte blob still needs here."""
        self._size = size
        if size is None:
            return
        needed = self._still_needed()
        free = _free_bytes(self.file.fileno())
        if free is not None and free < needed:
            raise DiskFullError(self.path, needed, free)

    def preallocate(self, size: int | None) -> None:
        """Reserve the disk blocks for ``size`` bytes without changing the file's length.

        On ext4 and xfs, writing into reserved blocks costs a fraction of allocating them as
        the data arrives. The length stays what was written, so a partial file keeps meaning
        "these bytes arrived". Where the call is missing or refused, nothing is reserved; a
        disk without room for them raises :class:`~acr_blob.errors.DiskFullError`.
        """
        if not size or _fallocate is None:
            return
        refused = _fallocate(self.file.fileno(), _FALLOC_FL_KEEP_SIZE, 0, size) != 0
        if refused and ctypes.get_errno() in _DISK_FULL:
            raise DiskFullError(self.path, self._still_needed(), _free_bytes(self.file.fileno()))

    def _still_needed(self) -> int:
        """The bytes the blob still needs on disk: those to write, less the blocks reserved."""
        if self._size is None:
            return 0
        # Allocated blocks: the bytes written and those reserved (a file with holes has fewer).
        return max(0, self._size - os.fstat(self.file.fileno()).st_blocks * 512)

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` at the current position."""
        self.file.write(data)
        self._written(len(data))

    def appending(self, size: int | None) -> Appender:
        """Where to append a stream of ``size`` bytes in all (``None``: unknown).

        A large stream's bytes bypass the page cache and are written by a thread
        (:mod:`._direct_io`); closing the appender (or leaving its ``with`` block) writes what is
        still buffered, even on an error, so that what arrived can be resumed from. One stream
        goes on from the in-order prefix: spans a part map listed beyond it are dropped with the
        map.
        """
        if self.done:
            self.forget_parts()
        offset = self.file.tell()
        direct = None
        if size is not None and size - offset >= _DIRECT_MIN_SIZE:
            self.file.flush()
            direct = open_direct_appender(self.file.fileno(), offset)
        if direct is None:
            return Appender(self.write, None, lambda count: True, lambda: None)

        def close() -> None:
            self.file.seek(direct.close())

        return Appender(direct.write, direct.lend, direct.may_wait, close)

    def write_at(self, pieces: Sequence[bytes | memoryview], offset: int) -> int:
        """Write ``pieces`` one after the other from ``offset`` (parallel ranges; safe from
        several threads); return the count written."""
        fd, total = self.file.fileno(), sum(len(piece) for piece in pieces)
        written = os.pwritev(fd, pieces, offset)
        if written < total:  # rare (a signal, a full disk's edge): write the rest plainly
            rest = memoryview(b"".join(pieces))[written:]
            while rest:
                count = os.pwrite(fd, rest, offset + written)
                rest, written = rest[count:], written + count
        self._written(total)
        return total

    def write_part(self, buffer: PartBuffer) -> int:
        """Write what ``buffer`` holds where it belongs (parallel ranges; safe from several
        threads), whole blocks bypassing the page cache where the filesystem allows; return
        the count written."""
        data, blocks = buffer.pending, self._block_file()
        if blocks is None:
            return self.write_at([data], buffer.offset)
        blocks.write_at(data, buffer.offset)
        self._written(len(data))
        return len(data)

    def read_back(self, offset: int, end: int) -> Iterator[bytes | memoryview]:
        """Bytes ``offset`` to ``end - 1`` of the file, read ahead (the hash of parallel
        parts); each view is valid until the next one is taken."""
        blocks = self._block_file()
        if blocks is not None:
            try:
                yield from blocks.read_back(offset, end)
            except EOFError as error:
                raise TransportError(str(error)) from None
            return
        fd = self.file.fileno()
        while offset < end:
            chunk = os.pread(fd, min(_READ_BACK, end - offset), offset)
            if not chunk:
                raise TransportError(f"the file ended at byte {offset}")
            offset += len(chunk)
            yield chunk

    def _block_file(self) -> BlockFile | None:
        with self._sync_lock:
            if not self._blocks_opened:
                self._blocks_opened = True
                self.file.flush()
                self._blocks = open_block_file(self.file.fileno())
            return self._blocks

    def _close_block_file(self) -> None:
        with self._sync_lock:
            blocks, self._blocks, self._blocks_opened = self._blocks, None, False
        if blocks is not None:
            blocks.close()

    def truncate(self, size: int) -> None:
        """Keep the first ``size`` bytes only: the ones known to be in order and complete."""
        self.file.flush()
        os.ftruncate(self.file.fileno(), size)
        self.file.seek(size)

    def _written(self, count: int) -> None:
        with self._sync_lock:
            self._unsynced += count
            if self._unsynced < _SYNC_EVERY or (self._syncer and self._syncer.is_alive()):
                return
            self._unsynced = 0
            self.file.flush()
            self._syncer = threading.Thread(
                target=_datasync, args=(self.file.fileno(),), name="acr-blob-datasync", daemon=True
            )
            self._syncer.start()

    def _join_syncer(self) -> None:
        with self._sync_lock:
            syncer, self._syncer = self._syncer, None
        if syncer is not None:
            syncer.join()

    def commit(self) -> None:
        """Flush to disk and rename into place (and make the rename durable).

        The target gets the mode ``open(path, "wb")`` would give it; :attr:`status` becomes the
        target's. The file at the partial's name must still be this one, before the rename and
        after it: one swapped in meanwhile (in a folder others can write) is an error, and is
        not left at the target.
        """
        self.file.flush()
        self._join_syncer()
        self._close_block_file()
        fd = self.file.fileno()
        mode = _final_mode(self.path) & (0o444 if self._read_only else 0o777)
        os.fsync(fd)
        ours = os.fstat(fd)
        swapped = BlobError(f"{self.partial_path} was replaced by another file before its rename")
        if not is_at(self.partial_path, ours):
            raise swapped
        os.replace(self.partial_path, self.path)
        moved = os.stat(self.path, follow_symlinks=False)
        if not same_file(moved, ours):
            # Renamed in the instant between the check and the rename: take it away again.
            with contextlib.suppress(OSError):
                if is_at(self.path, moved):
                    os.unlink(self.path)
            raise swapped
        self._committed = True
        if self._map is not None:
            self._map.remove()
        # After the rename: at the partial's name the file stays 0600 to the end.
        os.fchmod(fd, mode)
        self.status = os.fstat(fd)
        self.file.close()
        _fsync_directory(self.path.parent)

    def __enter__(self) -> PartialFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._join_syncer()
        self._close_block_file()
        if self._committed:
            return
        keep = self._shared and self._resume and _resumable(exc)
        if keep:
            self.file.flush()  # parallel parts write in place: the length tells, not tell()
            keep = os.fstat(self.file.fileno()).st_size > 0
        if not keep:
            self._remove()
        self.file.close()
        if isinstance(exc, OSError) and not isinstance(exc, BlobError) and exc.errno in _DISK_FULL:
            # Measured once the partial's blocks are free again.
            raise DiskFullError(self.path, self._size, _free_at(self.path.parent)) from exc

    def _remove(self) -> None:
        """Delete the partial file, if the file at its name is still this one, and its map."""
        if self._map is not None:
            self._map.remove()
        if is_at(self.partial_path, os.fstat(self.file.fileno())):
            with contextlib.suppress(OSError):
                self.partial_path.unlink()


def _resumable(error: BaseException | None) -> bool:
    asyncio = sys.modules.get("asyncio")  # loaded, if a task can have been cancelled
    return isinstance(error, _RESUMABLE) or (
        asyncio is not None and isinstance(error, asyncio.CancelledError)
    )


def _open_own_file(path: Path) -> int | None:
    """``path`` opened for reading and writing, created if absent, when it is (or can be made)
    a regular file of this user's with one link; ``None`` where something else is there that
    cannot be removed. Links are never followed."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    for _ in range(3):
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as error:
            if error.errno not in _NOT_A_FILE:
                raise
            what = f"cannot be opened ({errno.errorcode.get(error.errno, error.errno)})"
        else:
            status = os.fstat(fd)
            if is_own_file(status):
                os.set_blocking(fd, True)
                if stat.S_IMODE(status.st_mode) != 0o600:
                    os.fchmod(fd, 0o600)  # a partial of an older release
                return fd
            os.close(fd)
            what = _describe(status)
        logger.warning("%s %s; removing it", path, what)
        if not _remove_entry(path):
            logger.warning("cannot remove %s; downloading into a private partial file", path)
            return None
        flags |= os.O_EXCL  # from now on, only a file this call creates
    return None


def _describe(status: os.stat_result) -> str:
    if not stat.S_ISREG(status.st_mode):
        return "is not a regular file"
    if status.st_uid != os.geteuid():
        return f"belongs to user {status.st_uid}"
    return "has other links to it"


def _remove_entry(path: Path) -> bool:
    """Remove whatever is at ``path`` (an empty directory too); ``False`` if it cannot be."""
    try:
        if stat.S_ISDIR(os.stat(path, follow_symlinks=False).st_mode):
            os.rmdir(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def _age(fd: int) -> float:
    return time.time() - os.fstat(fd).st_mtime


def _final_mode(path: Path) -> int:
    """The mode ``open(path, "wb")`` gives: an existing file's, else 0666 less the umask."""
    try:
        status = os.stat(path, follow_symlinks=False)
    except OSError:
        status = None
    if status is not None and stat.S_ISREG(status.st_mode):
        return stat.S_IMODE(status.st_mode) & 0o777
    return 0o666 & ~_umask()


def _umask() -> int:
    # /proc tells it without changing it; os.umask() sets it, racing with other threads.
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _free_bytes(fd: int) -> int | None:
    """The bytes free on the filesystem of ``fd``'s file (``None`` when it does not say)."""
    return _free_at(fd)


def _free_at(where: int | Path) -> int | None:
    try:
        status = os.statvfs(where)
    except OSError:
        return None
    # root may also use the blocks reserved for it.
    blocks = status.f_bfree if os.geteuid() == 0 else status.f_bavail
    return blocks * status.f_frsize


def _datasync(fd: int) -> None:
    # The fsync before the rename reports what matters.
    with contextlib.suppress(OSError):
        os.fdatasync(fd)


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    """Linux's fallocate(2), for FALLOC_FL_KEEP_SIZE, which os.posix_fallocate cannot ask for."""
    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


_fallocate = _load_fallocate()


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

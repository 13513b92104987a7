"""Writing a download to a path so that the path only ever holds a complete, verified blob.

The bytes go first to a partial file beside the target, named after the digest, so that a
later download of the same digest into the same folder continues where this one stopped (the
way containerd's content store resumes an ingest); it becomes the target only once verified.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import attrs

from ._body import Lend
from ._direct_io import open_direct_appender
from ._verify import BodyVerifier
from .errors import BlobError, TransportError
from .references import Digest

_REPLAY_CHUNK = 1024 * 1024
# Written data is handed to the disk in the background every this many bytes, so that the
# fsync before the rename finds little left to write.
_SYNC_EVERY = 64 << 20
_FALLOC_FL_KEEP_SIZE = 1
# From this many bytes to go, appends bypass the page cache (see _direct_io); a smaller blob
# is cheap to cache and likely to be read soon.
_DIRECT_MIN_SIZE = 32 << 20
# Failures after which the partial data is still good and worth keeping for the next call.
_RESUMABLE = (TransportError, KeyboardInterrupt, asyncio.CancelledError)


@attrs.frozen
class Appender:
    """How to append to a partial file: ``write(data)``, and ``lend`` when the bytes can be
    received straight into the appender's own buffers (see :func:`._body.body_chunks`)."""

    write: Callable[[bytes | memoryview], None]
    lend: Lend | None


class PartialFile:
    """The partial file for ``digest`` in ``path``'s folder, locked while this object is open.

    Leaving the ``with`` block without :meth:`commit` keeps the partial data when the failure
    was one a later call can resume from (a broken connection, a deadline, Ctrl-C) and deletes
    it otherwise (a refused request, a digest mismatch).
    """

    def __init__(self, path: str | os.PathLike[str], digest: Digest) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.path} is a directory; give a file path")
        self.partial_path = self.path.with_name(f".{digest.algorithm}-{digest.hex}.partial")
        # 0666: the umask decides the final file's mode, as for any new file.
        fd = os.open(self.partial_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BlobError(
                f"another download of {digest} into {self.path.parent} is under way"
            ) from None
        self.file: BinaryIO = os.fdopen(fd, "r+b")
        self._committed = False
        self._unsynced = 0
        self._syncer: threading.Thread | None = None
        self._sync_lock = threading.Lock()  # parallel parts write from several threads

    def replay(self, verifier: BodyVerifier) -> int:
        """Feed the bytes already here to ``verifier``; return where the download continues."""
        self.file.seek(0)
        while chunk := self.file.read(_REPLAY_CHUNK):
            verifier.feed(chunk)
        return verifier.received

    def restart(self) -> None:
        """Throw away the partial data and start from byte 0."""
        self.file.seek(0)
        self.file.truncate()

    def preallocate(self, size: int | None) -> None:
        """Reserve the disk blocks for ``size`` bytes without changing the file's length.

        On ext4 and xfs, writing into reserved blocks costs a fraction of allocating them as
        the data arrives. The length stays what was written, so a partial file keeps meaning
        "these bytes arrived". Where the call is missing or refused, nothing is reserved.
        """
        if not size or _fallocate is None:
            return
        _fallocate(self.file.fileno(), _FALLOC_FL_KEEP_SIZE, 0, size)

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` at the current position."""
        self.file.write(data)
        self._written(len(data))

    @contextlib.contextmanager
    def appending(self, size: int | None) -> Iterator[Appender]:
        """Where to append a stream of ``size`` bytes in all (``None``: unknown).

        A large stream's bytes bypass the page cache and are written by a thread
        (:mod:`._direct_io`); leaving the block writes what is still buffered, even on an error,
        so that what arrived can be resumed from.
        """
        offset = self.file.tell()
        direct = None
        if size is not None and size - offset >= _DIRECT_MIN_SIZE:
            self.file.flush()
            direct = open_direct_appender(self.partial_path, self.file.fileno(), offset)
        if direct is None:
            yield Appender(self.write, None)
            return
        try:
            yield Appender(direct.write, direct.lend)
        finally:
            self.file.seek(direct.close())

    def write_at(self, data: bytes | memoryview, offset: int) -> None:
        """Write ``data`` at ``offset`` (parallel ranges; safe from several threads)."""
        os.pwrite(self.file.fileno(), data, offset)
        self._written(len(data))

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
        """Flush to disk and rename into place (and make the rename durable)."""
        self.file.flush()
        self._join_syncer()
        os.fsync(self.file.fileno())
        os.replace(self.partial_path, self.path)
        self._committed = True
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
        if self._committed:
            return
        keep = isinstance(exc, _RESUMABLE) and self.file.tell() > 0
        if keep:
            self.file.flush()
        else:
            self.partial_path.unlink(missing_ok=True)
        self.file.close()


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

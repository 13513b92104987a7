"""A blob cache that processes share: one verified file per digest, in an OCI image layout.

The folder holds an ``oci-layout`` file and ``blobs/<algorithm>/<hex>``, as an OCI image layout
does, so that skopeo, oras and crane read it (after an ``index.json`` names what to read). A
client with ``cache_dir`` downloads a blob that is missing into ``blobs/`` under the locks of
:mod:`acr_blob._file_lock` (one download per digest, whoever asks; the waiters take its result),
verified, fsynced and renamed into place; the entry is then read-only. A target is made from an
entry by a reflink where the filesystem has them, else by a copy, never by a hard link: editing
the target leaves the entry as it was.

Entries are trusted as they were verified when written: share a cache folder only with users
you trust, and run :meth:`BlobCache.verify` (``acr-blob cache verify``) to check them again.
Whoever reads an entry holds a shared ``flock`` on it, and eviction skips an entry so held.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType

import attrs
import httpx

from ._concurrency import arun_blocking
from ._files import PartialFile
from ._fs import is_at
from ._layout import blob_path, hashes_to, prepare_layout
from .models import BlobProperties
from .references import Digest, parse_digest

__all__ = ["CACHE_DIR_ENV", "OFFLINE_ENV", "BlobCache", "CacheEntry"]

logger = logging.getLogger("acr_blob")

CACHE_DIR_ENV = "ACR_BLOB_CACHE_DIR"
"""The environment variable that turns the cache on for clients without ``cache_dir``."""
OFFLINE_ENV = "ACR_BLOB_OFFLINE"
"""The environment variable (``1``) that makes clients without ``offline`` work offline."""

_READ_SIZE = 1024 * 1024
_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
# errnos of a reflink the filesystem (or the pair of filesystems) cannot make.
_NO_REFLINK = frozenset(
    {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EBADF}
)


@attrs.frozen
class CacheEntry:
    """One blob in the cache: its digest, size, file and when it was last used (``atime``).

    Example::

        for entry in BlobCache("/var/cache/acr-blob").entries():
            print(entry.digest, entry.size)
    """

    digest: str
    size: int
    path: Path
    last_used: float


def env_cache_dir() -> str | None:
    """``ACR_BLOB_CACHE_DIR``, when set and not empty."""
    return os.environ.get(CACHE_DIR_ENV) or None


def env_offline() -> bool:
    """Whether ``ACR_BLOB_OFFLINE`` asks for offline work (``1``, ``true``, ``yes``, ``on``)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class BlobCache:
    """The cache folder ``root``; ``max_bytes`` bounds its entries (least recently used go).

    The clients use one through their ``cache_dir``; this class is also how to list, measure,
    prune and check a cache from code (the CLI's ``acr-blob cache`` does the same).

    Example::

        cache = BlobCache("/var/cache/acr-blob")
        print(cache.total_bytes(), "bytes in", len(cache.entries()), "blobs")
        cache.prune(10 * 2**30)
    """

    def __init__(self, root: str | os.PathLike[str], max_bytes: int | None = None) -> None:
        if max_bytes is not None and (isinstance(max_bytes, bool) or max_bytes < 0):
            raise ValueError(f"max_cache_bytes must be a size in bytes or None, got {max_bytes!r}")
        self.root = Path(root)
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"BlobCache({os.fspath(self.root)!r}, max_bytes={self.max_bytes!r})"

    def entry_path(self, digest: Digest) -> Path:
        """Where the entry for ``digest`` is (or will be)."""
        return blob_path(self.root, digest)

    def prepare(self, digest: Digest) -> Path:
        """Make the layout's folders for ``digest`` and return its entry's path; raises
        ``OSError`` when the folder cannot be written, or holds a link where a folder belongs."""
        prepare_layout(self.root, digest.algorithm)
        return self.entry_path(digest)

    def store(self, digest: Digest, data: bytes) -> None:
        """Keep ``data``, already checked to be ``digest``, as an entry (a manifest: small,
        in memory), unless the entry is there."""
        path = self.prepare(digest)
        if not os.path.lexists(path):
            with PartialFile(path, digest, shared=False, read_only=True) as partial:
                partial.write(data)
                partial.commit()

    def read(self, digest: Digest, limit: int) -> bytes | None:
        """The entry's bytes when it is there and at most ``limit`` long."""
        held = self.open(digest)
        if held is None:
            return None
        with held:
            return None if held.size > limit else b"".join(held.chunks())

    def open(self, digest: Digest, *, use: bool = True) -> HeldEntry | None:
        """The entry for ``digest``, held for reading (eviction skips it), or ``None``;
        ``use`` marks it used now (its place in the eviction order)."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        # Not used: reading it must not count as a use either (only the owner may ask that).
        quiet = 0 if use else getattr(os, "O_NOATIME", 0)
        try:
            try:
                fd = os.open(self.entry_path(digest), flags | quiet)
            except PermissionError:
                fd = os.open(self.entry_path(digest), flags)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode) or status.st_nlink == 0:
                os.close(fd)  # not a blob, or evicted between the open and the lock
                return None
        except BaseException:
            os.close(fd)
            raise
        if use:
            _touch(fd, status)
        return HeldEntry(fd, digest, status.st_size)

    def entries(self) -> list[CacheEntry]:
        """Every entry, least recently used first (partial downloads are not entries)."""
        found = []
        blobs = self.root / "blobs"
        for algorithm in _listdir(blobs):
            for name in _listdir(blobs / algorithm):
                path = blobs / algorithm / name
                try:
                    digest = parse_digest(f"{algorithm}:{name}")
                    status = os.stat(path, follow_symlinks=False)
                except (ValueError, OSError):
                    continue  # a lock, a partial file, or something else that is not a blob
                if stat.S_ISREG(status.st_mode):
                    found.append(CacheEntry(str(digest), status.st_size, path, status.st_atime))
        return sorted(found, key=lambda entry: entry.last_used)

    def total_bytes(self) -> int:
        """The size of all entries together."""
        return sum(entry.size for entry in self.entries())

    def prune(self, max_bytes: int | None = None) -> list[CacheEntry]:
        """Remove the least recently used entries until the rest fit in ``max_bytes`` (default:
        the cache's ``max_bytes``; ``None`` and no default: nothing). Entries being read are
        kept. Returns the entries removed."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        if limit is None:
            return []
        entries = self.entries()
        total = sum(entry.size for entry in entries)
        removed = []
        for entry in entries:
            if total <= limit:
                break
            if _remove_unheld(entry.path):
                total -= entry.size
                removed.append(entry)
        if removed:
            logger.info("evicted %d blobs from the cache %s", len(removed), self.root)
        return removed

    def verify(self) -> list[CacheEntry]:
        """Hash every entry (their order of use kept); return those whose content is not
        their digest, each removed unless someone was reading it."""
        bad = []
        for entry in self.entries():
            held = self.open(parse_digest(entry.digest), use=False)
            if held is None:
                continue
            with held:
                good = hashes_to(held.fd, held.digest)
            if not good:
                bad.append(entry)
                removed = _remove_unheld(entry.path)
                logger.warning(
                    "%s in the cache %s: its content is not its digest (%s)",
                    entry.digest,
                    self.root,
                    "removed" if removed else "in use: not removed",
                )
        return bad


class HeldEntry:
    """An open cache entry, held with a shared lock until :meth:`close`; eviction skips it."""

    def __init__(self, fd: int, digest: Digest, size: int) -> None:
        self.fd = fd
        self.digest = digest
        self.size = size

    @property
    def properties(self) -> BlobProperties:
        return BlobProperties(str(self.digest), self.size)

    def place(self, target: Path) -> BlobProperties:
        """Make ``target`` a copy of the entry (a reflink where possible), fsynced and renamed
        into place like a download; ``target`` is never a link to the entry."""
        with PartialFile(target, self.digest, shared=False) as partial:
            clone_or_copy(self.fd, partial.file.fileno(), self.size)
            partial.commit()
        return self.properties

    def read_at(self, offset: int) -> bytes:
        """The next bytes from ``offset`` on (``b""`` at the end)."""
        return os.pread(self.fd, _READ_SIZE, offset)

    def chunks(self) -> Iterator[bytes]:
        """The entry's bytes, from its start."""
        offset = 0
        while chunk := self.read_at(offset):
            offset += len(chunk)
            yield chunk

    def response(self, stream: httpx.SyncByteStream | httpx.AsyncByteStream) -> httpx.Response:
        """An answer that serves the entry as a registry would (a ``200`` with its size), read
        from ``stream``: a download reads and verifies it like any other."""
        url = f"file:///blobs/{self.digest.algorithm}/{self.digest.hex}"
        return httpx.Response(
            200,
            headers={
                "Content-Length": str(self.size),
                "Content-Type": "application/octet-stream",
                "Docker-Content-Digest": str(self.digest),
            },
            stream=stream,
            request=httpx.Request("GET", url),
        )

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> HeldEntry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class EntryStream(httpx.SyncByteStream):
    """An entry's bytes as a response body; closing it lets go of the entry."""

    def __init__(self, entry: HeldEntry) -> None:
        self._entry = entry

    def __iter__(self) -> Iterator[bytes]:
        yield from self._entry.chunks()

    def close(self) -> None:
        self._entry.close()


class AsyncEntryStream(httpx.AsyncByteStream):
    """:class:`EntryStream` for the async client: each read in a worker thread."""

    def __init__(self, entry: HeldEntry) -> None:
        self._entry = entry

    async def __aiter__(self) -> AsyncIterator[bytes]:
        offset = 0
        while chunk := await arun_blocking(self._entry.read_at, offset):
            offset += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        self._entry.close()


def clone_or_copy(source: int, target: int, size: int) -> None:
    """Give ``target`` (empty) the ``size`` bytes of ``source``: a reflink (``FICLONE``) where
    the filesystem makes one, else an in-kernel copy, else a plain one."""
    try:
        fcntl.ioctl(target, _FICLONE, source)
        return
    except OSError as error:
        if error.errno not in _NO_REFLINK:
            raise
    offset = 0
    try:
        while offset < size:
            copied = os.copy_file_range(source, target, size - offset, offset, offset)
            if not copied:
                break
            offset += copied
    except OSError as error:
        if error.errno not in _NO_REFLINK:
            raise
    while offset < size:
        chunk = os.pread(source, min(_READ_SIZE, size - offset), offset)
        if not chunk:
            break
        offset += os.pwrite(target, chunk, offset)
    if offset != size:
        raise OSError(errno.EIO, f"the cache entry ended after {offset} of {size} bytes")


def _touch(fd: int, status: os.stat_result) -> None:
    """Mark the entry used now (its ``atime``, which eviction orders by); another user's entry
    keeps its time, for only its owner may set it."""
    with contextlib.suppress(OSError):
        os.utime(fd, ns=(time.time_ns(), status.st_mtime_ns))


def _remove_unheld(path: Path) -> bool:
    """Remove the entry at ``path`` unless someone reads it (holds its shared lock)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if not is_at(path, os.fstat(fd)):
            return False
        try:
            path.unlink()
        except OSError as error:
            logger.warning("cannot evict %s from the cache: %s", path, error)
            return False
        return True
    finally:
        os.close(fd)


def _listdir(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []

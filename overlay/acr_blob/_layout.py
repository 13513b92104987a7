"""OCI image layouts: ``oci-layout``, ``blobs/<alg>/<hex>`` and (for a pull) ``index.json``.

The blob cache (:mod:`acr_blob.cache`) and a pull's destination are both layouts, made by
:func:`prepare_layout`. In a pull's, blobs are written whole or not at all (each is a verified
download, renamed into place), and ``index.json`` only once every blob of the image is there:
a pull that fails leaves complete blobs for the next pull to skip, and no index entry that
names an image with a blob missing."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._files import PartialFile
from .errors import ManifestError
from .manifests import REF_NAME
from .references import Digest, parse_digest

_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}\n'
_INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
_READ_SIZE = 1 << 20


def blob_path(root: Path, digest: Digest) -> Path:
    """Where the layout at ``root`` keeps the blob ``digest``."""
    return root / "blobs" / digest.algorithm / digest.hex


def prepare_layout(root: Path, algorithm: str) -> None:
    """Make the layout's folders for blobs of ``algorithm`` and its ``oci-layout`` file; raises
    ``OSError`` when ``root`` cannot be written, or holds a link where a folder belongs."""
    blobs = root / "blobs"
    for folder in (root, blobs, blobs / algorithm):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o755, parents=folder == root)
        # The folders below the root are the layout's own: a link there was planted.
        if folder != root and not stat.S_ISDIR(os.lstat(folder).st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a folder (a link?)", str(folder))
    layout = root / "oci-layout"
    if not os.path.lexists(layout):
        write_whole(layout, _LAYOUT)


def hashes_to(fd: int, digest: Digest) -> bool:
    """Whether the file open at ``fd`` holds exactly the bytes of ``digest``."""
    hasher = hashlib.new(digest.algorithm)
    offset = 0
    while chunk := os.pread(fd, _READ_SIZE, offset):
        hasher.update(chunk)
        offset += len(chunk)
    return hasher.hexdigest() == digest.hex


def write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` at ``path`` as a download is written: a private file, fsynced, renamed."""
    digest = parse_digest("sha256:" + hashlib.sha256(data).hexdigest())
    with PartialFile(path, digest, shared=False) as partial:
        partial.write(data)
        partial.commit()


def check_folder(path: Path, reference: str) -> Path:
    """``path`` as a pull's destination: a folder, or nothing yet (nothing is made here)."""
    try:
        status = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return path
    if not stat.S_ISDIR(status.st_mode):
        raise ManifestError(
            f"cannot pull {reference} into {path}: it is not a folder", reference=reference
        )
    return path


class OciLayout:
    """The layout at ``root``, made on :meth:`prepare`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self) -> None:
        """Make the folder, its ``oci-layout`` file and ``blobs/sha256``."""
        prepare_layout(self.root, "sha256")

    def blob_path(self, digest: str) -> Path:
        """Where the blob goes (its folder made, for a digest of another algorithm)."""
        checked = parse_digest(digest)
        prepare_layout(self.root, checked.algorithm)
        return blob_path(self.root, checked)

    def has_blob(self, digest: str, size: int) -> bool:
        """Whether the blob is there whole: a regular file of ``size`` bytes that hashes to
        ``digest`` (read once through, never followed through a link)."""
        try:
            fd = os.open(self.blob_path(digest), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode) or status.st_size != size:
                return False
            return hashes_to(fd, parse_digest(digest))
        finally:
            os.close(fd)

    def write_blob(self, digest: str, data: bytes) -> None:
        """A small blob (a manifest) that is in memory, unless it is there already."""
        if not self.has_blob(digest, len(data)):
            write_whole(self.blob_path(digest), data)

    def tag(self, descriptor: dict[str, Any], tag: str | None) -> None:
        """Add ``descriptor`` to ``index.json``, named ``tag`` (an entry of that name before is
        replaced), under a lock: pulls into one layout may run side by side."""
        if tag is not None:
            descriptor = {**descriptor, "annotations": {REF_NAME: tag}}
        with self._locked():
            path = self.root / "index.json"
            index = self._read_index(path)
            kept = [
                entry
                for entry in index["manifests"]
                if not (
                    isinstance(entry, dict)
                    and (
                        (tag is not None and (entry.get("annotations") or {}).get(REF_NAME) == tag)
                        or (tag is None and entry.get("digest") == descriptor["digest"])
                    )
                )
            ]
            index["manifests"] = [*kept, descriptor]
            write_whole(path, json.dumps(index, indent=2).encode() + b"\n")

    @staticmethod
    def _read_index(path: Path) -> dict[str, Any]:
        fresh: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": _INDEX_MEDIA_TYPE,
            "manifests": [],
        }
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return fresh
        with os.fdopen(fd, "rb") as file:
            try:
                index = json.loads(file.read(16 << 20))
            except ValueError:
                index = None
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise OSError(errno.EINVAL, "not an OCI image index", str(path))
        return index

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / "oci-layout", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

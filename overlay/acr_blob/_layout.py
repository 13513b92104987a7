"""An OCI image layout that a pull writes: ``oci-layout``, ``blobs/<alg>/<hex>``, ``index.json``.

Blobs are written whole or not at all (each is a verified download, renamed into place), and
``index.json`` only once every blob of the image is there: a pull that fails leaves complete
blobs for the next pull to skip, and no index entry that names an image with a blob missing.
"""

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
from .references import parse_digest

_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}\n'
_INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


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
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not os.path.lexists(layout):
            write_whole(layout, _LAYOUT)

    def blob_path(self, digest: str) -> Path:
        checked = parse_digest(digest)
        folder = self.root / "blobs" / checked.algorithm
        folder.mkdir(exist_ok=True)
        return folder / checked.hex

    def has_blob(self, digest: str, size: int) -> bool:
        """Whether the blob is there whole: a regular file of ``size`` bytes that hashes to
        ``digest`` (read once through, never followed through a link)."""
        checked = parse_digest(digest)
        try:
            fd = os.open(self.blob_path(digest), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        with os.fdopen(fd, "rb") as file:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode) or status.st_size != size:
                return False
            hasher = hashlib.new(checked.algorithm)
            while chunk := file.read(1 << 20):
                hasher.update(chunk)
        return hasher.hexdigest() == checked.hex

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

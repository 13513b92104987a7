"""Writing a download to a path so that the path only ever holds a complete, verified blob."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from types import TracebackType
from typing import BinaryIO


class PartialFile:
    """A temporary file beside ``path`` that becomes ``path`` only on :meth:`commit`.

    The temporary file lives in the target folder so the final rename is atomic; leaving the
    ``with`` block without a commit (any error, ``KeyboardInterrupt`` included) deletes it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.path} is a directory; give a file path")
        # Not mkstemp: its 0600 would stick to the final file. With 0666 the umask decides,
        # as for any new file; O_EXCL and a random name keep concurrent downloads apart.
        self.temporary_path = self.path.with_name(
            f".{self.path.name}.{secrets.token_hex(8)}.partial"
        )
        fd = os.open(self.temporary_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        self.file: BinaryIO = os.fdopen(fd, "wb")
        self._committed = False

    def commit(self) -> None:
        """Flush to disk and rename into place."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temporary_path, self.path)
        self._committed = True
        _fsync_directory(self.path.parent)

    def discard(self) -> None:
        self.file.close()
        self.temporary_path.unlink(missing_ok=True)

    def __enter__(self) -> PartialFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._committed:
            self.discard()


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

"""Which byte ranges of a partial file with holes are complete, kept beside it across crashes.

Parallel ranges write their parts in place, so after a crash the partial file has holes. The
part map, ``.<algorithm>-<hex>.parts`` beside the partial, lists the ranges that are complete;
the next call fetches only the others and then hashes the whole file in order, so a map that
lies costs a full download again (the digest does not match), never a wrong file.

A map is written only after the bytes it lists are on disk (``fdatasync`` of the partial
first), to a new file that is then renamed over the old one, so a crash leaves the old map or
the new one, both true. It is read without following links, and only when it is a regular file
of this user's with one link, like the partial itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ._fs import is_own_file
from .references import Digest

Span = tuple[int, int]
"""``(first, end)``: bytes ``first`` to ``end - 1``."""

_MAP_LIMIT = 1 << 20


def merge(spans: Iterable[Span]) -> list[Span]:
    """``spans`` sorted, without empty ones, and with touching or overlapping ones joined."""
    merged: list[Span] = []
    for first, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((first, end))
    return merged


def missing(done: Iterable[Span], start: int, size: int) -> list[Span]:
    """The spans of ``[start, size)`` that ``done`` does not cover, in order."""
    gaps, position = [], start
    for first, end in merge(done):
        if end <= position:
            continue
        if first > position:
            gaps.append((position, min(first, size)))
        position = max(position, end)
        if position >= size:
            break
    if position < size:
        gaps.append((position, size))
    return [gap for gap in gaps if gap[1] > gap[0]]


class PartMap:
    """The part map of the partial file for ``digest`` at ``partial_path``."""

    def __init__(self, partial_path: Path, digest: Digest) -> None:
        self.path = partial_path.with_name(f".{digest.algorithm}-{digest.hex}.parts")
        self._digest = digest

    def exists(self) -> bool:
        return os.path.lexists(self.path)

    def load(self, file_size: int) -> list[Span] | None:
        """The complete spans, or ``None`` where there is no usable map: none at all, not this
        user's regular file, not this digest's, or spans past ``file_size`` (the partial file's
        length) or the blob's end."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            if not is_own_file(os.fstat(fd)):
                return None
            document = json.loads(os.read(fd, _MAP_LIMIT))
            size, spans = int(document["size"]), [(int(a), int(b)) for a, b in document["done"]]
            if document["digest"] != str(self._digest):
                return None
        except (OSError, ValueError, TypeError, KeyError):
            return None
        finally:
            os.close(fd)
        spans = merge(spans)
        if any(first < 0 or end > min(size, file_size) for first, end in spans):
            return None
        return spans

    def save(self, partial_fd: int, size: int, done: Iterable[Span]) -> None:
        """Record ``done`` as complete, once the partial file's bytes are on disk."""
        os.fdatasync(partial_fd)
        document = {"digest": str(self._digest), "size": size, "done": merge(done)}
        fd, name = tempfile.mkstemp(
            prefix=f"{self.path.name}.", suffix=".new", dir=self.path.parent
        )
        try:
            with os.fdopen(fd, "wb") as new:
                new.write(json.dumps(document).encode())
                new.flush()
                os.fsync(new.fileno())
            # A rename replaces whatever is at the name, a planted link included, unfollowed.
            os.replace(name, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)

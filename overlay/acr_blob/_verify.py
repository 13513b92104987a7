"""Incremental verification of a blob body that may arrive in several answers (resumption):
its digest, its announced length, and that each answer continues where the last one stopped."""

from __future__ import annotations

import hashlib
from typing import overload

import httpx

from ._protocol import blob_size, content_length, parse_content_range
from .errors import BlobSizeError, DigestMismatchError, ResumeError
from .references import Digest


class BodyVerifier:
    """Hashes a body chunk by chunk and checks it against the digest and the announced size.

    :meth:`accept` checks each answer that (re)starts the body at an offset; :meth:`feed` takes
    its chunks and returns the bytes that are new (a server that ignored ``Range`` resends the
    start, which is compared with what came before, then dropped; a ``206`` that honestly starts
    before the offset asked for has its head dropped too). ``feed`` raises as soon as the
    body runs past the announced size, so not one byte beyond it reaches the caller; ``finish``
    raises when the body ended early or hashes to anything but the requested digest.
    """

    def __init__(self, digest: Digest) -> None:
        self.digest = digest
        self._hash = digest.new_hash()
        self.size: int | None = None
        self.received = 0
        # Bytes of an answer to drop before the new ones: what a 200 resent (compared, by hash,
        # with what came before) or the head of a 206 that started early (not compared).
        self._skip = 0
        self._skip_hash: hashlib._Hash | None = None

    def accept(self, response: httpx.Response, offset: int) -> None:
        """Check an answer that should carry the body from ``offset`` (``received``) on."""
        self._skip, self._skip_hash = 0, None
        if response.status_code == 206:
            parsed = parse_content_range(response.headers.get("Content-Range"))
            # Starting earlier than asked is honest (the bytes are the blob's); later is not.
            if parsed is None or not (
                parsed[0] == offset or (parsed[0] < offset and _runs_to_the_end(response, parsed))
            ):
                raise ResumeError(
                    f"asked for the body from byte {offset}, the server sent "
                    f"Content-Range {response.headers.get('Content-Range', '(none)')[:80]!r}"
                )
            self._skip = offset - parsed[0]
        elif offset:
            # 200: the server ignored Range and sends it all again.
            self._skip = offset
            self._skip_hash = self.digest.new_hash()
        size = blob_size(response)
        if self.size is None:
            self.size = size
        elif size is not None and size != self.size:
            raise ResumeError(f"the blob's size changed from {self.size} to {size} bytes")

    @overload
    def feed(self, chunk: bytes) -> bytes: ...
    @overload
    def feed(self, chunk: bytes | memoryview) -> bytes | memoryview: ...
    def feed(self, chunk: bytes | memoryview) -> bytes | memoryview:
        if self._skip:
            # A copy: a view into a lent buffer must come back whole or not at all.
            head, chunk = chunk[: self._skip], bytes(chunk[self._skip :])
            self._skip -= len(head)
            if self._skip_hash is not None:
                self._skip_hash.update(head)
                if not self._skip and self._skip_hash.digest() != self._hash.copy().digest():
                    raise ResumeError("the server resent the start of the blob with other bytes")
            if not chunk:
                return chunk
        self.received += len(chunk)
        if self.size is not None and self.received > self.size:
            raise BlobSizeError(self.size, self.received)
        self._hash.update(chunk)
        return chunk

    def finish(self) -> None:
        if self._skip:
            raise ResumeError("the body ended inside the part it resent")
        if self.size is not None and self.received != self.size:
            raise BlobSizeError(self.size, self.received)
        actual = f"{self.digest.algorithm}:{self._hash.hexdigest()}"
        if actual != str(self.digest):
            raise DigestMismatchError(str(self.digest), actual)


def _runs_to_the_end(response: httpx.Response, parsed: tuple[int, int, int | None]) -> bool:
    """Whether a 206 for ``bytes=X-`` that starts early still ends at the blob's last byte,
    with as many bytes as its ``Content-Range`` says."""
    start, end, size = parsed
    length = content_length(response)
    return size is not None and end == size - 1 and (length is None or length == end - start + 1)

"""Incremental verification of a blob body: its digest and its announced length."""

from __future__ import annotations

from .errors import BlobSizeError, DigestMismatchError
from .references import Digest


class BodyVerifier:
    """Hashes a body chunk by chunk and checks it against the digest and ``Content-Length``.

    ``update`` raises as soon as the body runs past its announced length, so that not one byte
    beyond it reaches the caller; ``finish`` raises when the body ended early or hashes to
    anything but the requested digest.
    """

    def __init__(self, digest: Digest, expected_size: int | None) -> None:
        self._digest = digest
        self._hash = digest.new_hash()
        self._expected_size = expected_size
        self.received = 0

    def update(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self._expected_size is not None and self.received > self._expected_size:
            raise BlobSizeError(self._expected_size, self.received)
        self._hash.update(chunk)

    def finish(self) -> None:
        if self._expected_size is not None and self.received != self._expected_size:
            raise BlobSizeError(self._expected_size, self.received)
        actual = f"{self._digest.algorithm}:{self._hash.hexdigest()}"
        if actual != str(self._digest):
            raise DigestMismatchError(str(self._digest), actual)

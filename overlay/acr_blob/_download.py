"""What the sync and async downloads share: their properties and their one-pass state."""

from __future__ import annotations

import httpx

from ._protocol import properties_from
from ._verify import BodyVerifier
from .errors import BlobError, TransportError
from .references import Digest


class DownloadBase:
    """A response whose headers are in, its properties, and the verifier for its body."""

    def __init__(self, response: httpx.Response, digest: Digest) -> None:
        self._response = response
        self.properties = properties_from(response, digest)
        self._verifier = BodyVerifier(digest, self.properties.size)
        self._started = False

    @property
    def size(self) -> int | None:
        """The size announced by ``Content-Length``, or ``None`` when the server sent none."""
        return self.properties.size

    @property
    def digest(self) -> str:
        """The requested digest, which the content is verified against."""
        return self.properties.digest

    def _start(self) -> None:
        if self._started:
            raise BlobError("this download has already been read or closed")
        self._started = True

    def _broken(self, error: httpx.TransportError) -> TransportError:
        return TransportError(f"download broke after {self._verifier.received} bytes: {error!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(digest={self.digest!r}, size={self.size!r})"

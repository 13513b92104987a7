"""The synchronous client: :class:`BlobClient` and :class:`BlobDownload`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import TracebackType
from typing import Any, BinaryIO

import httpx

from acr_blob_api.api.blob import check_blob_exists, get_blob

from ._config import DEFAULT_TIMEOUT, Credential, TimeoutTypes, VerifyTypes, api_client
from ._download import DownloadBase
from ._files import PartialFile
from ._protocol import (
    ERROR_BODY_LIMIT,
    BuildKwargs,
    RedirectFollower,
    blob_request_kwargs,
    error_for,
    properties_from,
    redact_url,
)
from .errors import BlobNotFoundError, TransportError
from .models import BlobProperties
from .references import Digest, parse_digest, validate_repository

__all__ = ["BlobClient", "BlobDownload"]


class BlobDownload(DownloadBase):
    """A blob whose headers have arrived; iterate it for the bytes, verified as they pass.

    The last chunk is followed by the verification: when the body hashes to anything but the
    requested digest, or is shorter or longer than announced, iteration raises instead of
    ending. Bytes already handed out are therefore unverified until iteration ends without
    error; :meth:`BlobClient.download_blob_to_file` never shows them at the target path.

    Example::

        with client.download_blob("library/ubuntu", digest) as download:
            for chunk in download:
                sink.write(chunk)
    """

    def __iter__(self) -> Iterator[bytes]:
        self._start()
        return self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        try:
            # iter_raw() without a chunk size hands over each socket read as is: no copies.
            # A transport may hand over a body it has already read (mocks do): take it whole.
            response = self._response
            chunks = [response.content] if response.is_stream_consumed else response.iter_raw()
            for chunk in chunks:
                self._verifier.update(chunk)
                yield chunk
            self._verifier.finish()
        except httpx.TransportError as error:
            raise self._broken(error) from error
        finally:
            self._response.close()

    def readall(self) -> bytes:
        """The whole verified blob in memory (mind the size)."""
        return b"".join(self)

    def readinto(self, file: BinaryIO) -> int:
        """Write the blob to an open binary file; return the number of bytes written."""
        for chunk in self:
            file.write(chunk)
        return self._verifier.received

    def close(self) -> None:
        """Release the connection; a download closed before its end was not verified."""
        self._started = True
        self._response.close()

    def __enter__(self) -> BlobDownload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class BlobClient:
    """Downloads blobs from one registry; a context manager that closes its connections.

    ``endpoint`` is the registry, ``https://myregistry.azurecr.io`` or just its host name.
    ``credential`` is ``None`` (anonymous), a ``(username, password)`` tuple, a credential from
    :mod:`acr_blob.credentials` (an Azure AD credential too), or any ``httpx.Auth``. The
    registry's challenge decides how it is used (Basic, or a Bearer token from its token server,
    cached per scope); it never reaches the storage the registry redirects to, and never travels
    over plain http beyond loopback unless ``allow_insecure`` is set.

    Example::

        with BlobClient("myregistry.azurecr.io", ("user", "password")) as client:
            client.download_blob_to_file("prod/bash", "sha256:...", "layer.tar.gz")
    """

    def __init__(
        self,
        endpoint: str,
        credential: Credential = None,
        *,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        verify: VerifyTypes = True,
        max_redirects: int = 10,
        allow_insecure: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._api = api_client(
            endpoint,
            credential,
            timeout=timeout,
            verify=verify,
            transport=transport,
            allow_insecure=allow_insecure,
        )
        self._http = self._api.get_httpx_client()
        self._max_redirects = max_redirects

    @property
    def endpoint(self) -> str:
        """The registry's base URL."""
        return str(self._http.base_url).rstrip("/")

    def download_blob(self, repository: str, digest: str) -> BlobDownload:
        """Request a blob and return once its headers are in; iterate the result for the bytes.

        Raises :class:`~acr_blob.errors.BlobNotFoundError` (and any other error answer) here,
        before any byte of body is read.
        """
        response, checked = self._send(get_blob._get_kwargs, repository, digest)
        return BlobDownload(response, checked)

    def download_blob_to_file(
        self, repository: str, digest: str, path: str | os.PathLike[str]
    ) -> BlobProperties:
        """Download, verify, fsync and rename into ``path``; on failure nothing is at ``path``.

        Example::

            properties = client.download_blob_to_file("library/ubuntu", digest, "layer.tgz")
        """
        validate_repository(repository)
        parse_digest(digest)
        with PartialFile(path) as partial:
            with self.download_blob(repository, digest) as download:
                download.readinto(partial.file)
            partial.commit()
        return download.properties

    def get_blob_properties(self, repository: str, digest: str) -> BlobProperties:
        """Size, digest, media type and ETag of a blob, from a HEAD request."""
        response, checked = self._send(check_blob_exists._get_kwargs, repository, digest)
        response.close()
        return properties_from(response, checked)

    def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether the registry has this blob in this repository (a HEAD request)."""
        try:
            self.get_blob_properties(repository, digest)
        except BlobNotFoundError:
            return False
        return True

    def _send(
        self, build: BuildKwargs, repository: str, digest: str, **params: Any
    ) -> tuple[httpx.Response, Digest]:
        """Send, follow redirects, and return the final 200 with its body unread."""
        kwargs, checked = blob_request_kwargs(build, repository, digest, **params)
        request = self._http.build_request(**kwargs)
        follower = RedirectFollower(request.url, checked, self._max_redirects)
        while True:
            try:
                response = self._http.send(request, stream=True, auth=follower.auth_for(request))
            except httpx.TransportError as error:
                raise TransportError(
                    f"{request.method} {redact_url(request.url)} failed: {error!r}"
                ) from error
            try:
                redirect = follower.next_request(response)
                if redirect is None:
                    if response.status_code == 200:
                        return response, checked
                    raise error_for(response, self._read_error_body(response), follower)
            except BaseException:
                response.close()
                raise
            response.close()
            request = redirect

    @staticmethod
    def _read_error_body(response: httpx.Response) -> bytes:
        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) >= ERROR_BODY_LIMIT:
                    break
        except httpx.HTTPError:
            pass  # the status alone is enough to raise on
        return bytes(body[:ERROR_BODY_LIMIT])

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> BlobClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BlobClient({self.endpoint!r})"

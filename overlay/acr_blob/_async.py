"""The asynchronous client: :class:`AsyncBlobClient` and :class:`AsyncBlobDownload`.

It mirrors :mod:`acr_blob._sync` name for name; the decisions live in the shared
:mod:`acr_blob._protocol`, :mod:`acr_blob._verify` and :mod:`acr_blob._files`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
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

__all__ = ["AsyncBlobClient", "AsyncBlobDownload"]


class AsyncBlobDownload(DownloadBase):
    """A blob whose headers have arrived; ``async for`` it for the bytes, verified as they pass.

    Verification works as in :class:`~acr_blob.BlobDownload`: the iteration raises instead of
    ending when the body does not match the requested digest or its announced length.

    Example::

        async with await client.download_blob("library/ubuntu", digest) as download:
            async for chunk in download:
                sink.write(chunk)
    """

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._start()
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            # A transport may hand over a body it has already read (mocks do): take it whole.
            response = self._response
            if response.is_stream_consumed:
                self._verifier.update(response.content)
                yield response.content
            else:
                async for chunk in response.aiter_raw():
                    self._verifier.update(chunk)
                    yield chunk
            self._verifier.finish()
        except httpx.TransportError as error:
            raise self._broken(error) from error
        finally:
            await self._response.aclose()

    async def readall(self) -> bytes:
        """The whole verified blob in memory (mind the size)."""
        return b"".join([chunk async for chunk in self])

    async def readinto(self, file: BinaryIO) -> int:
        """Write the blob to an open binary file; return the number of bytes written."""
        async for chunk in self:
            file.write(chunk)
        return self._verifier.received

    async def aclose(self) -> None:
        """Release the connection; a download closed before its end was not verified."""
        self._started = True
        await self._response.aclose()

    async def __aenter__(self) -> AsyncBlobDownload:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncBlobClient:
    """The asynchronous :class:`~acr_blob.BlobClient`: same arguments, same behaviour.

    Example::

        async with AsyncBlobClient("myregistry.azurecr.io") as client:
            await client.download_blob_to_file("prod/bash", "sha256:...", "layer.tar.gz")
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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._api = api_client(
            endpoint,
            credential,
            timeout=timeout,
            verify=verify,
            transport=transport,
            allow_insecure=allow_insecure,
        )
        self._http = self._api.get_async_httpx_client()
        self._max_redirects = max_redirects

    @property
    def endpoint(self) -> str:
        """The registry's base URL."""
        return str(self._http.base_url).rstrip("/")

    async def download_blob(self, repository: str, digest: str) -> AsyncBlobDownload:
        """Request a blob and return once its headers are in; ``async for`` the result."""
        response, checked = await self._send(get_blob._get_kwargs, repository, digest)
        return AsyncBlobDownload(response, checked)

    async def download_blob_to_file(
        self, repository: str, digest: str, path: str | os.PathLike[str]
    ) -> BlobProperties:
        """Download, verify, fsync and rename into ``path``; on failure nothing is at ``path``."""
        validate_repository(repository)
        parse_digest(digest)
        with PartialFile(path) as partial:
            async with await self.download_blob(repository, digest) as download:
                await download.readinto(partial.file)
            # fsync can take a while on a busy disk: keep it off the event loop.
            await asyncio.to_thread(partial.commit)
        return download.properties

    async def get_blob_properties(self, repository: str, digest: str) -> BlobProperties:
        """Size, digest, media type and ETag of a blob, from a HEAD request."""
        response, checked = await self._send(check_blob_exists._get_kwargs, repository, digest)
        await response.aclose()
        return properties_from(response, checked)

    async def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether the registry has this blob in this repository (a HEAD request)."""
        try:
            await self.get_blob_properties(repository, digest)
        except BlobNotFoundError:
            return False
        return True

    async def _send(
        self, build: BuildKwargs, repository: str, digest: str, **params: Any
    ) -> tuple[httpx.Response, Digest]:
        """Send, follow redirects, and return the final 200 with its body unread."""
        kwargs, checked = blob_request_kwargs(build, repository, digest, **params)
        request = self._http.build_request(**kwargs)
        follower = RedirectFollower(request.url, checked, self._max_redirects)
        while True:
            try:
                response = await self._http.send(
                    request, stream=True, auth=follower.auth_for(request)
                )
            except httpx.TransportError as error:
                raise TransportError(
                    f"{request.method} {redact_url(request.url)} failed: {error!r}"
                ) from error
            try:
                redirect = follower.next_request(response)
                if redirect is None:
                    if response.status_code == 200:
                        return response, checked
                    body = await self._read_error_body(response)
                    raise error_for(response, body, follower)
            except BaseException:
                await response.aclose()
                raise
            await response.aclose()
            request = redirect

    @staticmethod
    async def _read_error_body(response: httpx.Response) -> bytes:
        body = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= ERROR_BODY_LIMIT:
                    break
        except httpx.HTTPError:
            pass  # the status alone is enough to raise on
        return bytes(body[:ERROR_BODY_LIMIT])

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncBlobClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncBlobClient({self.endpoint!r})"

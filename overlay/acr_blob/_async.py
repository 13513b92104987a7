"""The asynchronous client: :class:`AsyncBlobClient` and :class:`AsyncBlobDownload`.

It mirrors :mod:`acr_blob._sync` name for name; the decisions live in the shared
:mod:`acr_blob._protocol`, :mod:`acr_blob._download`, :mod:`acr_blob._verify`,
:mod:`acr_blob._files` and :mod:`acr_blob.retry`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
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
    error_body_expected,
    error_for,
    properties_from,
    redact_url,
)
from ._verify import BodyVerifier
from .errors import (
    BlobNotFoundError,
    BlobSizeError,
    DigestMismatchError,
    RegistryError,
    ResumeError,
    TransportError,
)
from .models import BlobProperties
from .references import Digest, parse_digest, validate_repository
from .retry import RetryPolicy, retry_delay

__all__ = ["AsyncBlobClient", "AsyncBlobDownload"]

logger = logging.getLogger("acr_blob")


async def _raw(response: httpx.Response) -> AsyncIterator[bytes]:
    # A transport may hand over a body it has already read (mocks do): take it whole.
    if response.is_stream_consumed:
        yield response.content
    else:
        async for chunk in response.aiter_raw():
            yield chunk


class AsyncBlobDownload(DownloadBase):
    """A blob whose headers have arrived; ``async for`` it for the bytes, verified as they pass.

    Verification and resumption work as in :class:`~acr_blob.BlobDownload`.

    Example::

        async with await client.download_blob("library/ubuntu", digest) as download:
            async for chunk in download:
                sink.write(chunk)
    """

    def __init__(
        self,
        response: httpx.Response,
        verifier: BodyVerifier,
        policy: RetryPolicy,
        deadline: float | None,
        reopen: Callable[[int], Awaitable[httpx.Response]],
    ) -> None:
        super().__init__(response, verifier, policy, deadline)
        self._reopen = reopen

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._start()
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            while True:
                try:
                    async for raw in _raw(self._response):
                        chunk = self._verifier.feed(raw)
                        self._check_deadline()
                        if chunk:
                            yield chunk
                    break
                except (httpx.TransportError, ResumeError) as error:
                    await self._response.aclose()
                    await self._resume(error)
            self._verifier.finish()
        finally:
            await self._response.aclose()

    async def _resume(self, error: Exception) -> None:
        """Reopen the body at the first byte not yet received, or raise saying how far it got."""
        while True:
            delay = self._resume_delay(error)
            if delay:
                await self._policy.async_sleep(delay)
            offset = self._verifier.received
            logger.debug("resuming at byte %d after %r", offset, error)
            self._response = await self._reopen(offset)
            try:
                self._verifier.accept(self._response, offset)
                return
            except ResumeError as wrong:
                await self._response.aclose()
                error = wrong

    async def readall(self) -> bytes:
        """The whole verified blob in memory (mind the size)."""
        return b"".join([chunk async for chunk in self])

    async def readinto(self, file: BinaryIO) -> int:
        """Write the blob to an open binary file; return the number of bytes written."""
        written = 0
        async for chunk in self:
            file.write(chunk)
            written += len(chunk)
        return written

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
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
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
        self._deadline = deadline
        self._retry = retry or RetryPolicy()

    @property
    def endpoint(self) -> str:
        """The registry's base URL."""
        return str(self._http.base_url).rstrip("/")

    async def download_blob(self, repository: str, digest: str) -> AsyncBlobDownload:
        """Request a blob and return once its headers are in; ``async for`` the result."""
        return await self._download(repository, digest, BodyVerifier(parse_digest(digest)))

    async def download_blob_to_file(
        self, repository: str, digest: str, path: str | os.PathLike[str]
    ) -> BlobProperties:
        """Download, verify, fsync and rename into ``path``; on failure nothing is at ``path``.

        Partial files resume as in :meth:`~acr_blob.BlobClient.download_blob_to_file`.
        """
        validate_repository(repository)
        checked = parse_digest(digest)
        with PartialFile(path, checked) as partial:
            verifier = BodyVerifier(checked)
            # Rehashing a large partial file takes a while: keep it off the event loop.
            offset = await asyncio.to_thread(partial.replay, verifier)
            try:
                return await self._download_into(partial, repository, digest, verifier, offset)
            except (DigestMismatchError, BlobSizeError, ResumeError):
                if not offset:
                    raise
                logger.info("partial data for %s was bad; downloading it again", digest)
            partial.restart()
            return await self._download_into(partial, repository, digest, BodyVerifier(checked), 0)

    async def _download_into(
        self,
        partial: PartialFile,
        repository: str,
        digest: str,
        verifier: BodyVerifier,
        offset: int,
    ) -> BlobProperties:
        try:
            download = await self._download(repository, digest, verifier, offset)
        except RegistryError as error:
            if not (offset and error.status_code == 416):
                raise
            # The partial file already holds the whole blob: it only needs its check.
            verifier.finish()
            await asyncio.to_thread(partial.commit)
            return BlobProperties(digest, offset)
        async with download:
            await download.readinto(partial.file)
        # fsync can take a while on a busy disk: keep it off the event loop.
        await asyncio.to_thread(partial.commit)
        return download.properties

    async def _download(
        self, repository: str, digest: str, verifier: BodyVerifier, offset: int = 0
    ) -> AsyncBlobDownload:
        deadline = time.monotonic() + self._deadline if self._deadline is not None else None

        async def open_at(at: int) -> httpx.Response:
            ranged = {"range_": f"bytes={at}-"} if at else {}
            sent = await self._send(get_blob._get_kwargs, repository, digest, deadline, **ranged)
            return sent[0]

        response = await open_at(offset)
        try:
            verifier.accept(response, offset)
        except BaseException:
            await response.aclose()
            raise
        return AsyncBlobDownload(response, verifier, self._retry, deadline, open_at)

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
        self,
        build: BuildKwargs,
        repository: str,
        digest: str,
        deadline: float | None = None,
        **params: Any,
    ) -> tuple[httpx.Response, Digest]:
        """Send with retries; return the final answer (body unread) once it is a success."""
        kwargs, checked = blob_request_kwargs(build, repository, digest, **params)
        success = (200, 206) if "range_" in params else (200,)
        failures, waited = 0, 0.0
        while True:
            try:
                return await self._send_once(kwargs, checked, success), checked
            except (RegistryError, TransportError) as error:
                failures += 1
                delay = retry_delay(self._retry, error, failures, waited, deadline)
                if delay is None:
                    raise
                logger.info("retrying in %.2f s after %s", delay, error)
                await self._retry.async_sleep(delay)
                waited += delay

    async def _send_once(
        self, kwargs: dict[str, Any], digest: Digest, success: tuple[int, ...]
    ) -> httpx.Response:
        """One try: send, follow redirects, and return the final success with its body unread."""
        request = self._http.build_request(**kwargs)
        follower = RedirectFollower(request.url, digest, self._max_redirects)
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
                    if response.status_code in success:
                        return response
                    body = await self._read_error_body(response)
                    raise error_for(response, body, follower)
            except BaseException:
                await response.aclose()
                raise
            await response.aclose()
            request = redirect

    @staticmethod
    async def _read_error_body(response: httpx.Response) -> bytes:
        if not error_body_expected(response):
            return b""
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

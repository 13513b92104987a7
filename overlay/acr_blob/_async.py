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
from typing import Any, BinaryIO, overload

import httpx

from acr_blob_api.api.blob import check_blob_exists, get_blob

from ._body import Lend, abody_chunks
from ._config import (
    DEFAULT_TIMEOUT,
    Credential,
    TimeoutTypes,
    VerifyTypes,
    api_client,
    check_concurrency,
)
from ._download import DownloadBase
from ._file_lock import DownloadTurn
from ._files import PartialFile, check_target
from ._progress import ProgressCallback, ProgressReporter, reporter
from ._protocol import (
    ERROR_BODY_LIMIT,
    BuildKwargs,
    RedirectFollower,
    blob_request_kwargs,
    check_location,
    error_body_expected,
    error_for,
    properties_from,
    redact_url,
)
from ._ranged_async import AsyncOpenPart, AsyncRangedDownload
from ._ranged_stream_async import AsyncParallelChunks
from ._ranges import (
    PlanParts,
    check_part,
    plan_parts,
    plan_stream_parts,
    range_header,
    worth_splitting,
)
from ._verify import BodyVerifier
from .errors import (
    BlobNotFoundError,
    BlobSizeError,
    DigestMismatchError,
    RedirectError,
    RegistryError,
    ResumeError,
    TransportError,
)
from .models import BlobProperties
from .references import Digest, parse_digest, validate_repository
from .retry import RetryPolicy, retry_delay

__all__ = ["AsyncBlobClient", "AsyncBlobDownload"]

logger = logging.getLogger("acr_blob")

AsyncSplit = Callable[["AsyncBlobDownload"], Awaitable["AsyncParallelChunks | None"]]
"""The async twin of ``_sync.Split``."""


async def _check_location(response: httpx.Response) -> None:
    """``check_location`` as the async client's response hook (httpx awaits those)."""
    check_location(response)


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
        reporter: ProgressReporter | None = None,
        split: AsyncSplit | None = None,
    ) -> None:
        super().__init__(response, verifier, policy, deadline, reporter)
        self._reopen = reopen
        self._split = split
        self._parallel: AsyncParallelChunks | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._start()
        return self._chunks()

    @overload
    def _chunks(self) -> AsyncIterator[bytes]: ...
    @overload
    def _chunks(self, lend: Lend | None) -> AsyncIterator[bytes | memoryview]: ...
    async def _chunks(self, lend: Lend | None = None) -> AsyncIterator[bytes | memoryview]:
        try:
            self._parallel = await self._split(self) if self._split is not None else None
            if self._parallel is not None:
                async for piece in self._parallel.chunks():
                    self._verifier.feed(piece)
                    self._received()
                    yield piece
                self._verified()
                return
            while True:
                try:
                    async for raw in abody_chunks(self._response, lend):
                        chunk = self._verifier.feed(raw)
                        self._received()
                        if chunk:
                            yield chunk
                    break
                except (httpx.TransportError, ResumeError) as error:
                    await self._response.aclose()
                    await self._resume(error)
            self._verified()
        finally:
            await self.aclose()

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
        if self._parallel is not None:
            await self._parallel.aclose()
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
        max_concurrency: int = 1,
        resume: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._api = api_client(
            endpoint,
            credential,
            timeout=timeout,
            verify=verify,
            transport=transport,
            on_response=_check_location,
            allow_insecure=allow_insecure,
        )
        self._http = self._api.get_async_httpx_client()
        self._max_redirects = max_redirects
        self._deadline = deadline
        self._retry = retry or RetryPolicy()
        self._max_concurrency = check_concurrency(max_concurrency)
        self._resume_partials = resume

    @property
    def endpoint(self) -> str:
        """The registry's base URL."""
        return str(self._http.base_url).rstrip("/")

    async def download_blob(
        self,
        repository: str,
        digest: str,
        *,
        progress: ProgressCallback | None = None,
        max_concurrency: int | None = None,
    ) -> AsyncBlobDownload:
        """Request a blob and return once its headers are in; ``async for`` the result.

        ``progress`` and ``max_concurrency`` work as for
        :meth:`acr_blob.BlobClient.download_blob`.

        Example::

            async with await client.download_blob("library/ubuntu", digest) as download:
                data = await download.readall()
        """
        checked = parse_digest(digest)
        concurrency = check_concurrency(
            self._max_concurrency if max_concurrency is None else max_concurrency
        )
        report = reporter(progress)
        split = None
        if concurrency > 1:

            async def split(download: AsyncBlobDownload) -> AsyncParallelChunks | None:
                return await self._split_stream(download, repository, digest, concurrency)

        return await self._download(repository, digest, BodyVerifier(checked), 0, report, split)

    async def download_blob_to_file(
        self,
        repository: str,
        digest: str,
        path: str | os.PathLike[str],
        *,
        progress: ProgressCallback | None = None,
        max_concurrency: int | None = None,
        resume: bool | None = None,
    ) -> BlobProperties:
        """Download, verify, fsync and rename into ``path``; on failure nothing is at ``path``.

        Partial files, ``resume``, waiting for another download of the same blob,
        ``max_concurrency`` and ``progress`` work as in
        :meth:`acr_blob.BlobClient.download_blob_to_file`; the wait does not block the loop.

        Example::

            await client.download_blob_to_file("library/ubuntu", digest, "layer.tgz")
        """
        validate_repository(repository)
        checked = parse_digest(digest)
        concurrency = check_concurrency(
            self._max_concurrency if max_concurrency is None else max_concurrency
        )
        target = check_target(path)
        report = reporter(progress)
        started = time.monotonic()
        with DownloadTurn(target, checked, self._deadline_from(started)) as turn:
            while (delay := turn.next_delay()) is not None:
                await asyncio.sleep(delay)
            if (done := turn.completed_meanwhile()) is not None:
                return done
            keep = self._resume_partials if resume is None else resume
            with turn.partial(keep) as partial:
                properties = await self._download_partial(
                    partial, repository, checked, concurrency, report, started
                )
                turn.record(partial, properties)
            return properties

    async def _download_partial(
        self,
        partial: PartialFile,
        repository: str,
        checked: Digest,
        concurrency: int,
        report: ProgressReporter | None,
        started: float,
    ) -> BlobProperties:
        """The async twin of ``BlobClient._download_partial``."""
        digest = str(checked)
        verifier = BodyVerifier(checked)
        # Rehashing a large partial file takes a while: keep it off the event loop.
        offset = await asyncio.to_thread(partial.replay, verifier)
        target = (partial, repository, digest)
        try:
            return await self._download_into(
                *target, verifier, offset, concurrency, report, started
            )
        except (DigestMismatchError, BlobSizeError, ResumeError):
            if not offset:
                raise
            logger.info("partial data for %s was bad; downloading it again", digest)
        partial.restart()
        fresh = BodyVerifier(checked)
        return await self._download_into(*target, fresh, 0, concurrency, report, started)

    async def _download_into(
        self,
        partial: PartialFile,
        repository: str,
        digest: str,
        verifier: BodyVerifier,
        offset: int,
        concurrency: int,
        report: ProgressReporter | None,
        started: float,
    ) -> BlobProperties:
        try:
            download = await self._download(
                repository, digest, verifier, offset, report, started=started
            )
        except RegistryError as error:
            if not (offset and error.status_code == 416):
                raise
            # The partial file already holds the whole blob: it only needs its check.
            verifier.finish()
            if report is not None:
                report.finish(offset)
            await asyncio.to_thread(partial.commit)
            return BlobProperties(digest, offset)
        if offset:
            logger.info("resuming %s at byte %d of %s", digest, offset, verifier.size or "?")
        async with download:
            partial.ensure_space(verifier.size)
            partial.preallocate(verifier.size)
            if not await self._download_ranges(partial, download, concurrency, repository, digest):
                with partial.appending(verifier.size) as appender:
                    download._start()
                    async for chunk in download._chunks(appender.lend):
                        appender.write(chunk)
        # fsync can take a while on a busy disk: keep it off the event loop.
        await asyncio.to_thread(partial.commit)
        return download.properties

    async def _download_ranges(
        self,
        partial: PartialFile,
        download: AsyncBlobDownload,
        concurrency: int,
        repository: str,
        digest: str,
    ) -> bool:
        """The async twin of ``BlobClient._download_ranges``."""
        done = partial.done

        def plan(start: int, size: int, concurrency: int) -> list[tuple[int, int]]:
            return plan_parts(start, size, concurrency, done)

        probed = await self._probe_parts(
            download, repository, digest, concurrency, plan, bool(done)
        )
        if probed is None:
            return False
        parts, responses, open_part = probed
        download._start()
        await AsyncRangedDownload(
            partial,
            download._verifier,
            parts,
            responses,
            open_part,
            concurrency=concurrency,
            policy=self._retry,
            deadline=download._deadline,
            reporter=download._reporter,
            done=done,
        ).run()
        download._verified()
        return True

    async def _split_stream(
        self, download: AsyncBlobDownload, repository: str, digest: str, concurrency: int
    ) -> AsyncParallelChunks | None:
        """The async twin of ``BlobClient._split_stream``."""
        probed = await self._probe_parts(
            download, repository, digest, concurrency, plan_stream_parts
        )
        if probed is None:
            return None
        parts, responses, open_part = probed
        return AsyncParallelChunks(
            parts,
            responses,
            open_part,
            concurrency=concurrency,
            policy=self._retry,
            on_wait=download._check_deadline,
        )

    async def _probe_parts(
        self,
        download: AsyncBlobDownload,
        repository: str,
        digest: str,
        concurrency: int,
        plan: PlanParts,
        resuming_parts: bool = False,
    ) -> tuple[list[tuple[int, int]], list[httpx.Response], AsyncOpenPart] | None:
        """The async twin of ``BlobClient._probe_parts``."""
        size, offset = download._verifier.size, download._verifier.received
        if size is None or concurrency < 2:
            return None
        parts = plan(offset, size, concurrency)
        remaining = sum(end - first for first, end in parts)
        # A partial with a part map goes on in parts whatever is left: one stream would
        # fetch again the spans already there.
        if not parts or not (resuming_parts or worth_splitting(remaining, concurrency)):
            return None
        open_direct, open_part = self._part_openers(download, repository, digest)
        if len(parts) == 1:
            # Nothing to probe: the first answer serves the one part, if it honoured Range.
            honoured = not offset or download._response.status_code == 206
            return (parts, [download._response], open_part) if honoured else None
        try:
            probe = await open_direct(*parts[1])
        except (RegistryError, TransportError, ResumeError, RedirectError) as error:
            logger.info("parallel ranges unavailable (%s); downloading as one stream", error)
            return None
        return parts, [download._response, probe], open_part

    def _part_openers(
        self, download: AsyncBlobDownload, repository: str, digest: str
    ) -> tuple[AsyncOpenPart, AsyncOpenPart]:
        """The async twin of ``BlobClient._part_openers``."""
        verifier, url, deadline = download._verifier, download._response.url, download._deadline
        size = verifier.size
        assert size is not None
        follower = RedirectFollower(self._http.base_url, verifier.digest, self._max_redirects)

        async def checked(answer: httpx.Response, first: int, end: int) -> httpx.Response:
            try:
                check_part(answer, first, end, size)
            except BaseException:
                await answer.aclose()
                raise
            return answer

        async def open_direct(first: int, end: int) -> httpx.Response:
            request = self._http.build_request(
                "GET", url, headers={"Range": range_header(first, end)}
            )
            try:
                answer = await self._http.send(
                    request, stream=True, auth=follower.auth_for(request)
                )
            except httpx.TransportError as error:
                raise TransportError(f"GET {redact_url(url)} failed: {error!r}") from error
            return await checked(answer, first, end)

        async def open_part(first: int, end: int) -> httpx.Response:
            try:
                return await open_direct(first, end)
            except (RegistryError, TransportError, ResumeError, RedirectError) as error:
                logger.debug("part %d-%d: %r; asking the registry again", first, end - 1, error)
            range_ = range_header(first, end)
            sent = await self._send(
                get_blob._get_kwargs, repository, digest, deadline, range_=range_
            )
            return await checked(sent[0], first, end)

        return open_direct, open_part

    async def _download(
        self,
        repository: str,
        digest: str,
        verifier: BodyVerifier,
        offset: int = 0,
        report: ProgressReporter | None = None,
        split: AsyncSplit | None = None,
        *,
        started: float | None = None,
    ) -> AsyncBlobDownload:
        deadline = self._deadline_from(time.monotonic() if started is None else started)

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
        return AsyncBlobDownload(response, verifier, self._retry, deadline, open_at, report, split)

    def _deadline_from(self, started: float) -> float | None:
        """When a download that started at ``started`` (``time.monotonic()``) must end."""
        return None if self._deadline is None else started + self._deadline

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

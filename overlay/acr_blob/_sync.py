"""The synchronous client: :class:`BlobClient` and :class:`BlobDownload`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, BinaryIO, overload

import httpx

from acr_blob_api.api.blob import check_blob_exists, get_blob

from ._body import Lend, body_chunks
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
from ._ranged_stream import ParallelChunks
from ._ranged_sync import OpenPart, RangedDownload
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

__all__ = ["BlobClient", "BlobDownload"]

logger = logging.getLogger("acr_blob")

Split = Callable[["BlobDownload"], "ParallelChunks | None"]
"""``split(download)``: parallel parts for iterating ``download``, or ``None`` for one stream."""


class BlobDownload(DownloadBase):
    """A blob whose headers have arrived; iterate it for the bytes, verified as they pass.

    The last chunk is followed by the verification: when the body hashes to anything but the
    requested digest, or is shorter or longer than announced, iteration raises instead of
    ending. Bytes already handed out are therefore unverified until iteration ends without
    error; :meth:`BlobClient.download_blob_to_file` never shows them at the target path. A body
    that breaks off is resumed from its last byte (``Range``), through the registry again.

    Example::

        with client.download_blob("library/ubuntu", digest) as download:
            for chunk in download:
                sink.write(chunk)
    """

    def __init__(
        self,
        response: httpx.Response,
        verifier: BodyVerifier,
        policy: RetryPolicy,
        deadline: float | None,
        reopen: Callable[[int], httpx.Response],
        reporter: ProgressReporter | None = None,
        split: Split | None = None,
    ) -> None:
        super().__init__(response, verifier, policy, deadline, reporter)
        self._reopen = reopen
        self._split = split
        self._parallel: ParallelChunks | None = None

    def __iter__(self) -> Iterator[bytes]:
        self._start()
        return self._chunks()

    @overload
    def _chunks(self) -> Iterator[bytes]: ...
    @overload
    def _chunks(self, lend: Lend | None) -> Iterator[bytes | memoryview]: ...
    def _chunks(self, lend: Lend | None = None) -> Iterator[bytes | memoryview]:
        try:
            self._parallel = self._split(self) if self._split is not None else None
            if self._parallel is not None:
                for piece in self._parallel:
                    self._verifier.feed(piece)
                    self._received()
                    yield piece
                self._verified()
                return
            while True:
                try:
                    for raw in body_chunks(self._response, lend):
                        chunk = self._verifier.feed(raw)
                        self._received()
                        if chunk:
                            yield chunk
                    break
                except (httpx.TransportError, ResumeError) as error:
                    self._response.close()
                    self._resume(error)
            self._verified()
        finally:
            self.close()

    def _resume(self, error: Exception) -> None:
        """Reopen the body at the first byte not yet received, or raise saying how far it got."""
        while True:
            delay = self._resume_delay(error)
            if delay:
                self._policy.sleep(delay)
            offset = self._verifier.received
            logger.debug("resuming at byte %d after %r", offset, error)
            self._response = self._reopen(offset)
            try:
                self._verifier.accept(self._response, offset)
                return
            except ResumeError as wrong:
                self._response.close()
                error = wrong

    def readall(self) -> bytes:
        """The whole verified blob in memory (mind the size)."""
        return b"".join(self)

    def readinto(self, file: BinaryIO) -> int:
        """Write the blob to an open binary file; return the number of bytes written."""
        written = 0
        for chunk in self:
            file.write(chunk)
            written += len(chunk)
        return written

    def close(self) -> None:
        """Release the connection; a download closed before its end was not verified."""
        self._started = True
        if self._parallel is not None:
            self._parallel.close()
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

    ``timeout`` sets httpx's connect, read, write and pool timeouts (a float for all, or an
    ``httpx.Timeout``); ``deadline`` bounds each download in all, in seconds. ``retry`` decides
    how requests that failed before their body are retried (408, 429 with ``Retry-After``, 5xx,
    connection errors) and how broken bodies are resumed. ``resume`` (default on) keeps a
    failed :meth:`download_blob_to_file`'s partial file for the next call to continue.

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
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
        verify: VerifyTypes = True,
        max_redirects: int = 10,
        allow_insecure: bool = False,
        max_concurrency: int = 1,
        resume: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._api = api_client(
            endpoint,
            credential,
            timeout=timeout,
            verify=verify,
            transport=transport,
            on_response=check_location,
            allow_insecure=allow_insecure,
        )
        self._http = self._api.get_httpx_client()
        self._max_redirects = max_redirects
        self._deadline = deadline
        self._retry = retry or RetryPolicy()
        self._max_concurrency = check_concurrency(max_concurrency)
        self._resume_partials = resume

    @property
    def endpoint(self) -> str:
        """The registry's base URL."""
        return str(self._http.base_url).rstrip("/")

    def download_blob(
        self,
        repository: str,
        digest: str,
        *,
        progress: ProgressCallback | None = None,
        max_concurrency: int | None = None,
    ) -> BlobDownload:
        """Request a blob and return once its headers are in; iterate the result for the bytes.

        Raises :class:`~acr_blob.errors.BlobNotFoundError` (and any other error answer) here,
        before any byte of body is read. ``progress(done_bytes, total_bytes)`` is called as the
        bytes pass, at most ten times a second, and once more when the blob is verified.

        ``max_concurrency`` (default: the client's) above 1 fetches a large blob as ``Range``
        parts over that many connections and hands the bytes out in order; the parts that
        arrive early wait in memory, at most 32 MiB of them.

        Example::

            with client.download_blob("library/ubuntu", digest, max_concurrency=4) as download:
                data = download.readall()
        """
        checked = parse_digest(digest)
        concurrency = check_concurrency(
            self._max_concurrency if max_concurrency is None else max_concurrency
        )
        report = reporter(progress)
        split = None
        if concurrency > 1:

            def split(download: BlobDownload) -> ParallelChunks | None:
                return self._split_stream(download, repository, digest, concurrency)

        return self._download(repository, digest, BodyVerifier(checked), 0, report, split)

    def download_blob_to_file(
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

        A download that broke off keeps its bytes in a partial file beside ``path`` (named after
        the digest); the next call for the same digest checks them and continues from their end.
        Partial bytes that turn out bad are thrown away and the blob downloaded once more.
        ``resume=False`` (default: the client's ``resume``) neither continues nor keeps one.

        Threads, tasks and processes that download the same digest into the same folder take
        turns: one downloads, the others wait for it (within the client's ``deadline``) and
        return its result without downloading again when the target is still the file it made.
        A disk without room raises :class:`~acr_blob.errors.DiskFullError`, before the body
        when the blob's size is known.

        ``max_concurrency`` (default: the client's) above 1 fetches a large blob as disjoint
        ``Range`` parts of the same (redirected) URL over that many connections, written in
        place and hashed in order; a small blob, or a server that ignores ``Range``, gets one
        stream. ``progress`` works as for :meth:`download_blob`.

        Example::

            properties = client.download_blob_to_file(
                "library/ubuntu", digest, "layer.tgz", max_concurrency=4
            )
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
                time.sleep(delay)
            if (done := turn.completed_meanwhile()) is not None:
                return done
            keep = self._resume_partials if resume is None else resume
            with turn.partial(keep) as partial:
                properties = self._download_partial(
                    partial, repository, checked, concurrency, report, started
                )
                turn.record(partial, properties)
            return properties

    def _download_partial(
        self,
        partial: PartialFile,
        repository: str,
        checked: Digest,
        concurrency: int,
        report: ProgressReporter | None,
        started: float,
    ) -> BlobProperties:
        """Resume or start the download into ``partial``, then commit it; bad partial data is
        thrown away and the blob downloaded once more."""
        digest = str(checked)
        verifier = BodyVerifier(checked)
        offset = partial.replay(verifier)
        target = (partial, repository, digest)
        try:
            return self._download_into(*target, verifier, offset, concurrency, report, started)
        except (DigestMismatchError, BlobSizeError, ResumeError):
            if not offset:
                raise
            logger.info("partial data for %s was bad; downloading it again", digest)
        partial.restart()
        fresh = BodyVerifier(checked)
        return self._download_into(*target, fresh, 0, concurrency, report, started)

    def _download_into(
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
            download = self._download(repository, digest, verifier, offset, report, started=started)
        except RegistryError as error:
            if not (offset and error.status_code == 416):
                raise
            # The partial file already holds the whole blob: it only needs its check.
            verifier.finish()
            if report is not None:
                report.finish(offset)
            partial.commit()
            return BlobProperties(digest, offset)
        if offset:
            logger.info("resuming %s at byte %d of %s", digest, offset, verifier.size or "?")
        with download:
            partial.ensure_space(verifier.size)
            partial.preallocate(verifier.size)
            if not self._download_ranges(partial, download, concurrency, repository, digest):
                with partial.appending(verifier.size) as appender:
                    download._start()
                    for chunk in download._chunks(appender.lend):
                        appender.write(chunk)
        partial.commit()
        return download.properties

    def _download_ranges(
        self,
        partial: PartialFile,
        download: BlobDownload,
        concurrency: int,
        repository: str,
        digest: str,
    ) -> bool:
        """Fetch the rest of ``download`` as parallel ranges into ``partial``; ``False`` for one
        stream (see :meth:`_probe_parts`)."""
        done = partial.done

        def plan(start: int, size: int, concurrency: int) -> list[tuple[int, int]]:
            return plan_parts(start, size, concurrency, done)

        probed = self._probe_parts(download, repository, digest, concurrency, plan, bool(done))
        if probed is None:
            return False
        parts, responses, open_part = probed
        download._start()
        RangedDownload(
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

    def _split_stream(
        self, download: BlobDownload, repository: str, digest: str, concurrency: int
    ) -> ParallelChunks | None:
        """Parallel parts for iterating ``download``, or ``None`` for one stream (see
        :meth:`_probe_parts`)."""
        probed = self._probe_parts(download, repository, digest, concurrency, plan_stream_parts)
        if probed is None:
            return None
        parts, responses, open_part = probed
        return ParallelChunks(
            parts,
            responses,
            open_part,
            concurrency=concurrency,
            policy=self._retry,
            on_wait=download._check_deadline,
        )

    def _probe_parts(
        self,
        download: BlobDownload,
        repository: str,
        digest: str,
        concurrency: int,
        plan: PlanParts,
        resuming_parts: bool = False,
    ) -> tuple[list[tuple[int, int]], list[httpx.Response], OpenPart] | None:
        """The parts of the rest of ``download``, the answers open for the first ones (its own,
        and the probe for the second), and how to open the others; ``None`` when parallel
        ranges are not worth it (a small blob) or the server does not honour ``Range``
        (``download`` is then still unread). With ``resuming_parts`` (a part map) it goes on in
        parts whatever is left."""
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
            probe = open_direct(*parts[1])
        except (RegistryError, TransportError, ResumeError, RedirectError) as error:
            logger.info("parallel ranges unavailable (%s); downloading as one stream", error)
            return None
        return parts, [download._response, probe], open_part

    def _part_openers(
        self, download: BlobDownload, repository: str, digest: str
    ) -> tuple[OpenPart, OpenPart]:
        """``open_direct(first, end)``: a checked ``206`` for those bytes of the URL that
        ``download`` came from (storage, or the registry itself); ``open_part`` tries that, then
        the registry again (a fresh redirect), for signed URLs expire."""
        verifier, url, deadline = download._verifier, download._response.url, download._deadline
        size = verifier.size
        assert size is not None
        follower = RedirectFollower(self._http.base_url, verifier.digest, self._max_redirects)

        def checked(answer: httpx.Response, first: int, end: int) -> httpx.Response:
            try:
                check_part(answer, first, end, size)
            except BaseException:
                answer.close()
                raise
            return answer

        def open_direct(first: int, end: int) -> httpx.Response:
            request = self._http.build_request(
                "GET", url, headers={"Range": range_header(first, end)}
            )
            try:
                answer = self._http.send(request, stream=True, auth=follower.auth_for(request))
            except httpx.TransportError as error:
                raise TransportError(f"GET {redact_url(url)} failed: {error!r}") from error
            return checked(answer, first, end)

        def open_part(first: int, end: int) -> httpx.Response:
            try:
                return open_direct(first, end)
            except (RegistryError, TransportError, ResumeError, RedirectError) as error:
                logger.debug("part %d-%d: %r; asking the registry again", first, end - 1, error)
            range_ = range_header(first, end)
            answer = self._send(get_blob._get_kwargs, repository, digest, deadline, range_=range_)
            return checked(answer[0], first, end)

        return open_direct, open_part

    def _download(
        self,
        repository: str,
        digest: str,
        verifier: BodyVerifier,
        offset: int = 0,
        report: ProgressReporter | None = None,
        split: Split | None = None,
        *,
        started: float | None = None,
    ) -> BlobDownload:
        deadline = self._deadline_from(time.monotonic() if started is None else started)

        def open_at(at: int) -> httpx.Response:
            ranged = {"range_": f"bytes={at}-"} if at else {}
            return self._send(get_blob._get_kwargs, repository, digest, deadline, **ranged)[0]

        response = open_at(offset)
        try:
            verifier.accept(response, offset)
        except BaseException:
            response.close()
            raise
        return BlobDownload(response, verifier, self._retry, deadline, open_at, report, split)

    def _deadline_from(self, started: float) -> float | None:
        """When a download that started at ``started`` (``time.monotonic()``) must end."""
        return None if self._deadline is None else started + self._deadline

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
                return self._send_once(kwargs, checked, success), checked
            except (RegistryError, TransportError) as error:
                failures += 1
                delay = retry_delay(self._retry, error, failures, waited, deadline)
                if delay is None:
                    raise
                logger.info("retrying in %.2f s after %s", delay, error)
                self._retry.sleep(delay)
                waited += delay

    def _send_once(
        self, kwargs: dict[str, Any], digest: Digest, success: tuple[int, ...]
    ) -> httpx.Response:
        """One try: send, follow redirects, and return the final success with its body unread."""
        request = self._http.build_request(**kwargs)
        follower = RedirectFollower(request.url, digest, self._max_redirects)
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
                    if response.status_code in success:
                        return response
                    raise error_for(response, self._read_error_body(response), follower)
            except BaseException:
                response.close()
                raise
            response.close()
            request = redirect

    @staticmethod
    def _read_error_body(response: httpx.Response) -> bytes:
        if not error_body_expected(response):
            return b""
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

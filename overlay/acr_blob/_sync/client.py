# Generated from acr_blob/_async/client.py by tools/unasync.py: do not edit.
"""The client: checks its arguments, then hands the work to a download (:mod:`.download`)."""

from __future__ import annotations

import os
import time
from types import TracebackType

import httpx

from acr_blob_api.api.blob import check_blob_exists

from .._concurrency import sleep
from .._config import (
    DEFAULT_TIMEOUT,
    Credential,
    TimeoutTypes,
    VerifyTypes,
    api_client,
    check_concurrency,
)
from .._file_lock import DownloadTurn
from .._files import check_target
from .._progress import ProgressCallback, reporter
from .._protocol import check_location, properties_from
from .._verify import BodyVerifier
from ..errors import BlobNotFoundError
from ..models import BlobProperties
from ..references import parse_digest, validate_repository
from ..retry import RetryPolicy
from .download import BlobDownload, Sender, download_to_partial


def _check_location(response: httpx.Response) -> None:
    """``check_location`` as a response hook (an async client's hooks are coroutines)."""
    check_location(response)


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

    The sync and the async client take the same arguments and behave alike; the async one
    never holds up its event loop on the disk.

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
        api = api_client(
            endpoint,
            credential,
            timeout=timeout,
            verify=verify,
            transport=transport,
            on_response=_check_location,
            allow_insecure=allow_insecure,
        )
        self._sender = Sender(
            api.get_httpx_client(), retry or RetryPolicy(), max_redirects
        )
        self._deadline = deadline
        self._max_concurrency = check_concurrency(max_concurrency)
        self._resume_partials = resume

    @property
    def endpoint(self) -> str:
        """The registry's base URL."""
        return str(self._sender.http.base_url).rstrip("/")

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

            with client.download_blob("library/ubuntu", digest) as download:
                data = download.readall()
        """
        validate_repository(repository)
        verifier = BodyVerifier(parse_digest(digest))
        return BlobDownload.open(
            self._sender,
            repository,
            verifier,
            deadline=self._deadline_from(time.monotonic()),
            reporter=reporter(progress),
            concurrency=self._concurrency(max_concurrency),
        )

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
        concurrency = self._concurrency(max_concurrency)
        target = check_target(path)
        report = reporter(progress)
        deadline = self._deadline_from(time.monotonic())
        with DownloadTurn(target, checked, deadline) as turn:
            while (delay := turn.next_delay()) is not None:
                sleep(delay)
            if (done := turn.completed_meanwhile()) is not None:
                return done
            keep = self._resume_partials if resume is None else resume
            with turn.partial(keep) as partial:
                properties = download_to_partial(
                    self._sender,
                    partial,
                    repository,
                    checked,
                    deadline=deadline,
                    reporter=report,
                    concurrency=concurrency,
                )
                turn.record(partial, properties)
            return properties

    def _concurrency(self, max_concurrency: int | None) -> int:
        return check_concurrency(
            self._max_concurrency if max_concurrency is None else max_concurrency
        )

    def _deadline_from(self, started: float) -> float | None:
        """When a download that started at ``started`` (``time.monotonic()``) must end."""
        return None if self._deadline is None else started + self._deadline

    def get_blob_properties(self, repository: str, digest: str) -> BlobProperties:
        """Size, digest, media type and ETag of a blob, from a HEAD request."""
        response, checked = self._sender.send(
            check_blob_exists._get_kwargs, repository, digest
        )
        response.close()
        return properties_from(response, checked)

    def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether the registry has this blob in this repository (a HEAD request)."""
        try:
            self.get_blob_properties(repository, digest)
        except BlobNotFoundError:
            return False
        return True

    def close(self) -> None:
        """Close the connections."""
        self._sender.close()

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

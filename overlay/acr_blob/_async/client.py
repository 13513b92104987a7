"""The client: checks its arguments, then hands the work to a download (:mod:`.download`)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Literal

import httpx

from acr_blob_api.api.blob import check_blob_exists

from .._adaptive import AUTO, Concurrency
from .._concurrency import arun_blocking, asleep
from .._config import (
    DEFAULT_TIMEOUT,
    AsyncCredential,
    TimeoutTypes,
    VerifyTypes,
    check_concurrency,
    normalize_endpoint,
)
from .._file_lock import DownloadTurn
from .._files import check_target
from .._progress import ProgressCallback, ProgressReporter, reporter
from .._protocol import properties_from
from .._verify import BodyVerifier
from ..cache import AsyncEntryStream, BlobCache, HeldEntry, env_cache_dir, env_offline
from ..errors import (
    BlobError,
    BlobNotFoundError,
    CacheMissError,
    DiskFullError,
    InvalidEndpointError,
)
from ..manifests import Manifest, Platform, PullResult
from ..mirrors import HostPlan, Mirror
from ..models import BlobProperties
from ..references import Digest, parse_digest, parse_image_reference, validate_repository
from ..retry import RetryPolicy
from .artifacts import fetch_manifest, pull_artifact, resolve_tag
from .download import AsyncBlobDownload, download_to_partial
from .sender import open_hosts

logger = logging.getLogger("acr_blob")


class AsyncBlobClient:
    """Downloads blobs from one registry; a context manager that closes its connections.

    ``endpoint`` is the registry, ``https://myregistry.azurecr.io`` or just its host name.
    ``credential`` is ``None`` (anonymous), a ``(username, password)`` tuple, a credential from
    :mod:`acr_blob.credentials` (Azure AD credentials too, :class:`~acr_blob.AsyncTokenCredential`
    among them), or any ``httpx.Auth``. The registry's challenge decides how it is used (Basic,
    or a Bearer token from its token server, cached per scope); it never reaches the storage the
    registry redirects to, and never travels over plain http beyond loopback unless
    ``allow_insecure`` is set.

    ``timeout`` sets httpx's connect, read, write and pool timeouts (a float for all, or an
    ``httpx.Timeout``); ``deadline`` bounds each download in all, in seconds. ``retry`` decides
    how requests that failed before their body are retried (408, 429 with ``Retry-After``, 5xx,
    connection errors) and how broken bodies are resumed. ``resume`` (default on) keeps a
    failed :meth:`download_blob_to_file`'s partial file for the next call to continue.

    ``max_concurrency`` is how many connections one large blob may use as parallel ``Range``
    parts (1: one stream). ``"auto"``, the default, starts each download as one stream and
    adds parts while they raise the total rate (up to 8), drops them again when the process
    runs out of CPU, and sheds them on 429/503.

    ``mirrors`` (:class:`~acr_blob.mirrors.Mirror` objects or URLs) and ``hosts_dir``
    (containerd's ``hosts.toml`` folders) name registries that are asked for blobs before the
    origin, in order; any failure at one moves on to the next host, and the origin's
    credential never goes to them. ``fallback_to_origin=False`` (or a ``hosts.toml`` without
    ``server``) leaves the origin out.

    ``cache_dir`` (default: ``$ACR_BLOB_CACHE_DIR``, else none; ``False``: none whatever the
    environment says) keeps each verified blob once for all processes that share the folder
    (:mod:`acr_blob.cache`), ``max_cache_bytes`` bounds it, and ``offline`` (default:
    ``$ACR_BLOB_OFFLINE``) serves from it alone.

    The sync and the async client take the same arguments and behave alike; the async one
    never holds up its event loop on the disk.

    Example::

        async with AsyncBlobClient("myregistry.azurecr.io", ("user", "password")) as client:
            await client.download_blob_to_file("prod/bash", "sha256:...", "layer.tar.gz")
    """

    def __init__(
        self,
        endpoint: str,
        credential: AsyncCredential = None,
        *,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
        verify: VerifyTypes = True,
        max_redirects: int = 10,
        allow_insecure: bool = False,
        max_concurrency: Concurrency = AUTO,
        resume: bool = True,
        mirrors: Iterable[Mirror | str] | None = None,
        hosts_dir: str | os.PathLike[str] | None = None,
        fallback_to_origin: bool | None = None,
        cache_dir: str | os.PathLike[str] | Literal[False] | None = None,
        max_cache_bytes: int | None = None,
        offline: bool | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        plan = HostPlan.of(normalize_endpoint(endpoint), mirrors, hosts_dir, fallback_to_origin)
        cache_dir = env_cache_dir() if cache_dir is None else cache_dir
        self._cache = BlobCache(cache_dir, max_cache_bytes) if cache_dir else None
        self._offline = env_offline() if offline is None else offline
        self._hosts = open_hosts(
            plan,
            credential,
            timeout=timeout,
            verify=verify,
            transport=transport,
            allow_insecure=allow_insecure,
            retry=retry or RetryPolicy(),
            max_redirects=max_redirects,
        )
        self._deadline = deadline
        self._max_concurrency = check_concurrency(max_concurrency)
        self._resume_partials = resume

    @property
    def endpoint(self) -> str:
        """The registry's base URL."""
        return str(self._hosts.origin.http.base_url).rstrip("/")

    async def download_blob(
        self,
        repository: str,
        digest: str,
        *,
        progress: ProgressCallback | None = None,
        max_concurrency: Concurrency | None = None,
    ) -> AsyncBlobDownload:
        """Request a blob and return once its headers are in; iterate the result for the bytes.

        Raises :class:`~acr_blob.errors.BlobNotFoundError` (and any other error answer) here,
        before any byte of body is read. ``progress(done_bytes, total_bytes)`` is called as the
        bytes pass, at most ten times a second, and once more when the blob is verified.

        ``max_concurrency`` (default: the client's) above 1 fetches a large blob as ``Range``
        parts over that many connections and hands the bytes out in order; the parts that
        arrive early wait in memory, at most 32 MiB of them. ``"auto"`` decides the number
        as the download runs.

        With a cache, the bytes come from the blob's entry, verified again as they pass; a
        blob not yet there is downloaded into the cache first (``progress`` reports that).

        Example::

            async with await client.download_blob("library/ubuntu", digest) as download:
                data = await download.readall()
        """
        validate_repository(repository)
        checked = parse_digest(digest)
        verifier = BodyVerifier(checked)
        deadline = self._deadline_from(time.monotonic())
        report = reporter(progress)
        concurrency = self._concurrency(max_concurrency)
        route = self._hosts.route(str(checked))
        entry, report = await self._cache_entry(repository, checked, deadline, report, concurrency)
        if entry is not None:
            answer = entry.response(AsyncEntryStream(entry))
            return AsyncBlobDownload(
                route, repository, verifier, answer, deadline=deadline, reporter=report
            )
        return await AsyncBlobDownload.open(
            route,
            repository,
            verifier,
            deadline=deadline,
            reporter=report,
            concurrency=concurrency,
        )

    async def download_blob_to_file(
        self,
        repository: str,
        digest: str,
        path: str | os.PathLike[str],
        *,
        progress: ProgressCallback | None = None,
        max_concurrency: Concurrency | None = None,
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
        stream. ``"auto"`` starts with one stream and adds parts while they pay.
        ``progress`` works as for :meth:`download_blob`.

        With a cache, ``path`` is made from the blob's entry by a reflink where the filesystem
        has them, else a copy (never a link: editing ``path`` leaves the entry as it was); a
        blob not yet there is downloaded into the cache first. A cache folder that cannot be
        written, or is full, is passed by with a warning.

        Example::

            properties = await client.download_blob_to_file(
                "library/ubuntu", digest, "layer.tgz", max_concurrency=4
            )
        """
        validate_repository(repository)
        checked = parse_digest(digest)
        concurrency = self._concurrency(max_concurrency)
        target = check_target(path)
        report = reporter(progress)
        deadline = self._deadline_from(time.monotonic())
        entry, report = await self._cache_entry(repository, checked, deadline, report, concurrency)
        if entry is not None:
            with entry:
                return await arun_blocking(entry.place, target)
        keep = self._resume_partials if resume is None else resume
        return await self._download_file(
            target, repository, checked, deadline, report, concurrency, keep=keep
        )

    async def _download_file(
        self,
        target: Path,
        repository: str,
        digest: Digest,
        deadline: float | None,
        report: ProgressReporter | None,
        concurrency: Concurrency,
        *,
        keep: bool,
    ) -> BlobProperties:
        """Download into ``target`` in turn with whoever else downloads it (see
        :class:`~acr_blob._file_lock.DownloadTurn`)."""
        async with self._turn(target, digest, deadline) as turn:
            if (done := turn.completed_meanwhile()) is not None:
                return done
            return await self._take_turn(
                turn, repository, digest, deadline, report, concurrency, keep=keep
            )

    @asynccontextmanager
    async def _turn(
        self, target: Path, digest: Digest, deadline: float | None
    ) -> AsyncIterator[DownloadTurn]:
        """The turn at downloading ``digest`` into ``target``, once the wait for it is over."""
        with DownloadTurn(target, digest, deadline) as turn:
            while (delay := turn.next_delay()) is not None:
                await asleep(delay)
            yield turn

    async def _take_turn(
        self,
        turn: DownloadTurn,
        repository: str,
        digest: Digest,
        deadline: float | None,
        report: ProgressReporter | None,
        concurrency: Concurrency,
        *,
        keep: bool,
        read_only: bool = False,
    ) -> BlobProperties:
        """The download of a caller whose turn it is, into the turn's partial file."""
        with turn.partial(keep, read_only=read_only) as partial:
            properties = await download_to_partial(
                self._hosts.route(str(digest)),
                partial,
                repository,
                digest,
                deadline=deadline,
                reporter=report,
                concurrency=concurrency,
            )
            turn.record(partial, properties)
        return properties

    async def _cache_entry(
        self,
        repository: str,
        digest: Digest,
        deadline: float | None,
        report: ProgressReporter | None,
        concurrency: Concurrency,
    ) -> tuple[HeldEntry | None, ProgressReporter | None]:
        """The cache's entry for ``digest``, held, downloaded into the cache first when it is
        missing; ``None`` without a usable cache. Returns the progress reporter reading the
        entry should feed, too: none after a download into the cache has reported."""
        cache = self._cache
        entry = None if cache is None else await arun_blocking(cache.open, digest)
        if entry is not None:
            return entry, report
        if self._offline:
            raise CacheMissError(str(digest), None if cache is None else cache.root)
        if cache is None:
            return None, report
        try:
            path = await arun_blocking(cache.prepare, digest)
            # Waiters take the entry that the holder made, whose use since changed its times.
            async with self._turn(path, digest, deadline) as turn:
                entry = await arun_blocking(cache.open, digest)
                if entry is None:
                    await self._take_turn(
                        turn,
                        repository,
                        digest,
                        deadline,
                        report,
                        concurrency,
                        keep=self._resume_partials,
                        read_only=True,
                    )
                    # Held before the eviction, which would otherwise take a blob larger than
                    # the bound.
                    entry = await arun_blocking(cache.open, digest)
        except OSError as error:
            if isinstance(error, BlobError) and not isinstance(error, DiskFullError):
                raise
            logger.warning("not caching %s: %s", digest, error)
            return None, report
        await arun_blocking(cache.prune)
        return entry, None

    def _concurrency(self, max_concurrency: Concurrency | None) -> Concurrency:
        return check_concurrency(
            self._max_concurrency if max_concurrency is None else max_concurrency
        )

    def _deadline_from(self, started: float) -> float | None:
        """When a download that started at ``started`` (``time.monotonic()``) must end."""
        return None if self._deadline is None else started + self._deadline

    async def get_blob_properties(self, repository: str, digest: str) -> BlobProperties:
        """Size, digest, media type and ETag of a blob, from a HEAD request (offline: its
        size and digest, from the cache)."""
        if self._offline:
            validate_repository(repository)
            entry, _ = await self._cache_entry(repository, parse_digest(digest), None, None, 1)
            assert entry is not None  # offline, a miss raised
            with entry:
                return entry.properties
        route = self._hosts.route(digest)
        response, checked = await route.open(
            lambda sender: sender.send(check_blob_exists._get_kwargs, repository, digest)
        )
        await response.aclose()
        return properties_from(response, checked)

    async def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether the registry has this blob in this repository (a HEAD request; offline,
        whether the cache has it, and a miss raises :class:`~acr_blob.errors.CacheMissError`)."""
        try:
            await self.get_blob_properties(repository, digest)
        except BlobNotFoundError:
            return False
        return True

    async def get_manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest a tag or digest names, checked: by digest its bytes must hash to it,
        by tag to the ``Docker-Content-Digest`` the registry sent. At most 4 MiB is read.

        A manifest by digest comes from the cache when it is there (pulls keep them), else
        from mirrors with ``pull``; by tag, from mirrors with ``resolve``, then the origin.

        Example::

            manifest = await client.get_manifest("library/ubuntu", "24.04")
            print(manifest.media_type, manifest.digest, manifest.is_index)
        """
        validate_repository(repository)
        return await fetch_manifest(self._hosts, self._cache, self._offline, repository, reference)

    async def resolve(self, repository: str, tag: str) -> str:
        """The digest ``tag`` points at (a ``HEAD`` request).

        Example::

            digest = await client.resolve("library/ubuntu", "24.04")
        """
        validate_repository(repository)
        if self._offline:
            raise CacheMissError(f"{repository}:{tag}", self._cache.root if self._cache else None)
        return await resolve_tag(self._hosts, repository, tag)

    async def pull(
        self,
        reference: str,
        dest: str | os.PathLike[str],
        *,
        platform: str | Platform | None = None,
        max_concurrency: int = 4,
        progress: ProgressCallback | None = None,
        files: bool = False,
    ) -> PullResult:
        """Pull an image or artifact (``REGISTRY/REPOSITORY:TAG``, ``...@sha256:...`` or both;
        the registry must be the client's) into the folder ``dest``, as an OCI image layout
        that skopeo, oras and crane read (``index.json`` names it by its tag).

        An index is resolved to ``platform`` (``"os/arch[/variant]"``, default: the running
        one); none that matches raises :class:`~acr_blob.errors.PlatformNotFoundError`
        naming those on offer. Up to ``max_concurrency`` blobs download side by side, each
        verified, resumable and through the cache and mirrors as any download; blobs already
        in ``dest`` are checked and skipped. ``progress`` reports the bytes of all blobs.
        ``files=True`` writes the layers titled ``org.opencontainers.image.title`` as files of
        that name instead, as ``oras pull`` does (a title that is not a plain file name is
        refused). Every manifest, descriptor and title is checked before anything is written,
        and ``index.json`` is written last.

        Example::

            result = await client.pull("myregistry.azurecr.io/models/llm:v1", "llm", files=True)
            print([path.name for path in result.files])
        """
        image = parse_image_reference(reference)
        # The registry by host and port: the client's scheme is the one to use.
        if httpx.URL(image.endpoint).netloc != httpx.URL(self.endpoint).netloc:
            raise InvalidEndpointError(
                f"{reference} is not on this client's registry {self.endpoint}"
            )
        wanted = (
            platform
            if isinstance(platform, Platform)
            else Platform.current()
            if platform is None
            else Platform.parse(platform)
        )
        concurrency = check_concurrency(max_concurrency, auto=False)
        assert isinstance(concurrency, int)

        async def fetch(repository: str, name: str) -> Manifest:
            return await self.get_manifest(repository, name)

        async def download(
            repository: str, digest: str, target: Path, report: ProgressCallback
        ) -> BlobProperties:
            return await self.download_blob_to_file(repository, digest, target, progress=report)

        return await pull_artifact(
            fetch,
            download,
            image,
            Path(dest),
            platform=wanted,
            concurrency=concurrency,
            progress=progress,
            files=files,
        )

    async def aclose(self) -> None:
        """Close the connections."""
        await self._hosts.aclose()

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

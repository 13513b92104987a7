"""One blob download.

:class:`AsyncBlobDownload` owns one download from its first answer on: the answer (it alone
closes it), the verifier, the deadline, resumption (at the next host when a mirror fails, see
:mod:`.sender`), and the parallel parts with the probe that decides on them.
:func:`download_to_partial` is the download into a partial file.

With ``max_concurrency="auto"`` a download starts as one stream, steered by a
:class:`~acr_blob._adaptive.ConcurrencyController`: when it asks for more connections, the
stream stops where it is (everything before is written and hashed), and parallel parts take
the rest over from there, started and stopped by the controller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Sequence
from types import TracebackType
from typing import BinaryIO, overload

import attrs
import httpx

from acr_blob_api.api.blob import get_blob

from .._adaptive import AUTO, CEILING, Concurrency, ConcurrencyController
from .._concurrency import arun_blocking
from .._fast_read import Lend
from .._files import PartialFile
from .._part_map import Span
from .._progress import ProgressReporter
from .._protocol import properties_from
from .._ranges import (
    MIN_PART,
    PlanParts,
    check_part,
    plan_parts,
    plan_stream_parts,
    range_header,
    worth_splitting,
)
from .._verify import BodyVerifier
from ..errors import (
    BlobError,
    BlobSizeError,
    DeadlineExceededError,
    DigestMismatchError,
    RedirectError,
    RegistryError,
    ResumeError,
    TransportError,
)
from ..models import BlobProperties
from ..references import Digest
from ..retry import Resumptions, parse_retry_after
from .body import abody_chunks
from .ranged import AsyncParallelChunks, AsyncRangedDownload
from .sender import HOST_FAILURES, AsyncRoute, AsyncSender

logger = logging.getLogger("acr_blob")

# What the partial file's own bytes can cause, when they were bad.
_BAD_PARTIAL = (DigestMismatchError, BlobSizeError, ResumeError)
# What makes a part's request fall back to the registry, or parallel parts to one stream.
_PART_FAILURES = (RegistryError, TransportError, ResumeError, RedirectError)
# Answers that say the server wants fewer requests.
_THROTTLED = (429, 503)
Parts = list[tuple[int, int]]


class AsyncBlobDownload:
    """A blob whose headers have arrived; iterate it for the bytes, verified as they pass.

    The last chunk is followed by the verification: when the body hashes to anything but the
    requested digest, or is shorter or longer than announced, iteration raises instead of
    ending. Bytes already handed out are therefore unverified until iteration ends without
    error; ``download_blob_to_file`` never shows them at the target path. A body that breaks
    off is resumed from its last byte (``Range``), through the registry again.

    Example::

        async with await client.download_blob("library/ubuntu", digest) as download:
            async for chunk in download:
                sink.write(chunk)
    """

    def __init__(
        self,
        route: AsyncRoute,
        repository: str,
        verifier: BodyVerifier,
        response: httpx.Response,
        *,
        deadline: float | None,
        reporter: ProgressReporter | None = None,
        concurrency: Concurrency = 1,
    ) -> None:
        self._route = route
        self._repository = repository
        self._verifier = verifier
        self._response = response
        self._parts_url = response.url
        self._deadline = deadline
        self._reporter = reporter
        self._concurrency = concurrency if isinstance(concurrency, int) else 1
        self._controller = ConcurrencyController() if concurrency == AUTO else None
        # Parts planned for: the connections there are, or may come to be.
        self._planned = CEILING if self._controller is not None else self._concurrency
        self._started = False
        self._parallel: AsyncParallelChunks | None = None
        # Where one stream hands over to parts ("auto"): the parts, and the first one's answer.
        self._handover: tuple[Parts, httpx.Response] | None = None
        self._resumptions = Resumptions(route.sender.retry, verifier.received)
        self.properties = attrs.evolve(
            properties_from(response, verifier.digest), size=verifier.size
        )

    @classmethod
    async def open(
        cls,
        route: AsyncRoute,
        repository: str,
        verifier: BodyVerifier,
        *,
        deadline: float | None,
        reporter: ProgressReporter | None = None,
        concurrency: Concurrency = 1,
    ) -> AsyncBlobDownload:
        """Request the blob from ``verifier.received`` on; return once its headers are in."""
        response = await _request_blob(route, repository, verifier, deadline)
        return cls(
            route,
            repository,
            verifier,
            response,
            deadline=deadline,
            reporter=reporter,
            concurrency=concurrency,
        )

    @property
    def _sender(self) -> AsyncSender:
        """The sender of the host serving the download."""
        return self._route.sender

    @property
    def size(self) -> int | None:
        """The blob's size, as announced by the server, or ``None`` when it sent none."""
        return self.properties.size

    @property
    def digest(self) -> str:
        """The requested digest, which the content is verified against."""
        return self.properties.digest

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        self._start()
        return self._chunks(split=True)

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
        """Release the connections at once; a download closed before its end was not verified."""
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

    def _start(self) -> None:
        if self._started:
            raise BlobError("this download has already been read or closed")
        self._started = True

    @overload
    def _chunks(self, lend: None = None, *, split: bool = ...) -> AsyncGenerator[bytes, None]: ...
    @overload
    def _chunks(
        self, lend: Lend | None, *, split: bool = ...
    ) -> AsyncGenerator[bytes | memoryview, None]: ...
    async def _chunks(
        self, lend: Lend | None = None, *, split: bool = False
    ) -> AsyncGenerator[bytes | memoryview, None]:
        """The verified bytes; with ``split``, as parallel parts where they pay. Under
        ``"auto"``, one stream until the controller wants more connections: iterating, parts
        then hand out the rest; to a file (no ``split``), the bytes end there, unverified, and
        :meth:`_save_into` goes on in parts."""
        try:
            if split and self._controller is None:
                self._parallel = await self._split()
            while True:
                if self._parallel is None:
                    plan = plan_stream_parts if split else plan_parts
                    async for chunk in self._stream(lend, plan):
                        yield chunk
                    if self._handover is None:
                        self._verified()
                        return
                    if not split:
                        return
                    parts, probe = self._handover
                    self._handover = None
                    self._parallel = self._parallel_chunks(parts, [probe])
                async for piece in self._parallel.chunks():
                    self._verifier.feed(piece)
                    self._received()
                    yield piece
                if self._parallel.handed_back is None:
                    self._verified()
                    return
                # "auto" came down to one connection: one stream again, from there.
                logger.debug("auto: one stream again from byte %d", self._parallel.handed_back)
                await self._parallel.aclose()
                self._parallel = None
                await self._restream()
        finally:
            await self.aclose()

    async def _stream(
        self, lend: Lend | None, plan: PlanParts
    ) -> AsyncGenerator[bytes | memoryview, None]:
        """The bytes of one stream, resumed when it breaks off; under ``"auto"`` it stops early
        once :meth:`_hand_over` has opened the first part (``plan`` cuts the rest)."""
        while True:
            body = abody_chunks(self._response, lend, self._deadline)
            try:
                async for raw in body:
                    chunk = self._verifier.feed(raw)
                    self._received()
                    if chunk:
                        yield chunk
                    if self._wants_parts() and await self._hand_over(plan):
                        return
                return
            except (httpx.TransportError, ResumeError) as error:
                await self._response.aclose()
                await self._resume(error)
            finally:
                await body.aclose()

    async def _restream(self) -> None:
        """One stream for the rest, where parallel parts handed back (all before it is in)."""
        self._response = await _request_blob(
            self._route, self._repository, self._verifier, self._deadline
        )
        self._parts_url = self._response.url

    def _wants_parts(self) -> bool:
        """Whether the controller asks for more than the one stream, and parts can pay."""
        controller, size = self._controller, self._verifier.size
        if controller is None or size is None:
            return False
        received = self._verifier.received
        if size - received < 2 * MIN_PART:
            self._controller = None  # too little left for parts to pay
            return False
        return controller.observe(time.monotonic(), received) > 1

    async def _hand_over(self, plan: PlanParts) -> bool:
        """Open the first part of the rest (through the registry again when the stream's URL
        refuses it: a signed URL may have expired since); ``False`` (one stream goes on) when
        the server refused it."""
        assert self._controller is not None and self._verifier.size is not None
        parts = plan(self._verifier.received, self._verifier.size, self._planned)
        try:
            probe = await self._open_part(*parts[0])
        except _PART_FAILURES as error:
            if self._controller.target > 1:  # not a 429 or 503, which shed the parts
                logger.info("parallel ranges unavailable (%s); going on as one stream", error)
                self._controller = None
            return False
        self._handover = parts, probe
        return True

    async def _resume(self, error: Exception) -> None:
        """Reopen the body at the first byte not yet received, or raise saying how far it got."""
        while True:
            delay = self._resume_delay(error)
            if delay:
                await self._sender.retry.async_sleep(delay)
            logger.debug("resuming at byte %d after %r", self._verifier.received, error)
            try:
                self._response = await _request_blob(
                    self._route, self._repository, self._verifier, self._deadline
                )
                self._parts_url = self._response.url
                return
            except ResumeError as wrong:
                error = wrong

    def _resume_delay(self, error: Exception) -> float:
        """How long to wait before resuming after ``error``; raises when it is time to stop."""
        self._check_deadline()  # a read cut short by the deadline is no reason to resume
        delay = self._resumptions.next_delay(error, self._verifier.received)
        if delay is None and self._route.move_on(error):
            self._resumptions = Resumptions(self._sender.retry, self._verifier.received)
            return 0.0
        if delay is None:
            failures = self._resumptions.failures
            tries = f" and {failures - 1} resumptions" if failures > 1 else ""
            raise TransportError(f"download broke off after {self._progress()}{tries}: {error!r}")
        return delay

    def _received(self) -> None:
        """After each chunk: the deadline, and progress."""
        self._check_deadline()
        if self._reporter is not None:
            self._reporter.update(self._verifier.received, self._verifier.size)

    def _verified(self) -> None:
        """After the last chunk: the verdict, and the final progress report."""
        try:
            self._verifier.finish()
        except (DigestMismatchError, BlobSizeError) as error:
            self._route.blame(error)
            raise
        if self._reporter is not None:
            self._reporter.finish(self._verifier.received)

    def _check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise DeadlineExceededError(
                f"deadline passed after {self._progress()}; the server is too slow"
            )

    def _progress(self) -> str:
        size = self._verifier.size
        return f"{self._verifier.received} of {size if size is not None else '?'} bytes"

    async def _save_into(self, partial: PartialFile) -> None:
        """Write the rest of the blob into ``partial``: as parallel ranges where they pay, else
        as one stream."""
        self._start()
        size = self._verifier.size
        try:
            await arun_blocking(partial.ensure_space, size)
            await arun_blocking(partial.preallocate, size)
            if await self._save_ranges(partial):
                return
            while True:
                appender = await arun_blocking(partial.appending, size)
                try:
                    async for chunk in self._chunks(appender.lend):
                        if appender.may_wait(len(chunk)):
                            await arun_blocking(appender.write, chunk)
                        else:
                            appender.write(chunk)
                finally:
                    await arun_blocking(appender.close)
                if self._handover is None:
                    return
                parts, probe = self._handover
                self._handover = None
                handed_back = await self._save_parts(partial, parts, [probe])
                if handed_back is None:
                    return
                # "auto" came down to one connection: one stream again, from there.
                logger.debug("auto: one stream again from byte %d", handed_back)
                await arun_blocking(partial.forget_parts, handed_back)
                await arun_blocking(partial.preallocate, size)
                await self._restream()
        finally:
            await self.aclose()

    async def _save_ranges(self, partial: PartialFile) -> bool:
        """Fetch the rest as parallel ranges into ``partial``; ``False`` for one stream."""
        done = partial.done

        def plan(start: int, size: int, concurrency: int) -> list[tuple[int, int]]:
            return plan_parts(start, size, concurrency, done)

        probed = await self._probe_parts(plan, bool(done))
        if probed is None:
            return False
        parts, responses = probed
        handed_back = await self._save_parts(partial, parts, responses, done)
        assert handed_back is None, "parts after a part map never hand back"
        return True

    async def _save_parts(
        self,
        partial: PartialFile,
        parts: Parts,
        responses: list[httpx.Response],
        done: Sequence[Span] = (),
    ) -> int | None:
        """Fetch ``parts`` into ``partial`` (``responses`` are open for the first ones); see
        :meth:`AsyncRangedDownload.run` for what it returns."""
        controller = self._controller
        handed_back = await AsyncRangedDownload(
            partial,
            self._verifier,
            parts,
            responses,
            self._open_part,
            concurrency=self._concurrency if controller is None else controller.target,
            policy=self._sender.retry,
            deadline=self._deadline,
            reporter=self._reporter,
            done=done,
            controller=controller,
        ).run()
        if handed_back is None:
            self._verified()
        return handed_back

    async def _split(self) -> AsyncParallelChunks | None:
        """Parallel parts for iterating, or ``None`` for one stream (see :meth:`_probe_parts`)."""
        probed = await self._probe_parts(plan_stream_parts)
        if probed is None:
            return None
        return self._parallel_chunks(*probed)

    def _parallel_chunks(
        self, parts: Parts, responses: list[httpx.Response]
    ) -> AsyncParallelChunks:
        return AsyncParallelChunks(
            parts,
            responses,
            self._open_part,
            concurrency=self._planned,
            policy=self._sender.retry,
            on_wait=self._check_deadline,
            controller=self._controller,
        )

    async def _probe_parts(
        self, plan: PlanParts, resuming_parts: bool = False
    ) -> tuple[Parts, list[httpx.Response]] | None:
        """The parts of the rest of the blob, the answers open for the first ones (its own, and
        the probe for the second), and how to open the others; ``None`` when parallel ranges
        are not worth it (a small blob) or the server does not honour ``Range`` (the answer is
        then still unread). With ``resuming_parts`` (a part map) it goes on in parts whatever
        is left, for one stream would fetch again the spans already there (under ``"auto"``,
        only then: else it starts as one stream)."""
        size, offset = self._verifier.size, self._verifier.received
        auto = self._controller is not None
        if size is None or (self._concurrency < 2 and not (auto and resuming_parts)):
            return None
        parts = plan(offset, size, self._planned)
        remaining = sum(end - first for first, end in parts)
        if not parts or not (resuming_parts or worth_splitting(remaining, self._concurrency)):
            return None
        if len(parts) == 1:
            # Nothing to probe: the first answer serves the one part, if it honoured Range.
            honoured = not offset or self._response.status_code == 206
            return (parts, [self._response]) if honoured else None
        try:
            probe = await self._open_direct(*parts[1])
        except _PART_FAILURES as error:
            logger.info("parallel ranges unavailable (%s); downloading as one stream", error)
            return None
        return parts, [self._response, probe]

    async def _open_direct(self, first: int, end: int) -> httpx.Response:
        """A checked ``206`` for those bytes of the URL the last redirect led to."""
        answer = await self._sender.open_range(self._parts_url, first, end, self._verifier.digest)
        if answer.status_code in _THROTTLED and self._controller is not None:
            retry_after = parse_retry_after(answer.headers.get("Retry-After"))
            self._controller.throttled(time.monotonic(), retry_after)
        return await self._checked_part(answer, first, end)

    async def _open_part(self, first: int, end: int) -> httpx.Response:
        """:meth:`_open_direct`, then the registry again (a fresh redirect): signed URLs
        expire."""
        try:
            return await self._open_direct(first, end)
        except _PART_FAILURES as error:
            logger.debug("part %d-%d: %r; asking the registry again", first, end - 1, error)
        answer, _ = await self._sender.send(
            get_blob._get_kwargs,
            self._repository,
            str(self._verifier.digest),
            self._deadline,
            range_=range_header(first, end),
        )
        part = await self._checked_part(answer, first, end)
        self._parts_url = part.url  # the parts after this one skip the URL that just failed
        return part

    async def _checked_part(self, answer: httpx.Response, first: int, end: int) -> httpx.Response:
        assert self._verifier.size is not None
        try:
            check_part(answer, first, end, self._verifier.size)
        except BaseException:
            await answer.aclose()
            raise
        return answer


async def _request_blob(
    route: AsyncRoute, repository: str, verifier: BodyVerifier, deadline: float | None
) -> httpx.Response:
    """The answer for the blob from ``verifier.received`` on, redirects followed, accepted by
    ``verifier`` (a wrong answer is closed and raised), from the first host along ``route``
    that gives one."""
    at = verifier.received
    ranged = {"range_": f"bytes={at}-"} if at else {}
    digest = str(verifier.digest)

    async def attempt(sender: AsyncSender) -> httpx.Response:
        answer, _ = await sender.send(get_blob._get_kwargs, repository, digest, deadline, **ranged)
        try:
            verifier.accept(answer, at)
        except BaseException:
            await answer.aclose()
            raise
        return answer

    return await route.open(attempt)


async def download_to_partial(
    route: AsyncRoute,
    partial: PartialFile,
    repository: str,
    digest: Digest,
    *,
    deadline: float | None,
    reporter: ProgressReporter | None,
    concurrency: Concurrency,
) -> BlobProperties:
    """Resume or start the download into ``partial``, then commit it. Bad partial data is
    thrown away and the blob downloaded once more; so are the bytes of a mirror that failed,
    and the next host along ``route`` gives the blob from its start."""
    verifier = BodyVerifier(digest)
    # Rehashing a large partial file takes a while (and, async, would hold up the loop).
    offset = await arun_blocking(partial.replay, verifier)
    while True:
        try:
            return await _download_into(
                route, partial, repository, verifier, deadline, reporter, concurrency
            )
        except HOST_FAILURES as error:
            if not _start_over(route, error, offset):
                raise
            logger.info("%s: %s; downloading it again from %s", digest, error, route.sender.name)
        route.mirror_bytes = False
        await arun_blocking(partial.restart)
        verifier, offset = BodyVerifier(digest), 0


def _start_over(route: AsyncRoute, error: Exception, offset: int) -> bool:
    """Whether to throw the partial file's bytes away after ``error`` and download the blob
    from its start: when some came from a mirror (at the next host, if a mirror was serving),
    or when the bytes that were there before the download proved bad."""
    if isinstance(error, DeadlineExceededError):
        return False
    if route.mirror_bytes:
        return route.sender.mirror is None or route.move_on(error)
    return bool(offset) and isinstance(error, _BAD_PARTIAL)


async def _download_into(
    route: AsyncRoute,
    partial: PartialFile,
    repository: str,
    verifier: BodyVerifier,
    deadline: float | None,
    reporter: ProgressReporter | None,
    concurrency: Concurrency,
) -> BlobProperties:
    offset = verifier.received
    try:
        download = await AsyncBlobDownload.open(
            route,
            repository,
            verifier,
            deadline=deadline,
            reporter=reporter,
            concurrency=concurrency,
        )
    except RegistryError as error:
        if not (offset and error.status_code == 416):
            raise
        # The partial file already holds the whole blob: it only needs its check.
        verifier.finish()
        if reporter is not None:
            reporter.finish(offset)
        await arun_blocking(partial.commit)
        return BlobProperties(str(verifier.digest), offset)
    if offset:
        logger.info("resuming %s at byte %d of %s", verifier.digest, offset, verifier.size or "?")
    await download._save_into(partial)
    # fsync can take a while on a busy disk.
    await arun_blocking(partial.commit)
    return download.properties

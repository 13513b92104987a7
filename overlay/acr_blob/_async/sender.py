"""Where a client's requests go, and how: the sender of one host, and the hosts in order.

:class:`AsyncSender` sends the requests of one host (the origin, or a mirror): retries,
redirects, and the error a refusal means. :class:`AsyncHosts` is a client's hosts in the order
blobs are asked of them (mirrors, then the origin), and :class:`AsyncRoute` one download's way
through them: any failure at a mirror moves on to the next host.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from .._config import AsyncCredential, TimeoutTypes, VerifyTypes, api_client
from .._protocol import (
    ERROR_BODY_LIMIT,
    BuildKwargs,
    RedirectFollower,
    blob_request_kwargs,
    check_location,
    error_body_expected,
    error_for,
    manifest_request_kwargs,
    redact_url,
    stamp_client_request_id,
)
from .._ranges import range_header
from ..errors import (
    BlobSizeError,
    DigestMismatchError,
    ManifestError,
    RedirectError,
    RegistryError,
    StorageError,
    TransportError,
)
from ..manifests import MANIFEST_MEDIA_TYPES
from ..mirrors import HostList, HostPlan, HostRoute, Mirror, mirror_credential, mirror_timeout
from ..references import Digest
from ..retry import RetryPolicy, retry_delay

logger = logging.getLogger("acr_blob")

T = TypeVar("T")

# What a host can do wrong: each moves a download on from a mirror to the next host.
HOST_FAILURES = (
    RegistryError,
    TransportError,
    RedirectError,
    StorageError,
    DigestMismatchError,
    BlobSizeError,
    ManifestError,
)


class AsyncSender:
    """Sends one client's requests: each tried again by ``retry``, redirects followed (at most
    ``max_redirects``), and every final answer that is not a success raised as its error."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        retry: RetryPolicy,
        max_redirects: int,
        *,
        mirror: Mirror | None = None,
        ns: str | None = None,
    ) -> None:
        """``mirror`` and ``ns`` (the origin's name, which every request to the mirror
        carries) for a mirror's sender."""
        self.http = http
        self.mirror = mirror
        # A mirror gets one try: its failures move on to the next host, at once.
        self.retry = retry if mirror is None else retry.once()
        self._max_redirects = max_redirects
        self._ns = ns
        self.name = mirror.host if mirror is not None else http.base_url.netloc.decode("ascii")

    async def send(
        self,
        build: BuildKwargs,
        repository: str,
        digest: str,
        deadline: float | None = None,
        **params: Any,
    ) -> tuple[httpx.Response, Digest]:
        """Send with retries; return the final answer (body unread) once it is a success."""
        if self._ns is not None:
            params["ns"] = self._ns
        kwargs, checked = blob_request_kwargs(build, repository, digest, **params)
        success = (200, 206) if "range_" in params else (200,)
        return await self.send_built(kwargs, checked, success, deadline), checked

    async def send_manifest(
        self, build: BuildKwargs, repository: str, reference: str, deadline: float | None = None
    ) -> tuple[httpx.Response, Digest | None]:
        """:meth:`send` for a manifest by tag or digest, asking for the media types acr-blob
        reads; returns the answer and the digest when ``reference`` is one."""
        params: dict[str, Any] = {"accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        if self._ns is not None:
            params["ns"] = self._ns
        kwargs, digest = manifest_request_kwargs(build, repository, reference, **params)
        return await self.send_built(kwargs, digest, (200,), deadline), digest

    async def send_built(
        self,
        kwargs: dict[str, Any],
        digest: Digest | None,
        success: tuple[int, ...],
        deadline: float | None,
    ) -> httpx.Response:
        """Send the request of the builder's ``kwargs`` with retries."""
        if self.mirror is not None:
            kwargs["url"] = self.mirror.request_path(kwargs["url"])
        failures, waited = 0, 0.0
        while True:
            try:
                return await self._send_once(kwargs, digest, success)
            except (RegistryError, TransportError) as error:
                failures += 1
                delay = retry_delay(self.retry, error, failures, waited, deadline)
                if delay is None:
                    raise
                logger.info("retrying in %.2f s after %s", delay, error)
                await self.retry.async_sleep(delay)
                waited += delay

    async def _send_once(
        self, kwargs: dict[str, Any], digest: Digest | None, success: tuple[int, ...]
    ) -> httpx.Response:
        """One try: send, follow redirects, and return the final success with its body unread."""
        request = self.http.build_request(**kwargs)
        follower = RedirectFollower(request.url, digest, self._max_redirects)
        while True:
            response = await self._send_request(request, follower)
            try:
                redirect = follower.next_request(response)
                if redirect is None:
                    if response.status_code in success:
                        return response
                    body = await _read_error_body(response)
                    raise error_for(response, body, follower)
            except BaseException:
                await response.aclose()
                raise
            await response.aclose()
            request = redirect

    async def open_range(
        self, url: httpx.URL, first: int, end: int, digest: Digest
    ) -> httpx.Response:
        """One ``GET`` of bytes ``first`` to ``end - 1`` of ``url`` (storage, or the registry),
        without retries or redirects; the registry's credentials only if ``url`` is the
        registry's."""
        request = self.http.build_request("GET", url, headers={"Range": range_header(first, end)})
        follower = RedirectFollower(self.http.base_url, digest, self._max_redirects)
        return await self._send_request(request, follower)

    async def _send_request(
        self, request: httpx.Request, follower: RedirectFollower
    ) -> httpx.Response:
        try:
            return await self.http.send(request, stream=True, auth=follower.auth_for(request))
        except httpx.TransportError as error:
            raise TransportError(
                f"{request.method} {redact_url(request.url)} failed: {error!r}"
            ) from error

    async def aclose(self) -> None:
        await self.http.aclose()


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


class AsyncHosts(HostList["AsyncSender"]):
    """A client's hosts: its mirrors in order, then the origin (see
    :class:`~acr_blob.mirrors.HostList`)."""

    def route(self, what: str, capability: str = "pull") -> AsyncRoute:
        """The way through the hosts for one download (or request) of ``what``."""
        return AsyncRoute(self.in_order(capability), self.health, what)

    async def aclose(self) -> None:
        for sender in [*self.mirrors, self.origin]:
            await sender.aclose()


class AsyncRoute(HostRoute["AsyncSender"]):
    """One download's way through its hosts (see :class:`~acr_blob.mirrors.HostRoute`)."""

    async def open(self, attempt: Callable[[AsyncSender], Awaitable[T]]) -> T:
        """``attempt(sender)`` at the host serving the download, and at the next ones while it
        fails there; the last host's error is raised."""
        while True:
            try:
                result = await attempt(self.sender)
            except HOST_FAILURES as error:
                if not self.move_on(error):
                    raise
                continue
            self.served()
            return result


async def _check_location(response: httpx.Response) -> None:
    """``check_location`` as a response hook (an async client's hooks are coroutines)."""
    check_location(response)


async def _stamp_client_request_id(request: httpx.Request) -> None:
    """``stamp_client_request_id`` as a request hook."""
    stamp_client_request_id(request)


def open_hosts(
    plan: HostPlan,
    credential: AsyncCredential,
    *,
    timeout: TimeoutTypes,
    verify: VerifyTypes,
    transport: httpx.AsyncBaseTransport | None,
    allow_insecure: bool,
    retry: RetryPolicy,
    max_redirects: int,
) -> AsyncHosts:
    """The senders of a client's hosts: the origin with ``credential``, each mirror with its
    own (see :func:`~acr_blob.mirrors.mirror_credential`)."""

    def sender(
        url: str, credential: AsyncCredential, mirror: Mirror | None = None, **options: Any
    ) -> AsyncSender:
        api = api_client(
            url,
            credential,
            transport=transport,
            on_request=_stamp_client_request_id,
            on_response=_check_location,
            allow_insecure=allow_insecure,
            **options,
        )
        http = api.get_async_httpx_client()
        ns = plan.ns if mirror is not None else None
        return AsyncSender(http, retry, max_redirects, mirror=mirror, ns=ns)

    origin = sender(plan.origin_url, credential, timeout=timeout, verify=verify)
    mirrors = [
        sender(
            mirror.url,
            mirror_credential(mirror),
            mirror,
            timeout=mirror_timeout(timeout, mirror),
            verify=mirror.verify,
            headers=mirror.headers,
        )
        for mirror in plan.mirrors
    ]
    return AsyncHosts(origin, mirrors, fallback=plan.fallback)

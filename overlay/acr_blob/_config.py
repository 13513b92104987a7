"""Client settings shared by the sync and async clients, turned into the generated ``Client``."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import httpx

from acr_blob_api import Client

from ._adaptive import AUTO, Concurrency
from ._protocol import is_loopback
from ._version import __version__
from .auth import RegistryAuth
from .credentials import (
    AsyncTokenCredential,
    BasicCredential,
    RefreshTokenCredential,
    TokenCredential,
)
from .errors import InsecureCredentialError, InvalidEndpointError

__all__ = ["DEFAULT_TIMEOUT", "AsyncCredential", "Credential", "TimeoutTypes", "VerifyTypes"]

Credential: TypeAlias = (
    tuple[str, str] | BasicCredential | RefreshTokenCredential | TokenCredential | httpx.Auth | None
)
"""``None`` (anonymous), ``(username, password)``, a credential of :mod:`acr_blob.credentials`,
or any ``httpx.Auth`` (a :class:`~acr_blob.auth.RegistryAuth` with options, for example).

Example::

    BlobClient("myregistry.azurecr.io", ("user", "password"))
    BlobClient("myregistry.azurecr.io", RefreshTokenCredential(token))
"""
AsyncCredential: TypeAlias = Credential | AsyncTokenCredential
"""What :class:`~acr_blob.AsyncBlobClient` takes: a :data:`Credential`, or an Azure AD
credential of azure-core's async shape (:class:`~acr_blob.AsyncTokenCredential`).

Example::

    from azure.identity.aio import DefaultAzureCredential

    AsyncBlobClient("myregistry.azurecr.io", DefaultAzureCredential())
"""
TimeoutTypes: TypeAlias = float | httpx.Timeout | None
VerifyTypes: TypeAlias = bool | str | ssl.SSLContext
"""``True`` (system CAs), ``False``, a CA bundle path, or an ``ssl.SSLContext``."""

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
"""10 s to connect, 60 s for each read, write and pool wait: a read timeout bounds the silence
between two reads, not the whole download (``deadline=`` does that).

Example::

    >>> from acr_blob import DEFAULT_TIMEOUT
    >>> DEFAULT_TIMEOUT.connect, DEFAULT_TIMEOUT.read
    (10.0, 60.0)
"""
_HEADERS = {
    "User-Agent": f"acr-blob/{__version__}",
    # The digest covers the bytes as stored: a proxy must not compress them on the way.
    "Accept-Encoding": "identity",
}


MAX_CONCURRENCY = 64


def check_concurrency(value: object, *, auto: bool = True) -> Concurrency:
    """``max_concurrency`` must be a whole number of connections, 1 to 64, or (where ``auto``)
    ``"auto"``."""
    if auto and value == AUTO:
        return AUTO
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONCURRENCY:
        also = ' or "auto"' if auto else ""
        raise ValueError(
            f"max_concurrency must be an integer from 1 to {MAX_CONCURRENCY}{also}, got {value!r}"
        )
    return value


def parse_http_url(text: object, what: str, error: Callable[[str], Exception]) -> httpx.URL:
    """``text`` as an http(s) URL with a host (``https://`` when it names no scheme); else
    ``error(message)`` is raised, the message naming ``what`` it was meant to be."""
    if not isinstance(text, str) or not text.strip():
        raise error(f"invalid {what} {text!r}")
    url = text.strip().rstrip("/")
    if "://" not in url:
        url = "https://" + url
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as invalid:
        raise error(f"invalid {what} {text!r}: {invalid}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise error(f"invalid {what} {text!r}: expected https://HOST[:PORT] or HOST")
    return parsed


def normalize_endpoint(endpoint: str) -> str:
    """``myregistry.azurecr.io`` -> ``https://myregistry.azurecr.io``; http(s) URLs kept."""
    url = parse_http_url(endpoint, "registry endpoint", InvalidEndpointError)
    if url.path not in ("", "/") or url.query or url.userinfo:
        raise InvalidEndpointError(
            f"invalid registry endpoint {endpoint!r}: give the host only, without path, "
            "query or credentials"
        )
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


def to_auth(credential: AsyncCredential, *, allow_insecure: bool = False) -> httpx.Auth:
    """Every credential kind as an httpx.Auth; anonymous clients still answer token challenges."""
    if isinstance(credential, httpx.Auth):
        return credential
    if isinstance(credential, tuple):
        if len(credential) == 2 and all(isinstance(part, str) for part in credential):
            return RegistryAuth(BasicCredential(*credential), allow_insecure=allow_insecure)
    elif credential is None or isinstance(
        credential,
        BasicCredential | RefreshTokenCredential | TokenCredential | AsyncTokenCredential,
    ):
        return RegistryAuth(credential, allow_insecure=allow_insecure)
    raise TypeError(
        "credential must be None, a (username, password) tuple, a BasicCredential, a "
        "RefreshTokenCredential, an object with get_token(*scopes), or an httpx.Auth"
    )


def api_client(
    base_url: str,
    credential: AsyncCredential,
    *,
    timeout: TimeoutTypes,
    verify: VerifyTypes,
    transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None,
    on_request: Callable[[httpx.Request], Any],
    on_response: Callable[[httpx.Response], Any],
    allow_insecure: bool = False,
    headers: Mapping[str, str] | None = None,
) -> Client:
    """The generated client for ``base_url`` (a normalized endpoint, or a mirror's URL),
    configured for blob downloads: redirects are followed by the overlay.

    ``on_request`` and ``on_response`` are httpx's hooks (coroutine functions for the async
    client): the first sees every request sent, token requests and redirect hops included,
    the second each answer before httpx builds the redirect from it. ``headers`` go with every
    request, besides the client's own.
    """
    host = httpx.URL(base_url).host
    if (
        credential is not None
        and base_url.startswith("http://")
        and not is_loopback(host)
        and not allow_insecure
    ):
        raise InsecureCredentialError(
            f"refusing to send credentials to {base_url} over plain http; use https, or pass "
            "allow_insecure=True"
        )
    if isinstance(verify, str):
        # httpx 0.28 deprecates a CA path for `verify`; a context built from it is the same trust.
        verify = ssl.create_default_context(cafile=verify)
    httpx_args: dict[str, Any] = {
        "auth": to_auth(credential, allow_insecure=allow_insecure),
        "event_hooks": {"request": [on_request], "response": [on_response]},
    }
    if transport is not None:
        httpx_args["transport"] = transport
    return Client(
        base_url=base_url,
        headers={**_HEADERS, **(headers or {})},
        timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
        verify_ssl=verify,
        follow_redirects=False,
        httpx_args=httpx_args,
    )

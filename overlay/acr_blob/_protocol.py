"""The I/O-free part of a blob download, shared by the sync and async clients.

It builds requests with the generated request builders, decides what to do with each answer
(follow a redirect, fail, or read the body) and turns error answers into typed exceptions.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import httpx

from acr_blob_api.models import AcrErrors

from .challenges import parse_challenges
from .errors import (
    AuthenticationError,
    BlobNotFoundError,
    DigestMismatchError,
    InsecureRedirectError,
    RegistryError,
    StorageError,
    TooManyRedirectsError,
)
from .models import BlobProperties
from .references import Digest, parse_digest, validate_repository
from .retry import parse_retry_after

logger = logging.getLogger("acr_blob")

# Enough of an error body to parse the registry's JSON; a proxy's HTML page is cut off here.
ERROR_BODY_LIMIT = 64 * 1024
_EXCERPT_LENGTH = 200
# Headers that carry credentials; none of them may reach another origin.
_CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_STORAGE_CODE = re.compile(rb"<Code>\s*([A-Za-z0-9_.\-]{1,100})\s*</Code>")
# Query values (signatures, SAS tokens) and authorization schemes' credentials, wherever a
# server echoes them into an error body.
_SECRETS = re.compile(
    r"(?P<keep>[?&;][A-Za-z0-9_.\-]{1,64}=|\b(?:Bearer|Basic)\s+)[^\s&\"'<>]+", re.IGNORECASE
)

BuildKwargs = Callable[..., dict[str, Any]]


def blob_request_kwargs(
    build: BuildKwargs, repository: str, digest: str, **params: Any
) -> tuple[dict[str, Any], Digest]:
    """Check the inputs, then build the request's keyword arguments with the generated builder.

    The generator quotes every path parameter with ``safe=""``; a checked repository and digest
    contain nothing that needs quoting, so unquoting gives back the literal path, with the
    repository's slashes unencoded as registries and their proxies expect.
    """
    checked_digest = parse_digest(digest)
    kwargs = build(validate_repository(repository), str(checked_digest), **params)
    kwargs["url"] = unquote(kwargs["url"])
    return kwargs, checked_digest


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (where clear-text credentials cannot be overheard)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme))


def redact_url(url: httpx.URL) -> str:
    """The URL without user info and with any query string (signatures, SAS tokens) hidden.

    The path is shown as sent, %-escaped: decoded, a ``%0d%0a`` would start a new log line.
    """
    path = url.raw_path.partition(b"?")[0].decode("ascii", "replace")
    text = f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}{path}"
    return text + "?<redacted>" if url.query else text


class RedirectFollower:
    """Walks one request through its redirects, refusing the unsafe ones.

    Redirect requests are built by httpx (``response.next_request``: relative ``Location``,
    method rules, ``Authorization`` dropped across origins); this adds the checks the protocol
    asks for on top: a hop limit, no https-to-http downgrade, no credential header of any kind to
    another origin, and the registry's ``Docker-Content-Digest`` compared on every answer,
    including the 307 that leads to storage.
    """

    def __init__(self, registry_url: httpx.URL, digest: Digest, max_redirects: int) -> None:
        self._registry_origin = origin(registry_url)
        self._digest = digest
        self._max_redirects = max_redirects
        self._hops = 0

    def is_registry(self, url: httpx.URL) -> bool:
        return origin(url) == self._registry_origin

    def auth_for(self, request: httpx.Request) -> Any:
        """The client's auth for the registry; no auth at all for any other origin."""
        return httpx.USE_CLIENT_DEFAULT if self.is_registry(request.url) else None

    def next_request(self, response: httpx.Response) -> httpx.Request | None:
        """The request to send next, or ``None`` when ``response`` is the final answer."""
        logger.debug(
            "%s %s -> %d",
            response.request.method,
            redact_url(response.request.url),
            response.status_code,
        )
        check_advertised_digest(response, self._digest)
        redirect = response.next_request
        if redirect is None:
            return None
        self._hops += 1
        if self._hops > self._max_redirects:
            raise TooManyRedirectsError(
                f"more than {self._max_redirects} redirects, last to {redact_url(redirect.url)}"
            )
        if response.request.url.scheme == "https" and redirect.url.scheme != "https":
            raise InsecureRedirectError(
                f"refusing to follow https redirect to {redact_url(redirect.url)}"
            )
        if not self.is_registry(redirect.url):
            for name in _CREDENTIAL_HEADERS:
                redirect.headers.pop(name, None)
        return redirect


def check_advertised_digest(response: httpx.Response, digest: Digest) -> None:
    """Fail before the body when the server advertises another digest of the same algorithm.

    A digest of another algorithm (a registry that names sha256 content whatever was asked)
    cannot be compared; the body's own hash still decides.
    """
    advertised = response.headers.get("Docker-Content-Digest")
    if advertised is None:
        return
    advertised = advertised.strip()
    if advertised.partition(":")[0] == digest.algorithm and advertised != str(digest):
        raise DigestMismatchError(str(digest), advertised[:200], source="Docker-Content-Digest")


def content_length(response: httpx.Response) -> int | None:
    """The announced body size; ``None`` when absent or unreadable (the digest still decides)."""
    value = response.headers.get("Content-Length")
    if value is None or not (value.strip().isascii() and value.strip().isdigit()):
        return None
    return int(value)


_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)")


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes start-end/size`` (size may be ``*``) -> (start, end, size); ``None`` if malformed.

    Example::

        >>> parse_content_range("bytes 100-199/1000")
        (100, 199, 1000)
    """
    match = _CONTENT_RANGE.fullmatch(value.strip()) if value else None
    if match is None:
        return None
    start, end = int(match.group(1)), int(match.group(2))
    size = None if match.group(3) == "*" else int(match.group(3))
    if end < start or (size is not None and end >= size):
        return None
    return start, end, size


def blob_size(response: httpx.Response) -> int | None:
    """The whole blob's size: a 206's Content-Range total, else Content-Length."""
    if response.status_code == 206:
        parsed = parse_content_range(response.headers.get("Content-Range"))
        return parsed[2] if parsed else None
    return content_length(response)


def properties_from(response: httpx.Response, digest: Digest) -> BlobProperties:
    return BlobProperties(
        digest=str(digest),
        size=blob_size(response),
        media_type=response.headers.get("Content-Type"),
        etag=response.headers.get("ETag"),
    )


def error_body_expected(response: httpx.Response) -> bool:
    """Whether an error answer's body is worth waiting for.

    A 416 says all in its status, and distribution announces a Content-Length it never sends.
    """
    return response.status_code != 416


def excerpt(body: bytes) -> str:
    """A short, single-line, secret-free piece of an error body."""
    text = " ".join(body[: _EXCERPT_LENGTH * 4].decode("utf-8", "replace").split())
    text = "".join(ch for ch in text if ch.isprintable())
    text = _SECRETS.sub(lambda m: m.group("keep") + "<redacted>", text)
    return text[:_EXCERPT_LENGTH]


def registry_errors(body: bytes) -> list[Any]:
    try:
        document = json.loads(body)
        if not isinstance(document, dict):
            return []
        errors = AcrErrors.from_dict(document).errors
    except (ValueError, TypeError, KeyError, AttributeError):
        return []
    return list(errors) if isinstance(errors, list) else []


def error_for(
    response: httpx.Response, body: bytes, follower: RedirectFollower
) -> RegistryError | StorageError:
    """The exception for an error answer, from its status and (at most the first part of) body."""
    error = _error_for(response, body, follower)
    error.retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return error


def _error_for(
    response: httpx.Response, body: bytes, follower: RedirectFollower
) -> RegistryError | StorageError:
    status = response.status_code
    url = redact_url(response.request.url)
    if not follower.is_registry(response.request.url):
        match = _STORAGE_CODE.search(body)
        code = match.group(1).decode("ascii") if match else None
        return StorageError(status, code, excerpt=excerpt(body), url=url)
    cls: type[RegistryError] = RegistryError
    if status == 404:
        cls = BlobNotFoundError
    elif status in (401, 403):
        cls = AuthenticationError
    if cls is AuthenticationError:
        challenges = parse_challenges(response.headers.get_list("WWW-Authenticate"))
        scope = next((c.get("scope") for c in challenges if c.get("scope")), None)
        return AuthenticationError(
            status, registry_errors(body), excerpt=excerpt(body), url=url, scope=scope
        )
    return cls(status, registry_errors(body), excerpt=excerpt(body), url=url)

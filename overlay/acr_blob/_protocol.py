"""The I/O-free part of a blob download, shared by the sync and async clients.

It builds requests with the generated request builders, decides what to do with each answer
(follow a redirect, fail, or read the body) and turns error answers into typed exceptions.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any, TypedDict
from urllib.parse import unquote

import httpx

from acr_blob_api.models import AcrErrors

from .challenges import parse_challenges
from .errors import (
    AuthenticationError,
    BlobNotFoundError,
    DigestMismatchError,
    InsecureRedirectError,
    InvalidDigestError,
    InvalidRedirectError,
    RegistryError,
    StorageError,
    TooManyRedirectsError,
)
from .models import BlobProperties
from .references import Digest, is_tag, parse_digest, validate_repository
from .retry import parse_retry_after

logger = logging.getLogger("acr_blob")

# Enough of an error body to parse the registry's JSON; a proxy's HTML page is cut off here.
ERROR_BODY_LIMIT = 64 * 1024
_EXCERPT_LENGTH = 200
# Headers that carry credentials; none of them may reach another origin.
_CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_STORAGE_CODE = re.compile(rb"<Code>\s*([A-Za-z0-9_.\-]{1,100})\s*</Code>")
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
# Sent with every request; Azure services log it beside their own request id.
CLIENT_REQUEST_ID = "x-ms-client-request-id"
_MAX_ID_LENGTH = 128
# Query values (signatures, SAS tokens) and authorization schemes' credentials, wherever a
# server echoes them into an error body.
_SECRETS = re.compile(
    r"(?P<keep>[?&;][A-Za-z0-9_.\-]{1,64}=|\b(?:Bearer|Basic)\s+)[^\s&\"'<>]+", re.IGNORECASE
)

# The answers httpx follows when they carry a Location: every redirect a registry, its storage
# or a proxy in front of them gives a blob GET or HEAD.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# What RFC 3986 lets a URI reference hold: unreserved and reserved characters, and %-escapes.
# Anything else (a space, a line break, a quote, a backslash, non-ASCII) means the Location is
# not a URL, and guessing what the server meant would follow something it did not say.
_NOT_IN_URL = re.compile(r"[^A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]|%(?![0-9A-Fa-f]{2})")
# Whatever comes before an "@" in a Location's authority (or, without "//", its first segment).
_LOCATION_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.\-]*:)?(?://)?)[^/?#]*@")
_SHOWN_LOCATION_LENGTH = 200

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


def manifest_request_kwargs(
    build: BuildKwargs, repository: str, reference: str, **params: Any
) -> tuple[dict[str, Any], Digest | None]:
    """:func:`blob_request_kwargs` for a manifest: ``reference`` is a tag or a digest (the
    digest, when it is one, is returned checked)."""
    digest = parse_digest(reference) if ":" in reference else None
    if digest is None and not is_tag(reference):
        raise InvalidDigestError(
            reference, "neither a digest nor a tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})"
        )
    kwargs = build(validate_repository(repository), str(digest or reference), **params)
    kwargs["url"] = unquote(kwargs["url"])
    return kwargs, digest


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


def _escaped(text: str) -> str:
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def shown_location(location: str) -> str:
    """A ``Location`` header as sent, safe to show: user info, query and fragment replaced by
    ``<redacted>``, control characters escaped, cut short.

    It is shown as sent, not as parsed, for the parsed form is what went wrong (httpx gives
    ``file:///etc/passwd`` the registry's host).

    Example::

        >>> shown_location("https://user:secret@store.example/blob?sig=abc")
        'https://<redacted>@store.example/blob?<redacted>'
        >>> shown_location("/v2/blob\\r\\nSet-Cookie: x")
        '/v2/blob\\\\r\\\\nSet-Cookie: x'
    """
    text = _LOCATION_USERINFO.sub(r"\1<redacted>@", location, count=1)
    marks = [i for i in (text.find("?"), text.find("#")) if i >= 0]
    if marks:
        text = text[: min(marks) + 1] + "<redacted>"
    text = _escaped(text)
    if len(text) > _SHOWN_LOCATION_LENGTH:
        text = text[:_SHOWN_LOCATION_LENGTH] + "..."
    return text


def check_location(response: httpx.Response) -> None:
    """Raise :class:`InvalidRedirectError` for a redirect whose ``Location`` cannot be followed.

    Left to httpx, an empty ``Location`` is the same URL again (a loop), a scheme without a host
    borrows the request's host, a relative path with spaces is quoted and followed, a line
    break raises a transport error that is retried as if the network had failed, and a redirect
    without ``Location`` is an error status like any other. Each is the server's answer, wrong
    the same way on every try: it fails at once, saying what was wrong. The clients also run
    this as a response hook, because httpx builds (and fails on) the next request before the
    response comes back to them.
    """
    status = response.status_code
    if status not in REDIRECT_STATUSES:
        return
    source = f"{status} redirect from {redact_url(response.request.url)}"
    raw = response.headers.get("Location")
    if raw is None:
        raise InvalidRedirectError(
            f"{source} has no Location header", status_code=status, location=None
        )
    shown = shown_location(raw)
    location = raw.strip(" \t")
    problem = _location_problem(location)
    if problem is not None:
        quoted = f": '{shown}'" if raw else ""
        raise InvalidRedirectError(
            f"{source} {problem}{quoted}", status_code=status, location=shown
        )


def _location_problem(location: str) -> str | None:
    """What is wrong with a ``Location``, or ``None`` when it is an http(s) URL reference."""
    if not location:
        return "has an empty Location"
    bad = _NOT_IN_URL.search(location)
    if bad is not None:
        held = "a space" if bad.group() == " " else f"'{_escaped(bad.group())}'"
        if bad.group() == "%":
            held = "a '%' without two hex digits"
        return f"has a Location that is not a URL (a URL may not hold {held})"
    try:
        url = httpx.URL(location)
    except httpx.InvalidURL as error:
        return f"has a Location that is not a URL ({error})"
    if url.scheme and url.scheme not in ("http", "https"):
        return f"goes to unsupported scheme {url.scheme}"
    if (url.scheme or location.startswith("//")) and not url.host:
        return "has a Location that is not a URL (no host)"
    if url.port is not None and not 0 < url.port < 65536:
        return f"has a Location that is not a URL (port {url.port} is out of range)"
    return None


class RedirectFollower:
    """Walks one request through its redirects, refusing the unsafe ones.

    Redirect requests are built by httpx (``response.next_request``: relative ``Location``,
    method rules, ``Range`` and the other headers kept, ``Authorization`` dropped across
    origins); this adds the checks the protocol asks for on top: a ``Location`` that is an
    http(s) URL (:func:`check_location`), a hop limit, no https-to-http downgrade, no credential
    header of any kind to another origin, user info taken out of the URL, and the registry's
    ``Docker-Content-Digest`` compared on every answer, including the 307 that leads to storage.
    """

    def __init__(self, registry_url: httpx.URL, digest: Digest | None, max_redirects: int) -> None:
        self._registry_origin = origin(registry_url)
        self._digest = digest
        self._max_redirects = max_redirects
        self._hops = 0
        # The Basic auth a redirect's user info asked for, and the one request it is for.
        self._userinfo_auth: tuple[httpx.Request, httpx.BasicAuth] | None = None

    def is_registry(self, url: httpx.URL) -> bool:
        return origin(url) == self._registry_origin

    def auth_for(self, request: httpx.Request) -> Any:
        """The client's auth for the registry; for any other origin, only what the redirect to
        ``request`` carried as user info, else no auth at all."""
        if self.is_registry(request.url):
            return httpx.USE_CLIENT_DEFAULT
        if self._userinfo_auth is not None and self._userinfo_auth[0] is request:
            return self._userinfo_auth[1]
        return None

    def next_request(self, response: httpx.Response) -> httpx.Request | None:
        """The request to send next, or ``None`` when ``response`` is the final answer."""
        logger.debug(
            "%s %s -> %d",
            response.request.method,
            redact_url(response.request.url),
            response.status_code,
        )
        check_advertised_digest(response, self._digest)
        check_location(response)
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
        self._userinfo_auth = None
        if redirect.url.userinfo:
            self._take_userinfo(redirect)
        if not self.is_registry(redirect.url):
            for name in _CREDENTIAL_HEADERS:
                redirect.headers.pop(name, None)
        return redirect

    def _take_userinfo(self, redirect: httpx.Request) -> None:
        """Move a ``Location``'s user info out of the URL, into Basic auth for that one request.

        User info in a redirect is the redirecting server's own credential for the next host,
        and httpx would send it as Basic auth anyway; out of the URL, no log line (httpx's own
        included), message or repr can show it. The registry's origin keeps the client's auth
        instead, and the credential is never sent in clear text beyond loopback.
        """
        url = redirect.url
        redirect.url = url.copy_with(username=None, password=None)
        if self.is_registry(url):
            return
        if url.scheme != "https" and not is_loopback(url.host):
            raise InsecureRedirectError(
                f"refusing to send a redirect's user info over plain http to {redact_url(url)}"
            )
        self._userinfo_auth = (redirect, httpx.BasicAuth(url.username, url.password))


def check_advertised_digest(response: httpx.Response, digest: Digest | None) -> None:
    """Fail before the body when the server advertises another digest of the same algorithm.

    A digest of another algorithm (a registry that names sha256 content whatever was asked)
    cannot be compared; the body's own hash still decides.
    """
    advertised = response.headers.get("Docker-Content-Digest")
    if advertised is None or digest is None:
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


class RequestIds(TypedDict):
    """The ids of the request an error answers, as the error classes take them."""

    request_id: str | None
    correlation_id: str | None
    client_request_id: str | None


def stamp_client_request_id(request: httpx.Request) -> None:
    """Give ``request`` an ``x-ms-client-request-id`` of its own, as a request hook.

    Every request sent gets a fresh one, each try, redirect hop and token request included
    (httpx copies a request's headers into its redirect): the id then names one line of the
    service's log, the one of the request that failed.
    """
    request.headers[CLIENT_REQUEST_ID] = str(uuid.uuid4())


def _id_header(response: httpx.Response, name: str) -> str | None:
    value = response.headers.get(name)
    if value is None:
        return None
    # A header is the server's text, going into messages: printable, and short.
    return "".join(c for c in value.strip() if c.isprintable())[:_MAX_ID_LENGTH] or None


def request_ids(response: httpx.Response) -> RequestIds:
    """The service's ids of the request ``response`` answers, and the one acr-blob sent."""
    return RequestIds(
        request_id=_id_header(response, "x-ms-request-id"),
        correlation_id=_id_header(response, "x-ms-correlation-request-id"),
        client_request_id=response.request.headers.get(CLIENT_REQUEST_ID),
    )


def storage_error_code(response: httpx.Response, body: bytes) -> str | None:
    """Azure's ``x-ms-error-code`` (also on a HEAD, which has no body), else the XML's
    ``<Code>`` (S3's, or Azure's after its byte-order mark)."""
    header: str = response.headers.get("x-ms-error-code", "").strip()
    if _ERROR_CODE.fullmatch(header):
        return header
    match = _STORAGE_CODE.search(body)
    return match.group(1).decode("ascii") if match else None


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
    ids = request_ids(response)
    if not follower.is_registry(response.request.url):
        code = storage_error_code(response, body)
        return StorageError(status, code, excerpt=excerpt(body), url=url, **ids)
    cls: type[RegistryError] = RegistryError
    if status == 404:
        cls = BlobNotFoundError
    elif status in (401, 403):
        cls = AuthenticationError
    if cls is AuthenticationError:
        challenges = parse_challenges(response.headers.get_list("WWW-Authenticate"))
        scope = next((c.get("scope") for c in challenges if c.get("scope")), None)
        return AuthenticationError(
            status, registry_errors(body), excerpt=excerpt(body), url=url, scope=scope, **ids
        )
    return cls(status, registry_errors(body), excerpt=excerpt(body), url=url, **ids)

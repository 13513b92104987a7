"""The exceptions acr-blob raises.

Everything is a :class:`BlobError`. Bad input (:class:`InvalidRepositoryError`,
:class:`InvalidDigestError`, :class:`InvalidEndpointError`) is also a :class:`ValueError` and is
raised before any request is sent. No message or repr carries a password, a token or the query
string of a signed storage URL.
"""

from __future__ import annotations

from collections.abc import Sequence

from acr_blob_api.models import AcrErrorInfo

__all__ = [
    "AuthenticationError",
    "BlobError",
    "BlobNotFoundError",
    "BlobSizeError",
    "DeadlineExceededError",
    "DigestMismatchError",
    "InsecureCredentialError",
    "InsecureRedirectError",
    "InvalidDigestError",
    "InvalidEndpointError",
    "InvalidRepositoryError",
    "RedirectError",
    "RegistryError",
    "ResumeError",
    "StorageError",
    "TooManyRedirectsError",
    "TransportError",
]


class BlobError(Exception):
    """Base class of every error acr-blob raises.

    Example::

        try:
            client.download_blob_to_file("library/ubuntu", digest, "layer.tar.gz")
        except BlobError as error:
            print(f"download failed: {error}")
    """


class InvalidRepositoryError(BlobError, ValueError):
    """The repository name does not match the OCI distribution grammar; nothing was sent."""

    def __init__(self, repository: str, reason: str) -> None:
        self.repository = repository
        super().__init__(f"invalid repository name {repository[:300]!r}: {reason}")


class InvalidDigestError(BlobError, ValueError):
    """The digest is not ``sha256:<64 hex>`` or ``sha512:<128 hex>``; nothing was sent."""

    def __init__(self, digest: str, reason: str) -> None:
        self.digest = digest
        super().__init__(f"invalid digest {digest[:300]!r}: {reason}")


class InvalidEndpointError(BlobError, ValueError):
    """The registry endpoint is not an http(s) URL or host name; nothing was sent."""


class DigestMismatchError(BlobError):
    """The content, or the digest the registry advertised, is not the requested digest.

    ``source`` says which: ``"content"`` when the bytes received hash to ``actual``, or
    ``"Docker-Content-Digest"`` when the registry's header disagreed before any body was read.
    """

    def __init__(self, expected: str, actual: str, *, source: str = "content") -> None:
        self.expected = expected
        self.actual = actual
        self.source = source
        what = "content" if source == "content" else f"{source} header"
        super().__init__(f"digest mismatch: requested {expected}, {what} is {actual}")


class BlobSizeError(BlobError):
    """The body was shorter or longer than the ``Content-Length`` the server announced."""

    def __init__(self, expected: int, received: int) -> None:
        self.expected = expected
        self.received = received
        relation = "ended early" if received < expected else "ran past its length"
        super().__init__(
            f"body {relation}: Content-Length is {expected} bytes, received {received}"
        )


class RedirectError(BlobError):
    """A redirect could not be followed safely."""


class TooManyRedirectsError(RedirectError):
    """More redirects than ``max_redirects`` in a row (a loop, most likely)."""


class InsecureRedirectError(RedirectError):
    """An https URL redirected to plain http; acr-blob refuses to downgrade."""


class TransportError(BlobError):
    """The connection failed, timed out or broke (the httpx error is the ``__cause__``).

    Raised once the client's :class:`~acr_blob.retry.RetryPolicy` is spent: connections are
    retried, and a body that breaks off is resumed from its last byte first.
    """


class ResumeError(TransportError):
    """A server answered a resumption with the wrong bytes (a ``Content-Range`` that does not
    start where the body broke off, or content that differs from what came before)."""


class DeadlineExceededError(TransportError):
    """The download's total ``deadline`` passed (a server dripping bytes, or endless retries)."""


class RegistryError(BlobError):
    """The registry answered with an error status.

    ``errors`` holds the registry's error entries (the generated ``AcrErrorInfo`` model, with
    ``code``, ``message`` and ``detail``), empty when the body was not the distribution JSON
    error format; ``excerpt`` is then a short, cleaned piece of whatever the body was.
    ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one.
    """

    def __init__(
        self,
        status_code: int,
        errors: Sequence[AcrErrorInfo] = (),
        *,
        excerpt: str = "",
        url: str = "",
    ) -> None:
        self.status_code = status_code
        self.errors = list(errors)
        self.excerpt = excerpt
        self.url = url
        self.retry_after: float | None = None
        super().__init__(self._describe())

    @property
    def codes(self) -> list[str]:
        """The error codes the registry sent, such as ``["BLOB_UNKNOWN"]``."""
        return [e.code for e in self.errors if isinstance(e.code, str)]

    def _describe(self) -> str:
        parts = [f"registry answered {self.status_code}"]
        if self.url:
            parts[0] += f" for {self.url}"
        details = [
            f"{e.code}: {e.message}" if isinstance(e.message, str) else str(e.code)
            for e in self.errors
            if isinstance(e.code, str)
        ]
        if details:
            parts.append("; ".join(details))
        elif self.excerpt:
            parts.append(repr(self.excerpt))
        return ": ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code}, codes={self.codes!r})"


class BlobNotFoundError(RegistryError):
    """404: the repository or the blob does not exist (or is not visible to these credentials)."""


class AuthenticationError(RegistryError):
    """401 or 403: credentials are missing, wrong, or not allowed to pull this repository.

    Raised for the registry's refusal and for the token server's. ``codes`` holds the error codes
    (``UNAUTHORIZED``, ``DENIED``, ...), ``scope`` the refused scope when a challenge named one
    (``repository:prod/bash:pull``).
    """

    def __init__(
        self,
        status_code: int,
        errors: Sequence[AcrErrorInfo] = (),
        *,
        excerpt: str = "",
        url: str = "",
        scope: str | None = None,
    ) -> None:
        self.scope = scope
        super().__init__(status_code, errors, excerpt=excerpt, url=url)

    def _describe(self) -> str:
        text = super()._describe()
        return f"{text} (scope {self.scope})" if self.scope else text

    def __repr__(self) -> str:
        return (
            f"AuthenticationError(status_code={self.status_code}, codes={self.codes!r}, "
            f"scope={self.scope!r})"
        )


class InsecureCredentialError(BlobError, ValueError):
    """Credentials would travel in clear text (plain http beyond loopback); nothing was sent.

    Pass ``allow_insecure=True`` to the client to permit it anyway.
    """


class StorageError(BlobError):
    """The storage host a registry redirected to answered with an error.

    ``code`` is the storage service's error code (S3 or Azure ``<Error><Code>``), such as
    ``AccessDenied`` or ``AuthenticationFailed``; ``None`` when the body had none.
    ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one.
    """

    def __init__(
        self, status_code: int, code: str | None, *, excerpt: str = "", url: str = ""
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.excerpt = excerpt
        self.url = url
        self.retry_after: float | None = None
        message = f"storage answered {status_code}"
        if url:
            message += f" for {url}"
        if code:
            message += f": {code}"
        elif excerpt:
            message += f": {excerpt!r}"
        super().__init__(message)

    def __repr__(self) -> str:
        return f"StorageError(status_code={self.status_code}, code={self.code!r})"

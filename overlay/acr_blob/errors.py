"""The exceptions acr-blob raises.

Everything is a :class:`BlobError`. Bad input (:class:`InvalidRepositoryError`,
:class:`InvalidDigestError`, :class:`InvalidEndpointError`) is also a :class:`ValueError` and is
raised before any request is sent. No message or repr carries a password, a token or the query
string of a signed storage URL. Each error's repr is its class, its message and the attributes
that tell errors of one class apart, such as
``BlobNotFoundError('registry answered 404 ...', status_code=404, codes=['BLOB_UNKNOWN'])``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from acr_blob_api.models import AcrErrorInfo

__all__ = [
    "AuthenticationError",
    "BlobError",
    "BlobNotFoundError",
    "BlobSizeError",
    "CacheMissError",
    "CredentialHelperError",
    "DeadlineExceededError",
    "DigestMismatchError",
    "DiskFullError",
    "DockerConfigError",
    "HostsConfigError",
    "InsecureCredentialError",
    "InsecureRedirectError",
    "InvalidDigestError",
    "InvalidEndpointError",
    "InvalidRedirectError",
    "InvalidRepositoryError",
    "ManifestError",
    "PlatformNotFoundError",
    "RedirectError",
    "RegistryError",
    "ResumeError",
    "StorageError",
    "TooManyRedirectsError",
    "TransportError",
]


def _service_ids(request_id: str | None, correlation_id: str | None) -> str:
    """The service's ids of a request, for a message: what its support asks for."""
    ids = [
        f"{name}: {value}"
        for name, value in (
            ("x-ms-request-id", request_id),
            ("x-ms-correlation-request-id", correlation_id),
        )
        if value
    ]
    return f" [{', '.join(ids)}]" if ids else ""


class BlobError(Exception):
    """Base class of every error acr-blob raises.

    Example::

        try:
            client.download_blob_to_file("library/ubuntu", digest, "layer.tar.gz")
        except BlobError as error:
            print(f"download failed: {error}")
    """

    hosts_tried: tuple[tuple[str, str], ...] = ()
    """With mirrors: each host that failed before this error's, and why (its error's message),
    in the order they were tried; the message lists them too."""

    def __str__(self) -> str:
        message = super().__str__()
        if not self.hosts_tried:
            return message
        tried = "; ".join(f"{host}: {why}" for host, why in self.hosts_tried)
        return f"{message} (after {tried})"

    def _repr_fields(self) -> dict[str, Any]:
        """The attributes the repr shows after the message (none that can hold a secret)."""
        return {}

    def __repr__(self) -> str:
        fields = "".join(f", {name}={value!r}" for name, value in self._repr_fields().items())
        return f"{type(self).__name__}({str(self)!r}{fields})"


class InvalidRepositoryError(BlobError, ValueError):
    """The repository name does not match the OCI distribution grammar; nothing was sent.

    ``repository`` is the name as given. Names are lowercase letters and digits, separated by
    ``.``, ``_``, ``__`` or ``-``, in ``/``-separated components.

    Example::

        try:
            client.download_blob_to_file("Prod/Bash", digest, "layer.tar.gz")
        except InvalidRepositoryError as error:
            print(error)  # invalid repository name 'Prod/Bash': use lowercase letters ...
    """

    def __init__(self, repository: str, reason: str) -> None:
        self.repository = repository
        super().__init__(f"invalid repository name {repository[:300]!r}: {reason}")


class InvalidDigestError(BlobError, ValueError):
    """The digest is not ``sha256:<64 hex>`` or ``sha512:<128 hex>``; nothing was sent.

    ``digest`` is the digest as given.

    Example::

        try:
            client.download_blob_to_file("prod/bash", "sha256:ABC", "layer.tar.gz")
        except InvalidDigestError as error:
            print(error)  # invalid digest 'sha256:ABC': sha256 takes 64 lowercase hex digits
    """

    def __init__(self, digest: str, reason: str) -> None:
        self.digest = digest
        super().__init__(f"invalid digest {digest[:300]!r}: {reason}")


class InvalidEndpointError(BlobError, ValueError):
    """The registry endpoint is not an http(s) URL or host name; nothing was sent.

    Raised by the client's constructor (and by
    :func:`~acr_blob.docker_config.docker_config_credential`) for an empty endpoint, another
    scheme, or a URL with a path, query or user info.

    Example::

        try:
            BlobClient("https://myregistry.azurecr.io/v2/")
        except InvalidEndpointError as error:
            print(error)  # ... give the host only, without path, query or credentials
    """


class DigestMismatchError(BlobError):
    """The content, or the digest the registry advertised, is not the requested digest.

    ``source`` says which: ``"content"`` when the bytes received hash to ``actual``, or
    ``"Docker-Content-Digest"`` when the registry's header disagreed before any body was read.
    ``expected`` is the requested digest.

    Example::

        try:
            client.download_blob_to_file("prod/bash", digest, "layer.tar.gz")
        except DigestMismatchError as error:
            print(f"corrupt blob from the {error.source}: got {error.actual}")
    """

    def __init__(self, expected: str, actual: str, *, source: str = "content") -> None:
        self.expected = expected
        self.actual = actual
        self.source = source
        what = "content" if source == "content" else f"{source} header"
        super().__init__(f"digest mismatch: requested {expected}, {what} is {actual}")

    def _repr_fields(self) -> dict[str, Any]:
        return {"source": self.source}


class BlobSizeError(BlobError):
    """The body was shorter or longer than the ``Content-Length`` the server announced.

    ``expected`` is the announced size, ``received`` how many bytes came (a body that runs past
    its length stops at the first byte too many).

    Example::

        try:
            client.download_blob_to_file("prod/bash", digest, "layer.tar.gz")
        except BlobSizeError as error:
            print(f"expected {error.expected} bytes, received {error.received}")
    """

    def __init__(self, expected: int, received: int) -> None:
        self.expected = expected
        self.received = received
        relation = "ended early" if received < expected else "ran past its length"
        super().__init__(
            f"body {relation}: Content-Length is {expected} bytes, received {received}"
        )


class DiskFullError(BlobError, OSError):
    """The disk (or the user's quota) has no room for the blob; ``errno`` is ``ENOSPC``.

    Raised before the body is read when the size is known and the free space is short of it,
    or when a write fails for want of space. The partial file is removed, so that the disk is
    not left full. ``path`` is the target, ``needed`` the bytes the blob still needed there
    (``None`` when the server sent no size), ``free`` the bytes free (``None`` when the
    filesystem does not say).

    Example::

        try:
            client.download_blob_to_file("prod/bash", digest, "/small/layer.tar.gz")
        except DiskFullError as error:
            print(f"free some space for {error.path}: {error}")
    """

    def __init__(self, path: str | os.PathLike[str], needed: int | None, free: int | None) -> None:
        self.path = os.fspath(path)
        self.needed = needed
        self.free = free
        wanted = "more bytes" if needed is None else f"{needed} more bytes"
        shown = "an unknown number of" if free is None else str(free)
        super().__init__(
            errno.ENOSPC, f"no room for {self.path}: the blob needs {wanted}, {shown} bytes free"
        )

    def __str__(self) -> str:
        return str(self.strerror)

    def _repr_fields(self) -> dict[str, Any]:
        return {"needed": self.needed, "free": self.free}


class RedirectError(BlobError):
    """A redirect could not be followed safely.

    Example::

        try:
            client.download_blob_to_file("prod/bash", digest, "layer.tar.gz")
        except RedirectError as error:
            print(f"not following the registry's redirect: {error}")
    """


class TooManyRedirectsError(RedirectError):
    """More redirects than ``max_redirects`` in a row (a loop, most likely).

    Example::

        client = BlobClient("myregistry.azurecr.io", max_redirects=3)
        try:
            client.download_blob_to_file("prod/bash", digest, "layer.tar.gz")
        except TooManyRedirectsError as error:
            print(error)  # more than 3 redirects, last to https://...?<redacted>
    """


class InsecureRedirectError(RedirectError):
    """An https URL redirected to plain http; acr-blob refuses to downgrade.

    There is no option to allow it: fix the registry's storage configuration (its redirect
    URLs must be https), or talk to the registry itself over plain http.

    Example::

        try:
            client.download_blob_to_file("prod/bash", digest, "layer.tar.gz")
        except InsecureRedirectError as error:
            print(error)  # refusing to follow https redirect to http://storage/...?<redacted>
    """


class InvalidRedirectError(RedirectError):
    """A redirect answer (301, 302, 303, 307, 308) whose ``Location`` cannot be followed.

    The ``Location`` was missing, empty, not a URL (characters a URL may not hold, such as a
    space or a line break; a bad port; an absolute URL without a host) or of a scheme other
    than http and https. The server said so in its answer, so nothing is retried: a second
    request would get the same redirect. ``status_code`` is the redirect's status and
    ``location`` the ``Location`` as sent, made safe to show (user info and query replaced by
    ``<redacted>``, control characters escaped, cut to 200 characters), ``None`` when there was
    no ``Location`` header.

    Example::

        try:
            client.download_blob_to_file("prod/bash", digest, "layer.tar.gz")
        except InvalidRedirectError as error:
            print(error)  # 307 redirect from https://... to unsupported scheme file: '...'
    """

    def __init__(self, message: str, *, status_code: int, location: str | None) -> None:
        self.status_code = status_code
        self.location = location
        super().__init__(message)

    def _repr_fields(self) -> dict[str, Any]:
        return {"status_code": self.status_code}


class TransportError(BlobError):
    """The connection failed, timed out or broke (the httpx error is the ``__cause__``).

    Raised once the client's :class:`~acr_blob.retry.RetryPolicy` is spent: connections are
    retried, and a body that breaks off is resumed from its last byte first. The partial file of
    :meth:`~acr_blob.BlobClient.download_blob_to_file` is kept: the same call again continues.

    Example::

        try:
            client.download_blob_to_file("prod/bash", digest, "layer.tar.gz")
        except TransportError as error:
            print(f"network trouble, run again to resume: {error}")
    """


class ResumeError(TransportError):
    """A server answered a resumption with the wrong bytes (a ``Content-Range`` that does not
    start where the body broke off, or content that differs from what came before).

    Example::

        try:
            client.download_blob_to_file("prod/bash", digest, "layer.tar.gz")
        except ResumeError as error:
            print(f"the server cannot resume this download: {error}")
    """


class DeadlineExceededError(TransportError):
    """The download's total ``deadline`` passed (a server dripping bytes, or endless retries).

    Example::

        client = BlobClient("myregistry.azurecr.io", deadline=600)
        try:
            client.download_blob_to_file("prod/bash", digest, "layer.tar.gz")
        except DeadlineExceededError as error:
            print(error)  # deadline passed after 1048576 of 734003200 bytes; ...
    """


class RegistryError(BlobError):
    """The registry answered with an error status.

    ``errors`` holds the registry's error entries (the generated ``AcrErrorInfo`` model, with
    ``code``, ``message`` and ``detail``), empty when the body was not the distribution JSON
    error format; ``excerpt`` is then a short, cleaned piece of whatever the body was.
    ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one.

    ``request_id`` and ``correlation_id`` are the ids the service gave the request
    (``x-ms-request-id``, ``x-ms-correlation-request-id``: ACR and Azure support ask for them),
    ``None`` when it sent none; the message ends with them. ``client_request_id`` is the
    ``x-ms-client-request-id`` acr-blob sent with it.

    Example::

        try:
            client.download_blob_to_file("prod/bash", digest, "layer.tar.gz")
        except RegistryError as error:
            print(error.status_code, error.codes)  # 503 ['UNAVAILABLE']
            print(error.correlation_id)  # 0f6c1ad2-... on ACR
    """

    def __init__(
        self,
        status_code: int,
        errors: Sequence[AcrErrorInfo] = (),
        *,
        excerpt: str = "",
        url: str = "",
        request_id: str | None = None,
        correlation_id: str | None = None,
        client_request_id: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.errors = list(errors)
        self.excerpt = excerpt
        self.url = url
        self.request_id = request_id
        self.correlation_id = correlation_id
        self.client_request_id = client_request_id
        self.retry_after: float | None = None
        super().__init__(self._describe() + _service_ids(request_id, correlation_id))

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

    def _repr_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"status_code": self.status_code}
        if self.codes:
            fields["codes"] = self.codes
        return fields


class BlobNotFoundError(RegistryError):
    """404: the repository or the blob does not exist (or is not visible to these credentials).

    Example::

        try:
            client.download_blob_to_file("prod/bash", digest, "layer.tar.gz")
        except BlobNotFoundError as error:
            print(error.codes)  # ['BLOB_UNKNOWN']
    """


class AuthenticationError(RegistryError):
    """401 or 403: credentials are missing, wrong, or not allowed to pull this repository.

    Raised for the registry's refusal and for the token server's. ``codes`` holds the error codes
    (``UNAUTHORIZED``, ``DENIED``, ...), ``scope`` the refused scope when a challenge named one
    (``repository:prod/bash:pull``).

    Example::

        try:
            client.download_blob_to_file("prod/bash", digest, "layer.tar.gz")
        except AuthenticationError as error:
            print(f"not allowed ({error.scope}): {error.codes}")  # ... ['UNAUTHORIZED']
    """

    def __init__(
        self,
        status_code: int,
        errors: Sequence[AcrErrorInfo] = (),
        *,
        excerpt: str = "",
        url: str = "",
        scope: str | None = None,
        request_id: str | None = None,
        correlation_id: str | None = None,
        client_request_id: str | None = None,
    ) -> None:
        self.scope = scope
        super().__init__(
            status_code,
            errors,
            excerpt=excerpt,
            url=url,
            request_id=request_id,
            correlation_id=correlation_id,
            client_request_id=client_request_id,
        )

    def _describe(self) -> str:
        text = super()._describe()
        return f"{text} (scope {self.scope})" if self.scope else text

    def _repr_fields(self) -> dict[str, Any]:
        fields = super()._repr_fields()
        if self.scope:
            fields["scope"] = self.scope
        return fields


class InsecureCredentialError(BlobError, ValueError):
    """Credentials would travel in clear text (plain http beyond loopback); nothing was sent.

    Pass ``allow_insecure=True`` to the client to permit it anyway.

    Example::

        try:
            BlobClient("http://registry.internal:5000", ("user", "password"))
        except InsecureCredentialError:
            client = BlobClient("https://registry.internal:5000", ("user", "password"))
    """


class StorageError(BlobError):
    """The storage host a registry redirected to answered with an error.

    ``code`` is the storage service's error code (Azure's ``x-ms-error-code``, else the
    ``<Error><Code>`` of S3's or Azure's XML), such as ``AccessDenied`` or
    ``AuthorizationPermissionMismatch``; ``None`` when the answer had none.
    ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one.
    ``request_id`` is Azure Storage's ``x-ms-request-id`` (``correlation_id`` its
    ``x-ms-correlation-request-id``), ``None`` when absent; the message ends with them.
    ``client_request_id`` is the ``x-ms-client-request-id`` acr-blob sent.

    Example::

        try:
            client.download_blob_to_file("prod/bash", digest, "layer.tar.gz")
        except StorageError as error:
            print(error.status_code, error.code)  # 403 AuthorizationPermissionMismatch
            print(error.request_id)  # 5f3a9c1e-... on Azure Storage
    """

    def __init__(
        self,
        status_code: int,
        code: str | None,
        *,
        excerpt: str = "",
        url: str = "",
        request_id: str | None = None,
        correlation_id: str | None = None,
        client_request_id: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.excerpt = excerpt
        self.url = url
        self.request_id = request_id
        self.correlation_id = correlation_id
        self.client_request_id = client_request_id
        self.retry_after: float | None = None
        message = f"storage answered {status_code}"
        if url:
            message += f" for {url}"
        if code:
            message += f": {code}"
        elif excerpt:
            message += f": {excerpt!r}"
        super().__init__(message + _service_ids(request_id, correlation_id))

    def _repr_fields(self) -> dict[str, Any]:
        return {"status_code": self.status_code, "code": self.code}


class DockerConfigError(BlobError):
    """The Docker configuration file is unreadable, not JSON, or has fields of the wrong type.

    ``path`` is the file. The message names the file and the field, never a secret.

    Example::

        try:
            credential = docker_config_credential("myregistry.azurecr.io")
        except DockerConfigError as error:
            print(f"fix {error.path}: {error}")
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(message)

    def _repr_fields(self) -> dict[str, Any]:
        return {"path": None if self.path is None else str(self.path)}


class CredentialHelperError(DockerConfigError):
    """A credential helper is missing, failed, timed out or answered something other than JSON.

    ``helper`` is the program's name (``docker-credential-<name>``), ``exit_code`` its exit
    status (``None`` when it was not found, could not start or timed out) and ``stderr`` a short
    excerpt of what it printed on stderr.

    Example::

        try:
            credential = docker_config_credential("myregistry.azurecr.io")
        except CredentialHelperError as error:
            print(f"{error.helper} failed with exit code {error.exit_code}: {error.stderr}")
    """

    def __init__(
        self,
        message: str,
        *,
        helper: str,
        path: str | os.PathLike[str] | None = None,
        exit_code: int | None = None,
        stderr: str = "",
    ) -> None:
        self.helper = helper
        self.exit_code = exit_code
        self.stderr = stderr
        super().__init__(message, path=path)

    def _repr_fields(self) -> dict[str, Any]:
        return {"helper": self.helper, "exit_code": self.exit_code, **super()._repr_fields()}


class CacheMissError(BlobError):
    """``offline`` is on and the blob is not in the cache: nothing was sent.

    ``digest`` is the blob's digest, ``cache_dir`` the cache folder looked in (``None`` when the
    client has no cache).

    Example::

        client = BlobClient(endpoint, cache_dir="/var/cache/acr-blob", offline=True)
        try:
            client.download_blob_to_file("prod/bash", digest, "layer.tar.gz")
        except CacheMissError as error:
            print(error)  # sha256:... is not in the cache /var/cache/acr-blob (offline: ...)
    """

    def __init__(self, digest: str, cache_dir: str | os.PathLike[str] | None) -> None:
        self.digest = digest
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        where = "a cache (none is set)" if cache_dir is None else f"the cache {self.cache_dir}"
        super().__init__(f"{digest} is not in {where} (offline: nothing was sent)")


class HostsConfigError(BlobError, ValueError):
    """A mirror given to the client, or a ``hosts.toml`` file, cannot be used.

    ``path`` is the ``hosts.toml`` file, ``None`` for a mirror given as ``mirrors=``.

    Example::

        try:
            BlobClient("myregistry.azurecr.io", hosts_dir="/etc/containerd/certs.d")
        except HostsConfigError as error:
            print(error)  # /etc/containerd/certs.d/myregistry.azurecr.io/hosts.toml: ...
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        super().__init__(message if self.path is None else f"{self.path}: {message}")


class ManifestError(BlobError):
    """A manifest that cannot be used: larger than 4 MiB, not JSON of its media type, a
    descriptor without a valid digest or size, or a layer title that would write outside the
    destination. ``reference`` is the manifest's tag or digest.

    Example::

        try:
            client.pull("myregistry.azurecr.io/models/llm:v1", "llm", files=True)
        except ManifestError as error:
            print(error)  # ... layer title '../../etc/passwd' would leave the destination
    """

    def __init__(self, message: str, *, reference: str) -> None:
        self.reference = reference
        super().__init__(message)


class PlatformNotFoundError(ManifestError):
    """An image index has no manifest for the platform asked for; ``platforms`` lists the
    ones it offers (``os/architecture[/variant]``).

    Example::

        try:
            client.pull("myregistry.azurecr.io/prod/bash:5.2", "bash", platform="linux/s390x")
        except PlatformNotFoundError as error:
            print(error.platforms)  # ['linux/amd64', 'linux/arm64/v8']
    """

    def __init__(self, wanted: str, platforms: Sequence[str], *, reference: str) -> None:
        self.wanted = wanted
        self.platforms = list(platforms)
        offered = ", ".join(self.platforms) or "none"
        super().__init__(
            f"{reference} has no manifest for {wanted}; it offers {offered}", reference=reference
        )

    def _repr_fields(self) -> dict[str, Any]:
        return {"platforms": self.platforms}

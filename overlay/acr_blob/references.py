"""Checks repository names and digests against the OCI distribution grammar, and parses
image-style blob references (``myregistry.azurecr.io/prod/bash@sha256:<hex>``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import attrs

from .errors import InvalidDigestError, InvalidEndpointError, InvalidRepositoryError

__all__ = [
    "BlobReference",
    "Digest",
    "ImageReference",
    "parse_blob_reference",
    "parse_digest",
    "parse_image_reference",
    "validate_repository",
]

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
# Registries cap the whole reference, host included, at 255 characters; the name alone can
# therefore never be longer.
MAX_REPOSITORY_LENGTH = 255

_ALGORITHMS: dict[str, tuple[int, Callable[[], hashlib._Hash]]] = {
    "sha256": (64, hashlib.sha256),
    "sha512": (128, hashlib.sha512),
}
_HEX = re.compile(r"[0-9a-f]+")


@attrs.frozen
class Digest:
    """A checked content digest, such as ``sha256:6c3c...``.

    Example::

        digest = parse_digest("sha256:" + "ab" * 32)
        hasher = digest.new_hash()
    """

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def new_hash(self) -> hashlib._Hash:
        """A fresh hashlib object of this digest's algorithm."""
        return _ALGORITHMS[self.algorithm][1]()


def parse_digest(digest: str) -> Digest:
    """Parse ``algorithm:hex``; raise :class:`InvalidDigestError` unless it is sha256 or sha512.

    Example::

        >>> parse_digest("sha256:" + "0" * 64).algorithm
        'sha256'
    """
    if not isinstance(digest, str):
        raise InvalidDigestError(repr(digest), "a digest is a string")
    algorithm, colon, encoded = digest.partition(":")
    if not colon:
        raise InvalidDigestError(digest, "expected 'algorithm:hex', such as 'sha256:<64 hex>'")
    if algorithm not in _ALGORITHMS:
        raise InvalidDigestError(
            digest, f"unsupported algorithm {algorithm[:20]!r}; use sha256 or sha512"
        )
    length = _ALGORITHMS[algorithm][0]
    if len(encoded) != length or not _HEX.fullmatch(encoded):
        raise InvalidDigestError(digest, f"{algorithm} takes {length} lowercase hex digits")
    return Digest(algorithm, encoded)


def validate_repository(repository: str) -> str:
    """Return ``repository`` if it is a valid OCI repository name, else raise.

    Example::

        >>> validate_repository("library/ubuntu")
        'library/ubuntu'
    """
    if not isinstance(repository, str):
        raise InvalidRepositoryError(repr(repository), "a repository name is a string")
    if not repository:
        raise InvalidRepositoryError(repository, "empty")
    if len(repository) > MAX_REPOSITORY_LENGTH:
        raise InvalidRepositoryError(repository, f"longer than {MAX_REPOSITORY_LENGTH} characters")
    if not _REPOSITORY.fullmatch(repository):
        raise InvalidRepositoryError(
            repository,
            "use lowercase letters and digits, separated by '.', '_', '__' or '-', "
            "in '/'-separated components",
        )
    return repository


# Docker's reference grammar (distribution/reference): a registry is a domain name or a
# bracketed IPv6 address, with an optional port.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(
    rf"(?P<host>{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_SCHEMES = ("https://", "http://")

DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
"""Docker Hub's host names, as docker/cli and containerd know them: ``docker.io`` (the name in
references), ``index.docker.io`` (the legacy one, still in config keys) and
``registry-1.docker.io`` (the host that serves its registry API). The one set both blob
references and the Docker configuration (:mod:`acr_blob.docker_config`) go by.

Example::

    >>> sorted(DOCKER_HUB_HOSTS)
    ['docker.io', 'index.docker.io', 'registry-1.docker.io']
"""
DOCKER_HUB_ENDPOINT = "https://registry-1.docker.io"
"""The endpoint a blob reference on Docker Hub gets, whichever of its names it used."""
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
"""The key ``docker login`` stores Docker Hub's credentials under (and asks helpers for)."""


def is_tag(text: str) -> bool:
    """Whether ``text`` is a tag (``[A-Za-z0-9_][A-Za-z0-9._-]{0,127}``, letters of any script).

    Example::

        >>> is_tag("5.2-alpine"), is_tag("-latest")
        (True, False)
    """
    return _TAG.fullmatch(text) is not None


def is_docker_hub(host: str) -> bool:
    """Whether ``host`` (a host name without port, any case) is one of Docker Hub's names.

    Example::

        >>> is_docker_hub("Index.Docker.IO"), is_docker_hub("docker.io:5000")
        (True, False)
    """
    return host.lower() in DOCKER_HUB_HOSTS


@attrs.frozen
class BlobReference:
    """A blob named the way an image reference names an image: ``REGISTRY/REPOSITORY@DIGEST``.

    ``endpoint`` is the registry's base URL, ready for :class:`~acr_blob.BlobClient`
    (``https://myregistry.azurecr.io``, or ``http://127.0.0.1:5000`` when the reference said
    ``http://``); ``repository`` and ``digest`` are checked. ``str()`` gives the reference back
    in its canonical form. Build one with :func:`parse_blob_reference`.

    Example::

        reference = parse_blob_reference("myregistry.azurecr.io/prod/bash@sha256:" + "ab" * 32)
        with BlobClient(reference.endpoint) as client:
            client.download_blob_to_file(reference.repository, reference.digest, "layer.tgz")
    """

    endpoint: str
    repository: str
    digest: str

    def __str__(self) -> str:
        return f"{_registry_text(self.endpoint)}/{self.repository}@{self.digest}"


def _registry_text(endpoint: str) -> str:
    """The registry as a reference begins with it."""
    registry = endpoint.removeprefix("https://")
    if not ("." in registry or ":" in registry or registry == "localhost"):
        return endpoint  # a bare name reads as a repository without its scheme
    return registry


def parse_blob_reference(reference: str) -> BlobReference:
    """Parse ``[http(s)://]REGISTRY/REPOSITORY@ALGORITHM:HEX`` into a :class:`BlobReference`.

    The registry is the part before the first ``/``. Without a scheme it is recognised as
    Docker does: it contains a ``.`` or a ``:`` (a port), is ``localhost``, or has an uppercase
    letter; the registry is then reached over https. A reference whose first component is none
    of these names no registry (``prod/bash@sha256:...``, ``ubuntu@sha256:...``): unlike
    ``docker pull``, this does not default to Docker Hub, since the request and any credential
    would go to a third party; write ``docker.io/library/ubuntu@sha256:...`` for Docker Hub
    (``docker.io`` and ``index.docker.io`` mean its registry, ``registry-1.docker.io``, and a
    one-component repository there gets Docker's ``library/``). An explicit ``https://`` or
    ``http://`` prefix makes the first component the registry whatever it looks like.

    A blob is named by its digest: a reference with only a tag (``:latest``) is refused, and a
    tag next to a digest (``bash:5.2@sha256:...``) is ignored, as Docker ignores it.

    Raises :class:`~acr_blob.errors.InvalidEndpointError` when there is no registry, or one that
    is not a host name or address with an optional port;
    :class:`~acr_blob.errors.InvalidDigestError` when the digest is missing (a tag instead)
    or malformed; :class:`~acr_blob.errors.InvalidRepositoryError` for a bad repository name.
    Each is a :class:`ValueError`; nothing is sent anywhere.

    Example::

        >>> reference = parse_blob_reference("myregistry.azurecr.io/prod/bash@sha256:" + "0" * 64)
        >>> reference.endpoint, reference.repository
        ('https://myregistry.azurecr.io', 'prod/bash')
        >>> reference = parse_blob_reference("http://127.0.0.1:5000/busybox:1@sha256:" + "0" * 64)
        >>> reference.endpoint, reference.repository
        ('http://127.0.0.1:5000', 'busybox')
    """
    endpoint, repository, tag, digest = _split_reference(reference, "blob")
    if digest is None:
        if tag is not None:
            raise InvalidDigestError(
                _shorten(reference),
                f"a blob is named by its digest, and {tag[:40]!r} is a tag (tags name images); "
                "give REGISTRY/REPOSITORY@sha256:<64 hex>",
            )
        raise InvalidDigestError(
            _shorten(reference), "no digest: end the reference with @sha256:<64 hex>"
        )
    return BlobReference(endpoint=endpoint, repository=repository, digest=digest)


@attrs.frozen
class ImageReference:
    """An image or artifact named by tag, digest or both: ``REGISTRY/REPOSITORY[:TAG][@DIGEST]``.

    ``endpoint`` and ``repository`` are as in :class:`BlobReference`; ``tag`` and ``digest``
    are ``None`` when the reference has none (one of them is always there). The digest wins
    over the tag when both are given; the tag still names the image in a layout's index.
    Build one with :func:`parse_image_reference`.

    Example::

        >>> reference = parse_image_reference("myregistry.azurecr.io/prod/bash:5.2")
        >>> reference.repository, reference.tag, reference.digest
        ('prod/bash', '5.2', None)
    """

    endpoint: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when there is one, else the tag."""
        return self.digest or self.tag or ""

    def __str__(self) -> str:
        text = f"{_registry_text(self.endpoint)}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        return text + (f"@{self.digest}" if self.digest else "")


def parse_image_reference(reference: str) -> ImageReference:
    """Parse ``[http(s)://]REGISTRY/REPOSITORY[:TAG][@ALGORITHM:HEX]`` into an
    :class:`ImageReference`, by the rules of :func:`parse_blob_reference` (a registry is
    required; Docker Hub is not assumed), except that a tag alone is enough.

    Example::

        >>> parse_image_reference("127.0.0.1:5000/models/llm:v1@sha256:" + "0" * 64).tag
        'v1'
    """
    endpoint, repository, tag, digest = _split_reference(reference, "image")
    if tag is None and digest is None:
        raise InvalidRepositoryError(
            repository, "the reference names no tag or digest: end it with :TAG or @sha256:<hex>"
        )
    return ImageReference(endpoint=endpoint, repository=repository, tag=tag, digest=digest)


def _split_reference(reference: str, kind: str) -> tuple[str, str, str | None, str | None]:
    """The endpoint, checked repository, tag and checked digest of a ``kind`` reference."""
    if not isinstance(reference, str):
        raise InvalidEndpointError(
            f"a {kind} reference is a string, not {type(reference).__name__}"
        )
    text = reference
    scheme = next((p for p in _SCHEMES if text[: len(p)].lower() == p), "")
    text = text[len(scheme) :]
    if "://" in text:
        raise InvalidEndpointError(
            f"invalid {kind} reference {_shorten(reference)!r}: "
            "only https:// and http:// registries are supported"
        )
    first, slash, rest = text.partition("/")
    if scheme and not slash:
        raise InvalidRepositoryError("", "the reference names no repository")
    if slash and "@" in first:
        # User info (user:password@host): never echoed, it may hold a password.
        raise InvalidEndpointError(
            f"credentials do not belong in a {kind} reference: give them separately "
            "(a blob reference is REGISTRY/REPOSITORY@DIGEST)"
        )
    if not scheme and not (
        slash and ("." in first or ":" in first or first == "localhost" or first != first.lower())
    ):
        raise InvalidEndpointError(
            f"no registry in {kind} reference {_shorten(reference)!r}: begin it with the "
            "registry's host, as in myregistry.azurecr.io/prod/bash@sha256:<hex> (a first "
            "component without '.' or ':' is part of the repository; Docker Hub is not assumed)"
        )
    endpoint = _endpoint(scheme or "https://", first, reference)
    repository, at, digest = rest.rpartition("@")
    if not at:
        repository, digest = rest, ""
    name, colon, tag = repository.rpartition(":")
    found_tag = None
    if colon and "/" not in tag:
        if digest and not _TAG.fullmatch(tag):
            raise InvalidRepositoryError(
                repository, "the part after ':' is not a tag; the digest follows '@'"
            )
        if not digest and not _TAG.fullmatch(tag):
            raise InvalidRepositoryError(repository, f"{tag[:40]!r} is not a valid tag")
        repository, found_tag = name, tag
    if not repository:
        raise InvalidRepositoryError(repository, "the reference names no repository")
    if endpoint == DOCKER_HUB_ENDPOINT and "/" not in repository:
        repository = f"library/{repository}"
    checked = validate_repository(repository)
    return endpoint, checked, found_tag, str(parse_digest(digest)) if digest else None


def _endpoint(scheme: str, registry: str, reference: str) -> str:
    """``scheme://registry`` once ``registry`` is checked to be HOST[:PORT]."""
    match = _HOST.fullmatch(registry)
    port = match.group("port") if match else None
    if match is None or (port is not None and not 0 < int(port) < 65536):
        raise InvalidEndpointError(
            f"invalid registry {registry[:300]!r} in blob reference {_shorten(reference)!r}: "
            "expected a host name or address, with an optional :PORT"
        )
    host = registry.lower()
    if scheme == "https://" and is_docker_hub(match.group("host")) and not port:
        return DOCKER_HUB_ENDPOINT
    return scheme + host


def _shorten(text: str) -> str:
    return text if len(text) <= 300 else text[:300] + "..."

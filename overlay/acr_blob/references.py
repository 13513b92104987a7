"""Checks repository names and digests against the OCI distribution grammar."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import attrs

from .errors import InvalidDigestError, InvalidRepositoryError

__all__ = ["Digest", "parse_digest", "validate_repository"]

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

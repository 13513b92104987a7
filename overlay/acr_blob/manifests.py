"""Manifests: the JSON documents that name an image's or artifact's blobs, checked and parsed.

A manifest is kept as the bytes the registry sent, for its digest is over those bytes; the
parsed document is the generated model of its media type (``ImageManifest``, ``ImageIndex``,
``ArtifactManifest`` of :mod:`acr_blob_api.models`), or ``None`` for a media type acr-blob does
not know. Docker's schema 2 manifest and manifest list have the OCI shapes and parse as them.
"""

from __future__ import annotations

import hashlib
import json
import platform as _platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeAlias

import attrs

from acr_blob_api.models import ArtifactManifest, Descriptor, ImageIndex, ImageManifest
from acr_blob_api.types import Unset

from .errors import DigestMismatchError, ManifestError, PlatformNotFoundError
from .models import BlobProperties
from .references import parse_digest

__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "MAX_MANIFEST_BYTES",
    "Manifest",
    "Platform",
    "PullResult",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_ARTIFACT = "application/vnd.oci.artifact.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_INDEX, OCI_MANIFEST, OCI_ARTIFACT, DOCKER_LIST, DOCKER_MANIFEST)
"""The manifest media types a client asks for (its ``Accept``) and parses."""
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""The largest manifest read, as containerd caps it: a larger one is refused before parsing."""
TITLE = "org.opencontainers.image.title"
REF_NAME = "org.opencontainers.image.ref.name"

Document: TypeAlias = ImageManifest | ImageIndex | ArtifactManifest


@attrs.frozen
class Manifest:
    """A manifest as the registry sent it, checked against its digest.

    ``media_type`` is the answer's ``Content-Type`` (else the document's ``mediaType``),
    ``digest`` the digest of ``raw``, its exact bytes. ``document`` is the parsed
    ``ImageManifest``, ``ImageIndex`` or ``ArtifactManifest`` (generated models), or ``None``
    for a media type acr-blob does not know (``raw`` is still there).

    Example::

        manifest = client.get_manifest("prod/bash", "5.2")
        if manifest.is_index:
            print([d.platform.architecture for d in manifest.document.manifests])
    """

    media_type: str
    digest: str
    raw: bytes = attrs.field(repr=False)
    document: Document | None = attrs.field(repr=False)

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def is_index(self) -> bool:
        """Whether this is an image index (or Docker manifest list): manifests, not blobs."""
        return isinstance(self.document, ImageIndex)

    @property
    def blobs(self) -> list[Descriptor]:
        """The blobs an image or artifact manifest names (its config first); none for an
        index or an unknown media type."""
        document = self.document
        if isinstance(document, ImageManifest):
            return [document.config, *document.layers]
        if isinstance(document, ArtifactManifest) and not isinstance(document.blobs, Unset):
            return list(document.blobs)
        return []

    @property
    def layers(self) -> list[Descriptor]:
        """The layers (an artifact's files), without the config."""
        document = self.document
        if isinstance(document, ImageManifest):
            return list(document.layers)
        return self.blobs

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """This manifest as an OCI descriptor (``mediaType``, ``digest``, ``size``, ``extra``)."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@attrs.frozen
class PullResult:
    """What :meth:`~acr_blob.BlobClient.pull` put at ``path``.

    ``manifest`` is the image's or artifact's manifest (for an index, the one of the platform
    chosen), ``index`` the index it was chosen from (``None`` when the reference named a
    manifest), ``blobs`` the blobs written (in a layout) and ``files`` the files written (with
    ``files=True``).

    Example::

        result = client.pull("myregistry.azurecr.io/prod/bash:5.2", "bash")
        print(result.manifest.digest, len(result.blobs))
    """

    path: Path
    manifest: Manifest
    index: Manifest | None
    blobs: list[BlobProperties]
    files: list[Path]


def parse_manifest(raw: bytes, content_type: str | None, reference: str) -> Manifest:
    """The manifest of ``raw`` bytes answered for ``reference``; its descriptors are checked
    (a digest, a size), so that nothing downloaded after trusts a malformed one."""
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    media_type = (content_type or "").partition(";")[0].strip().lower()
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not media_type and isinstance(data, dict) and isinstance(data.get("mediaType"), str):
        media_type = data["mediaType"]
    if media_type not in MANIFEST_MEDIA_TYPES:
        return Manifest(media_type or "application/octet-stream", digest, raw, None)
    if not isinstance(data, dict):
        raise ManifestError(
            f"{reference}: the {media_type} is not a JSON object", reference=reference
        )
    model = (
        ImageIndex
        if media_type in INDEX_TYPES
        else ArtifactManifest
        if media_type == OCI_ARTIFACT
        else ImageManifest
    )
    try:
        document = model.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ManifestError(
            f"{reference}: not a valid {media_type}: {error!r}", reference=reference
        ) from None
    manifest = Manifest(media_type, digest, raw, document)
    descriptors = manifest.blobs + (list(document.manifests) if manifest.is_index else [])  # type: ignore[union-attr]
    for descriptor in descriptors:
        check_descriptor(descriptor, reference)
    return manifest


def check_descriptor(descriptor: Descriptor, reference: str) -> None:
    """A descriptor acr-blob may download by: a valid digest and a size that is a count."""
    size = descriptor.size
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ManifestError(f"{reference}: a descriptor's size is {size!r}", reference=reference)
    if not isinstance(descriptor.digest, str):
        raise ManifestError(f"{reference}: a descriptor has no digest", reference=reference)
    try:
        parse_digest(descriptor.digest)
    except ValueError as error:
        raise ManifestError(f"{reference}: {error}", reference=reference) from None


def check_manifest_digest(raw: bytes, wanted: str | None, advertised: str | None) -> None:
    """Before parsing: by digest, the bytes must hash to it; by tag, to the
    ``Docker-Content-Digest`` the registry sent (when it sent one)."""
    expected = wanted or (advertised.strip() if advertised else None)
    if expected is None:
        return
    checked = parse_digest(expected)
    actual = f"{checked.algorithm}:{hashlib.new(checked.algorithm, raw).hexdigest()}"
    if actual != str(checked):
        source = "content" if wanted else "Docker-Content-Digest"
        raise DigestMismatchError(str(checked), actual, source=source)


@attrs.frozen
class Platform:
    """An ``os/architecture[/variant]``, as ``--platform`` names one.

    Example::

        >>> Platform.parse("linux/arm64/v8")
        Platform(os='linux', architecture='arm64', variant='v8')
    """

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().lower().split("/") if isinstance(text, str) else []
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise ValueError(f"platform must be OS/ARCHITECTURE[/VARIANT], got {text!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def current(cls) -> Platform:
        """The platform this Python runs on, in Go's names."""
        machine = _platform.machine().lower()
        architecture, variant = _MACHINES.get(machine, (machine, None))
        return cls(_platform.system().lower() or "linux", architecture, variant)

    def matches(self, os: str, architecture: str, variant: str | None) -> bool:
        if (os, architecture) != (self.os, self.architecture):
            return False
        if self.variant is None:
            return True
        return (variant or _DEFAULT_VARIANTS.get(architecture)) == self.variant

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)


_MACHINES = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i686": ("386", None),
    "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
}
_DEFAULT_VARIANTS = {"arm64": "v8"}


def select_platform(index: Manifest, wanted: Platform, reference: str) -> Descriptor:
    """The descriptor of ``index``'s manifest for ``wanted``; the first one that matches."""
    assert isinstance(index.document, ImageIndex)
    offered = []
    for descriptor in index.document.manifests:
        platform = descriptor.platform
        if isinstance(platform, Unset):
            continue
        variant = platform.variant if isinstance(platform.variant, str) else None
        if wanted.matches(platform.os, platform.architecture, variant):
            return descriptor
        offered.append(str(Platform(platform.os, platform.architecture, variant)))
    raise PlatformNotFoundError(str(wanted), offered, reference=reference)


def check_titles(layers: Iterable[Descriptor], reference: str) -> list[tuple[str, Descriptor]]:
    """Each titled layer with its title, which must be a plain file name: no ``/``, ``..``,
    ``.``, NUL or empty title, and no two layers with one title. Untitled layers are left
    out, as ``oras pull`` leaves them."""
    titled: dict[str, Descriptor] = {}
    for layer in layers:
        annotations = layer.annotations
        if isinstance(annotations, Unset):
            continue
        title = annotations.additional_properties.get(TITLE)
        if title is None:
            continue
        if (
            not isinstance(title, str)
            or title in ("", ".", "..")
            or "/" in title
            or "\\" in title
            or "\0" in title
        ):
            raise ManifestError(
                f"{reference}: layer title {str(title)[:200]!r} would leave the destination; "
                "only plain file names are written",
                reference=reference,
            )
        if title in titled:
            raise ManifestError(
                f"{reference}: two layers are titled {title!r}", reference=reference
            )
        titled[title] = layer
    return list(titled.items())

"""Direct access to a filesystem-backed registry's storage, to plant or tamper with blobs.

Layout of distribution 2.8 under the storage root:
  docker/registry/v2/blobs/ALG/HH/HEX/data                    the bytes (HH = first two hex)
  docker/registry/v2/repositories/NAME/_layers/ALG/HEX/link   the digest, links the blob to NAME
  docker/registry/v2/repositories/NAME/_manifests/revisions/ALG/HEX/link
                                                   the digest: blob HEX is a manifest of NAME
  docker/registry/v2/repositories/NAME/_manifests/tags/TAG/current/link
                                                   the digest TAG points at (and
                                                   .../tags/TAG/index/ALG/HEX/link, its history)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_V2 = Path("docker/registry/v2")


def _split(digest: str) -> tuple[str, str]:
    algorithm, sep, hex_ = digest.partition(":")
    if not sep or not algorithm or not hex_:
        raise ValueError(f"not a digest: {digest!r}")
    return algorithm, hex_


def blob_data_path(root: Path, digest: str) -> Path:
    algorithm, hex_ = _split(digest)
    return root / _V2 / "blobs" / algorithm / hex_[:2] / hex_ / "data"


def layer_link_path(root: Path, repository: str, digest: str) -> Path:
    algorithm, hex_ = _split(digest)
    return root / _V2 / "repositories" / repository / "_layers" / algorithm / hex_ / "link"


def flip_byte(root: Path, digest: str, offset: int = 0) -> None:
    """Corrupt one stored byte in place; the registry serves blobs without re-hashing them."""
    path = blob_data_path(root, digest)
    with path.open("r+b") as f:
        f.seek(offset)
        original = f.read(1)
        if not original:
            raise ValueError(f"offset {offset} is past the end of {path}")
        f.seek(offset)
        f.write(bytes([original[0] ^ 0xFF]))


def put_blob_in_storage(root: Path, repository: str, data: bytes, algorithm: str = "sha512") -> str:
    """Store a blob under a digest of any hashlib algorithm; returns that digest.

    An upload cannot do this: distribution 2.8 files every pushed blob under its sha256
    digest (another digest becomes an alias), so only a blob planted here is served with
    `Docker-Content-Digest: sha512:...`.
    """
    digest = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
    data_path = blob_data_path(root, digest)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    data_path.write_bytes(data)
    link = layer_link_path(root, repository, digest)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.write_text(digest)
    return digest


def manifest_revision_path(root: Path, repository: str, digest: str) -> Path:
    algorithm, hex_ = _split(digest)
    return (
        root / _V2 / "repositories" / repository / "_manifests" / "revisions" / algorithm / hex_
    ) / "link"


def put_manifest_in_storage(
    root: Path, repository: str, body: bytes, tag: str | None = None
) -> str:
    """Store `body` as a manifest of `repository` (and point `tag` at it); returns its digest.

    Nothing is checked here: not the JSON, not that the blobs it references exist (a PUT
    wants them all), not the size (distribution 2.8 refuses to read more than 4 MiB of a
    stored manifest too: a larger one is answered 500). The registry serves the body as the
    type its `mediaType` field names; without one, as an OCI index if it has `manifests`,
    else as an OCI image manifest.
    """
    digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
    data_path = blob_data_path(root, digest)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    data_path.write_bytes(body)
    links = [manifest_revision_path(root, repository, digest)]
    if tag is not None:
        tag_dir = root / _V2 / "repositories" / repository / "_manifests" / "tags" / tag
        algorithm, hex_ = _split(digest)
        links += [tag_dir / "current" / "link", tag_dir / "index" / algorithm / hex_ / "link"]
    for link in links:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.write_text(digest)
    return digest

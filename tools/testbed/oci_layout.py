"""A minimal OCI image layout on disk around layer blobs already there, for skopeo's `oci:`.

Layout (OCI image-layout 1.0):
  oci-layout           {"imageLayoutVersion": "1.0.0"}
  index.json           the image index: one manifest descriptor per tag
                       (annotation org.opencontainers.image.ref.name = the tag)
  blobs/sha256/HEX     every blob (layers, config, manifest), named by its sha256

What skopeo 1.9 does with one: `inspect oci:DIR:TAG` (also --raw, --config, --config --raw),
`copy oci:DIR:TAG dir:OUT` and `copy oci:DIR:TAG oci:OUT:TAG` read it; `copy` checks each blob
against its digest (not its size); `list-tags` and `sync` have no `oci` transport. Without
`:TAG` skopeo takes the index's only manifest.

An index.json entry may also point at an image index whose manifests are in blobs/: skopeo
then takes the manifest of its platform (the host's, or --override-os/-arch/-variant; only
that one's blobs need be there), `inspect` reports the index's digest, and `copy --all`
copies every manifest. Entries of Docker media types (manifest v2, manifest list) are not
looked at: "no descriptor found for reference".
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tools.testbed.process import TestbedUnavailable

OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
# Uncompressed, so that a layer's digest is also its diff ID and no tool tries to gunzip it.
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"


def skopeo_binary() -> str:
    path = shutil.which("skopeo")
    if path is None:
        raise TestbedUnavailable("skopeo is not installed (Debian: apt-get install skopeo)")
    return path


def _canonical(document: dict[str, Any]) -> bytes:
    # Compact and sorted: the same image always gets the same manifest digest.
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _hex(digest: str) -> str:
    algorithm, sep, hex_ = digest.partition(":")
    if algorithm != "sha256" or not sep or len(hex_) != 64:
        raise ValueError(f"an OCI layout here holds sha256 blobs only, got {digest!r}")
    return hex_


def _write_atomically(path: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would be odd for a shareable layout
            f.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _put_blob(blobs: Path, data: bytes) -> tuple[str, int]:
    """Store `data` under its digest unless a blob by that name is already there."""
    hex_ = hashlib.sha256(data).hexdigest()
    path = blobs / hex_
    if not path.exists():
        _write_atomically(path, data)
    return f"sha256:{hex_}", len(data)


def write_oci_index(
    layout_dir: Path,
    layer_digests_and_sizes: Iterable[tuple[str, int]],
    tag: str = "latest",
) -> str:
    """Make `layout_dir` an image layout whose image `tag` has these layers; returns the
    manifest's digest.

    The layers must already be in `blobs/sha256/` with these sizes (ValueError otherwise);
    they are never written. Added: a config blob (linux/amd64, the layers as diff IDs), the
    image manifest, `oci-layout` if missing, and `index.json`, whose other tags are kept (an
    entry with the same tag is replaced). Config and manifest are written only if no blob of
    that digest exists yet.
    """
    layers = list(layer_digests_and_sizes)
    if not layers:
        raise ValueError("an image needs at least one layer")
    blobs = layout_dir / "blobs" / "sha256"
    for digest, size in layers:
        path = blobs / _hex(digest)
        if not path.is_file():
            raise ValueError(f"layer {digest} is not in {blobs}")
        if path.stat().st_size != size:
            raise ValueError(f"layer {digest} is {path.stat().st_size} bytes, not {size}")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest for digest, _ in layers]},
    }
    config_digest, config_size = _put_blob(blobs, _canonical(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [
            {"mediaType": OCI_LAYER, "digest": digest, "size": size} for digest, size in layers
        ],
    }
    manifest_digest, manifest_size = _put_blob(blobs, _canonical(manifest))

    marker = layout_dir / "oci-layout"
    if not marker.exists():
        _write_atomically(marker, json.dumps(OCI_LAYOUT).encode())
    index_path = layout_dir / "index.json"
    others: list[dict[str, Any]] = []
    if index_path.exists():
        existing = json.loads(index_path.read_text())
        others = [
            entry
            for entry in existing.get("manifests", [])
            if entry.get("annotations", {}).get(REF_NAME) != tag
        ]
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            *others,
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {REF_NAME: tag},
            },
        ],
    }
    _write_atomically(index_path, json.dumps(index, indent=2).encode() + b"\n")
    return manifest_digest

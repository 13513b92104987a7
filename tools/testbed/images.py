"""Whole images and artifacts pushed to a testbed registry: blobs, manifests, indexes.

`push_image` pushes a multi-platform image (OCI or Docker schema 2), `push_artifact` an
ORAS-style artifact, `push_manifest` any bytes as a manifest. Every document is JSON indented
by three spaces in a fixed key order, as docker writes them, not the compact sorted form
`json.dumps` makes: a client that re-serialises a manifest instead of keeping its bytes gets
a different digest.

What distribution 2.8 (Debian's docker-registry 2.8.2) does with manifests:
  PUT     the Content-Type picks the parser: an OCI manifest sent as Docker's (or as
          application/json) is 400 MANIFEST_INVALID. Every blob a manifest references (config
          and layers, whatever their media type) and every manifest an index or list
          references must already be in the repository, else 400 MANIFEST_BLOB_UNKNOWN; their
          sizes are not checked. `artifactType` and an `application/vnd.oci.empty.v1+json`
          config are accepted and kept. A body over MAX_MANIFEST_SIZE (4 MiB) is
          400 MANIFEST_INVALID "http: request body too large"; one planted in storage
          (put_manifest_in_storage) is not served either: 500 UNKNOWN, "storage: read
          exceeds limit" in the log. A test of an oversize manifest needs a fake server.
  GET     by tag or by digest, an OCI manifest or index whose media type is not in `Accept` is
          404 MANIFEST_UNKNOWN ("OCI index found, but accept header does not support OCI
          indexes"), also for `*/*` or no Accept at all. A Docker manifest list fetched by tag
          without the list type in Accept is replaced by its linux/amd64 manifest (served with
          that manifest's digest; 404 MANIFEST_UNKNOWN if the list has none), and a Docker
          manifest fetched by tag without its own type in Accept is converted to a signed
          schema 1 manifest (400 MANIFEST_INVALID "empty history" if the config has no
          history). By digest, Docker types are served as stored whatever the Accept.
          HEAD answers the same status and headers.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import ssl
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from tools.testbed.deployments import Mirror, PushedBlob, PushTarget
from tools.testbed.oci_layout import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST
from tools.testbed.process import TestbedError
from tools.testbed.push import push_blob, put_manifest

OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_EMPTY_DATA = b"{}"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# What a client lists in Accept to be served any of these four as stored.
MANIFEST_MEDIA_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)
TITLE = "org.opencontainers.image.title"
# The largest manifest distribution 2.8 takes in a PUT, and serves from its storage.
MAX_MANIFEST_SIZE = 4 << 20

# Index, manifest, config, layer, gzipped layer: OCI's, then Docker schema 2's.
_IMAGE_MEDIA_TYPES = {
    False: (OCI_INDEX, OCI_MANIFEST, OCI_CONFIG, OCI_LAYER, OCI_LAYER_GZIP),
    True: (DOCKER_MANIFEST_LIST, DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LAYER_GZIP),
}

# (os, architecture, variant)
Platform = tuple[str, str, str | None]
DEFAULT_PLATFORMS: tuple[Platform, ...] = (("linux", "amd64", None), ("linux", "arm64", "v8"))


@dataclass(frozen=True)
class PushedContent:
    """One blob or manifest as pushed: its media type, digest and exact bytes."""

    media_type: str
    digest: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class PlatformImage:
    """One platform's image: its manifest, config and layers (in manifest order).

    `diff_ids` are the digests of the uncompressed layers (the config's rootfs.diff_ids):
    the layers' own digests unless they are gzipped.
    """

    os: str
    architecture: str
    variant: str | None
    manifest: PushedContent
    config: PushedContent
    layers: tuple[PushedContent, ...]
    diff_ids: tuple[str, ...]

    @property
    def platform(self) -> dict[str, str]:
        """The `platform` object of this image's entry in an index."""
        platform = {"architecture": self.architecture, "os": self.os}
        if self.variant is not None:
            platform["variant"] = self.variant
        return platform

    @property
    def blobs(self) -> tuple[PushedContent, ...]:
        """Config, then layers: every blob the manifest references."""
        return (self.config, *self.layers)


@dataclass(frozen=True)
class PushedImage:
    """What push_image pushed: `tag` points at `index` (an OCI index or Docker manifest
    list), or with index=False at the one image's manifest (`index` is None)."""

    repository: str
    tag: str
    index: PushedContent | None
    images: tuple[PlatformImage, ...]

    @property
    def index_digest(self) -> str | None:
        return self.index.digest if self.index else None

    @property
    def index_bytes(self) -> bytes | None:
        return self.index.data if self.index else None

    @property
    def tagged(self) -> PushedContent:
        """What the tag points at: the index, or the only manifest."""
        return self.index if self.index is not None else self.images[0].manifest

    @property
    def digest(self) -> str:
        return self.tagged.digest

    def image(
        self, architecture: str, *, os: str = "linux", variant: str | None = None
    ) -> PlatformImage:
        """The image of one platform (any variant unless `variant` is given)."""
        found = [
            image
            for image in self.images
            if image.architecture == architecture
            and image.os == os
            and (variant is None or image.variant == variant)
        ]
        if len(found) != 1:
            raise KeyError(f"{len(found)} images for {os}/{architecture}/{variant}")
        return found[0]

    @property
    def manifests(self) -> dict[str, PushedContent]:
        """Every manifest pushed (index included) by digest."""
        documents = [image.manifest for image in self.images]
        if self.index is not None:
            documents.insert(0, self.index)
        return {document.digest: document for document in documents}

    @property
    def blobs(self) -> dict[str, PushedContent]:
        """Every config and layer pushed, by digest."""
        return {blob.digest: blob for image in self.images for blob in image.blobs}


@dataclass(frozen=True)
class PushedArtifact:
    """What push_artifact pushed: `tag` points at `manifest`; one layer per file, in the
    order of the files given, titled with the file's name."""

    repository: str
    tag: str
    artifact_type: str | None
    manifest: PushedContent
    config: PushedContent
    layers: tuple[PushedContent, ...]
    names: tuple[str, ...]

    @property
    def manifest_digest(self) -> str:
        return self.manifest.digest

    @property
    def manifest_bytes(self) -> bytes:
        return self.manifest.data

    @property
    def files(self) -> dict[str, PushedBlob]:
        """File name -> (digest, bytes)."""
        return {
            name: PushedBlob(layer.digest, layer.data)
            for name, layer in zip(self.names, self.layers, strict=True)
        }


def dump_json(document: Mapping[str, Any]) -> bytes:
    """A manifest's or config's bytes: indented by three spaces, keys in insertion order."""
    return json.dumps(document, indent=3).encode()


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _writable(deployment: PushTarget) -> None:
    if isinstance(deployment, Mirror):
        raise TestbedError("a mirror is read-only (405 UNSUPPORTED): push to its origin")


def push_manifest(
    deployment: PushTarget,
    repository: str,
    reference: str | None,
    body: bytes,
    media_type: str,
) -> str:
    """PUT `body` as-is as a manifest of `media_type` under `reference` (a tag, or None or its
    digest: by digest); returns its digest, as the registry confirmed it.

    Any bytes go (oversize ones, titles the registry never reads), but the registry parses
    them by `media_type` and wants every blob or manifest they reference already pushed (see
    the module's docstring). A refusal raises httpx.HTTPStatusError.
    """
    _writable(deployment)
    return put_manifest(
        deployment.url,
        repository,
        reference or _sha256(body),
        body,
        media_type,
        auth=deployment.push_auth(repository),
        verify=deployment.verify,
    )


def layer_tar(name: str, content: bytes) -> bytes:
    """A real tar archive holding one regular file `name` (fixed mode, owner and mtime)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.mode = 0o644
        info.mtime = 0
        archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


class _Pusher:
    """Blob and manifest pushes to one repository with one set of credentials (one token)."""

    def __init__(self, deployment: PushTarget, repository: str) -> None:
        _writable(deployment)
        self.deployment = deployment
        self.repository = repository
        self.auth: httpx.Auth | tuple[str, str] | None = deployment.push_auth(repository)
        # One SSL context for all the pushes: httpx would build one (40 ms) per client.
        verify = deployment.verify
        self.verify = ssl.create_default_context() if verify is True else verify

    def blob(self, media_type: str, data: bytes) -> PushedContent:
        digest = push_blob(
            self.deployment.url,
            self.repository,
            data,
            auth=self.auth,
            verify=self.verify,
        )
        return PushedContent(media_type, digest, data)

    def manifest(self, reference: str | None, media_type: str, data: bytes) -> PushedContent:
        digest = put_manifest(
            self.deployment.url,
            self.repository,
            reference or _sha256(data),
            data,
            media_type,
            auth=self.auth,
            verify=self.verify,
        )
        return PushedContent(media_type, digest, data)


def push_image(
    deployment: PushTarget,
    repository: str,
    tag: str,
    *,
    platforms: Iterable[Platform] = DEFAULT_PLATFORMS,
    layers_per_platform: int = 2,
    layer_size: int = 4096,
    index: bool = True,
    docker: bool = False,
    gzip_layers: bool | None = None,
) -> PushedImage:
    """Push an image for each platform and an index of them under `tag`.

    Each platform gets its own `layers_per_platform` layers, each a tar archive of one file
    of `layer_size` random bytes (gzipped with `gzip_layers`, default: for Docker only), a
    config (os, architecture, variant, rootfs.diff_ids, one history entry per layer) and a
    manifest, pushed by digest. Then the OCI image index (with `docker`: the Docker manifest
    list) of those manifests with their platforms is pushed under `tag`; with index=False
    (one platform only) the manifest itself is pushed under `tag` instead.

    Media types: OCI (image manifest, image config, layer .tar or .tar+gzip) or with `docker`
    Docker schema 2 (manifest v2, container image config, rootfs.diff.tar or .tar.gzip).
    """
    platforms = tuple(platforms)
    if not platforms:
        raise ValueError("an image needs at least one platform")
    if not index and len(platforms) != 1:
        raise ValueError("without an index an image has exactly one platform")
    if layers_per_platform < 1:
        raise ValueError("an image needs at least one layer")
    compress = docker if gzip_layers is None else gzip_layers
    index_type, manifest_type, config_type, tar_type, gzip_type = _IMAGE_MEDIA_TYPES[docker]
    layer_type = gzip_type if compress else tar_type

    pusher = _Pusher(deployment, repository)
    images = []
    for os_, architecture, variant in platforms:
        layers = []
        diff_ids = []
        for number in range(layers_per_platform):
            name = f"layer-{number}/{os_}-{architecture}{variant or ''}.bin"
            tar = layer_tar(name, os.urandom(layer_size))
            diff_ids.append(_sha256(tar))
            data = gzip.compress(tar, mtime=0) if compress else tar
            layers.append(pusher.blob(layer_type, data))
        config: dict[str, Any] = {"architecture": architecture, "os": os_}
        if variant is not None:
            config["variant"] = variant
        config |= {
            "created": "1970-01-01T00:00:00Z",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            # With a history docker's schema 1 conversion works (see the module docstring).
            "history": [
                {"created": "1970-01-01T00:00:00Z", "created_by": f"testbed layer {number}"}
                for number in range(layers_per_platform)
            ],
        }
        config_blob = pusher.blob(config_type, dump_json(config))
        manifest = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config_blob.descriptor(),
            "layers": [layer.descriptor() for layer in layers],
        }
        reference = tag if not index else None
        images.append(
            PlatformImage(
                os=os_,
                architecture=architecture,
                variant=variant,
                manifest=pusher.manifest(reference, manifest_type, dump_json(manifest)),
                config=config_blob,
                layers=tuple(layers),
                diff_ids=tuple(diff_ids),
            )
        )
    pushed_index = None
    if index:
        document = {
            "schemaVersion": 2,
            "mediaType": index_type,
            "manifests": [
                {**image.manifest.descriptor(), "platform": image.platform} for image in images
            ],
        }
        pushed_index = pusher.manifest(tag, index_type, dump_json(document))
    return PushedImage(repository, tag, pushed_index, tuple(images))


def push_artifact(
    deployment: PushTarget,
    repository: str,
    tag: str,
    files: Mapping[str, bytes],
    *,
    artifact_type: str | None = "application/vnd.acme.model.v1",
    config: bytes | None = None,
    config_media_type: str | None = None,
    file_media_type: str = OCI_LAYER,
    annotations: Mapping[str, str] | None = None,
) -> PushedArtifact:
    """Push an ORAS-style artifact under `tag`: an OCI image manifest with `artifactType`
    (None: no such field), one layer per file (`file_media_type`, annotation
    org.opencontainers.image.title = its name, which may be anything: `../x`, `/abs`, `a/b`),
    and `annotations` on the manifest.

    The config is `config` as `config_media_type` (default: `artifact_type`, the OCI 1.1
    way), or without one the empty descriptor's `{}` as application/vnd.oci.empty.v1+json,
    what ORAS 1.x sends. distribution 2.8 takes both.
    """
    pusher = _Pusher(deployment, repository)
    if config is None:
        config_blob = pusher.blob(config_media_type or OCI_EMPTY, OCI_EMPTY_DATA)
    else:
        media_type = config_media_type or artifact_type
        if media_type is None:
            raise ValueError("a config needs a media type: config_media_type or artifact_type")
        config_blob = pusher.blob(media_type, config)
    names = tuple(files)
    layers = tuple(pusher.blob(file_media_type, files[name]) for name in names)
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type is not None:
        manifest["artifactType"] = artifact_type
    manifest["config"] = config_blob.descriptor()
    manifest["layers"] = [
        {**layer.descriptor(), "annotations": {TITLE: name}}
        for name, layer in zip(names, layers, strict=True)
    ]
    if annotations:
        manifest["annotations"] = dict(annotations)
    pushed = pusher.manifest(tag, OCI_MANIFEST, dump_json(manifest))
    return PushedArtifact(repository, tag, artifact_type, pushed, config_blob, layers, names)

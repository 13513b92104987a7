# Generated from acr_blob/_async/artifacts.py by tools/unasync.py: do not edit.
"""Whole artifacts: a manifest by tag or digest, and the pull of every blob it names.

:func:`fetch_manifest` reads a manifest (at most 4 MiB) from the hosts that may serve it, checks
it against its digest and parses it. :func:`pull_artifact` resolves an index to one platform,
checks every descriptor (and every title, for files) before anything is written, then downloads
the blobs side by side through the client's own downloads (cache, mirrors, locks, resumption),
and writes the layout's ``index.json`` last.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from acr_blob_api.api.manifest import check_manifest_exists, get_manifest
from acr_blob_api.models import Descriptor, ImageIndex
from acr_blob_api.types import Unset

from .._concurrency import map_bounded, run_blocking
from .._layout import OciLayout, check_folder
from .._progress import ProgressCallback, ProgressReporter, reporter
from ..cache import BlobCache
from ..errors import CacheMissError, ManifestError
from ..manifests import (
    MAX_MANIFEST_BYTES,
    Manifest,
    Platform,
    PullResult,
    check_manifest_digest,
    check_titles,
    parse_manifest,
    select_platform,
)
from ..models import BlobProperties
from ..references import ImageReference, parse_digest
from .sender import Hosts, Sender

__all__ = ["fetch_manifest", "pull_artifact", "resolve_tag"]

Download = Callable[[str, str, Path, ProgressCallback], BlobProperties]


def fetch_manifest(
    hosts: Hosts,
    cache: BlobCache | None,
    offline: bool,
    repository: str,
    reference: str,
    deadline: float | None = None,
) -> Manifest:
    """The manifest ``reference`` (a tag or a digest) names in ``repository``, checked."""
    digest = parse_digest(reference) if ":" in reference else None
    if digest is not None and cache is not None:
        raw = run_blocking(cache.read, digest, MAX_MANIFEST_BYTES)
        if raw is not None:
            return parse_manifest(raw, None, reference)
    if offline:
        raise CacheMissError(reference, None if cache is None else cache.root)

    def attempt(sender: Sender) -> Manifest:
        response, _ = sender.send_manifest(
            get_manifest._get_kwargs, repository, reference, deadline
        )
        try:
            raw = _read_capped(response, reference)
        finally:
            response.close()
        advertised = response.headers.get("Docker-Content-Digest")
        check_manifest_digest(raw, str(digest) if digest else None, advertised)
        return parse_manifest(raw, response.headers.get("Content-Type"), reference)

    capability = "pull" if digest is not None else "resolve"
    manifest = hosts.route(f"{repository}:{reference}", capability).open(attempt)
    if cache is not None:
        # The cache is best effort: a manifest not kept is fetched again.
        with contextlib.suppress(OSError):
            run_blocking(cache.store, parse_digest(manifest.digest), manifest.raw)
    return manifest


def _read_capped(response: httpx.Response, reference: str) -> bytes:
    """The body, refused beyond :data:`MAX_MANIFEST_BYTES` (before it is all read)."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > MAX_MANIFEST_BYTES:
        raise _too_large(reference, int(length))
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > MAX_MANIFEST_BYTES:
            raise _too_large(reference, None)
    return bytes(body)


def _too_large(reference: str, size: int | None) -> ManifestError:
    what = f"{size} bytes" if size is not None else "more"
    return ManifestError(
        f"{reference}: the manifest is {what}, over the {MAX_MANIFEST_BYTES} bytes acr-blob reads",
        reference=reference,
    )


def resolve_tag(hosts: Hosts, repository: str, tag: str) -> str:
    """The digest ``tag`` points at, from a ``HEAD`` (a ``GET`` when the registry sends no
    ``Docker-Content-Digest``)."""

    def attempt(sender: Sender) -> str | None:
        response, _ = sender.send_manifest(check_manifest_exists._get_kwargs, repository, tag)
        response.close()
        advertised = response.headers.get("Docker-Content-Digest")
        return str(parse_digest(advertised.strip())) if advertised else None

    digest = hosts.route(f"{repository}:{tag}", "resolve").open(attempt)
    if digest is not None:
        return digest
    manifest = fetch_manifest(hosts, None, False, repository, tag)
    return manifest.digest


def pull_artifact(
    fetch: Callable[[str, str], Manifest],
    download: Download,
    reference: ImageReference,
    dest: Path,
    *,
    platform: Platform,
    concurrency: int,
    progress: ProgressCallback | None,
    files: bool,
) -> PullResult:
    """Pull ``reference`` into ``dest``: an OCI image layout, or (``files``) its titled
    layers as files. Everything is checked before the first byte is written."""
    name = str(reference)
    check_folder(dest, name)
    top = fetch(reference.repository, reference.reference)
    index = None
    manifest = top
    if top.is_index:
        chosen = select_platform(top, platform, name)
        index, manifest = top, fetch(reference.repository, chosen.digest)
    if manifest.document is None or manifest.is_index:
        raise ManifestError(
            f"{name}: a {manifest.media_type} names no blobs acr-blob can pull", reference=name
        )
    if files:
        titled = check_titles(manifest.layers, name)
        if not titled:
            raise ManifestError(f"{name}: no layer has a title to name a file", reference=name)
        jobs = [(layer, dest / title) for title, layer in titled]
        run_blocking(dest.mkdir, parents=True, exist_ok=True)
    else:
        layout = OciLayout(dest)
        run_blocking(layout.prepare)
        jobs = [(blob, layout.blob_path(blob.digest)) for blob in _unique(manifest.blobs)]
    meter = PullMeter(progress, sum(blob.size for blob, _ in jobs))

    def fetch_one(job: tuple[Descriptor, Path]) -> BlobProperties:
        blob, target = job
        if not files and run_blocking(layout.has_blob, blob.digest, blob.size):
            meter.skipped(blob)
            return BlobProperties(blob.digest, blob.size, blob.media_type)
        properties = download(reference.repository, blob.digest, target, meter.of(blob))
        if properties.size is not None and properties.size != blob.size:
            run_blocking(_discard, target)
            raise ManifestError(
                f"{name}: {blob.digest} is {properties.size} bytes, the manifest says {blob.size}",
                reference=name,
            )
        return properties

    blobs = map_bounded(fetch_one, jobs, concurrency)
    meter.finish()
    if files:
        return PullResult(dest, manifest, index, blobs, [target for _, target in jobs])
    run_blocking(layout.write_blob, manifest.digest, manifest.raw)
    platform_json = None if index is None else _platform_of(index, manifest.digest)
    descriptor = manifest.descriptor(**({"platform": platform_json} if platform_json else {}))
    run_blocking(layout.tag, descriptor, reference.tag)
    return PullResult(dest, manifest, index, blobs, [])


def _unique(blobs: list[Descriptor]) -> list[Descriptor]:
    """One descriptor per digest: a layer may appear twice (an empty one, often)."""
    seen: dict[str, Descriptor] = {}
    for blob in blobs:
        seen.setdefault(blob.digest, blob)
    return list(seen.values())


def _platform_of(index: Manifest, digest: str) -> dict[str, object] | None:
    """The platform ``index`` gives the manifest ``digest``, as JSON."""
    assert isinstance(index.document, ImageIndex)
    for descriptor in index.document.manifests:
        if descriptor.digest == digest and not isinstance(descriptor.platform, Unset):
            return descriptor.platform.to_dict()
    return None


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class PullMeter:
    """The progress of a whole pull: the bytes of all its blobs together."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self._reporter: ProgressReporter | None = reporter(callback)
        self._total = total
        self._done: dict[str, int] = {}
        self._lock = threading.Lock()

    def of(self, blob: Descriptor) -> ProgressCallback:
        def update(done: int, total: int | None) -> None:
            self._set(blob.digest, done)

        return update

    def skipped(self, blob: Descriptor) -> None:
        self._set(blob.digest, blob.size)

    def _set(self, digest: str, done: int) -> None:
        with self._lock:
            self._done[digest] = done
            if self._reporter is not None:
                self._reporter.update(sum(self._done.values()), self._total)

    def finish(self) -> None:
        if self._reporter is not None:
            self._reporter.finish(self._total)

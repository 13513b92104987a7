"""Whole artifacts against the real registry: manifests by tag and digest, pulls of a
multi-platform image and of an ORAS-style artifact into an OCI layout (read by skopeo) or as
files, each refusal before anything is written, resumption after kill -9, and the cache."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from acr_blob import (
    AsyncBlobClient,
    BlobClient,
    DigestMismatchError,
    InvalidEndpointError,
    ManifestError,
    Platform,
    PlatformNotFoundError,
    PullResult,
)
from acr_blob.manifests import OCI_INDEX, OCI_MANIFEST, REF_NAME
from tests.drivers import MODES
from tests.test_testbed import run_skopeo
from tools.faultproxy import Fault, FaultProxy, FaultProxyFactory
from tools.testbed import Deployment, PushedArtifact, PushedImage, push_artifact, push_image

ROOT = Path(__file__).resolve().parent.parent


def host(url: str) -> str:
    return httpx.URL(url).netloc.decode()


def run(mode: str, endpoint: str, action: str, *args: Any, **options: Any) -> Any:
    """One client call (sync or async) on a fresh client."""
    client_options = options.pop("client", {})
    if mode == "sync":
        with BlobClient(endpoint, **client_options) as client:
            return getattr(client, action)(*args, **options)

    async def call() -> Any:
        async with AsyncBlobClient(endpoint, **client_options) as client:
            return await getattr(client, action)(*args, **options)

    return asyncio.run(call())


@pytest.fixture(scope="module")
def image(registry: Deployment) -> PushedImage:
    return push_image(registry, "pull/image", "v1", layer_size=50_000)


@pytest.fixture(scope="module")
def artifact(registry: Deployment) -> PushedArtifact:
    files = {"weights.bin": os.urandom(300_000), "README.md": b"# model\n"}
    return push_artifact(registry, "pull/artifact", "v1", files)


@pytest.mark.parametrize("mode", MODES)
def test_manifests_by_tag_and_digest_keep_their_bytes(
    registry: Deployment, image: PushedImage, mode: str
) -> None:
    assert image.index is not None
    by_tag = run(mode, registry.url, "get_manifest", "pull/image", "v1")
    assert by_tag.raw == image.index.data and by_tag.digest == image.index.digest
    assert by_tag.media_type == OCI_INDEX and by_tag.is_index and by_tag.blobs == []
    amd64 = image.image("amd64")
    by_digest = run(mode, registry.url, "get_manifest", "pull/image", amd64.manifest.digest)
    assert by_digest.raw == amd64.manifest.data and by_digest.media_type == OCI_MANIFEST
    assert [blob.digest for blob in by_digest.blobs] == [blob.digest for blob in amd64.blobs]
    assert run(mode, registry.url, "resolve", "pull/image", "v1") == image.index.digest


@pytest.mark.parametrize("docker", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_pull_a_multi_platform_image_into_a_layout_that_skopeo_reads(
    skopeo_path: str, registry: Deployment, tmp_path: Path, mode: str, docker: bool
) -> None:
    pushed = push_image(registry, "pull/platforms", f"docker-{docker}", docker=docker)
    reference = f"{host(registry.url)}/pull/platforms:docker-{docker}"
    dest = tmp_path / "layout"
    result = run(mode, registry.url, "pull", reference, dest, platform="linux/arm64")
    assert isinstance(result, PullResult) and result.path == dest
    arm64 = pushed.image("arm64")
    assert result.manifest.digest == arm64.manifest.digest
    assert result.index is not None and result.index.digest == pushed.digest
    for blob in arm64.blobs:
        assert (dest / "blobs" / "sha256" / blob.digest.removeprefix("sha256:")).read_bytes() == (
            blob.data
        )
    amd64_layers = {blob.digest for blob in pushed.image("amd64").layers}
    stored = {f"sha256:{p.name}" for p in (dest / "blobs" / "sha256").iterdir()}
    assert not amd64_layers & stored  # only the platform asked for
    index = json.loads((dest / "index.json").read_text())
    [entry] = index["manifests"]
    assert entry["digest"] == arm64.manifest.digest
    assert entry["annotations"] == {REF_NAME: f"docker-{docker}"}
    assert entry["platform"]["architecture"] == "arm64"
    if docker:
        # The manifest keeps the registry's bytes, and so its Docker media type, which skopeo
        # 1.9 does not look up in an OCI layout's index ("no descriptor found").
        assert entry["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
        return
    inspected = run_skopeo(skopeo_path, "inspect", f"oci:{dest}:docker-{docker}")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Architecture"] == "arm64"
    copied = run_skopeo(skopeo_path, "copy", f"oci:{dest}:docker-{docker}", f"dir:{tmp_path / 'o'}")
    assert copied.returncode == 0, copied.stderr


@pytest.mark.parametrize("mode", MODES)
def test_pull_by_digest_and_the_digest_wins_over_the_tag(
    registry: Deployment, image: PushedImage, tmp_path: Path, mode: str
) -> None:
    other = push_image(registry, "pull/image", "other", layer_size=1000)
    amd64 = other.image("amd64").manifest.digest
    # By a manifest's digest alone: no tag to name it, so the index entry has no name.
    plain = run(
        mode, registry.url, "pull", f"{host(registry.url)}/pull/image@{amd64}", tmp_path / "a"
    )
    assert plain.manifest.digest == amd64 and plain.index is None
    [entry] = json.loads((tmp_path / "a" / "index.json").read_text())["manifests"]
    assert entry["digest"] == amd64 and "annotations" not in entry
    # v1 names another image: the digest decides what is pulled, the tag names it.
    both = f"{host(registry.url)}/pull/image:v1@{other.digest}"
    result = run(mode, registry.url, "pull", both, tmp_path / "b", platform="linux/amd64")
    assert result.index is not None and result.index.digest == other.digest
    assert result.manifest.digest == amd64
    [entry] = json.loads((tmp_path / "b" / "index.json").read_text())["manifests"]
    assert entry["annotations"] == {REF_NAME: "v1"}
    # Pulling v1 into the same layout replaces the entry named v1, and keeps the blobs.
    run(mode, registry.url, "pull", f"{host(registry.url)}/pull/image:v1", tmp_path / "b")
    [entry] = json.loads((tmp_path / "b" / "index.json").read_text())["manifests"]
    assert entry["digest"] == image.image(Platform.current().architecture).manifest.digest


@pytest.mark.parametrize("mode", MODES)
def test_files_writes_the_titled_layers(
    registry: Deployment, artifact: PushedArtifact, tmp_path: Path, mode: str
) -> None:
    dest = tmp_path / "model"
    progress: list[tuple[int, int | None]] = []
    result = run(
        mode,
        registry.url,
        "pull",
        f"{host(registry.url)}/pull/artifact:v1",
        dest,
        files=True,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert sorted(p.name for p in dest.iterdir()) == ["README.md", "weights.bin"]
    for name, blob in artifact.files.items():
        assert (dest / name).read_bytes() == blob.data
    assert sorted(p.name for p in result.files) == ["README.md", "weights.bin"]
    total = sum(len(blob.data) for blob in artifact.files.values())
    assert progress[-1] == (total, total)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)


@pytest.mark.parametrize(
    "title", ["../escape", "/etc/passwd", "a/b", "..", "", "nul\0byte", "back\\slash"]
)
def test_titles_that_would_leave_dest_are_refused(
    registry: Deployment, tmp_path: Path, title: str
) -> None:
    push_artifact(registry, "pull/titles", "bad", {"ok.bin": b"fine", title: b"escape"})
    dest = tmp_path / "dest"
    with BlobClient(registry.url) as client, pytest.raises(ManifestError, match=r"title|leave"):
        client.pull(f"{host(registry.url)}/pull/titles:bad", dest, files=True)
    assert not dest.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", MODES)
def test_a_missing_platform_names_those_on_offer(
    registry: Deployment, image: PushedImage, tmp_path: Path, mode: str
) -> None:
    with pytest.raises(PlatformNotFoundError) as raised:
        run(
            mode,
            registry.url,
            "pull",
            f"{host(registry.url)}/pull/image:v1",
            tmp_path / "d",
            platform="linux/s390x",
        )
    assert raised.value.platforms == ["linux/amd64", "linux/arm64/v8"]
    assert "linux/amd64, linux/arm64/v8" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", MODES)
def test_a_manifest_that_is_not_its_digest_is_refused(
    proxied: FaultProxy, image: PushedImage, tmp_path: Path, mode: str
) -> None:
    proxied.add(Fault.flip_byte(20), path=r"/manifests/")
    for reference in ("v1", image.digest):
        with pytest.raises(DigestMismatchError):
            run(
                mode,
                proxied.url,
                "pull",
                f"{host(proxied.url)}/pull/image:{reference}"
                if ":" not in reference
                else f"{host(proxied.url)}/pull/image@{reference}",
                tmp_path / "d",
            )
    assert list(tmp_path.iterdir()) == []
    assert not [r for r in proxied.requests if "/blobs/" in r.path]


@pytest.mark.parametrize("mode", MODES)
def test_a_corrupt_layer_leaves_no_index_entry(
    proxied: FaultProxy, image: PushedImage, tmp_path: Path, mode: str
) -> None:
    layer = image.image(Platform.current().architecture).layers[1]
    proxied.add(Fault.flip_byte(100), path=layer.digest)
    dest = tmp_path / "layout"
    with pytest.raises(DigestMismatchError):
        run(mode, proxied.url, "pull", f"{host(proxied.url)}/pull/image:v1", dest)
    assert not (dest / "index.json").exists()
    assert not (dest / "blobs" / "sha256" / layer.digest.removeprefix("sha256:")).exists()
    # Downloads cut short by the failure keep their partial files for the next pull; no lock
    # is left, and nothing that looks like a whole blob but the blobs that are whole.
    for path in (dest / "blobs" / "sha256").iterdir():
        if path.name.startswith("."):
            assert path.name.endswith(".partial") and layer.digest[7:] not in path.name
        else:
            assert path.name in {blob.digest[7:] for blob in image.blobs.values()}


def _manifest_server(body: bytes, *, length: bool) -> httpx.MockTransport:
    def respond(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Type": OCI_MANIFEST}
        if length:
            return httpx.Response(200, headers=headers, content=body)
        return httpx.Response(
            200,
            headers=headers,
            content=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]),
        )

    return httpx.MockTransport(respond)


@pytest.mark.parametrize("length", [True, False])
def test_an_oversized_manifest_is_refused_before_parsing(tmp_path: Path, length: bool) -> None:
    # distribution refuses to store a manifest over 4 MiB: only a fake server sends one.
    body = json.dumps({"schemaVersion": 2, "annotations": {"x": "y" * (5 << 20)}}).encode()
    with BlobClient(
        "http://127.0.0.1:9", transport=_manifest_server(body, length=length)
    ) as client:
        with pytest.raises(ManifestError, match="over the 4194304 bytes"):
            client.get_manifest("pull/big", "v1")
        with pytest.raises(ManifestError):
            client.pull("127.0.0.1:9/pull/big:v1", tmp_path / "d")
    assert list(tmp_path.iterdir()) == []


def test_a_reference_on_another_registry_is_refused(registry: Deployment, tmp_path: Path) -> None:
    with BlobClient(registry.url) as client:
        with pytest.raises(InvalidEndpointError, match="not on this client's registry"):
            client.pull("other.example.com/pull/image:v1", tmp_path / "d")
        with pytest.raises(ValueError, match="platform"):
            client.pull(f"{host(registry.url)}/pull/image:v1", tmp_path / "d", platform="linux")


def _pull_command(proxy: FaultProxy, dest: Path, cache: Path | None = None) -> list[str]:
    script = (
        "import sys; from acr_blob import BlobClient\n"
        "with BlobClient(sys.argv[1], max_concurrency=1, cache_dir=sys.argv[4] or None) as c:\n"
        "    c.pull(sys.argv[2], sys.argv[3], max_concurrency=1)\n"
    )
    return [
        sys.executable,
        "-c",
        script,
        proxy.url,
        f"{host(proxy.url)}/pull/big:v1",
        str(dest),
        str(cache or ""),
    ]


def _env() -> dict[str, str]:
    paths = [str(ROOT / "overlay"), str(ROOT / "generated"), str(ROOT)]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def test_a_pull_killed_mid_layer_resumes_and_skips_complete_blobs(
    registry: Deployment, fault_proxy: FaultProxyFactory, tmp_path: Path
) -> None:
    pushed = push_image(
        registry,
        "pull/big",
        "v1",
        index=False,
        platforms=[("linux", "amd64", None)],
        layer_size=4 << 20,
    )
    big = pushed.images[0].layers[-1]  # pulled last, one blob at a time
    proxy = fault_proxy(registry)
    proxy.add(Fault.drip(64 * 1024, 0.05), path=big.digest)
    dest = tmp_path / "layout"
    process = subprocess.Popen(_pull_command(proxy, dest), env=_env(), stderr=subprocess.PIPE)
    partial = dest / "blobs" / "sha256" / f".sha256-{big.digest.removeprefix('sha256:')}.partial"
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size > 256 * 1024):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (dest / "index.json").exists()
    done_before = {
        p.name for p in (dest / "blobs" / "sha256").iterdir() if not p.name.startswith(".")
    }
    assert done_before, "some blobs completed before the kill"
    proxy.clear()
    with BlobClient(proxy.url) as client:
        client.pull(f"{host(proxy.url)}/pull/big:v1", dest)
    asked = [(r.path, r.header("Range")) for r in proxy.requests if "/blobs/" in r.path]
    assert not [path for path, _ in asked if path.rsplit(":", 1)[-1] in done_before]
    [(_, resumed)] = [(p, r) for p, r in asked if big.digest in p]
    assert (
        resumed is not None and resumed.startswith("bytes=") and not resumed.startswith("bytes=0-")
    )
    assert (dest / "blobs" / "sha256" / big.digest.removeprefix("sha256:")).read_bytes() == big.data
    assert json.loads((dest / "index.json").read_text())["manifests"][0]["digest"] == pushed.digest


@pytest.mark.parametrize("mode", MODES)
def test_a_second_pull_through_the_cache_makes_no_blob_request(
    proxied: FaultProxy, image: PushedImage, tmp_path: Path, mode: str
) -> None:
    cache = {"cache_dir": tmp_path / "cache"}
    reference = f"{host(proxied.url)}/pull/image:v1"
    run(mode, proxied.url, "pull", reference, tmp_path / "first", client=cache)
    blobs = [r for r in proxied.requests if "/blobs/" in r.path]
    assert len(blobs) == 3  # a config and two layers
    proxied.clear()
    run(mode, proxied.url, "pull", reference, tmp_path / "second", client=cache)
    run(mode, proxied.url, "pull", reference, tmp_path / "files", client=cache)
    assert not [r for r in proxied.requests if "/blobs/" in r.path]
    first = sorted(p.name for p in (tmp_path / "first" / "blobs" / "sha256").iterdir())
    assert sorted(p.name for p in (tmp_path / "second" / "blobs" / "sha256").iterdir()) == first

"""``acr-blob manifest``, ``resolve`` and ``pull`` against the real registry: what they print,
what they write, their exit codes, one progress bar for a whole pull, and the cache."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.test_cli import run, run_on_terminal
from tools.faultproxy import Fault, FaultProxy
from tools.testbed import Deployment, PushedArtifact, PushedImage, push_artifact, push_image


@pytest.fixture(scope="module")
def image(registry: Deployment) -> PushedImage:
    return push_image(registry, "cli/image", "v1", layer_size=300_000)


@pytest.fixture(scope="module")
def artifact(registry: Deployment) -> PushedArtifact:
    files = {"weights.bin": os.urandom(100_000), "config.json": b"{}"}
    return push_artifact(registry, "cli/model", "v1", files)


def test_resolve_and_manifest(registry: Deployment, image: PushedImage) -> None:
    assert image.index is not None
    resolved = run("resolve", f"{registry.url}/cli/image:v1", "--anonymous")
    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.decode().strip() == image.digest
    raw = run("manifest", f"{registry.url}/cli/image:v1", "--anonymous")
    assert raw.returncode == 0 and raw.stdout == image.index.data
    amd64 = image.image("amd64").manifest
    by_digest = run("manifest", f"{registry.url}/cli/image@{amd64.digest}", "--json", "--anonymous")
    summary = json.loads(by_digest.stdout)
    assert summary["digest"] == amd64.digest and summary["size"] == amd64.size
    assert summary["media_type"] == amd64.media_type
    assert summary["manifest"] == json.loads(amd64.data)
    # A digest needs no resolving; a tag that is not there is "not found".
    assert run("resolve", f"{registry.url}/cli/image:nope", "--anonymous").returncode == 3


def test_pull_into_a_layout_and_as_files(
    registry: Deployment, image: PushedImage, artifact: PushedArtifact, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    pulled = run(
        "pull",
        f"{registry.url}/cli/image:v1",
        "-o",
        str(layout),
        "--platform",
        "linux/arm64",
        "--anonymous",
    )
    assert pulled.returncode == 0, pulled.stderr
    arm64 = image.image("arm64")
    stderr = pulled.stderr.decode()
    assert f"pulled {arm64.manifest.digest} (3 blobs, " in stderr and str(layout) in stderr
    [entry] = json.loads((layout / "index.json").read_text())["manifests"]
    assert entry["digest"] == arm64.manifest.digest
    for blob in arm64.blobs:
        assert (layout / "blobs" / "sha256" / blob.digest[7:]).read_bytes() == blob.data
    files = tmp_path / "files"
    pulled = run(
        "pull",
        f"{registry.url}/cli/model:v1",
        "-o",
        str(files),
        "--files",
        "--json",
        "--anonymous",
    )
    assert pulled.returncode == 0, pulled.stderr
    assert sorted(Path(p).name for p in json.loads(pulled.stdout)["files"]) == [
        "config.json",
        "weights.bin",
    ]
    for name, blob in artifact.files.items():
        assert (files / name).read_bytes() == blob.data


def test_pull_failures_exit_with_their_code(
    registry: Deployment, proxied: FaultProxy, image: PushedImage, tmp_path: Path
) -> None:
    missing = run(
        "pull",
        f"{registry.url}/cli/image:v1",
        "-o",
        str(tmp_path / "a"),
        "--platform",
        "linux/s390x",
        "--anonymous",
    )
    assert missing.returncode == 1
    assert "offers linux/amd64, linux/arm64/v8" in missing.stderr.decode()
    layer = image.image("amd64").layers[0]
    proxied.add(Fault.flip_byte(10), path=layer.digest)
    corrupt = run(
        "pull",
        f"{proxied.url}/cli/image:v1",
        "-o",
        str(tmp_path / "b"),
        "--platform",
        "linux/amd64",
        "--anonymous",
    )
    assert corrupt.returncode == 5, corrupt.stderr
    assert not (tmp_path / "b" / "index.json").exists()
    assert not (tmp_path / "a").exists()
    bad = run("pull", f"{registry.url}/cli/image", "-o", str(tmp_path / "c"), "--anonymous")
    assert bad.returncode == 2 and b"no tag or digest" in bad.stderr


def test_pull_through_the_cache_and_one_progress_bar(
    proxied: FaultProxy, image: PushedImage, tmp_path: Path
) -> None:
    proxied.add(Fault.drip(64 * 1024, 0.05), path=r"/blobs/")
    reference = f"{proxied.url}/cli/image:v1"
    cache = ["--cache-dir", str(tmp_path / "cache"), "--platform", "linux/amd64", "--anonymous"]
    code, shown, _ = run_on_terminal("pull", reference, "-o", str(tmp_path / "a"), *cache)
    assert code == 0, shown
    frames = [f.rstrip() for f in re.split(r"[\r\n]+", shown) if f.strip()]
    total = sum(blob.size for blob in image.image("amd64").blobs)
    # One bar for the whole pull: its total is the bytes of all blobs.
    shown_total = re.escape(f"{total / 1024:.1f} KiB")
    assert any(re.search(rf"\d+% \[[=> ]*\] .* / {shown_total}", f) for f in frames), frames
    assert [blob for blob in proxied.requests if "/blobs/" in blob.path]
    proxied.clear()
    again = run("pull", reference, "-o", str(tmp_path / "b"), *cache)
    assert again.returncode == 0, again.stderr
    assert not [r for r in proxied.requests if "/blobs/" in r.path]

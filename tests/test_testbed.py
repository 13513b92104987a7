"""The testbed itself: proof that the fixtures are real registries behaving as the SDK will meet
them. Plain httpx only, so that these hold whatever state the SDK is in."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import BASIC_AUTH
from tools.faultproxy import FaultProxyFactory
from tools.testbed import (
    BlobFactory,
    BlobFileFactory,
    Deployment,
    Mirror,
    MirrorFactory,
    RecordedRequest,
    RegistryProxy,
    RegistryServer,
    TestbedError,
    blob_data_path,
    flip_byte,
    put_blob_in_storage,
    write_oci_index,
)

PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def client(deployment: Deployment) -> httpx.Client:
    return httpx.Client(verify=deployment.verify, trust_env=False, timeout=30.0)


def redirect_location(deployment: Deployment, repository: str, digest: str) -> httpx.URL:
    with client(deployment) as c:
        response = c.get(deployment.blob_url(repository, digest), auth=deployment.auth)
    assert response.status_code == 307, response.text
    assert "Docker-Content-Digest" not in response.headers
    return httpx.URL(response.headers["Location"])


def test_pushed_blob_is_served_with_its_digest(
    registry: Deployment, repository: str, blob_factory: BlobFactory
) -> None:
    digest, data = blob_factory(registry, 100_000)
    with client(registry) as c:
        response = c.get(registry.blob_url(repository, digest))
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.headers["Content-Length"] == str(len(data))


def test_registry_serves_ranges(
    registry: Deployment, repository: str, blob_factory: BlobFactory
) -> None:
    digest, data = blob_factory(registry, 1000)
    with client(registry) as c:
        response = c.get(registry.blob_url(repository, digest), headers={"Range": "bytes=10-19"})
    assert response.status_code == 206
    assert response.content == data[10:20]
    assert response.headers["Content-Range"] == "bytes 10-19/1000"


def test_streamed_file_push(
    registry: Deployment, repository: str, blob_file_factory: BlobFileFactory
) -> None:
    digest, path = blob_file_factory(registry, 3 * 1024 * 1024 + 7)
    with client(registry) as c:
        response = c.get(registry.blob_url(repository, digest))
    assert response.status_code == 200
    assert response.content == path.read_bytes()


def test_basic_registry_wants_credentials(
    basic_registry: Deployment, repository: str, blob_factory: BlobFactory
) -> None:
    assert basic_registry.auth is not None
    digest, data = blob_factory(basic_registry, 500)
    url = basic_registry.blob_url(repository, digest)
    with client(basic_registry) as c:
        anonymous = c.get(url)
        wrong = c.get(url, auth=(basic_registry.auth[0], "wrong"))
        right = c.get(url, auth=basic_registry.auth)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert right.content == data


def test_s3_registry_redirects_to_the_proxy(
    s3_registry: Deployment, repository: str, blob_factory: BlobFactory
) -> None:
    proxy = s3_registry.proxy
    assert proxy is not None
    digest, data = blob_factory(s3_registry, 200_000)
    location = redirect_location(s3_registry, repository, digest)
    assert (location.scheme, location.host, location.port) == ("http", "127.0.0.2", proxy.port)
    assert "X-Amz-Signature" in location.params

    proxy.clear()
    with client(s3_registry) as c:
        response = c.get(location)
    assert response.status_code == 200
    assert response.content == data
    [seen] = proxy.presigned_requests
    assert seen.method == "GET"
    assert seen.header("Authorization") is None


def test_storage_refuses_a_second_auth_mechanism(
    s3_basic_registry: Deployment, repository: str, blob_factory: BlobFactory
) -> None:
    proxy = s3_basic_registry.proxy
    assert proxy is not None
    digest, _ = blob_factory(s3_basic_registry, 1000)
    location = redirect_location(s3_basic_registry, repository, digest)

    proxy.clear()
    with client(s3_basic_registry) as c:
        response = c.get(location, auth=s3_basic_registry.auth)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/xml"
    assert "<Code>InvalidArgument</Code>" in response.text
    assert "Only one auth mechanism allowed" in response.text
    [seen] = proxy.presigned_requests
    assert seen.header("Authorization") is not None


def test_storage_honours_range_and_head(
    s3_registry: Deployment, repository: str, blob_factory: BlobFactory
) -> None:
    digest, data = blob_factory(s3_registry, 50_000)
    location = redirect_location(s3_registry, repository, digest)
    with client(s3_registry) as c:
        partial = c.get(location, headers={"Range": "bytes=100-199"})
        head = c.head(location)
    assert partial.status_code == 206
    assert partial.content == data[100:200]
    assert partial.headers["Content-Range"] == "bytes 100-199/50000"
    assert head.status_code == 200
    assert head.headers["Content-Length"] == "50000"


def test_storage_failure_mode(
    s3_registry: Deployment, repository: str, blob_factory: BlobFactory
) -> None:
    proxy = s3_registry.proxy
    assert proxy is not None
    digest, data = blob_factory(s3_registry, 1000)
    proxy.fail_presigned(403, times=1)
    # The registry's own storage traffic is never failed: the redirect still comes.
    location = redirect_location(s3_registry, repository, digest)
    with client(s3_registry) as c:
        denied = c.get(location)
        allowed = c.get(location)
    assert denied.status_code == 403
    assert "<Code>AccessDenied</Code>" in denied.text
    assert allowed.status_code == 200
    assert allowed.content == data


def test_tls_registry_redirects_to_plain_http(
    tls_s3_registry: Deployment, repository: str, blob_factory: BlobFactory
) -> None:
    assert tls_s3_registry.url.startswith("https://127.0.0.1:")
    digest, data = blob_factory(tls_s3_registry, 10_000)
    location = redirect_location(tls_s3_registry, repository, digest)
    assert location.scheme == "http"
    with client(tls_s3_registry) as c:
        assert c.get(location).content == data
    with (
        httpx.Client(trust_env=False) as untrusting,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        untrusting.get(tls_s3_registry.url + "/v2/")


def test_corrupted_storage_is_served_unverified(
    registry: Deployment, repository: str, blob_factory: BlobFactory
) -> None:
    assert registry.root is not None
    digest, data = blob_factory(registry, 4096)
    assert blob_data_path(registry.root, digest).read_bytes() == data
    flip_byte(registry.root, digest, offset=1234)
    with client(registry) as c:
        response = c.get(registry.blob_url(repository, digest))
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == digest
    assert len(response.content) == len(data)
    assert response.content != data
    assert response.content[1234] == data[1234] ^ 0xFF


def test_planted_sha512_blob_is_served_with_its_sha512_digest(
    registry: Deployment, repository: str
) -> None:
    assert registry.root is not None
    data = b"a blob known by its sha512 digest"
    digest = put_blob_in_storage(registry.root, repository, data, algorithm="sha512")
    assert digest == "sha512:" + hashlib.sha512(data).hexdigest()
    with client(registry) as c:
        response = c.get(registry.blob_url(repository, digest))
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Docker-Content-Digest"] == digest


def test_sha512_push_is_aliased_to_sha256(registry: Deployment, repository: str) -> None:
    data = b"pushed under a sha512 digest"
    digest = registry.push(repository, data, algorithm="sha512")
    with client(registry) as c:
        response = c.get(registry.blob_url(repository, digest))
    assert response.status_code == 200
    assert response.content == data
    # The registry names the blob by its canonical sha256 digest, not the one asked for.
    assert response.headers["Docker-Content-Digest"] == "sha256:" + hashlib.sha256(data).hexdigest()


def test_start_failure_reports_the_log(registry_binary_path: str) -> None:
    server = RegistryServer()
    with socket.socket() as squatter:
        squatter.bind((server.host, server.port))
        with pytest.raises(TestbedError, match="address already in use"):
            server.start()
    assert server.workdir is not None
    assert not server.workdir.exists()


# Mirrors: distribution 2.8 in proxy mode, a pull-through cache of another registry.


def blob_methods(requests: list[RecordedRequest], digest: str) -> list[str]:
    """The methods of the requests for `digest` among those an upstream saw (no /v2/ pings)."""
    return sorted(r.method for r in requests if r.path.endswith(f"/blobs/{digest}"))


def test_mirror_serves_a_blob_of_its_origin(
    registry: Deployment, registry_mirror: Mirror, repository: str, blob_factory: BlobFactory
) -> None:
    assert registry_mirror.origin is registry
    assert registry_mirror.upstream == registry.url
    assert registry_mirror.url != registry.url
    digest, data = blob_factory(registry, 100_000)
    with client(registry_mirror) as c:
        response = c.get(
            registry_mirror.blob_url(repository, digest),
            params={"ns": f"127.0.0.1:{registry.port}"},
        )
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Docker-Content-Digest"] == digest


def test_mirror_ignores_range_until_the_blob_is_cached(
    registry: Deployment, registry_mirror: Mirror, repository: str, blob_factory: BlobFactory
) -> None:
    digest, data = blob_factory(registry, 100_000)
    url = registry_mirror.blob_url(repository, digest)
    ranged = {"Range": "bytes=10-99"}
    with client(registry_mirror) as c:
        # Uncached: the mirror streams the upstream's whole blob, whatever the Range.
        first = c.get(url, headers=ranged)
        registry_mirror.wait_cached(repository, digest)
        # Cached: served from the mirror's own storage like any registry's.
        second = c.get(url, headers=ranged)
    assert first.status_code == 200
    assert first.content == data
    assert "Content-Range" not in first.headers
    assert second.status_code == 206
    assert second.content == data[10:100]
    assert second.headers["Content-Range"] == "bytes 10-99/100000"


def test_mirror_head_fetches_and_caches_the_blob(
    registry: Deployment,
    fault_proxy: FaultProxyFactory,
    mirror_factory: MirrorFactory,
    repository: str,
    blob_factory: BlobFactory,
) -> None:
    upstream = fault_proxy(registry)
    mirror = mirror_factory(registry, upstream_url=upstream.url)
    digest, data = blob_factory(registry, 50_000)
    upstream.clear()
    with client(mirror) as c:
        uncached = c.head(mirror.blob_url(repository, digest))
        mirror.wait_cached(repository, digest)
        fetched = blob_methods(upstream.requests, digest)
        upstream.clear()
        cached = c.head(mirror.blob_url(repository, digest))
    for head in (uncached, cached):
        assert head.status_code == 200
        assert head.headers["Content-Length"] == str(len(data))
        assert head.headers["Docker-Content-Digest"] == digest
        assert head.content == b""
    # A HEAD of an uncached blob runs a whole fetch: the upstream sees the body GET twice
    # (the discarded answer and the background copy into the cache).
    assert fetched == ["GET", "GET", "HEAD"]
    assert "Accept-Ranges" not in uncached.headers
    assert cached.headers["Accept-Ranges"] == "bytes"
    assert upstream.requests == []


def test_mirror_asks_the_origin_only_until_the_blob_is_cached(
    registry: Deployment,
    fault_proxy: FaultProxyFactory,
    mirror_factory: MirrorFactory,
    repository: str,
    blob_factory: BlobFactory,
) -> None:
    upstream = fault_proxy(registry)
    mirror = mirror_factory(registry, upstream_url=upstream.url)
    assert mirror.upstream == upstream.url
    digest, data = blob_factory(registry, 200_000)
    url = mirror.blob_url(repository, digest)
    ns = {"ns": f"127.0.0.1:{registry.port}"}
    upstream.clear()
    with client(mirror) as c:
        first = c.get(url, params=ns, headers={"Range": "bytes=10-99"})
        mirror.wait_cached(repository, digest)
        seen = upstream.requests
        upstream.clear()
        second = c.get(url, params=ns)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content == data
    assert blob_methods(seen, digest) == ["GET", "GET", "HEAD"]
    # The ns parameter (and the Range) stay at the mirror.
    assert all(r.query == "" for r in seen)
    assert all(r.header("Range") is None for r in seen)
    assert upstream.requests == []


def test_mirror_is_read_only(registry_mirror: Mirror, repository: str) -> None:
    with pytest.raises(TestbedError, match="read-only"):
        registry_mirror.push(repository, b"nope")
    with client(registry_mirror) as c:
        response = c.post(f"{registry_mirror.url}/v2/{repository}/blobs/uploads/")
    assert response.status_code == 405
    assert response.json()["errors"][0]["code"] == "UNSUPPORTED"


def test_basic_registry_mirror_serves_anonymously(
    basic_registry: Deployment,
    basic_registry_mirror: Mirror,
    repository: str,
    blob_factory: BlobFactory,
) -> None:
    assert basic_registry_mirror.auth is None
    digest, data = blob_factory(basic_registry, 10_000)
    with client(basic_registry_mirror) as c:
        assert c.get(f"{basic_registry_mirror.url}/v2/").status_code == 200
        response = c.get(basic_registry_mirror.blob_url(repository, digest))
    assert response.status_code == 200
    assert response.content == data


def test_basic_registry_mirror_fetches_with_the_origin_credentials(
    basic_registry: Deployment,
    fault_proxy: FaultProxyFactory,
    mirror_factory: MirrorFactory,
    repository: str,
    blob_factory: BlobFactory,
) -> None:
    upstream = fault_proxy(basic_registry)
    mirror = mirror_factory(basic_registry, upstream_url=upstream.url)
    digest, data = blob_factory(basic_registry, 10_000)
    upstream.clear()
    with client(mirror) as c:
        response = c.get(mirror.blob_url(repository, digest))
    mirror.wait_cached(repository, digest)
    assert response.status_code == 200
    assert response.content == data
    expected = "Basic " + base64.b64encode(":".join(BASIC_AUTH).encode()).decode()
    assert upstream.requests
    assert all(r.header("Authorization") == expected for r in upstream.requests)


def test_distribution_gives_proxy_credentials_to_token_realms_only(
    basic_registry: Deployment, repository: str, blob_factory: BlobFactory
) -> None:
    # Why open_mirror puts a Basic origin's credentials in the URL as well.
    digest, _ = blob_factory(basic_registry, 1000)
    with (
        RegistryServer(proxy=RegistryProxy(basic_registry.url, *BASIC_AUTH)) as server,
        httpx.Client(trust_env=False, timeout=30.0) as c,
    ):
        response = c.get(f"{server.url}/v2/{repository}/blobs/{digest}")
    assert response.status_code == 500
    assert response.json()["errors"][0]["detail"]["code"] == "UNAUTHORIZED"


def test_token_registry_mirror_fetches_a_pull_token(
    token_registry: Deployment,
    mirror_factory: MirrorFactory,
    repository: str,
    blob_factory: BlobFactory,
) -> None:
    assert token_registry.token_server is not None and token_registry.auth is not None
    mirror = mirror_factory(token_registry)
    digest, data = blob_factory(token_registry, 5000)
    with client(mirror) as c:
        response = c.get(mirror.blob_url(repository, digest))
    assert response.status_code == 200
    assert response.content == data
    [token_request] = token_registry.token_server.requests
    assert token_request.user == token_registry.auth[0]
    assert token_request.params["scope"] == (f"repository:{repository}:pull",)


# OCI image layouts read by skopeo.


def test_skopeo_copies_an_oci_layout(skopeo_path: str, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    layer = os.urandom(30_000)
    layer_hex = hashlib.sha256(layer).hexdigest()
    (blobs / layer_hex).write_bytes(layer)
    layer_stat = (blobs / layer_hex).stat()

    manifest_digest = write_oci_index(layout, [(f"sha256:{layer_hex}", len(layer))], tag="v1")
    manifest_path = blobs / manifest_digest.removeprefix("sha256:")
    manifest_inode = manifest_path.stat().st_ino
    # Idempotent, and nothing already there is written again.
    assert write_oci_index(layout, [(f"sha256:{layer_hex}", len(layer))], tag="v1") == (
        manifest_digest
    )
    assert manifest_path.stat().st_ino == manifest_inode
    assert (blobs / layer_hex).stat().st_mtime_ns == layer_stat.st_mtime_ns
    assert (blobs / layer_hex).stat().st_ino == layer_stat.st_ino

    out = tmp_path / "out"
    copied = run_skopeo(skopeo_path, "copy", f"oci:{layout}:v1", f"dir:{out}")
    assert copied.returncode == 0, copied.stderr
    assert (out / layer_hex).read_bytes() == layer
    assert hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest() == (
        manifest_digest.removeprefix("sha256:")
    )
    raw = run_skopeo(skopeo_path, "inspect", "--raw", f"oci:{layout}:v1")
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout.encode() == manifest_path.read_bytes()
    inspected = run_skopeo(skopeo_path, "inspect", f"oci:{layout}:v1")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Layers"] == [f"sha256:{layer_hex}"]


def test_skopeo_copy_verifies_layer_digests(skopeo_path: str, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer = os.urandom(10_000)
    layer_hex = hashlib.sha256(layer).hexdigest()
    (blobs / layer_hex).write_bytes(bytes([layer[0] ^ 0xFF]) + layer[1:])
    write_oci_index(layout, [(f"sha256:{layer_hex}", len(layer))])
    copied = run_skopeo(skopeo_path, "copy", f"oci:{layout}:latest", f"dir:{tmp_path / 'out'}")
    assert copied.returncode != 0
    assert "Digest did not match" in copied.stderr


def test_write_oci_index_keeps_other_tags(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layers = []
    for size in (100, 200):
        data = os.urandom(size)
        hex_ = hashlib.sha256(data).hexdigest()
        (blobs / hex_).write_bytes(data)
        layers.append((f"sha256:{hex_}", size))
    first = write_oci_index(tmp_path, layers[:1], tag="a")
    second = write_oci_index(tmp_path, layers[1:], tag="b")
    again = write_oci_index(tmp_path, layers, tag="a")
    index = json.loads((tmp_path / "index.json").read_text())
    tags = {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in index["manifests"]
    }
    assert tags == {"a": again, "b": second}
    assert first != again
    assert json.loads((tmp_path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    with pytest.raises(ValueError, match="not 99"):
        write_oci_index(tmp_path, [(layers[0][0], 99)])
    with pytest.raises(ValueError, match="is not in"):
        write_oci_index(tmp_path, [("sha256:" + "0" * 64, 1)])


def run_skopeo(skopeo: str, *args: str) -> subprocess.CompletedProcess[str]:
    # No proxies: nothing here needs the network, and nothing should try it.
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    return subprocess.run(
        [skopeo, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )

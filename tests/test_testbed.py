"""The testbed itself: proof that the fixtures are real registries behaving as the SDK will meet
them. Plain httpx only, so that these hold whatever state the SDK is in."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BASIC_AUTH
from tools.faultproxy import FaultProxyFactory
from tools.testbed import (
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MANIFEST_MEDIA_TYPES,
    MAX_MANIFEST_SIZE,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    TITLE,
    BearerAuth,
    BlobFactory,
    BlobFileFactory,
    Deployment,
    Mirror,
    MirrorFactory,
    PushedContent,
    RecordedRequest,
    RegistryProxy,
    RegistryServer,
    TestbedError,
    blob_data_path,
    dump_json,
    flip_byte,
    push_artifact,
    push_image,
    push_manifest,
    put_blob_in_storage,
    put_manifest_in_storage,
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


# Whole images and artifacts: manifests and indexes as distribution 2.8 stores and serves them.

ACCEPT_ALL = ", ".join(MANIFEST_MEDIA_TYPES)


def manifest_url(deployment: Deployment, repository: str, reference: str) -> str:
    return f"{deployment.url}/v2/{repository}/manifests/{reference}"


def get_manifest(
    deployment: Deployment,
    repository: str,
    reference: str,
    accept: str | None = ACCEPT_ALL,
    *,
    method: str = "GET",
    auth: httpx.Auth | tuple[str, str] | None = None,
) -> httpx.Response:
    headers = {} if accept is None else {"Accept": accept}
    with client(deployment) as c:
        return c.request(
            method, manifest_url(deployment, repository, reference), headers=headers, auth=auth
        )


def error_codes(response: httpx.Response) -> list[str]:
    return [error["code"] for error in response.json()["errors"]]


def assert_served(
    deployment: Deployment,
    repository: str,
    reference: str,
    expected: PushedContent,
    *,
    auth: httpx.Auth | tuple[str, str] | None = None,
) -> None:
    """GET and HEAD of `reference` give `expected`'s exact bytes, type and digest."""
    response = get_manifest(deployment, repository, reference, auth=auth)
    assert response.status_code == 200, response.text
    assert response.content == expected.data
    assert response.headers["Content-Type"] == expected.media_type
    assert response.headers["Docker-Content-Digest"] == expected.digest
    head = get_manifest(deployment, repository, reference, method="HEAD", auth=auth)
    assert head.status_code == 200
    assert head.headers["Docker-Content-Digest"] == expected.digest
    assert head.headers["Content-Length"] == str(expected.size)


def assert_blob_served(
    deployment: Deployment,
    repository: str,
    blob: PushedContent,
    *,
    auth: httpx.Auth | tuple[str, str] | None = None,
) -> None:
    with client(deployment) as c:
        response = c.get(deployment.blob_url(repository, blob.digest), auth=auth)
    assert response.status_code == 200, response.text
    assert response.content == blob.data
    assert response.headers["Docker-Content-Digest"] == blob.digest


def untar(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {
            member.name: archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive.getmembers()
        }


@pytest.mark.parametrize("docker", [False, True], ids=["oci", "docker"])
def test_pushed_image_is_served_byte_for_byte(
    registry: Deployment, repository: str, docker: bool
) -> None:
    image = push_image(registry, repository, "v1", layers_per_platform=2, docker=docker)
    assert image.index is not None and image.index_bytes is not None
    assert image.index.media_type == (DOCKER_MANIFEST_LIST if docker else OCI_INDEX)
    assert image.index_digest == "sha256:" + hashlib.sha256(image.index_bytes).hexdigest()
    assert_served(registry, repository, "v1", image.index)
    for digest, manifest in image.manifests.items():
        assert_served(registry, repository, digest, manifest)
    for blob in image.blobs.values():
        assert_blob_served(registry, repository, blob)

    index = json.loads(image.index_bytes)
    assert index["mediaType"] == image.index.media_type
    amd64, arm64 = image.image("amd64"), image.image("arm64")
    assert index["manifests"] == [
        {**amd64.manifest.descriptor(), "platform": {"architecture": "amd64", "os": "linux"}},
        {
            **arm64.manifest.descriptor(),
            "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
        },
    ]
    for platform in image.images:
        manifest = json.loads(platform.manifest.data)
        assert manifest["schemaVersion"] == 2
        assert manifest["mediaType"] == platform.manifest.media_type
        assert manifest["config"] == platform.config.descriptor()
        assert manifest["layers"] == [layer.descriptor() for layer in platform.layers]
        config = json.loads(platform.config.data)
        assert (config["os"], config["architecture"], config.get("variant")) == (
            platform.os,
            platform.architecture,
            platform.variant,
        )
        assert config["rootfs"] == {"type": "layers", "diff_ids": list(platform.diff_ids)}
        assert len(platform.layers) == 2
        for layer, diff_id in zip(platform.layers, platform.diff_ids, strict=True):
            tar = gzip.decompress(layer.data) if docker else layer.data
            assert layer.media_type == (DOCKER_LAYER_GZIP if docker else OCI_LAYER)
            assert "sha256:" + hashlib.sha256(tar).hexdigest() == diff_id
            [(name, content)] = untar(tar).items()
            assert name.endswith(".bin") and len(content) == 4096


def test_single_platform_image_without_index(registry: Deployment, repository: str) -> None:
    image = push_image(
        registry, repository, "v1", platforms=[("linux", "arm64", "v8")], index=False
    )
    assert image.index is None and image.index_digest is None and image.index_bytes is None
    [platform] = image.images
    assert image.tagged == platform.manifest and image.digest == platform.manifest.digest
    assert_served(registry, repository, "v1", platform.manifest)
    with pytest.raises(ValueError, match="exactly one platform"):
        push_image(registry, repository, "v2", index=False)


def test_pushed_artifact_is_served_byte_for_byte(registry: Deployment, repository: str) -> None:
    files = {"model.safetensors": os.urandom(20_000), "README.md": b"# a model\n"}
    artifact = push_artifact(registry, repository, "v1", files)
    assert artifact.files == {
        name: ("sha256:" + hashlib.sha256(data).hexdigest(), data) for name, data in files.items()
    }
    assert_served(registry, repository, "v1", artifact.manifest)
    assert_served(registry, repository, artifact.manifest_digest, artifact.manifest)
    for blob in (artifact.config, *artifact.layers):
        assert_blob_served(registry, repository, blob)
    # distribution 2.8 keeps artifactType and takes the empty config.
    manifest = json.loads(artifact.manifest_bytes)
    assert manifest["artifactType"] == "application/vnd.acme.model.v1"
    assert manifest["config"] == {
        "mediaType": OCI_EMPTY,
        "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(),
        "size": 2,
    }
    assert [(layer["mediaType"], layer["annotations"][TITLE]) for layer in manifest["layers"]] == [
        (OCI_LAYER, "model.safetensors"),
        (OCI_LAYER, "README.md"),
    ]


def test_artifact_titles_and_config_are_not_checked(registry: Deployment, repository: str) -> None:
    # Titles a pull must refuse to turn into paths; the registry never reads them.
    files = {"../escape": b"up", "/abs": b"root", "a/b": b"nested", "dup": b"up"}
    artifact = push_artifact(
        registry,
        repository,
        "odd",
        files,
        artifact_type=None,
        config=b'{"any": "json"}',
        config_media_type="application/vnd.oras.config.v1+json",
        file_media_type="application/vnd.acme.blob",
        annotations={"org.opencontainers.image.created": "1970-01-01T00:00:00Z"},
    )
    assert_served(registry, repository, "odd", artifact.manifest)
    manifest = json.loads(artifact.manifest_bytes)
    assert "artifactType" not in manifest
    assert manifest["config"]["mediaType"] == "application/vnd.oras.config.v1+json"
    assert [layer["annotations"][TITLE] for layer in manifest["layers"]] == list(files)
    # Two files with the same bytes are one blob.
    assert artifact.files["dup"] == artifact.files["../escape"]


def test_distribution_refuses_oci_types_missing_from_accept(
    registry: Deployment, repository: str
) -> None:
    image = push_image(registry, repository, "v1")
    assert image.index is not None
    amd64 = image.image("amd64").manifest
    for reference in ("v1", image.index.digest):
        for accept in (OCI_MANIFEST, DOCKER_MANIFEST_LIST, "*/*", None):
            response = get_manifest(registry, repository, reference, accept)
            assert response.status_code == 404, (reference, accept)
            assert error_codes(response) == ["MANIFEST_UNKNOWN"]
            assert "accept header does not support OCI indexes" in response.text
        head = get_manifest(registry, repository, reference, OCI_MANIFEST, method="HEAD")
        assert head.status_code == 404
    response = get_manifest(registry, repository, amd64.digest, f"{OCI_INDEX}, {DOCKER_MANIFEST}")
    assert response.status_code == 404
    assert "accept header does not support OCI manifests" in response.text
    assert get_manifest(registry, repository, amd64.digest, OCI_MANIFEST).content == amd64.data


def test_distribution_rewrites_docker_lists_missing_from_accept(
    registry: Deployment, repository: str
) -> None:
    image = push_image(registry, repository, "v1", docker=True)
    assert image.index is not None
    amd64 = image.image("amd64").manifest
    # By tag, without the list type: the linux/amd64 manifest, under its own digest.
    for method in ("GET", "HEAD"):
        response = get_manifest(registry, repository, "v1", DOCKER_MANIFEST, method=method)
        assert response.status_code == 200
        assert response.headers["Docker-Content-Digest"] == amd64.digest
        assert response.headers["Content-Type"] == DOCKER_MANIFEST
    assert get_manifest(registry, repository, "v1", DOCKER_MANIFEST).content == amd64.data
    # Without either Docker type: that manifest converted to a signed schema 1 one.
    for accept in (OCI_MANIFEST, None):
        response = get_manifest(registry, repository, "v1", accept)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == (
            "application/vnd.docker.distribution.manifest.v1+prettyjws"
        )
        schema1 = response.json()
        assert schema1["schemaVersion"] == 1 and schema1["architecture"] == "amd64"
        assert "signatures" in schema1
    # By digest: as stored, whatever the Accept.
    for digest, manifest in image.manifests.items():
        response = get_manifest(registry, repository, digest, OCI_MANIFEST)
        assert response.status_code == 200
        assert response.content == manifest.data
    # A list without linux/amd64 has nothing to fall back on.
    arm_only = push_image(
        registry, repository, "arm", platforms=[("linux", "arm64", "v8")], docker=True
    )
    response = get_manifest(registry, repository, "arm", DOCKER_MANIFEST)
    assert response.status_code == 404
    assert error_codes(response) == ["MANIFEST_UNKNOWN"]
    assert arm_only.index is not None
    assert_served(registry, repository, "arm", arm_only.index)


def test_distribution_wants_referenced_blobs_and_manifests(
    registry: Deployment, repository: str
) -> None:
    artifact = push_artifact(registry, repository, "v1", {"f": b"content"})
    missing = "sha256:" + "0" * 64
    document = json.loads(artifact.manifest_bytes)
    missing_layer = {**document, "layers": [{**document["layers"][0], "digest": missing}]}
    missing_config = {**document, "config": {**document["config"], "digest": missing}}
    wrong_size = {**document, "layers": [{**document["layers"][0], "size": 1}]}
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": missing, "size": 100}],
    }
    for body, media_type in [
        (missing_layer, OCI_MANIFEST),
        (missing_config, OCI_MANIFEST),
        (index, OCI_INDEX),
    ]:
        with pytest.raises(httpx.HTTPStatusError, match="MANIFEST_BLOB_UNKNOWN") as refused:
            push_manifest(registry, repository, "bad", dump_json(body), media_type)
        assert refused.value.response.status_code == 400
    # Sizes are not checked; the media type must be the body's.
    digest = push_manifest(registry, repository, None, dump_json(wrong_size), OCI_MANIFEST)
    assert get_manifest(registry, repository, digest).status_code == 200
    for media_type in (DOCKER_MANIFEST, "application/json"):
        with pytest.raises(httpx.HTTPStatusError, match="MANIFEST_INVALID"):
            push_manifest(registry, repository, "bad", artifact.manifest_bytes, media_type)


def padded_manifest(config: PushedContent, size: int) -> bytes:
    """An OCI manifest of exactly `size` bytes: no layers, one long annotation."""
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [],
        "annotations": {"pad": ""},
    }
    document["annotations"] = {"pad": "x" * (size - len(dump_json(document)))}
    body = dump_json(document)
    assert len(body) == size
    return body


def test_distribution_manifest_size_limit(registry: Deployment, repository: str) -> None:
    assert registry.root is not None
    artifact = push_artifact(registry, repository, "v1", {})
    largest = padded_manifest(artifact.config, MAX_MANIFEST_SIZE)
    digest = push_manifest(registry, repository, "largest", largest, OCI_MANIFEST)
    assert get_manifest(registry, repository, digest).content == largest
    with pytest.raises(httpx.HTTPStatusError, match="request body too large") as refused:
        push_manifest(
            registry, repository, "over", padded_manifest(artifact.config, 5 << 20), OCI_MANIFEST
        )
    assert refused.value.response.status_code == 400
    assert error_codes(refused.value.response) == ["MANIFEST_INVALID"]
    # Planted in storage, one byte over is not served either: 500 "read exceeds limit".
    over = padded_manifest(artifact.config, MAX_MANIFEST_SIZE + 1)
    put_manifest_in_storage(registry.root, repository, over, tag="planted")
    response = get_manifest(registry, repository, "planted")
    assert response.status_code == 500
    assert error_codes(response) == ["UNKNOWN"]


def test_planted_manifest_may_reference_missing_blobs(
    registry: Deployment, repository: str
) -> None:
    assert registry.root is not None
    missing = "sha256:" + "0" * 64
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_EMPTY, "digest": missing, "size": 2},
        "layers": [{"mediaType": OCI_LAYER, "digest": missing, "size": 10}],
    }
    body = dump_json(document)
    digest = put_manifest_in_storage(registry.root, repository, body, tag="dangling")
    manifest = PushedContent(OCI_MANIFEST, digest, body)
    assert_served(registry, repository, "dangling", manifest)
    assert_served(registry, repository, digest, manifest)
    with client(registry) as c:
        assert c.get(registry.blob_url(repository, missing)).status_code == 404


def test_images_go_to_authenticated_registries(
    basic_registry: Deployment, token_registry: Deployment, repository: str
) -> None:
    artifact = push_artifact(basic_registry, repository, "v1", {"f": b"basic"})
    assert_served(basic_registry, repository, "v1", artifact.manifest, auth=basic_registry.auth)
    assert get_manifest(basic_registry, repository, "v1").status_code == 401

    image = push_image(token_registry, repository, "v1", layers_per_platform=1)
    assert image.index is not None
    auth = BearerAuth(token_registry.push_token(repository))
    assert_served(token_registry, repository, "v1", image.index, auth=auth)
    assert_blob_served(token_registry, repository, image.images[0].layers[0], auth=auth)
    assert token_registry.token_server is not None
    assert token_registry.token_server.requests == []  # the testbed's own are left out


def test_mirror_takes_no_images(registry_mirror: Mirror, repository: str) -> None:
    with pytest.raises(TestbedError, match="read-only"):
        push_image(registry_mirror, repository, "v1")
    with pytest.raises(TestbedError, match="read-only"):
        push_manifest(registry_mirror, repository, "v1", b"{}", OCI_MANIFEST)


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


# skopeo's platform choice out of an index (default: the host's).
LINUX_AMD64 = ("--override-os", "linux", "--override-arch", "amd64")
LINUX_ARM64_V8 = ("--override-os", "linux", "--override-arch", "arm64", "--override-variant", "v8")


def pull_into_layout(
    deployment: Deployment,
    repository: str,
    tag: str,
    layout: Path,
    *,
    architecture: str | None = None,
    point_at_index: bool = True,
) -> dict[str, bytes]:
    """Fetch an image with plain httpx into an OCI layout whose index.json names `tag`.

    Fetched: the index, then each manifest (only `architecture`'s if given) and its config
    and layers, each checked against its Docker-Content-Digest. index.json points at the
    image index, or with point_at_index=False at the one manifest fetched (the index itself
    is then left out). Returns what blobs/ holds, by digest.
    """
    blobs: dict[str, bytes] = {}

    def fetch(url: str, accept: str | None = None) -> dict[str, Any]:
        with client(deployment) as c:
            response = c.get(url, headers={"Accept": accept} if accept else {})
        assert response.status_code == 200, response.text
        digest = response.headers["Docker-Content-Digest"]
        assert digest == "sha256:" + hashlib.sha256(response.content).hexdigest()
        blobs[digest] = response.content
        return {"digest": digest, "size": len(response.content), "body": response.content}

    index = fetch(manifest_url(deployment, repository, tag), ACCEPT_ALL)
    index_document = json.loads(index["body"])
    entries = [
        entry
        for entry in index_document["manifests"]
        if architecture in (None, entry["platform"]["architecture"])
    ]
    for entry in entries:
        manifest = fetch(manifest_url(deployment, repository, entry["digest"]), entry["mediaType"])
        manifest_document = json.loads(manifest["body"])
        for descriptor in (manifest_document["config"], *manifest_document["layers"]):
            fetch(deployment.blob_url(repository, descriptor["digest"]))
    if point_at_index:
        top = {"mediaType": index_document["mediaType"], "digest": index["digest"]}
        top["size"] = index["size"]
    else:
        [entry] = entries
        top = {key: entry[key] for key in ("mediaType", "digest", "size")}
        del blobs[index["digest"]]

    directory = layout / "blobs" / "sha256"
    directory.mkdir(parents=True)
    for digest, data in blobs.items():
        (directory / digest.removeprefix("sha256:")).write_bytes(data)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    top["annotations"] = {"org.opencontainers.image.ref.name": tag}
    index_json = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [top]}
    (layout / "index.json").write_text(json.dumps(index_json))
    return blobs


@pytest.mark.parametrize(
    ("architecture", "point_at_index"),
    [(None, True), ("amd64", True), ("amd64", False)],
    ids=["whole-index", "index-with-amd64-only", "amd64-manifest"],
)
def test_skopeo_reads_a_pulled_image(
    registry: Deployment,
    repository: str,
    skopeo_path: str,
    tmp_path: Path,
    architecture: str | None,
    point_at_index: bool,
) -> None:
    image = push_image(registry, repository, "v1")
    amd64, arm64 = image.image("amd64"), image.image("arm64")
    layout = tmp_path / "layout"
    pulled = pull_into_layout(
        registry, repository, "v1", layout, architecture=architecture, point_at_index=point_at_index
    )
    expected = [*image.manifests.values(), *image.blobs.values()]
    if architecture is not None:
        expected = [*([image.tagged] if point_at_index else []), amd64.manifest, *amd64.blobs]
    assert pulled == {content.digest: content.data for content in expected}

    # skopeo picks the platform out of an index (or checks the one of a manifest).
    inspected = run_skopeo(skopeo_path, *LINUX_AMD64, "inspect", f"oci:{layout}:v1")
    assert inspected.returncode == 0, inspected.stderr
    details = json.loads(inspected.stdout)
    assert details["Digest"] == (image.digest if point_at_index else amd64.manifest.digest)
    assert (details["Os"], details["Architecture"]) == ("linux", "amd64")
    assert details["Layers"] == [layer.digest for layer in amd64.layers]

    out = tmp_path / "out"
    copied = run_skopeo(skopeo_path, *LINUX_AMD64, "copy", f"oci:{layout}:v1", f"dir:{out}")
    assert copied.returncode == 0, copied.stderr
    assert (out / "manifest.json").read_bytes() == amd64.manifest.data
    for blob in amd64.blobs:
        assert (out / blob.digest.removeprefix("sha256:")).read_bytes() == blob.data
    if architecture is not None:
        return
    arm_out = tmp_path / "arm"
    copied = run_skopeo(skopeo_path, *LINUX_ARM64_V8, "copy", f"oci:{layout}:v1", f"dir:{arm_out}")
    assert copied.returncode == 0, copied.stderr
    assert (arm_out / "manifest.json").read_bytes() == arm64.manifest.data
    all_out = tmp_path / "all"
    copied = run_skopeo(skopeo_path, "copy", "--all", f"oci:{layout}:v1", f"dir:{all_out}")
    assert copied.returncode == 0, copied.stderr
    assert (all_out / "manifest.json").read_bytes() == image.index_bytes
    assert {path.name for path in all_out.iterdir()} == {
        "manifest.json",
        "version",
        *(
            f"{m.digest.removeprefix('sha256:')}.manifest.json"
            for m in (amd64.manifest, arm64.manifest)
        ),
        *(digest.removeprefix("sha256:") for digest in image.blobs),
    }


def test_skopeo_sees_no_docker_typed_entry_in_a_layout(
    registry: Deployment, repository: str, skopeo_path: str, tmp_path: Path
) -> None:
    # The OCI layout spec allows any manifest type in index.json; skopeo 1.9 looks only at
    # entries typed as an OCI manifest or index.
    push_image(registry, repository, "v1", docker=True)
    layout = tmp_path / "layout"
    pull_into_layout(registry, repository, "v1", layout)
    assert json.loads((layout / "index.json").read_text())["manifests"][0]["mediaType"] == (
        DOCKER_MANIFEST_LIST
    )
    inspected = run_skopeo(skopeo_path, "inspect", f"oci:{layout}:v1")
    assert inspected.returncode != 0
    assert "no descriptor found for reference" in inspected.stderr


def run_skopeo(skopeo: str, *args: str) -> subprocess.CompletedProcess[str]:
    # No proxies: nothing here needs the network, and nothing should try it.
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    return subprocess.run(
        [skopeo, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )

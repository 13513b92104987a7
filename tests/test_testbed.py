"""The testbed itself: proof that the fixtures are real registries behaving as the SDK will meet
them. Plain httpx only, so that these hold whatever state the SDK is in."""

from __future__ import annotations

import hashlib
import socket

import httpx
import pytest

from tools.testbed import (
    BlobFactory,
    BlobFileFactory,
    Deployment,
    RegistryServer,
    TestbedError,
    blob_data_path,
    flip_byte,
    put_blob_in_storage,
)


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

"""The clients against real registries: Debian's docker-registry on loopback, anonymous, with
Basic auth, on S3-style storage (moto) that blob requests are redirected to, and over TLS.

Every case runs for BlobClient and AsyncBlobClient.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from acr_blob import (
    AuthenticationError,
    BlobNotFoundError,
    DigestMismatchError,
    InsecureRedirectError,
    StorageError,
    TransportError,
)
from tests.drivers import NO_WAIT, Driver
from tools.testbed import BlobFactory, Deployment, flip_byte, put_blob_in_storage

MISSING = "sha256:" + "0" * 64


def driver_for(mode: str, deployment: Deployment, **args: object) -> Driver:
    args.setdefault("credential", deployment.auth)
    args.setdefault("verify", deployment.verify)
    return Driver(mode, deployment.url, **args)


# 0, 1, odd, a few MiB, and one far larger than any socket read or buffer.
SIZES = [0, 1, 65_537 * 3 + 7, 5 * 1024 * 1024, 48 * 1024 * 1024 + 13]


@pytest.mark.parametrize("size", SIZES)
def test_sizes_through_every_api(
    mode: str,
    registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    tmp_path: Path,
    size: int,
) -> None:
    digest, data = blob_factory(registry, size)
    client = driver_for(mode, registry)
    assert client.iterate(repository, digest) == data
    assert client.readall(repository, digest) == data
    target = tmp_path / "blob.bin"
    properties = client.to_file(repository, digest, target)
    assert target.read_bytes() == data
    assert (properties.digest, properties.size) == (digest, size)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin"]


def test_head_and_exists(
    mode: str, registry: Deployment, blob_factory: BlobFactory, repository: str
) -> None:
    digest, _ = blob_factory(registry, 1234)
    client = driver_for(mode, registry)
    properties = client.properties(repository, digest)
    assert properties.digest == digest
    assert properties.size == 1234
    assert properties.media_type == "application/octet-stream"
    assert properties.etag == f'"{digest}"'
    assert client.exists(repository, digest) is True
    assert client.exists(repository, MISSING) is False
    assert client.exists(repository + "-other", digest) is False


def test_unknown_blob_is_not_found(
    mode: str, registry: Deployment, repository: str, tmp_path: Path
) -> None:
    client = driver_for(mode, registry)
    with pytest.raises(BlobNotFoundError) as caught:
        client.iterate(repository, MISSING)
    assert caught.value.status_code == 404
    assert caught.value.codes == ["BLOB_UNKNOWN"]
    with pytest.raises(BlobNotFoundError):
        client.properties(repository, MISSING)
    with pytest.raises(BlobNotFoundError):
        client.to_file(repository, MISSING, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_repository_slashes_go_unencoded_on_the_wire(
    mode: str, registry: Deployment, blob_factory: BlobFactory
) -> None:
    repository = "deep/nested/path/to/repo"
    digest, data = blob_factory(registry, 100, repository)
    sent: list[httpx.Request] = []
    assert driver_for(mode, registry, record=sent).iterate(repository, digest) == data
    assert [r.url.raw_path.decode() for r in sent] == [f"/v2/{repository}/blobs/{digest}"]


def test_basic_auth(
    mode: str, basic_registry: Deployment, blob_factory: BlobFactory, repository: str
) -> None:
    digest, data = blob_factory(basic_registry, 4096)
    assert driver_for(mode, basic_registry).iterate(repository, digest) == data
    assert driver_for(mode, basic_registry).exists(repository, digest)
    for credential in [("alice", "wrong-password"), ("mallory", "s3cret-pass"), None]:
        client = driver_for(mode, basic_registry, credential=credential)
        with pytest.raises(AuthenticationError) as caught:
            client.iterate(repository, digest)
        assert caught.value.status_code == 401
        assert caught.value.codes == ["UNAUTHORIZED"]
        assert "wrong-password" not in str(caught.value) + repr(caught.value)
        with pytest.raises(AuthenticationError):
            client.exists(repository, digest)


@pytest.mark.parametrize("action", ["iterate", "to_file", "properties"])
def test_redirect_to_storage_never_carries_credentials(
    mode: str,
    s3_basic_registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    tmp_path: Path,
    action: str,
) -> None:
    registry = s3_basic_registry
    digest, data = blob_factory(registry, 300_000)
    proxy = registry.proxy
    assert proxy is not None
    proxy.clear()
    sent: list[httpx.Request] = []
    client = driver_for(mode, registry, record=sent)
    if action == "iterate":
        assert client.iterate(repository, digest) == data
    elif action == "to_file":
        client.to_file(repository, digest, tmp_path / "blob")
        assert (tmp_path / "blob").read_bytes() == data
    else:
        assert client.properties(repository, digest).size == len(data)
    # The registry challenged, then got the credentials; the 307 led to another host
    # (127.0.0.2), which did not.
    challenged, first, second = sent
    assert "Authorization" not in challenged.headers
    assert first.url.host == "127.0.0.1" and "Authorization" in first.headers
    assert second.url.host == "127.0.0.2" and "X-Amz-Signature" in str(second.url)
    presigned = proxy.presigned_requests
    assert len(presigned) == 1
    assert presigned[0].header("Authorization") is None


def test_storage_error_is_typed_and_keeps_the_signature_out(
    mode: str,
    s3_basic_registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    tmp_path: Path,
) -> None:
    registry = s3_basic_registry
    digest, _ = blob_factory(registry, 1000)
    assert registry.proxy is not None
    registry.proxy.fail_presigned(status=403)
    client = driver_for(mode, registry)
    with pytest.raises(StorageError) as caught:
        client.to_file(repository, digest, tmp_path / "blob")
    assert (caught.value.status_code, caught.value.code) == (403, "AccessDenied")
    assert "127.0.0.2" in str(caught.value)
    assert "Signature" not in str(caught.value) + repr(caught.value) + caught.value.excerpt
    assert list(tmp_path.iterdir()) == []


def test_https_registry_redirecting_to_http_storage_is_refused(
    mode: str,
    tls_s3_registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
) -> None:
    digest, _ = blob_factory(tls_s3_registry, 1000)
    assert tls_s3_registry.proxy is not None
    tls_s3_registry.proxy.clear()
    client = driver_for(mode, tls_s3_registry)
    with pytest.raises(InsecureRedirectError):
        client.iterate(repository, digest)
    with pytest.raises(InsecureRedirectError):
        client.properties(repository, digest)
    assert tls_s3_registry.proxy.presigned_requests == []


def test_tls_registry_is_verified(mode: str, tls_s3_registry: Deployment, repository: str) -> None:
    # Without the test CA the certificate is refused before any request.
    client = driver_for(mode, tls_s3_registry, verify=True)
    with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
        client.exists(repository, MISSING)


def test_flipped_byte_on_disk_is_caught(
    mode: str,
    registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    tmp_path: Path,
) -> None:
    digest, _ = blob_factory(registry, 200_000)
    assert registry.root is not None
    flip_byte(registry.root, digest, offset=123_456)
    client = driver_for(mode, registry)
    with pytest.raises(DigestMismatchError) as caught:
        client.iterate(repository, digest)
    assert caught.value.expected == digest
    assert caught.value.actual != digest
    with pytest.raises(DigestMismatchError):
        client.to_file(repository, digest, tmp_path / "blob")
    assert list(tmp_path.iterdir()) == []


def test_sha512_content(mode: str, registry: Deployment, repository: str, tmp_path: Path) -> None:
    assert registry.root is not None
    data = b"sha512-addressed content " * 999
    digest = put_blob_in_storage(registry.root, repository, data, "sha512")
    assert digest == "sha512:" + hashlib.sha512(data).hexdigest()
    client = driver_for(mode, registry)
    assert client.iterate(repository, digest) == data
    assert client.to_file(repository, digest, tmp_path / "blob").digest == digest
    assert (tmp_path / "blob").read_bytes() == data
    flip_byte(registry.root, digest, offset=7)
    with pytest.raises(DigestMismatchError) as caught:
        client.iterate(repository, digest)
    assert caught.value.actual.startswith("sha512:")


def test_sha512_pushed_blob_served_with_a_sha256_header(
    mode: str, registry: Deployment, repository: str
) -> None:
    # distribution 2.8 stores a sha512 upload under its sha256 digest and answers a GET by the
    # sha512 digest with `Docker-Content-Digest: sha256:...`: another algorithm, not a mismatch.
    data = b"pushed by sha512 " * 77
    digest = registry.push(repository, data, algorithm="sha512")
    assert digest.startswith("sha512:")
    assert driver_for(mode, registry).iterate(repository, digest) == data


@pytest.fixture
def short_body_server() -> Iterator[str]:
    """A real socket that announces 1000 bytes, sends 400 and closes (no registry does this)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 400)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    listener.close()


def test_connection_closed_before_content_length(
    mode: str, short_body_server: str, tmp_path: Path
) -> None:
    client = Driver(mode, short_body_server, retry=NO_WAIT)
    digest = "sha256:" + hashlib.sha256(b"x" * 1000).hexdigest()
    with pytest.raises(TransportError, match="after 400 of 1000 bytes"):
        client.to_file("short/body", digest, tmp_path / "blob")
    # The server never sends more than 400 bytes: they wait in the partial file, not at the path.
    (partial,) = tmp_path.iterdir()
    assert partial.name.endswith(".partial")
    assert partial.read_bytes() == b"x" * 400


def test_ca_bundle_path_as_verify(mode: str, tls_s3_registry: Deployment, repository: str) -> None:
    assert tls_s3_registry.ca_cert is not None
    client = driver_for(mode, tls_s3_registry, verify=str(tls_s3_registry.ca_cert))
    assert client.exists(repository, MISSING) is False

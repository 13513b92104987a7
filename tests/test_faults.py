"""Answers no real registry gives on demand: broken proxies, lying headers, short bodies.

Served by httpx.MockTransport; every case runs against the sync and the async client.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from acr_blob import (
    AsyncBlobClient,
    AuthenticationError,
    BlobClient,
    BlobError,
    BlobNotFoundError,
    BlobSizeError,
    DigestMismatchError,
    InsecureCredentialError,
    InsecureRedirectError,
    InvalidDigestError,
    InvalidEndpointError,
    InvalidRepositoryError,
    RefreshTokenCredential,
    RegistryError,
    StorageError,
    TooManyRedirectsError,
    TransportError,
)
from tests.drivers import NO_WAIT, Driver, Handler, Recorder

REGISTRY = "https://registry.test"
STORAGE = "https://storage.test"
DATA = b"layer bytes " * 1000
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
REPO = "team/app/layers"
BLOB_PATH = f"/v2/{REPO}/blobs/{DIGEST}"
SIGNATURE = "s1gn4tur3-SECRET-value"
SIGNED = f"{STORAGE}/bucket/blob?X-Amz-Signature={SIGNATURE}&X-Amz-Expires=1200"
PASSWORD = "pa55-SECRET-word"


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body the client pulls chunk by chunk, as from a socket; it may end in an error."""

    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self.chunks = chunks
        self.error = error
        self.pulled = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk
        if self.error:
            raise self.error

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        for chunk in self:
            yield chunk


def streamed(chunks: list[bytes], headers: dict[str, str]) -> httpx.Response:
    """A 200 announcing whatever length we like (a MockTransport does not enforce it)."""
    return httpx.Response(200, headers=headers, stream=Body(chunks))


def blob_response(body: bytes = DATA, **headers: str) -> httpx.Response:
    return streamed([body], {"Content-Length": str(len(body)), **headers})


def driver(mode: str, handler: Handler, **args: object) -> Driver:
    args.setdefault("retry", NO_WAIT)
    return Driver(mode, REGISTRY, handler=handler, **args)


def test_wire_path_keeps_repository_slashes_and_asks_for_identity(mode: str) -> None:
    recorder = Recorder(lambda r: blob_response())
    assert driver(mode, recorder).iterate(REPO, DIGEST) == DATA
    (request,) = recorder.requests
    assert request.url.raw_path.decode() == BLOB_PATH
    assert request.headers["Accept-Encoding"] == "identity"
    assert request.headers["User-Agent"].startswith("acr-blob/")


def test_html_502_from_a_proxy_is_a_registry_error_with_an_excerpt(mode: str) -> None:
    html = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    handler = Recorder(
        lambda r: httpx.Response(502, content=html, headers={"Content-Type": "text/html"})
    )
    with pytest.raises(RegistryError) as caught:
        driver(mode, handler).iterate(REPO, DIGEST)
    assert caught.value.status_code == 502
    assert caught.value.errors == []
    assert "502 Bad Gateway" in caught.value.excerpt
    assert "502" in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [b'{"errors": "not a list"}', b'{"errors": [1, 2]}', b"[]", b"null", b"\xff\xfe", b""],
)
def test_malformed_error_bodies_never_crash(mode: str, body: bytes) -> None:
    handler = Recorder(lambda r: httpx.Response(500, content=body))
    with pytest.raises(RegistryError) as caught:
        driver(mode, handler).iterate(REPO, DIGEST)
    assert caught.value.status_code == 500


def test_unknown_status_is_a_registry_error(mode: str) -> None:
    # The generated parser raises ValueError on 499 ("not a valid HTTPStatus").
    handler = Recorder(lambda r: httpx.Response(499, text="client closed request"))
    with pytest.raises(RegistryError) as caught:
        driver(mode, handler).iterate(REPO, DIGEST)
    assert caught.value.status_code == 499


def test_plain_text_404_is_not_found(mode: str) -> None:
    handler = Recorder(lambda r: httpx.Response(404, text="404 page not found"))
    with pytest.raises(BlobNotFoundError) as caught:
        driver(mode, handler).iterate(REPO, DIGEST)
    assert caught.value.excerpt == "404 page not found"


def test_wrong_docker_content_digest_fails_before_the_body(mode: str) -> None:
    other = "sha256:" + "e" * 64
    body = Body([DATA])
    respond = Recorder(
        lambda r: httpx.Response(200, headers={"Docker-Content-Digest": other}, stream=body)
    )
    with pytest.raises(DigestMismatchError) as caught:
        driver(mode, respond).open_size(REPO, DIGEST)
    assert caught.value.source == "Docker-Content-Digest"
    assert (caught.value.expected, caught.value.actual) == (DIGEST, other)
    assert body.pulled == 0


def test_wrong_docker_content_digest_on_the_307_stops_before_storage(mode: str) -> None:
    other = "sha256:" + "f" * 64

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.host == "registry.test":
            return httpx.Response(307, headers={"Location": SIGNED, "Docker-Content-Digest": other})
        return blob_response()

    recorder = Recorder(respond)
    with pytest.raises(DigestMismatchError):
        driver(mode, recorder).iterate(REPO, DIGEST)
    assert [r.url.host for r in recorder.requests] == ["registry.test"]


def test_digest_of_another_algorithm_is_not_compared(mode: str) -> None:
    data = b"sha512 content"
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    sha256 = "sha256:" + hashlib.sha256(data).hexdigest()
    handler = Recorder(lambda r: blob_response(data, **{"Docker-Content-Digest": sha256}))
    assert driver(mode, handler).iterate(REPO, digest) == data


def test_flipped_byte_raises_at_the_end(mode: str) -> None:
    flipped = bytes([DATA[0] ^ 1]) + DATA[1:]
    with pytest.raises(DigestMismatchError) as caught:
        driver(mode, Recorder(lambda r: blob_response(flipped))).iterate(REPO, DIGEST)
    assert caught.value.actual == "sha256:" + hashlib.sha256(flipped).hexdigest()
    assert caught.value.source == "content"


def test_body_shorter_than_content_length(mode: str) -> None:
    response = streamed([DATA[:100], DATA[100:200]], {"Content-Length": str(len(DATA))})
    with pytest.raises(BlobSizeError) as caught:
        driver(mode, Recorder(lambda r: response)).iterate(REPO, DIGEST)
    assert (caught.value.expected, caught.value.received) == (len(DATA), 200)


def test_body_longer_than_content_length_never_hands_out_the_extra_bytes(mode: str) -> None:
    extra = DATA + b"trailing garbage"
    handler = Recorder(
        lambda r: streamed([extra[:5000], extra[5000:]], {"Content-Length": str(len(DATA))})
    )
    handed_out = consume(mode, handler, REPO, DIGEST, expect=BlobSizeError)
    assert 5000 <= handed_out <= len(DATA)


def test_redirect_loop_stops_at_max_redirects(mode: str) -> None:
    recorder = Recorder(lambda r: httpx.Response(307, headers={"Location": BLOB_PATH}))
    with pytest.raises(TooManyRedirectsError):
        driver(mode, recorder, max_redirects=3).iterate(REPO, DIGEST)
    assert len(recorder.requests) == 4


def test_https_to_http_redirect_is_refused_before_it_is_sent(mode: str) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.host == "registry.test":
            return httpx.Response(307, headers={"Location": "http://storage.test/blob?sig=x"})
        return blob_response()

    recorder = Recorder(respond)
    with pytest.raises(InsecureRedirectError) as caught:
        driver(mode, recorder, credential=("alice", PASSWORD)).iterate(REPO, DIGEST)
    assert [r.url.scheme for r in recorder.requests] == ["https"]
    assert "sig=x" not in str(caught.value)


def test_credentials_stay_on_the_registry_origin(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="acr_blob")

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.host == "registry.test" and "Authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="test"'})
        if request.url.path.endswith("/moved"):
            return httpx.Response(307, headers={"Location": SIGNED})
        if request.url.host == "registry.test":
            # Same origin first (relative Location), then to storage.
            return httpx.Response(308, headers={"Location": "/v2/elsewhere/moved"})
        return blob_response()

    recorder = Recorder(respond)
    got = driver(mode, recorder, credential=("alice", PASSWORD)).iterate(REPO, DIGEST)
    assert got == DATA
    challenged, first, second, third = recorder.requests
    # The Basic challenge decides; then the registry's origin gets Basic, storage nothing.
    assert "Authorization" not in challenged.headers
    assert first.headers["Authorization"].startswith("Basic ")
    assert second.url.path == "/v2/elsewhere/moved"
    assert second.headers["Authorization"] == first.headers["Authorization"]
    assert third.url.host == "storage.test"
    assert "Authorization" not in third.headers
    assert "Cookie" not in third.headers
    # Our log names every hop, without the signature or the credentials.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "acr_blob")
    assert "storage.test/bucket/blob?<redacted>" in logged
    assert SIGNATURE not in logged
    assert first.headers["Authorization"].split()[1] not in logged


def test_storage_xml_error_is_a_storage_error_without_the_signature(mode: str) -> None:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><Error><Code>AuthenticationFailed</Code>'
        f"<Message>Signature did not match. {SIGNED}</Message></Error>"
    )

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.host == "registry.test":
            return httpx.Response(307, headers={"Location": SIGNED})
        return httpx.Response(403, text=xml, headers={"Content-Type": "application/xml"})

    with pytest.raises(StorageError) as caught:
        driver(mode, Recorder(respond)).iterate(REPO, DIGEST)
    assert caught.value.status_code == 403
    assert caught.value.code == "AuthenticationFailed"
    for text in (str(caught.value), repr(caught.value), caught.value.excerpt):
        assert SIGNATURE not in text


def test_authentication_error_never_shows_the_password(mode: str) -> None:
    body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
    handler = Recorder(
        lambda r: httpx.Response(401, content=body, headers={"WWW-Authenticate": 'Basic realm="r"'})
    )
    with pytest.raises(AuthenticationError) as caught:
        driver(mode, handler, credential=("alice", PASSWORD)).iterate(REPO, DIGEST)
    assert caught.value.codes == ["UNAUTHORIZED"]
    assert PASSWORD not in str(caught.value) + repr(caught.value)


def test_connection_failure_is_a_transport_error(mode: str) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(TransportError) as caught:
        driver(mode, Recorder(respond)).iterate(REPO, DIGEST)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_connection_broken_for_good_keeps_only_a_partial_file(mode: str, tmp_path: Path) -> None:
    broken = Body([DATA[:1000]], httpx.ReadError("connection reset"))
    handler = Recorder(lambda r: httpx.Response(200, stream=broken))
    target = tmp_path / "blob"
    with pytest.raises(TransportError, match="after 1000 of ") as caught:
        driver(mode, handler).to_file(REPO, DIGEST, target)
    assert "5 resumptions" in str(caught.value)
    # Every resumption went back to the registry asking for the rest.
    assert [r.headers.get("Range") for r in handler.requests] == [None] + ["bytes=1000-"] * 5
    # Nothing at the target; the first 1000 bytes wait, under the digest's name, for a retry.
    (partial,) = tmp_path.iterdir()
    assert partial.name == f".sha256-{DIGEST[7:]}.partial"
    assert partial.read_bytes() == DATA[:1000]


@pytest.mark.parametrize(
    "body",
    [DATA[:-1] + b"!", DATA[:-10], DATA + b"more"],
    ids=["flipped", "short", "long"],
)
def test_bad_body_leaves_nothing_at_the_path(mode: str, tmp_path: Path, body: bytes) -> None:
    response = streamed([body], {"Content-Length": str(len(DATA))})
    target = tmp_path / "blob"
    with pytest.raises((DigestMismatchError, BlobSizeError)):
        driver(mode, Recorder(lambda r: response)).to_file(REPO, DIGEST, target)
    assert list(tmp_path.iterdir()) == []


def test_a_download_is_read_once(mode: str) -> None:
    handler = Recorder(lambda r: blob_response())
    if mode == "sync":
        with BlobClient(REGISTRY, transport=httpx.MockTransport(handler)) as client:
            download = client.download_blob(REPO, DIGEST)
            assert download.readall() == DATA
            with pytest.raises(BlobError, match="already been read"):
                download.readall()
        return

    async def twice() -> None:
        async with AsyncBlobClient(REGISTRY, transport=httpx.MockTransport(handler)) as client:
            download = await client.download_blob(REPO, DIGEST)
            assert await download.readall() == DATA
            with pytest.raises(BlobError, match="already been read"):
                await download.readall()

    asyncio.run(twice())


def consume(
    mode: str, handler: Handler, repository: str, digest: str, expect: type[Exception]
) -> int:
    """Iterate a download that must fail with `expect`; return how many bytes it handed out."""
    handed_out = 0
    if mode == "sync":
        with (
            BlobClient(REGISTRY, transport=httpx.MockTransport(handler)) as client,
            client.download_blob(repository, digest) as download,
            pytest.raises(expect),
        ):
            for chunk in download:
                handed_out += len(chunk)
        return handed_out

    async def run() -> int:
        nonlocal handed_out
        transport = httpx.MockTransport(handler)
        async with (
            AsyncBlobClient(REGISTRY, transport=transport) as client,
            await client.download_blob(repository, digest) as download,
        ):
            with pytest.raises(expect):
                async for chunk in download:
                    handed_out += len(chunk)
        return handed_out

    return asyncio.run(run())


BAD_REPOSITORIES = ["", "UPPER/case", "a//b", "/lead", "trail/", "a b", "a/../b", "x" * 256, "é"]
BAD_DIGESTS = [
    "",
    "sha256",
    "sha256:",
    "md5:" + "0" * 32,
    "sha256:" + "0" * 63,
    "sha256:" + "A" * 64,
    "sha512:" + "0" * 64,
    "sha256:" + "0" * 64 + "\n",
    "sha256:../../etc",
]


@pytest.mark.parametrize("repository", BAD_REPOSITORIES)
def test_invalid_repository_sends_nothing(mode: str, tmp_path: Path, repository: str) -> None:
    recorder = Recorder(lambda r: blob_response())
    client_driver = driver(mode, recorder)
    for call in (
        lambda: client_driver.iterate(repository, DIGEST),
        lambda: client_driver.properties(repository, DIGEST),
        lambda: client_driver.exists(repository, DIGEST),
        lambda: client_driver.to_file(repository, DIGEST, tmp_path / "out"),
    ):
        with pytest.raises(InvalidRepositoryError) as caught:
            call()
        assert isinstance(caught.value, ValueError)
    assert recorder.requests == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("digest", BAD_DIGESTS)
def test_invalid_digest_sends_nothing(mode: str, tmp_path: Path, digest: str) -> None:
    recorder = Recorder(lambda r: blob_response())
    client_driver = driver(mode, recorder)
    for call in (
        lambda: client_driver.iterate(REPO, digest),
        lambda: client_driver.exists(REPO, digest),
        lambda: client_driver.to_file(REPO, digest, tmp_path / "out"),
    ):
        with pytest.raises(InvalidDigestError) as caught:
            call()
        assert isinstance(caught.value, ValueError)
    assert recorder.requests == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "endpoint", ["", "ftp://registry.test", "https://registry.test/v2/x", "https://u:p@host"]
)
def test_invalid_endpoint(endpoint: str) -> None:
    with pytest.raises(InvalidEndpointError):
        BlobClient(endpoint)


def test_bare_host_means_https() -> None:
    with BlobClient("myregistry.azurecr.io") as client:
        assert client.endpoint == "https://myregistry.azurecr.io"


@pytest.mark.parametrize("credential", [("alice", PASSWORD), RefreshTokenCredential("rt")])
def test_credentials_refused_over_plain_http_beyond_loopback(credential: object) -> None:
    recorder = Recorder(lambda r: blob_response())
    with pytest.raises(InsecureCredentialError, match="plain http"):
        BlobClient("http://registry.test", credential, transport=httpx.MockTransport(recorder))  # type: ignore[arg-type]
    with pytest.raises(InsecureCredentialError):
        AsyncBlobClient("http://registry.test", credential)  # type: ignore[arg-type]
    # Anonymous is fine, loopback is fine, and the user may opt in.
    BlobClient("http://registry.test").close()
    BlobClient("http://127.0.0.1:5000", credential).close()  # type: ignore[arg-type]
    with BlobClient(
        "http://registry.test",
        credential,  # type: ignore[arg-type]
        allow_insecure=True,
        transport=httpx.MockTransport(recorder),
    ) as client:
        assert client.blob_exists(REPO, DIGEST)
    assert len(recorder.requests) == 1


def test_token_realm_over_plain_http_beyond_loopback_is_refused(mode: str) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        challenge = 'Bearer realm="http://auth.test/token",service="s",scope="repository:x:pull"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    recorder = Recorder(respond)
    with pytest.raises(InsecureCredentialError):
        driver(mode, recorder, credential=("alice", PASSWORD)).iterate(REPO, DIGEST)
    assert [r.url.host for r in recorder.requests] == ["registry.test"]

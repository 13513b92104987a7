"""What lets Azure's support find a client's requests: the SDK's User-Agent and an
``x-ms-client-request-id`` of its own on every request (registry, token server, storage), and
the service's request ids in every error built from an answer.

Against the real registry, token server and moto storage where they produce the case; Azure
Storage's own error answers (XML after a byte-order mark, ``x-ms-request-id``) come from a
MockTransport, as no server here sends them.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import httpx
import pytest

from acr_blob import (
    BlobNotFoundError,
    RetryPolicy,
    StorageError,
    __version__,
)
from acr_blob._protocol import CLIENT_REQUEST_ID
from acr_blob._ranges import MIN_PART, range_header
from tests.conftest import TOKEN_AUTH
from tests.drivers import NO_WAIT, Driver, Recorder, azure_storage_error
from tools.faultproxy import Fault, FaultProxyFactory
from tools.testbed import BlobFactory, Deployment

USER_AGENT = f"acr-blob/{__version__}"
DIGEST = "sha256:" + "ab" * 32
REQUEST_ID = "5f3a9c1e-601e-0060-7b2a-9d1e7a000000"
CORRELATION_ID = "0f6c1ad2-8d43-4c1b-9a57-2f1e0c3b4d5a"


def client_request_id(headers: httpx.Headers, seen: set[str]) -> str:
    """The request's id, checked to be a UUID that no earlier request had."""
    value = headers[CLIENT_REQUEST_ID]
    assert str(uuid.UUID(value)) == value
    assert value not in seen, "two requests share an x-ms-client-request-id"
    seen.add(value)
    return value


def test_every_request_has_the_user_agent_and_its_own_request_id(
    mode: str, token_s3_registry: Deployment, blob_factory: BlobFactory, repository: str
) -> None:
    """The challenged request, the token request (the auth flow's own), the one with the token
    and storage after the 307: each with the SDK's User-Agent and a fresh id, on the wire."""
    digest, data = blob_factory(token_s3_registry, 5000)
    storage, tokens = token_s3_registry.proxy, token_s3_registry.token_server
    assert storage is not None and tokens is not None
    storage.clear()
    sent: list[httpx.Request] = []
    assert (
        Driver(mode, token_s3_registry.url, credential=TOKEN_AUTH, record=sent).iterate(
            repository, digest
        )
        == data
    )
    assert [(r.method, r.url.host, r.url.path.rpartition("/")[2]) for r in sent] == [
        ("GET", "127.0.0.1", digest),
        ("GET", "127.0.0.1", "token"),
        ("GET", "127.0.0.1", digest),
        ("GET", "127.0.0.2", "data"),
    ]
    seen: set[str] = set()
    for request in sent:
        assert request.headers["User-Agent"] == USER_AGENT, request.url
        client_request_id(request.headers, seen)
    # As the servers saw them; moto served the presigned URL with the unsigned header on it.
    (token_request,) = tokens.requests
    assert token_request.header("User-Agent") == USER_AGENT
    assert token_request.header(CLIENT_REQUEST_ID) == sent[1].headers[CLIENT_REQUEST_ID]
    (presigned,) = storage.presigned_requests
    assert presigned.header("User-Agent") == USER_AGENT
    assert presigned.header(CLIENT_REQUEST_ID) == sent[3].headers[CLIENT_REQUEST_ID]


def test_each_try_has_its_own_request_id(
    mode: str,
    registry: Deployment,
    fault_proxy: FaultProxyFactory,
    blob_factory: BlobFactory,
    repository: str,
) -> None:
    """A retry is a request of its own in the service's log, so it gets a new id."""
    digest, data = blob_factory(registry, 100)
    proxy = fault_proxy(registry)
    proxy.add(Fault.respond(503), path=r"/blobs/", times=1)
    assert Driver(mode, proxy.url, retry=NO_WAIT).iterate(repository, digest) == data
    seen: set[str] = set()
    ids = [client_request_id(httpx.Headers(r.headers), seen) for r in proxy.requests]
    assert len(ids) == 2


def test_a_registry_error_carries_the_service_ids(
    mode: str, registry: Deployment, fault_proxy: FaultProxyFactory
) -> None:
    """ACR answers with its ids on every answer; here the real registry's 404 gets them."""
    proxy = fault_proxy(registry)
    proxy.add(
        Fault.set_header("x-ms-request-id", REQUEST_ID)
        | Fault.set_header("X-Ms-Correlation-Request-Id", CORRELATION_ID)
    )
    with pytest.raises(BlobNotFoundError) as caught:
        Driver(mode, proxy.url, retry=RetryPolicy.never()).iterate("prod/bash", DIGEST)
    error = caught.value
    assert (error.request_id, error.correlation_id) == (REQUEST_ID, CORRELATION_ID)
    (request,) = proxy.requests
    assert error.client_request_id == request.header(CLIENT_REQUEST_ID)
    assert str(error).endswith(
        f"[x-ms-request-id: {REQUEST_ID}, x-ms-correlation-request-id: {CORRELATION_ID}]"
    )


def test_an_error_without_service_ids_still_names_the_request_sent(
    mode: str, registry: Deployment, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(registry)
    with pytest.raises(BlobNotFoundError) as caught:
        Driver(mode, proxy.url, retry=RetryPolicy.never()).iterate("prod/bash", DIGEST)
    error = caught.value
    assert (error.request_id, error.correlation_id) == (None, None)
    (request,) = proxy.requests
    assert error.client_request_id == request.header(CLIENT_REQUEST_ID)
    assert "x-ms-" not in str(error)


def storage_refusal(code: str, message: str, *, header: bool = True, body: bool = True) -> Recorder:
    """A registry that redirects to Azure Storage, which refuses with ``code``."""

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.host == "registry.test":
            location = "https://account.blob.core.windows.net/c//docker/data?se=1&sig=s3cret"
            return httpx.Response(307, headers={"Location": location})
        answer = azure_storage_error(request, 403, code, message, REQUEST_ID, body=body)
        if not header:
            del answer.headers["x-ms-error-code"]
        return answer

    return Recorder(respond)


@pytest.mark.parametrize(
    ("api", "header", "body"),
    [
        ("iterate", True, True),
        ("iterate", False, True),  # the code from the XML, after its byte-order mark
        ("properties", True, False),  # a HEAD: the header alone
    ],
)
def test_a_storage_refusal_is_a_storage_error_with_its_code_and_request_id(
    mode: str, api: str, header: bool, body: bool
) -> None:
    recorder = storage_refusal(
        "AuthorizationPermissionMismatch",
        "This request is not authorized to perform this operation using this permission.",
        header=header,
        body=body,
    )
    client = Driver(mode, "registry.test", handler=recorder, retry=RetryPolicy.never())
    with pytest.raises(StorageError) as caught:
        if api == "iterate":
            client.iterate("prod/bash", DIGEST)
        else:
            client.properties("prod/bash", DIGEST)
    error = caught.value
    assert (error.status_code, error.code) == (403, "AuthorizationPermissionMismatch")
    assert error.request_id == REQUEST_ID
    assert error.correlation_id is None
    storage_request = recorder.requests[-1]
    assert storage_request.url.host == "account.blob.core.windows.net"
    assert error.client_request_id == storage_request.headers[CLIENT_REQUEST_ID]
    assert str(error) == (
        "storage answered 403 for https://account.blob.core.windows.net/c//docker/data"
        f"?<redacted>: AuthorizationPermissionMismatch [x-ms-request-id: {REQUEST_ID}]"
    )
    assert not error.excerpt.startswith("\ufeff")
    assert "s3cret" not in repr(error)


def test_a_part_refused_for_good_is_a_storage_error(mode: str, tmp_path: Path) -> None:
    """A part's 403 sends the part back to the registry (a signed URL may have expired); when
    storage refuses the fresh URL too, its error is raised as it is, not a part's failure."""
    data = bytes(3 * MIN_PART)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    ranged = 0

    def respond(request: httpx.Request) -> httpx.Response:
        nonlocal ranged
        if request.url.host == "registry.test":
            return httpx.Response(307, headers={"Location": "https://account.blob.test/b?sig=1"})
        if "Range" not in request.headers:
            return httpx.Response(200, content=data)
        ranged += 1
        if ranged == 1:  # the probe for the second part: parallel parts it is
            first, last = (int(n) for n in request.headers["Range"][6:].split("-"))
            content_range = f"bytes {first}-{last}/{len(data)}"
            return httpx.Response(
                206, content=data[first : last + 1], headers={"Content-Range": content_range}
            )
        return azure_storage_error(
            request, 403, "AuthorizationPermissionMismatch", "Not authorized.", REQUEST_ID
        )

    recorder = Recorder(respond)
    with pytest.raises(StorageError) as caught:
        Driver(mode, "registry.test", handler=recorder, retry=NO_WAIT).to_file(
            "prod/bash", digest, tmp_path / "blob", max_concurrency=2
        )
    assert caught.value.code == "AuthorizationPermissionMismatch"
    assert caught.value.request_id == REQUEST_ID
    # The third part was refused at storage, asked of the registry again, and refused again.
    third = range_header(2 * MIN_PART, 3 * MIN_PART)
    assert [r.url.host for r in recorder.requests if r.headers.get("Range") == third] == [
        "account.blob.test",
        "registry.test",
        "account.blob.test",
    ]

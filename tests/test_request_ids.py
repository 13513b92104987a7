"""What lets Azure's support find a client's requests: the SDK's User-Agent and an
``x-ms-client-request-id`` of its own on every request (registry, token server, storage).

Against the real registry, token server and moto storage.
"""

from __future__ import annotations

import uuid

import httpx

from acr_blob import __version__
from acr_blob._protocol import CLIENT_REQUEST_ID
from tests.conftest import TOKEN_AUTH
from tests.drivers import NO_WAIT, Driver
from tools.faultproxy import Fault, FaultProxyFactory
from tools.testbed import BlobFactory, Deployment

USER_AGENT = f"acr-blob/{__version__}"


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

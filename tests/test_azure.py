"""Azure's behaviours, end to end against the ACR deployment (tools/testbed/acr.py): an Azure AD
credential exchanged for ACR tokens, 307s to Azurite with real SAS tokens, SAS and access tokens
that expire mid-download, storage's 403s, ACR's 429s, and the ids Azure's support asks for.

Each case runs with both clients (`mode`). The expiries are real: a SAS or an access token of a
couple of seconds, and a storage answer held back (`Fault.stall_after`) until it has expired,
then cut, so that what comes after needs a new one.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import re
import uuid
from collections.abc import Awaitable
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from acr_blob import (
    AuthenticationError,
    BlobNotFoundError,
    RegistryAuth,
    RegistryError,
    RetryPolicy,
    StorageError,
    TransportError,
    __version__,
)
from acr_blob._protocol import CLIENT_REQUEST_ID
from acr_blob._ranges import MIN_PART, plan_parts, plan_stream_parts
from tests.drivers import Answer, Driver
from tools.faultproxy import Fault
from tools.testbed import ACR_AAD_SCOPE, ACR_API_VERSION, AcrDeployment, PushedBlob

USER_AGENT = f"acr-blob/{__version__}"
# The body of the ACR REST reference's "Blob - Get" example (prod/bash's config), base64.
REST_EXAMPLE = Path(__file__).parent / "data" / "acr-rest-example-blob.b64"
REST_EXAMPLE_DIGEST = "sha256:16463e0c481e161aabb735437d30b3c9c7391c2747cc564bb927e843b73dcb39"
# Seconds a SAS and an access token live in the expiry cases, and how long storage holds an
# answer back: past both (the SAS's `se` and the token's `exp` are whole seconds, so they live
# at most this long).
SHORT_LIFETIME = 2
HELD_BACK = SHORT_LIFETIME + 0.3
# Large enough for parallel parts to pay.
PARTS_SIZE = 2 * MIN_PART + 1000
# Where a held-back storage answer breaks off.
CUT = 1 << 20


@pytest.fixture(scope="module")
def parts_blob(_acr_deployment: AcrDeployment) -> PushedBlob:
    """One blob large enough for parallel parts, pushed once for the module."""
    return _acr_deployment.push_random("testbed/azure-parts", PARTS_SIZE)


def driver(acr: AcrDeployment, mode: str, **options: Any) -> Driver:
    options.setdefault("credential", acr.aad_credential())
    return Driver(mode, acr.url, verify=acr.verify, **options)


def download(
    client: Driver, api: str, repository: str, digest: str, path: Path, **options: Any
) -> bytes:
    if api == "to_file":
        properties = client.to_file(repository, digest, path, **options)
        assert properties.digest == digest
        return path.read_bytes()
    return client.iterate(repository, digest, **options)


def sig(answer_or_query: Answer | str) -> str:
    """The SAS's signature, as sent (percent-encoded)."""
    query = (
        answer_or_query.request.url.query.decode()
        if isinstance(answer_or_query, Answer)
        else answer_or_query
    )
    found = re.search(r"(?:^|&)sig=([^&]+)", query)
    assert found, query
    return found.group(1)


def at_storage(answers: list[Answer], acr: AcrDeployment) -> list[Answer]:
    host = httpx.URL(acr.blob_endpoint.url).host
    return [a for a in answers if a.request.url.host == host]


def at_registry(answers: list[Answer], acr: AcrDeployment, path: str = "/blobs/") -> list[Answer]:
    host = httpx.URL(acr.url).host
    return [a for a in answers if a.request.url.host == host and path in a.request.url.path]


def hold_back_then_cut(acr: AcrDeployment, **match: Any) -> None:
    """The next storage answer (that matches) sends CUT bytes, holds the rest back until a SAS
    and an access token of SHORT_LIFETIME have expired, then breaks off."""
    acr.storage_faults.add(
        Fault.stall_after(CUT, HELD_BACK) | Fault.cut_after(CUT), path=r"/data$", times=1, **match
    )


# The Azure AD credential, end to end.


@pytest.mark.parametrize("api", ["to_file", "iterate"])
def test_aad_credential_exchange_token_redirect_and_verified_bytes(
    mode: str,
    api: str,
    acr_deployment: AcrDeployment,
    repository: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    acr = acr_deployment
    pushed = acr.push_random(repository, 300_000)
    credential = acr.aad_credential()
    caplog.clear()
    for name in ("acr_blob", "httpx", "httpcore"):
        caplog.set_level("DEBUG", logger=name)

    client = driver(acr, mode, credential=credential)
    assert download(client, api, repository, pushed.digest, tmp_path / "blob") == pushed.data

    assert credential.scopes == [ACR_AAD_SCOPE]
    assert [(r.method, r.path, r.status) for r in acr.registry.requests] == [
        ("GET", f"/v2/{repository}/blobs/{pushed.digest}", 401),
        ("POST", "/oauth2/exchange", 200),
        ("POST", "/oauth2/token", 200),
        ("GET", f"/v2/{repository}/blobs/{pushed.digest}", 307),
    ]
    _, exchange, token, authorized = acr.registry.requests
    assert (exchange.grant_type, exchange.field("service")) == ("access_token", acr.login_server)
    assert exchange.field("access_token") == acr.aad_token
    assert (token.grant_type, token.scopes) == ("refresh_token", [f"repository:{repository}:pull"])
    refresh_token = token.field("refresh_token")
    access_token = (authorized.header("Authorization") or "").removeprefix("Bearer ")
    assert refresh_token and access_token

    (storage,) = acr.storage_requests
    (relayed,) = acr.storage_faults.requests  # as it reached Azurite, behind the endpoint
    sas_signature = sig(storage.query)
    secrets = [acr.aad_token, refresh_token, access_token]
    for request in (storage, relayed):
        assert request.header("Authorization") is None
        for name, value in request.headers:
            assert not any(secret in value for secret in secrets), name
    assert not any(secret in storage.query for secret in secrets)
    # Nothing logged, at DEBUG, carries a token or the SAS's signature (in either spelling).
    logged = caplog.text
    assert f"/v2/{repository}/blobs/" in logged  # the requests were logged
    for secret in [*secrets, sas_signature, unquote(sas_signature)]:
        assert secret not in logged


@pytest.mark.parametrize("api", ["to_file", "iterate"])
def test_the_rest_reference_example_blob(
    mode: str, api: str, acr_deployment: AcrDeployment, tmp_path: Path
) -> None:
    """The ACR REST reference's "Blob - Get" example: prod/bash's config, 5635 bytes."""
    data = base64.b64decode(REST_EXAMPLE.read_text())
    assert acr_deployment.push("prod/bash", data) == REST_EXAMPLE_DIGEST
    client = driver(acr_deployment, mode)
    got = download(client, api, "prod/bash", REST_EXAMPLE_DIGEST, tmp_path / "config.json")
    assert len(got) == 5635
    assert f"sha256:{hashlib.sha256(got).hexdigest()}" == REST_EXAMPLE_DIGEST
    assert [r.status for r in acr_deployment.registry.requests_to("/v2/")] == [401, 307]


# A SAS and an access token that expire mid-download.


def test_a_resume_after_the_sas_and_the_token_expired_goes_through_the_registry(
    mode: str, acr_deployment: AcrDeployment, repository: str, tmp_path: Path
) -> None:
    """One stream, cut once its SAS and access token have expired: the resume asks the
    registry again (never the expired URL), with a new access token from the cached refresh
    token, and the bytes end verified."""
    acr = acr_deployment
    pushed = acr.push_random(repository, 4 * CUT)
    acr.registry.sas_lifetime = SHORT_LIFETIME
    acr.registry.access_token_lifetime = SHORT_LIFETIME
    hold_back_then_cut(acr)
    answers: list[Answer] = []
    client = driver(acr, mode, answers=answers)
    assert download(client, "to_file", repository, pushed.digest, tmp_path / "blob") == pushed.data

    first, resumed = at_storage(answers, acr)
    assert (first.status, first.request.headers.get("Range")) == (200, None)
    assert resumed.status == 206
    assert resumed.request.headers["Range"] == f"bytes={CUT}-"
    assert sig(resumed) != sig(first)
    # The first SAS had indeed expired: storage now refuses it the way Azure does.
    expired = httpx.get(first.request.url, verify=acr.verify)
    assert expired.status_code == 403
    assert expired.headers["x-ms-error-code"] == "AuthenticationFailed"
    assert b"Signature not valid in the specified time frame" in expired.content
    # The resume: the expired token refused, a new one, then a fresh 307.
    ranged = [a for a in at_registry(answers, acr) if "Range" in a.request.headers]
    assert [a.status for a in ranged] == [401, 307]
    assert len(acr.registry.requests_to("/oauth2/token")) == 2
    assert len(acr.registry.requests_to("/oauth2/exchange")) == 1


@pytest.mark.parametrize("api", ["to_file", "iterate"])
def test_parts_started_after_the_sas_and_the_token_expired_get_a_fresh_redirect(
    mode: str,
    api: str,
    acr_deployment: AcrDeployment,
    parts_blob: PushedBlob,
    tmp_path: Path,
) -> None:
    """Parallel parts (max_concurrency=4); the second part is cut once the SAS and the access
    token have expired. Its rest tries the URL the parts share, which storage refuses as
    expired, then the registry: a new access token, a fresh 307, the bytes verified."""
    acr = acr_deployment
    plan = plan_parts if api == "to_file" else plan_stream_parts
    parts = plan(0, PARTS_SIZE, 4)
    assert len(parts) >= 3
    second = parts[1]
    acr.registry.sas_lifetime = SHORT_LIFETIME
    acr.registry.access_token_lifetime = SHORT_LIFETIME
    hold_back_then_cut(acr, headers={"Range": re.escape(f"bytes={second[0]}-") + r"\d+"})
    answers: list[Answer] = []
    client = driver(acr, mode, answers=answers)
    got = download(
        client, api, "testbed/azure-parts", parts_blob.digest, tmp_path / "blob", max_concurrency=4
    )
    assert got == parts_blob.data

    storage = at_storage(answers, acr)
    first_sig = sig(storage[0])
    ranges = {a.request.headers.get("Range") for a in storage if sig(a) == first_sig}
    assert len(ranges) >= 3, "the parts ran in parallel on the first redirect's URL"
    rest = f"bytes={second[0] + CUT}-{second[1] - 1}"
    tries = [a for a in answers if a.request.headers.get("Range") == rest]
    assert [(a.request.url.host, a.status) for a in tries] == [
        (httpx.URL(acr.blob_endpoint.url).host, 403),  # the expired SAS
        (httpx.URL(acr.url).host, 401),  # the expired access token
        (httpx.URL(acr.url).host, 307),
        (httpx.URL(acr.blob_endpoint.url).host, 206),
    ]
    assert tries[0].headers["x-ms-error-code"] == "AuthenticationFailed"
    assert sig(tries[0]) == first_sig
    assert sig(tries[3]) != first_sig
    assert len(acr.registry.requests_to("/oauth2/token")) == 2
    assert len(acr.registry.requests_to("/oauth2/exchange")) == 1


def test_a_revoked_access_token_is_refreshed_when_a_download_resumes(
    mode: str, acr_deployment: AcrDeployment, repository: str, tmp_path: Path
) -> None:
    """A download breaks off and is given up; its access token is revoked; the next call (the
    same token cache) resumes it: the refused token is replaced, not a failure."""
    acr = acr_deployment
    pushed = acr.push_random(repository, 4 * CUT)
    auth = RegistryAuth(acr.aad_credential())
    acr.storage_faults.add(Fault.cut_after(CUT), path=r"/data$", times=1)
    target = tmp_path / "blob"
    with pytest.raises(TransportError, match="broke off"):
        driver(acr, mode, credential=auth, retry=RetryPolicy.never()).to_file(
            repository, pushed.digest, target
        )
    acr.registry.revoke_access_tokens()
    acr.registry.clear()

    answers: list[Answer] = []
    resumed = driver(acr, mode, credential=auth, answers=answers)
    assert download(resumed, "to_file", repository, pushed.digest, target) == pushed.data
    assert [(r.path, r.status) for r in acr.registry.requests] == [
        (f"/v2/{repository}/blobs/{pushed.digest}", 401),
        ("/oauth2/token", 200),
        (f"/v2/{repository}/blobs/{pushed.digest}", 307),
    ]
    refused, _, redirected = acr.registry.requests
    assert refused.header("Range") == f"bytes={CUT}-"
    assert refused.header("Authorization") != redirected.header("Authorization")
    (storage,) = at_storage(answers, acr)
    assert (storage.request.headers["Range"], storage.status) == (f"bytes={CUT}-", 206)


# Storage's other 403s.


def test_a_permission_mismatch_is_a_storage_error_with_azures_ids(
    mode: str, acr_deployment: AcrDeployment, repository: str, tmp_path: Path
) -> None:
    acr = acr_deployment
    pushed = acr.push_random(repository, 1000)
    acr.registry.sas_permissions = "w"
    answers: list[Answer] = []
    with pytest.raises(StorageError) as caught:
        driver(acr, mode, answers=answers).to_file(repository, pushed.digest, tmp_path / "blob")
    error = caught.value
    assert (error.status_code, error.code) == (403, "AuthorizationPermissionMismatch")
    (refusal,) = at_storage(answers, acr)
    assert error.request_id == refusal.headers["x-ms-request-id"]
    assert uuid.UUID(error.request_id)
    assert error.client_request_id == refusal.request.headers[CLIENT_REQUEST_ID]
    assert f"x-ms-request-id: {error.request_id}" in str(error)
    assert "sig=" not in str(error) and sig(refusal) not in repr(error)
    # Final: not retried, at storage or through the registry.
    assert [r.status for r in acr.registry.requests_to("/v2/")] == [401, 307]
    assert not list(tmp_path.iterdir())


# ACR's throttling (its ReadOps limit).


def test_a_429_from_the_registry_waits_its_retry_after(
    mode: str, acr_deployment: AcrDeployment, repository: str
) -> None:
    acr = acr_deployment
    pushed = acr.push_random(repository, 1000)
    acr.registry.throttle(2, retry_after="1")
    waits: list[float] = []

    async def async_wait(seconds: float) -> None:
        waits.append(seconds)

    retry = RetryPolicy(sleep=waits.append, async_sleep=async_wait, random=lambda: 0.0)
    assert driver(acr, mode, retry=retry).iterate(repository, pushed.digest) == pushed.data
    assert waits == [1.0, 1.0]
    assert [r.status for r in acr.registry.requests_to("/v2/")] == [401, 429, 429, 307]


def test_a_429_beyond_the_retry_cap_is_raised_with_acrs_ids(
    mode: str, acr_deployment: AcrDeployment, repository: str
) -> None:
    acr = acr_deployment
    pushed = acr.push_random(repository, 1000)
    acr.registry.throttle(1, retry_after="120")
    answers: list[Answer] = []
    waits: list[float] = []

    async def async_wait(seconds: float) -> None:
        waits.append(seconds)

    retry = RetryPolicy(cap=30.0, sleep=waits.append, async_sleep=async_wait)
    with pytest.raises(RegistryError) as caught:
        driver(acr, mode, retry=retry, answers=answers).iterate(repository, pushed.digest)
    error = caught.value
    assert (error.status_code, error.codes, error.retry_after) == (429, ["TOOMANYREQUESTS"], 120.0)
    assert waits == []
    throttled = at_registry(answers, acr)[-1]
    assert throttled.status == 429
    assert_service_ids(error, throttled)


# User-Agent, request ids and api-version on every request, at the registry and at storage;
# the service's ids in every error.


def test_every_request_carries_the_user_agent_and_its_own_request_id(
    mode: str, acr_deployment: AcrDeployment, repository: str, tmp_path: Path
) -> None:
    acr = acr_deployment
    pushed = acr.push_random(repository, 300_000)
    client = driver(acr, mode)
    assert download(client, "to_file", repository, pushed.digest, tmp_path / "b") == pushed.data
    seen = [*acr.registry.requests, *acr.storage_requests, *acr.storage_faults.requests]
    assert len(seen) == 4 + 1 + 1
    for request in seen:
        assert request.header("User-Agent") == USER_AGENT, request.path
        assert str(uuid.UUID(request.header(CLIENT_REQUEST_ID) or "")), request.path
    ids = {r.header(CLIENT_REQUEST_ID) for r in [*acr.registry.requests, *acr.storage_requests]}
    assert len(ids) == 5, "each request has an id of its own"
    # Azurite got the id the endpoint got: the same request.
    assert acr.storage_faults.requests[0].header(CLIENT_REQUEST_ID) == (
        acr.storage_requests[0].header(CLIENT_REQUEST_ID)
    )


def test_the_exchange_and_token_requests_send_the_api_version(
    mode: str, acr_deployment: AcrDeployment, repository: str
) -> None:
    acr = acr_deployment
    pushed = acr.push_random(repository, 1000)
    assert driver(acr, mode).iterate(repository, pushed.digest) == pushed.data
    for path in ("/oauth2/exchange", "/oauth2/token"):
        (request,) = acr.registry.requests_to(path, method="POST")
        assert request.api_version == ACR_API_VERSION, path
    assert all(r.api_version is None for r in acr.registry.requests_to("/v2/"))


def assert_service_ids(error: RegistryError, answer: Answer) -> None:
    """The error names the ids the service sent, and the one acr-blob sent."""
    assert error.request_id == answer.headers["x-ms-request-id"]
    assert error.correlation_id == answer.headers["X-Ms-Correlation-Request-Id"]
    assert uuid.UUID(error.request_id) and uuid.UUID(error.correlation_id)
    assert error.client_request_id == answer.request.headers[CLIENT_REQUEST_ID]
    assert str(error).endswith(
        f"[x-ms-request-id: {error.request_id}, "
        f"x-ms-correlation-request-id: {error.correlation_id}]"
    )


def test_an_unknown_blob_carries_acrs_ids(
    mode: str, acr_deployment: AcrDeployment, repository: str
) -> None:
    acr = acr_deployment
    acr.push(repository, b"the repository exists")
    answers: list[Answer] = []
    with pytest.raises(BlobNotFoundError) as caught:
        driver(acr, mode, answers=answers).iterate(repository, "sha256:" + "ab" * 32)
    assert caught.value.codes == ["BLOB_UNKNOWN"]
    assert_service_ids(caught.value, at_registry(answers, acr)[-1])


def test_a_refused_exchange_carries_acrs_ids(
    mode: str, acr_deployment: AcrDeployment, repository: str
) -> None:
    acr = acr_deployment
    digest = acr.push(repository, b"refused")
    answers: list[Answer] = []
    credential = acr.aad_credential("not-an-aad-token-of-ours")
    with pytest.raises(AuthenticationError) as caught:
        driver(acr, mode, credential=credential, answers=answers).iterate(repository, digest)
    (exchange,) = at_registry(answers, acr, "/oauth2/exchange")
    assert (exchange.status, caught.value.status_code) == (401, 401)
    assert_service_ids(caught.value, exchange)
    assert "not-an-aad-token-of-ours" not in str(caught.value)


# azure-core's two credential shapes.


@pytest.mark.parametrize("shape", ["async", "sync"])
def test_the_async_client_takes_both_credential_shapes(
    shape: str, acr_deployment: AcrDeployment, repository: str, tmp_path: Path
) -> None:
    acr = acr_deployment
    pushed = acr.push_random(repository, 300_000)
    credential = acr.async_aad_credential() if shape == "async" else acr.aad_credential()
    client = driver(acr, "async", credential=credential)
    assert download(client, "to_file", repository, pushed.digest, tmp_path / "b") == pushed.data
    assert client.iterate(repository, pushed.digest) == pushed.data
    # One get_token per client (each call of the driver is a client of its own).
    assert credential.scopes == [ACR_AAD_SCOPE, ACR_AAD_SCOPE]
    (exchange, _) = acr.registry.requests_to("/oauth2/exchange")
    assert exchange.field("access_token") == acr.aad_token
    assert not credential.closed  # the caller's to close


def test_the_sync_client_refuses_an_async_credential_before_any_request(
    acr_deployment: AcrDeployment, repository: str, tmp_path: Path
) -> None:
    acr = acr_deployment
    pushed = acr.push_random(repository, 1000)
    credential = acr.async_aad_credential()
    with pytest.raises(TypeError, match="use it with AsyncBlobClient"):
        driver(acr, "sync", credential=credential).to_file(
            repository, pushed.digest, tmp_path / "b"
        )
    assert acr.registry.requests == []
    assert credential.calls == []
    assert not list(tmp_path.iterdir())


def test_the_sync_client_refuses_a_get_token_that_returns_an_awaitable(
    acr_deployment: AcrDeployment, repository: str, recwarn: pytest.WarningsRecorder
) -> None:
    """A get_token that is no coroutine function but hands out coroutines all the same is
    found out at the exchange, which is never sent; the coroutine is closed, not leaked."""
    acr = acr_deployment
    pushed = acr.push_random(repository, 1000)
    inner = acr.async_aad_credential()

    def get_token(*scopes: str, **kwargs: Any) -> Awaitable[Any]:
        return inner.get_token(*scopes, **kwargs)

    with pytest.raises(TypeError, match="use it with AsyncBlobClient"):
        driver(acr, "sync", credential=SimpleNamespace(get_token=get_token)).iterate(
            repository, pushed.digest
        )
    assert [r.status for r in acr.registry.requests] == [401]
    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]

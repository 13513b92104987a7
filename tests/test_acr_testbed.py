"""The ACR deployment itself (tools/testbed/acr.py), checked with plain httpx against the facts
recorded from live ACR and Azure Storage: challenges, the token endpoints, the 307's exact shape,
SAS URLs that Azurite honours or refuses in Azure's own form, and the fault knobs.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import html
import json
import re
import uuid
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest

from tools.faultproxy import Fault
from tools.testbed import (
    ACR_AAD_SCOPE,
    ACR_API_VERSION,
    AcrDeployment,
    AsyncFakeAADCredential,
    FakeAADCredential,
    blob_name,
    push_image,
)

BOM = b"\xef\xbb\xbf"
USER_AGENT = "acr-testbed-test/1.0"


@pytest.fixture
def client(acr_deployment: AcrDeployment) -> Iterator[httpx.Client]:
    with httpx.Client(
        verify=acr_deployment.verify,
        trust_env=False,
        timeout=10.0,
        headers={"User-Agent": USER_AGENT},
    ) as client:
        yield client


def _refresh_token(acr: AcrDeployment, client: httpx.Client, aad_token: str) -> httpx.Response:
    return client.post(
        f"{acr.url}/oauth2/exchange",
        params={"api-version": ACR_API_VERSION},
        data={"grant_type": "access_token", "service": acr.login_server, "access_token": aad_token},
        headers={"x-ms-client-request-id": str(uuid.uuid4())},
    )


def _access_token(acr: AcrDeployment, client: httpx.Client, repository: str) -> str:
    exchange = _refresh_token(acr, client, acr.aad_token)
    assert exchange.status_code == 200, exchange.text
    answer = client.post(
        f"{acr.url}/oauth2/token",
        params={"api-version": ACR_API_VERSION},
        data={
            "grant_type": "refresh_token",
            "service": acr.login_server,
            "scope": f"repository:{repository}:pull",
            "refresh_token": exchange.json()["refresh_token"],
        },
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _redirect(
    acr: AcrDeployment, client: httpx.Client, repository: str, digest: str
) -> httpx.Response:
    token = _access_token(acr, client, repository)
    response = client.get(acr.blob_url(repository, digest), headers=_bearer(token))
    assert response.status_code == 307, response.text
    return response


def test_challenges_name_the_login_server_and_the_repository(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    digest = acr.push(repository, b"challenged")
    realm = f"https://{acr.login_server}/oauth2/token"

    base = client.get(f"{acr.url}/v2/")
    assert base.status_code == 401
    assert base.headers["WWW-Authenticate"] == (
        f'Bearer realm="{realm}",service="{acr.login_server}"'
    )

    blob = client.get(acr.blob_url(repository, digest))
    assert blob.status_code == 401
    scope = f"repository:{repository}:pull"
    assert blob.headers["WWW-Authenticate"] == (
        f'Bearer realm="{realm}",service="{acr.login_server}",scope="{scope}"'
    )
    assert blob.content.endswith(b"}\n")
    assert b'": ' not in blob.content  # compact JSON, as ACR's
    assert json.loads(blob.content) == {
        "errors": [
            {
                "code": "UNAUTHORIZED",
                "message": "authentication required, visit https://aka.ms/acr/authorization "
                "for more information.",
                "detail": [{"Type": "repository", "Name": repository, "Action": "pull"}],
            }
        ]
    }
    for name, value in [
        ("Docker-Distribution-Api-Version", "registry/2.0"),
        ("Server", "openresty"),
    ]:
        assert blob.headers[name] == value
    assert uuid.UUID(blob.headers["X-Ms-Correlation-Request-Id"])
    assert uuid.UUID(blob.headers["x-ms-request-id"])

    head = client.head(acr.blob_url(repository, digest))
    assert head.status_code == 401
    assert head.content == b""
    assert head.headers["WWW-Authenticate"] == blob.headers["WWW-Authenticate"]

    manifest = client.get(acr.manifest_url(repository, "latest"))
    assert manifest.status_code == 401
    assert f'scope="repository:{repository}:pull"' in manifest.headers["WWW-Authenticate"]


def test_exchange_token_redirect_download(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    pushed = acr.push_random(repository, 300_000)

    exchange = _refresh_token(acr, client, acr.aad_token)
    assert exchange.status_code == 200
    assert exchange.headers["Transfer-Encoding"] == "chunked"
    assert list(exchange.json()) == ["refresh_token"]
    token = _access_token(acr, client, repository)
    answer = acr.registry.requests_to("/oauth2/token")[-1]
    assert answer.status == 200

    redirect = client.get(acr.blob_url(repository, pushed.digest), headers=_bearer(token))
    assert redirect.status_code == 307
    blob = client.get(redirect.headers["Location"])
    assert blob.status_code == 200
    assert f"sha256:{hashlib.sha256(blob.content).hexdigest()}" == pushed.digest
    assert blob.headers["x-ms-blob-type"] == "AppendBlob"
    assert blob.headers["Server"] == "Windows-Azure-Blob/1.0 Microsoft-HTTPAPI/2.0"
    (storage_request,) = acr.storage_requests
    assert storage_request.header("Authorization") is None


def test_token_endpoint_answers_only_an_access_token(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    refresh = _refresh_token(acr, client, acr.aad_token).json()["refresh_token"]
    answer = client.post(
        f"{acr.url}/oauth2/token",
        params={"api-version": ACR_API_VERSION},
        data={
            "grant_type": "refresh_token",
            "service": acr.login_server,
            "scope": f"repository:{repository}:pull",
            "refresh_token": refresh,
        },
    )
    assert answer.status_code == 200
    assert list(answer.json()) == ["access_token"]


def test_requests_are_recorded_with_api_version_form_and_headers(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    request_id = str(uuid.uuid4())
    client.post(
        f"{acr.url}/oauth2/exchange",
        params={"api-version": ACR_API_VERSION},
        data={
            "grant_type": "access_token",
            "service": acr.login_server,
            "access_token": acr.aad_token,
            "tenant": "some-tenant",
        },
        headers={"x-ms-client-request-id": request_id},
    )
    (exchange,) = acr.registry.requests_to("/oauth2/exchange")
    assert exchange.method == "POST"
    assert exchange.api_version == ACR_API_VERSION
    assert exchange.grant_type == "access_token"
    assert exchange.field("service") == acr.login_server
    assert exchange.field("access_token") == acr.aad_token
    assert exchange.field("tenant") == "some-tenant"
    assert exchange.header("User-Agent") == USER_AGENT
    assert exchange.header("x-ms-client-request-id") == request_id
    assert exchange.status == 200

    client.get(acr.blob_url(repository, "sha256:" + "0" * 64))
    (blob,) = acr.registry.requests_to("/v2/")
    assert (blob.method, blob.status) == ("GET", 401)


def test_redirect_has_acr_shape(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    digest = acr.push(repository, b"redirected" * 100)
    hex_ = digest.removeprefix("sha256:")
    redirect = _redirect(acr, client, repository, digest)

    location = redirect.headers["Location"]
    assert redirect.headers["Content-Type"] == "text/html"
    assert redirect.headers["Docker-Content-Digest"] == digest
    assert redirect.content == (
        f'<a href="{html.escape(location)}">Temporary Redirect</a>.\n\n'.encode()
    )
    assert b"&amp;" in redirect.content
    url = urlsplit(location)
    assert url.netloc == urlsplit(acr.blob_endpoint.url).netloc
    container = acr.registry.storage.container
    assert re.fullmatch(r"[0-9a-f]{32}-[0-9a-f]{10}", container)
    assert url.path == f"/{container}//docker/registry/v2/blobs/sha256/{hex_[:2]}/{hex_}/data"
    assert blob_name(digest) == url.path.removeprefix(f"/{container}/")
    query = parse_qsl(url.query)
    assert [k for k, _ in query] == ["se", "sig", "sp", "spr", "sr", "sv", "regid"]
    fields = dict(query)
    assert (fields["sp"], fields["spr"], fields["sr"]) == ("r", "https", "b")
    assert container.startswith(fields["regid"] + "-")
    sent = parsedate_to_datetime(redirect.headers["Date"])
    expiry = datetime.datetime.fromisoformat(fields["se"])
    assert datetime.timedelta(minutes=19) < expiry - sent <= datetime.timedelta(minutes=21)

    # The `//` is part of the blob's name: collapsing it does not reach the blob.
    collapsed = location.replace("//docker", "/docker", 1)
    assert client.get(collapsed).status_code != 200


def test_sas_lifetime_changes_at_run_time(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    digest = acr.push(repository, b"short-lived")
    acr.registry.sas_lifetime = 5
    redirect = _redirect(acr, client, repository, digest)
    query = dict(parse_qsl(urlsplit(redirect.headers["Location"]).query))
    expiry = datetime.datetime.fromisoformat(query["se"])
    lifetime = expiry - parsedate_to_datetime(redirect.headers["Date"])
    assert datetime.timedelta(seconds=3) <= lifetime <= datetime.timedelta(seconds=6)


def test_head_is_answered_by_the_registry(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    pushed = acr.push_random(repository, 1472)
    token = _access_token(acr, client, repository)
    head = client.head(acr.blob_url(repository, pushed.digest), headers=_bearer(token))
    assert head.status_code == 200
    assert head.headers["Content-Length"] == "1472"
    assert head.headers["Docker-Content-Digest"] == pushed.digest
    assert "Location" not in head.headers
    assert acr.storage_requests == []


def test_percent_encoded_paths_are_decoded(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    # azure-containerregistry sends the repository's slashes and the digest's colon encoded.
    acr = acr_deployment
    digest = acr.push(repository, b"encoded")
    token = _access_token(acr, client, repository)
    encoded = f"{acr.url}/v2/{quote(repository, safe='')}/blobs/{quote(digest, safe='')}"
    assert client.get(encoded, headers=_bearer(token)).status_code == 307


def test_unknown_blob_is_blob_unknown(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    token = _access_token(acr, client, repository)
    missing = client.get(acr.blob_url(repository, "sha256:" + "ab" * 32), headers=_bearer(token))
    assert missing.status_code == 404
    assert missing.content == (
        b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}\n'
    )


def test_storage_honours_ranges_clipped_at_the_end(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    pushed = acr.push_random(repository, 1472)
    location = _redirect(acr, client, repository, pushed.digest).headers["Location"]
    part = client.get(location, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == "bytes 1000-1471/1472"
    assert part.content == pushed.data[1000:]


def test_an_empty_blob_is_stored_and_served_empty(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    digest = acr.push(repository, b"")
    location = _redirect(acr, client, repository, digest).headers["Location"]
    whole = client.get(location)
    assert (whole.status_code, whole.content) == (200, b"")
    # As Azure Storage: a range of an empty blob is unsatisfiable.
    assert client.get(location, headers={"Range": "bytes=0-4194303"}).status_code == 416


def test_expired_sas_is_authentication_failed_with_a_bom(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    digest = acr.push(repository, b"expired")
    acr.registry.sas_lifetime = -60
    refused = client.get(_redirect(acr, client, repository, digest).headers["Location"])
    assert refused.status_code == 403
    assert refused.headers["x-ms-error-code"] == "AuthenticationFailed"
    assert refused.headers["Connection"] == "close"
    assert refused.headers["Content-Type"] == "application/xml"
    assert refused.content.startswith(BOM + b'<?xml version="1.0" encoding="utf-8"?><Error>')
    assert int(refused.headers["Content-Length"]) == len(refused.content)
    assert b"<Code>AuthenticationFailed</Code>" in refused.content
    assert b"Signature not valid in the specified time frame" in refused.content


def test_wrong_sas_permissions_are_a_permission_mismatch(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    digest = acr.push(repository, b"write-only")
    acr.registry.sas_permissions = "w"
    refused = client.get(_redirect(acr, client, repository, digest).headers["Location"])
    assert refused.status_code == 403
    assert refused.headers["x-ms-error-code"] == "AuthorizationPermissionMismatch"
    assert refused.content.startswith(BOM + b"<?xml")
    assert b"<Code>AuthorizationPermissionMismatch</Code>" in refused.content


def test_sas_with_a_forwarded_authorization_is_refused(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    digest = acr.push(repository, b"no foreign credentials")
    token = _access_token(acr, client, repository)
    location = client.get(acr.blob_url(repository, digest), headers=_bearer(token)).headers[
        "Location"
    ]
    refused = client.get(location, headers=_bearer(token))
    assert refused.status_code == 403
    assert refused.headers["x-ms-error-code"] == "AuthenticationFailed"
    assert b"Authentication information is not given in the correct format" in refused.content
    assert acr.storage_requests[-1].header("Authorization") == f"Bearer {token}"


def test_throttle_answers_429_then_lets_requests_through(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    digest = acr.push(repository, b"throttled")
    token = _access_token(acr, client, repository)
    acr.registry.throttle(2, retry_after="3")
    statuses = []
    for _ in range(3):
        response = client.get(acr.blob_url(repository, digest), headers=_bearer(token))
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.headers["Retry-After"] == "3"
            assert json.loads(response.content)["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert statuses == [429, 429, 307]


def test_refused_exchange_and_token_are_empty_401s(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    refused = _refresh_token(acr, client, "not-an-aad-token-of-ours")
    assert refused.status_code == 401
    assert refused.headers["Content-Length"] == "0"
    assert refused.content == b""
    assert "WWW-Authenticate" not in refused.headers

    token = client.post(
        f"{acr.url}/oauth2/token",
        params={"api-version": ACR_API_VERSION},
        data={
            "grant_type": "refresh_token",
            "service": acr.login_server,
            "scope": f"repository:{repository}:pull",
            "refresh_token": "not-a-refresh-token",
        },
    )
    assert (token.status_code, token.content) == (401, b"")


def test_revoked_and_expired_access_tokens_get_the_challenge(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    digest = acr.push(repository, b"revoked")
    token = _access_token(acr, client, repository)
    assert client.get(acr.blob_url(repository, digest), headers=_bearer(token)).status_code == 307
    acr.registry.revoke_access_tokens()
    revoked = client.get(acr.blob_url(repository, digest), headers=_bearer(token))
    assert revoked.status_code == 401
    assert "WWW-Authenticate" in revoked.headers

    acr.registry.access_token_lifetime = -1
    expired = _access_token(acr, client, repository)
    assert client.get(acr.blob_url(repository, digest), headers=_bearer(expired)).status_code == 401

    # A token for another repository does not open this one.
    acr.registry.access_token_lifetime = 60
    other = _access_token(acr, client, f"{repository}-other")
    assert client.get(acr.blob_url(repository, digest), headers=_bearer(other)).status_code == 401


def test_manifests_are_served_by_tag_and_digest(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    media_type = "application/vnd.oci.image.manifest.v1+json"
    body = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
    digest = acr.push_manifest(repository, body, media_type, tag="v1")
    token = _access_token(acr, client, repository)
    for reference in ("v1", digest):
        got = client.get(acr.manifest_url(repository, reference), headers=_bearer(token))
        assert got.status_code == 200
        assert got.content == body
        assert got.headers["Content-Type"] == media_type
        assert got.headers["Docker-Content-Digest"] == digest
    head = client.head(acr.manifest_url(repository, "v1"), headers=_bearer(token))
    assert (head.status_code, head.content, head.headers["Content-Length"]) == (
        200,
        b"",
        str(len(body)),
    )
    missing = client.get(acr.manifest_url(repository, "v2"), headers=_bearer(token))
    assert missing.status_code == 404
    assert json.loads(missing.content)["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_push_image_over_http_lands_in_storage(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    image = push_image(acr, repository, "v1", layers_per_platform=1, layer_size=2000)
    token = _access_token(acr, client, repository)
    index = client.get(acr.manifest_url(repository, "v1"), headers=_bearer(token))
    assert index.status_code == 200
    assert index.headers["Docker-Content-Digest"] == image.digest
    for digest, blob in image.blobs.items():
        location = client.get(acr.blob_url(repository, digest), headers=_bearer(token))
        assert client.get(location.headers["Location"]).content == blob.data
    # The pushes are the testbed's own: the log holds only this test's client.
    assert {r.header("User-Agent") for r in acr.registry.requests} == {USER_AGENT}


def test_push_without_a_push_token_gets_a_push_challenge(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    token = _access_token(acr, client, repository)
    start = client.post(f"{acr.url}/v2/{repository}/blobs/uploads/", headers=_bearer(token))
    assert start.status_code == 401
    assert f'scope="repository:{repository}:pull,push"' in start.headers["WWW-Authenticate"]


def test_storage_faults_reach_the_client(
    acr_deployment: AcrDeployment, client: httpx.Client, repository: str
) -> None:
    acr = acr_deployment
    pushed = acr.push_random(repository, 100_000)
    location = _redirect(acr, client, repository, pushed.digest).headers["Location"]
    acr.storage_faults.add(Fault.cut_after(1000), path=r"/data$", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(location)
    # The rule fired once: the same URL then serves the whole blob.
    assert client.get(location).content == pushed.data


def test_fake_aad_credentials_record_scopes() -> None:
    credential = FakeAADCredential("aad-token", lifetime=600, clock=lambda: 1000.0)
    access = credential.get_token(ACR_AAD_SCOPE, tenant_id="t1")
    assert (access.token, access.expires_on) == ("aad-token", 1600)
    assert credential.scopes == [ACR_AAD_SCOPE]
    assert credential.calls[0].tenant_id == "t1"
    with pytest.raises(ValueError):
        credential.get_token()

    async def use_async() -> tuple[str, list[str], bool]:
        async with AsyncFakeAADCredential("async-token") as async_credential:
            token = await async_credential.get_token("a/.default", "b/.default")
        return token.token, async_credential.scopes, async_credential.closed

    assert asyncio.run(use_async()) == ("async-token", ["a/.default", "b/.default"], True)

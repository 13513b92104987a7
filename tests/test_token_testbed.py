"""The token testbed itself: a real registry in token-auth mode and the token server behind it,
behaving as the SDK will meet them. Plain httpx only, so that these hold whatever state the SDK
is in."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import AAD_TOKEN, TOKEN_ADMIN, TOKEN_AUTH
from tools.testbed import (
    BlobFactory,
    Deployment,
    TokenServer,
    decode_jwt_claims,
    decode_jwt_header,
)


def client() -> httpx.Client:
    # Everything here is plain http: verify=False only skips loading the CA bundle.
    return httpx.Client(trust_env=False, verify=False, timeout=30.0)


def docker_token(
    server: TokenServer, *scopes: str, auth: tuple[str, str] | None = None
) -> httpx.Response:
    params = httpx.QueryParams([("service", server.service), *(("scope", s) for s in scopes)])
    with client() as c:
        return c.get(server.realm, params=params, auth=auth)


def form_post(url: str, **fields: str) -> httpx.Response:
    with client() as c:
        return c.post(url, data=fields)


def get_blob(deployment: Deployment, repository: str, digest: str, token: str) -> httpx.Response:
    with client() as c:
        return c.get(
            deployment.blob_url(repository, digest), headers={"Authorization": f"Bearer {token}"}
        )


def pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def challenge(server: TokenServer, repository: str, error: str | None = None) -> str:
    text = f'Bearer realm="{server.realm}",service="{server.service}",scope="{pull(repository)}"'
    return f'{text},error="{error}"' if error else text


def access(token: str) -> list[dict[str, Any]]:
    granted: list[dict[str, Any]] = decode_jwt_claims(token)["access"]
    return granted


def test_registry_challenges_with_realm_service_and_scope(
    token_registry: Deployment,
    token_server: TokenServer,
    repository: str,
    blob_factory: BlobFactory,
) -> None:
    digest, _ = blob_factory(token_registry, 100)
    with client() as c:
        blob = c.get(token_registry.blob_url(repository, digest))
        head = c.head(token_registry.blob_url(repository, digest))
        base = c.get(token_registry.url + "/v2/")
    assert blob.status_code == head.status_code == base.status_code == 401
    assert blob.headers["WWW-Authenticate"] == challenge(token_server, repository)
    assert head.headers["WWW-Authenticate"] == challenge(token_server, repository)
    assert blob.json()["errors"][0]["code"] == "UNAUTHORIZED"
    # /v2/ names no repository, so its challenge has no scope.
    assert base.headers["WWW-Authenticate"] == (
        f'Bearer realm="{token_server.realm}",service="test-registry"'
    )


def test_anonymous_token_pulls_public_but_not_private(
    token_registry: Deployment,
    token_server: TokenServer,
    repository: str,
    public_repository: str,
    blob_factory: BlobFactory,
) -> None:
    public_digest, public_data = blob_factory(token_registry, 1000, public_repository)
    private_digest, _ = blob_factory(token_registry, 1000)

    public = docker_token(token_server, pull(public_repository))
    assert public.status_code == 200
    body = public.json()
    assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert body["issued_at"].endswith("Z")
    response = get_blob(token_registry, public_repository, public_digest, body["token"])
    assert response.status_code == 200
    assert response.content == public_data

    # Real token servers answer 200 with nothing granted; the registry has the last word.
    private = docker_token(token_server, pull(repository))
    assert private.status_code == 200
    token = private.json()["token"]
    assert access(token) == []
    assert decode_jwt_claims(token)["sub"] == ""
    refused = get_blob(token_registry, repository, private_digest, token)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == challenge(
        token_server, repository, "insufficient_scope"
    )


def test_credentials_token_pulls_private_and_nothing_more(
    token_registry: Deployment,
    token_server: TokenServer,
    repository: str,
    blob_factory: BlobFactory,
) -> None:
    digest, data = blob_factory(token_registry, 5000)
    granted = docker_token(token_server, f"repository:{repository}:pull,push", auth=TOKEN_AUTH)
    assert granted.status_code == 200
    token = granted.json()["token"]
    assert access(token) == [{"type": "repository", "name": repository, "actions": ["pull"]}]
    claims = decode_jwt_claims(token)
    assert (claims["iss"], claims["aud"], claims["sub"]) == (
        "test-issuer",
        "test-registry",
        "alice",
    )
    assert claims["exp"] - claims["iat"] == 300
    header = decode_jwt_header(token)
    assert (header["alg"], header["typ"], len(header["x5c"])) == ("ES256", "JWT", 1)
    response = get_blob(token_registry, repository, digest, token)
    assert response.status_code == 200
    assert response.content == data

    admin = docker_token(token_server, f"repository:{repository}:pull,push", auth=TOKEN_ADMIN)
    assert access(admin.json()["token"])[0]["actions"] == ["pull", "push"]

    wrong = docker_token(token_server, pull(repository), auth=(TOKEN_AUTH[0], "wrong"))
    assert wrong.status_code == 401
    assert wrong.json() == {
        "errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]
    }


def test_other_repository_garbage_and_expired_tokens_are_refused(
    token_registry: Deployment,
    token_server: TokenServer,
    repository: str,
    blob_factory: BlobFactory,
) -> None:
    digest, _ = blob_factory(token_registry, 100)
    other = token_server.mint_access_token(pull(repository + "-other"), user="alice")
    response = get_blob(token_registry, repository, digest, other)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == challenge(
        token_server, repository, "insufficient_scope"
    )

    garbage = get_blob(token_registry, repository, digest, "not-a-jwt")
    assert garbage.status_code == 401
    assert garbage.headers["WWW-Authenticate"] == challenge(
        token_server, repository, "invalid_token"
    )

    # The registry allows 60 s of clock skew past `exp`: only an older token is refused.
    token_server.jwt_lifetime = -30
    lenient = get_blob(
        token_registry,
        repository,
        digest,
        token_server.mint_access_token(pull(repository), user="alice"),
    )
    assert lenient.status_code == 200
    token_server.jwt_lifetime = -120
    expired = get_blob(
        token_registry,
        repository,
        digest,
        token_server.mint_access_token(pull(repository), user="alice"),
    )
    assert expired.status_code == 401
    assert expired.headers["WWW-Authenticate"] == challenge(
        token_server, repository, "invalid_token"
    )


def test_password_and_refresh_token_grants(
    token_registry: Deployment,
    token_server: TokenServer,
    repository: str,
    blob_factory: BlobFactory,
) -> None:
    digest, data = blob_factory(token_registry, 2000)
    password = form_post(
        token_server.realm,
        grant_type="password",
        username=TOKEN_AUTH[0],
        password=TOKEN_AUTH[1],
        service="test-registry",
        scope=pull(repository),
        client_id="acr-blob-tests",
    )
    assert password.status_code == 200
    body = password.json()
    assert set(body) == {"access_token", "refresh_token", "expires_in", "issued_at", "scope"}
    assert body["scope"] == pull(repository)
    assert get_blob(token_registry, repository, digest, body["access_token"]).content == data

    for refresh_token in (body["refresh_token"], token_server.issue_refresh_token("alice")):
        refreshed = form_post(
            token_server.realm,
            grant_type="refresh_token",
            refresh_token=refresh_token,
            service="test-registry",
            scope=pull(repository),
        )
        assert refreshed.status_code == 200
        assert "refresh_token" not in refreshed.json()
        token = refreshed.json()["access_token"]
        assert get_blob(token_registry, repository, digest, token).content == data

    for fields in (
        {"grant_type": "refresh_token", "refresh_token": "made-up"},
        {"grant_type": "password", "username": "alice", "password": "wrong"},
    ):
        refused = form_post(token_server.realm, service="test-registry", **fields)
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_acr_exchange_then_token_then_blob(
    token_registry: Deployment,
    token_server: TokenServer,
    repository: str,
    public_repository: str,
    blob_factory: BlobFactory,
) -> None:
    digest, data = blob_factory(token_registry, 3000)
    exchange = form_post(
        token_server.url + "/oauth2/exchange",
        grant_type="access_token",
        service="test-registry",
        access_token=AAD_TOKEN,
    )
    assert exchange.status_code == 200
    assert set(exchange.json()) == {"refresh_token"}
    refresh_token = exchange.json()["refresh_token"]
    # ACR's refresh tokens are JWTs whose `exp` clients cache them by.
    assert decode_jwt_claims(refresh_token)["exp"] > time.time() + 3600

    token = form_post(
        token_server.acr_realm,
        grant_type="refresh_token",
        service="test-registry",
        scope=pull(repository),
        refresh_token=refresh_token,
    )
    assert token.status_code == 200
    assert set(token.json()) == {"access_token"}
    assert (
        get_blob(token_registry, repository, digest, token.json()["access_token"]).content == data
    )

    refused = form_post(
        token_server.url + "/oauth2/exchange",
        grant_type="access_token",
        service="test-registry",
        access_token="not-an-aad-token",
    )
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["code"] == "UNAUTHORIZED"

    public_digest, public_data = blob_factory(token_registry, 10, public_repository)
    with client() as c:
        anonymous = c.get(
            token_server.acr_realm,
            params=[("service", "test-registry"), ("scope", pull(public_repository))],
        )
    assert anonymous.status_code == 200
    assert set(anonymous.json()) == {"access_token"}
    anonymous_token = anonymous.json()["access_token"]
    response = get_blob(token_registry, public_repository, public_digest, anonymous_token)
    assert response.content == public_data


def test_answer_shapes_follow_the_settings(
    fresh_token_server: TokenServer, repository: str
) -> None:
    server = fresh_token_server
    server.token_field = "token"
    assert set(docker_token(server, pull(repository)).json()) == {
        "token",
        "expires_in",
        "issued_at",
    }
    server.token_field = "access_token"
    server.omit_expires_in = True
    assert set(docker_token(server, pull(repository)).json()) == {"access_token", "issued_at"}
    server.expires_in = 5
    claims = decode_jwt_claims(docker_token(server, pull(repository)).json()["access_token"])
    assert claims["exp"] - claims["iat"] == 5

    server.reset()
    body = docker_token(server, pull(repository)).json()
    assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
    assert body["expires_in"] == 300

    wrong_service = form_post(
        server.realm, grant_type="password", username="alice", password="x", service="other"
    )
    assert wrong_service.status_code == 400


def test_token_s3_registry_redirects_to_storage_on_another_host(
    token_s3_registry: Deployment,
    token_server: TokenServer,
    repository: str,
    blob_factory: BlobFactory,
) -> None:
    proxy = token_s3_registry.proxy
    assert proxy is not None
    digest, data = blob_factory(token_s3_registry, 20_000)
    token = docker_token(token_server, pull(repository), auth=TOKEN_AUTH).json()["token"]
    redirect = get_blob(token_s3_registry, repository, digest, token)
    assert redirect.status_code == 307
    location = httpx.URL(redirect.headers["Location"])
    assert (location.host, location.port) == ("127.0.0.2", proxy.port)

    proxy.clear()
    with client() as c:
        response = c.get(location)
    assert response.status_code == 200
    assert response.content == data
    [seen] = proxy.presigned_requests
    assert seen.header("Authorization") is None


def test_counters_count_the_clients_requests_only(
    token_registry: Deployment,
    token_server: TokenServer,
    repository: str,
    blob_factory: BlobFactory,
) -> None:
    # The push fetched an admin token after the reset, yet counts for nothing.
    blob_factory(token_registry, 10)
    assert token_server.count() == 0
    assert any(r.testbed for r in token_server.all_requests)

    docker_token(token_server, pull(repository))
    docker_token(token_server, pull(repository), auth=TOKEN_AUTH)
    docker_token(token_server, pull(repository), auth=(TOKEN_AUTH[0], "wrong"))
    form_post(token_server.acr_realm, grant_type="refresh_token", service="test-registry")
    assert token_server.count() == 4
    assert token_server.count("/token", method="GET") == 3
    assert token_server.count(grant_type="refresh_token") == 1
    anonymous, alice, wrong, refresh = token_server.requests
    assert (anonymous.basic_present, anonymous.user, anonymous.status) == (False, None, 200)
    assert (alice.basic_user, alice.user, alice.status) == ("alice", "alice", 200)
    assert (wrong.basic_user, wrong.user, wrong.status) == ("alice", None, 401)
    assert anonymous.scopes == [pull(repository)]
    assert anonymous.param("service") == "test-registry"
    assert (refresh.method, refresh.path, refresh.status) == ("POST", "/oauth2/token", 401)

    token_server.clear()
    assert token_server.count() == 0


def test_failure_mode(fresh_token_server: TokenServer, repository: str) -> None:
    fresh_token_server.fail_requests(503, path="/token", times=1)
    failed = docker_token(fresh_token_server, pull(repository))
    assert failed.status_code == 503
    assert failed.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert docker_token(fresh_token_server, pull(repository)).status_code == 200
    assert [r.status for r in fresh_token_server.requests] == [503, 200]


@pytest.mark.parametrize("scope", ["registry:catalog:*", "nonsense", "repository:x"])
def test_unknown_scopes_grant_nothing(fresh_token_server: TokenServer, scope: str) -> None:
    response = docker_token(fresh_token_server, scope, auth=TOKEN_ADMIN)
    assert response.status_code == 200
    assert access(response.json()["token"]) == []

"""Registry authentication against the real thing: docker-registry with `auth: token` and a
token server that speaks the Docker token protocol, the OAuth2 forms and ACR's exchange.

Downloads run for BlobClient and AsyncBlobClient; token requests are counted at the server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from acr_blob import (
    AsyncBlobClient,
    AuthenticationError,
    BasicCredential,
    BlobClient,
    BlobNotFoundError,
    RefreshTokenCredential,
    RegistryAuth,
    __version__,
    docker_config_credential,
)
from tests.conftest import AAD_TOKEN, TOKEN_AUTH
from tests.drivers import Driver
from tools.testbed import BlobFactory, Deployment, TokenServer, open_token_registry


def driver(mode: str, deployment: Deployment, credential: Any = None, **args: Any) -> Driver:
    return Driver(mode, deployment.url, credential=credential, **args)


def token_gets(server: TokenServer) -> list[str]:
    """The scopes of the token requests clients made, in order."""
    return [scope for r in server.requests for scope in r.scopes]


def test_anonymous_pull_of_a_public_repository(
    mode: str, token_registry: Deployment, blob_factory: BlobFactory, public_repository: str
) -> None:
    digest, data = blob_factory(token_registry, 5000, public_repository)
    assert driver(mode, token_registry).iterate(public_repository, digest) == data
    server = token_registry.token_server
    assert server is not None
    assert token_gets(server) == [f"repository:{public_repository}:pull"]
    assert server.requests[0].basic_user is None


def test_anonymous_pull_of_a_private_repository_is_refused_with_its_scope(
    mode: str, token_registry: Deployment, blob_factory: BlobFactory, repository: str
) -> None:
    digest, _ = blob_factory(token_registry, 100)
    with pytest.raises(AuthenticationError) as caught:
        driver(mode, token_registry).iterate(repository, digest)
    assert caught.value.status_code == 401
    assert caught.value.codes == ["UNAUTHORIZED"]
    assert caught.value.scope == f"repository:{repository}:pull"
    assert token_registry.token_server is not None
    assert token_registry.token_server.count() == 1  # one try, no loop


def test_credentialed_pull(
    mode: str,
    token_registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    tmp_path: Path,
) -> None:
    digest, data = blob_factory(token_registry, 70_000)
    client = driver(mode, token_registry, TOKEN_AUTH)
    assert client.iterate(repository, digest) == data
    assert client.to_file(repository, digest, tmp_path / "blob").size == len(data)
    assert client.exists(repository, digest)
    server = token_registry.token_server
    assert server is not None
    assert {r.basic_user for r in server.requests} == {"alice"}


def test_wrong_credentials_are_refused_by_the_token_server(
    mode: str, token_registry: Deployment, blob_factory: BlobFactory, repository: str
) -> None:
    digest, _ = blob_factory(token_registry, 100)
    with pytest.raises(AuthenticationError) as caught:
        driver(mode, token_registry, ("alice", "wrong-pass")).iterate(repository, digest)
    assert caught.value.codes == ["UNAUTHORIZED"]
    assert caught.value.scope == f"repository:{repository}:pull"
    assert "/token" in caught.value.url
    assert "wrong-pass" not in str(caught.value) + repr(caught.value)


def test_ten_downloads_cost_one_token(
    mode: str, token_registry: Deployment, blob_factory: BlobFactory, repository: str
) -> None:
    digest, data = blob_factory(token_registry, 1000)
    if mode == "sync":
        with BlobClient(token_registry.url, TOKEN_AUTH) as client:
            for _ in range(10):
                assert client.download_blob(repository, digest).readall() == data
    else:

        async def ten() -> None:
            async with AsyncBlobClient(token_registry.url, TOKEN_AUTH) as client:
                for _ in range(10):
                    download = await client.download_blob(repository, digest)
                    assert await download.readall() == data

        asyncio.run(ten())
    assert token_registry.token_server is not None
    assert token_registry.token_server.count() == 1


def test_two_repositories_get_two_scopes(
    mode: str, token_registry: Deployment, blob_factory: BlobFactory, repository: str
) -> None:
    first, _ = blob_factory(token_registry, 10, repository + "-a")
    second, _ = blob_factory(token_registry, 10, repository + "-b")
    with BlobClient(token_registry.url, TOKEN_AUTH) as client:
        for _ in range(3):
            client.download_blob(repository + "-a", first).readall()
            client.download_blob(repository + "-b", second).readall()
    assert token_registry.token_server is not None
    assert token_gets(token_registry.token_server) == [
        f"repository:{repository}-a:pull",
        f"repository:{repository}-b:pull",
    ]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_expiry_triggers_exactly_one_refresh(
    token_registry: Deployment, blob_factory: BlobFactory, repository: str
) -> None:
    digest, data = blob_factory(token_registry, 10)
    server = token_registry.token_server
    assert server is not None
    server.expires_in = 300
    clock = FakeClock()
    auth = RegistryAuth(BasicCredential(*TOKEN_AUTH), clock=clock)
    with BlobClient(token_registry.url, auth) as client:
        client.download_blob(repository, digest).readall()
        clock.now = 200
        client.download_blob(repository, digest).readall()
        assert server.count() == 1
        clock.now = 300  # expired (and inside the renewal margin well before)
        for _ in range(3):
            assert client.download_blob(repository, digest).readall() == data
    assert server.count() == 2


def test_threads_do_not_stampede_the_token_server(
    token_registry: Deployment, blob_factory: BlobFactory, repository: str
) -> None:
    digest, data = blob_factory(token_registry, 50_000)
    barrier = threading.Barrier(8)
    results: list[bytes] = []
    with BlobClient(token_registry.url, TOKEN_AUTH) as client:

        def pull() -> None:
            barrier.wait()
            results.append(client.download_blob(repository, digest).readall())

        threads = [threading.Thread(target=pull) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [data] * 8
    assert token_registry.token_server is not None
    assert token_registry.token_server.count() == 1


def test_tasks_do_not_stampede_the_token_server(
    token_registry: Deployment, blob_factory: BlobFactory, repository: str
) -> None:
    digest, data = blob_factory(token_registry, 50_000)

    async def pull_all() -> list[bytes]:
        async with AsyncBlobClient(token_registry.url, TOKEN_AUTH) as client:

            async def pull() -> bytes:
                return await (await client.download_blob(repository, digest)).readall()

            return list(await asyncio.gather(*(pull() for _ in range(8))))

    assert asyncio.run(pull_all()) == [data] * 8
    assert token_registry.token_server is not None
    assert token_registry.token_server.count() == 1


def test_the_token_never_reaches_storage(
    mode: str,
    token_s3_registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    tmp_path: Path,
) -> None:
    digest, data = blob_factory(token_s3_registry, 200_000)
    proxy = token_s3_registry.proxy
    assert proxy is not None
    proxy.clear()
    client = driver(mode, token_s3_registry, TOKEN_AUTH)
    assert client.iterate(repository, digest) == data
    client.to_file(repository, digest, tmp_path / "blob")
    assert (tmp_path / "blob").read_bytes() == data
    assert len(proxy.presigned_requests) == 2
    assert all(r.header("Authorization") is None for r in proxy.presigned_requests)


def test_refresh_token_credential_uses_the_oauth2_form(
    mode: str, token_registry: Deployment, blob_factory: BlobFactory, repository: str
) -> None:
    digest, data = blob_factory(token_registry, 321)
    server = token_registry.token_server
    assert server is not None
    credential = RefreshTokenCredential(server.issue_refresh_token("alice"))
    assert driver(mode, token_registry, credential).iterate(repository, digest) == data
    (request,) = server.requests
    assert (request.method, request.grant_type) == ("POST", "refresh_token")
    assert request.param("client_id") == "acr-blob"
    # A Docker token server's realm (/token): ACR's api-version is not its business.
    assert request.query == {}


def test_oauth2_password_grant(
    token_registry: Deployment, blob_factory: BlobFactory, repository: str
) -> None:
    digest, data = blob_factory(token_registry, 321)
    auth = RegistryAuth(BasicCredential(*TOKEN_AUTH), oauth2_password=True)
    with BlobClient(token_registry.url, auth) as client:
        assert client.download_blob(repository, digest).readall() == data
    assert token_registry.token_server is not None
    (request,) = token_registry.token_server.requests
    assert (request.method, request.grant_type, request.basic_user) == ("POST", "password", None)
    assert request.query == {}


class FakeAadCredential:
    """The azure-core credential shape: get_token(*scopes) -> .token, .expires_on."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.scopes.append(scopes)
        return type("AccessToken", (), {"token": self.token, "expires_on": 2**31})()


@pytest.fixture(scope="module")
def acr_registry(registry_binary_path: str, token_server: TokenServer) -> Iterator[Deployment]:
    """A registry whose challenge names ACR's token endpoint, /oauth2/token."""
    with open_token_registry(
        token_server, auth=TOKEN_AUTH, realm=token_server.acr_realm
    ) as deployment:
        yield deployment


def test_acr_exchange_of_an_aad_token(
    mode: str,
    acr_registry: Deployment,
    fresh_token_server: TokenServer,
    blob_factory: BlobFactory,
    repository: str,
) -> None:
    digest, data = blob_factory(acr_registry, 4321)
    credential = FakeAadCredential(AAD_TOKEN)
    client = driver(mode, acr_registry, credential)
    assert client.iterate(repository, digest) == data
    exchange = [r for r in fresh_token_server.requests if r.path == "/oauth2/exchange"]
    token = [r for r in fresh_token_server.requests if r.path == "/oauth2/token"]
    assert [(r.method, r.grant_type) for r in exchange] == [("POST", "access_token")]
    assert exchange[0].param("access_token") == AAD_TOKEN
    assert [(r.method, r.grant_type) for r in token] == [("POST", "refresh_token")]
    assert credential.scopes == [("https://containerregistry.azure.net/.default",)]
    # What every Azure SDK sends ACR's OAuth2 endpoints: the API version in the query, and
    # the client's own User-Agent on these requests of the auth flow too.
    for request in [*exchange, *token]:
        assert request.query == {"api-version": ("2021-07-01",)}
        assert request.header("User-Agent") == f"acr-blob/{__version__}"


def test_acr_refresh_token_is_reused_across_scopes(
    acr_registry: Deployment,
    fresh_token_server: TokenServer,
    blob_factory: BlobFactory,
    repository: str,
) -> None:
    first, _ = blob_factory(acr_registry, 10, repository + "-a")
    second, _ = blob_factory(acr_registry, 10, repository + "-b")
    credential = FakeAadCredential(AAD_TOKEN)
    with BlobClient(acr_registry.url, credential) as client:
        for _ in range(3):
            client.download_blob(repository + "-a", first).readall()
            client.download_blob(repository + "-b", second).readall()
    assert fresh_token_server.count("/oauth2/exchange") == 1
    assert fresh_token_server.count("/oauth2/token") == 2
    assert len(credential.scopes) == 1


def test_acr_refuses_an_unknown_aad_token(
    acr_registry: Deployment,
    fresh_token_server: TokenServer,
    blob_factory: BlobFactory,
    repository: str,
) -> None:
    digest, _ = blob_factory(acr_registry, 10)
    with (
        BlobClient(acr_registry.url, FakeAadCredential("forged")) as client,
        pytest.raises(AuthenticationError) as caught,
    ):
        client.download_blob(repository, digest)
    assert caught.value.status_code == 401
    assert "/oauth2/exchange" in caught.value.url
    assert "forged" not in str(caught.value)
    (exchange,) = fresh_token_server.requests
    assert caught.value.client_request_id == exchange.header("x-ms-client-request-id")
    assert caught.value.request_id is None


def test_anonymous_acr_pull(
    mode: str,
    acr_registry: Deployment,
    fresh_token_server: TokenServer,
    blob_factory: BlobFactory,
    public_repository: str,
) -> None:
    digest, data = blob_factory(acr_registry, 99, public_repository)
    assert driver(mode, acr_registry).iterate(public_repository, digest) == data
    (request,) = fresh_token_server.requests
    assert (request.method, request.path, request.basic_user) == ("GET", "/oauth2/token", None)


def write_docker_config(folder: Path, document: dict[str, Any]) -> dict[str, str]:
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(document))
    return {"DOCKER_CONFIG": str(folder), "PATH": f"{folder}:/usr/bin:/bin"}


def test_docker_config_auths(
    mode: str,
    token_registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    tmp_path: Path,
) -> None:
    digest, data = blob_factory(token_registry, 1234)
    host = f"{token_registry.host}:{token_registry.port}"
    auth = base64.b64encode(":".join(TOKEN_AUTH).encode()).decode()
    environ = write_docker_config(tmp_path / "docker", {"auths": {host: {"auth": auth}}})
    credential = docker_config_credential(token_registry.url, environ=environ)
    assert credential == BasicCredential(*TOKEN_AUTH)
    assert driver(mode, token_registry, credential).iterate(repository, digest) == data
    assert token_registry.token_server is not None
    assert token_registry.token_server.requests[0].basic_user == "alice"


def test_docker_credential_helper_with_an_identity_token(
    mode: str,
    token_registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    tmp_path: Path,
) -> None:
    digest, data = blob_factory(token_registry, 1234)
    server = token_registry.token_server
    assert server is not None
    host = f"{token_registry.host}:{token_registry.port}"
    folder = tmp_path / "docker"
    environ = write_docker_config(folder, {"credHelpers": {host: "acrblobtest"}})
    helper = folder / "docker-credential-acrblobtest"
    answer = {
        "ServerURL": host,
        "Username": "<token>",
        "Secret": server.issue_refresh_token("alice"),
    }
    helper.write_text(
        f"#!{sys.executable}\nimport sys, json\n"
        f"assert sys.argv[1] == 'get' and sys.stdin.read() == {host!r}\n"
        f"print(json.dumps({answer!r}))\n"
    )
    helper.chmod(0o755)
    credential = docker_config_credential(token_registry.url, environ=environ)
    assert isinstance(credential, RefreshTokenCredential)
    assert driver(mode, token_registry, credential).iterate(repository, digest) == data
    assert server.requests[0].grant_type == "refresh_token"


def test_the_token_stays_out_of_logs_and_errors(
    token_registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    digest, _ = blob_factory(token_registry, 10)
    caplog.set_level("DEBUG", logger="acr_blob")
    seen: list[str] = []

    class Recording(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.headers.get("Authorization", "").startswith("Bearer "):
                seen.append(request.headers["Authorization"].split()[1])
            return super().handle_request(request)

    with BlobClient(token_registry.url, TOKEN_AUTH, transport=Recording()) as client:
        client.download_blob(repository, digest).readall()
        with pytest.raises(BlobNotFoundError) as caught:
            client.download_blob(repository + "-unknown", digest)
    assert seen
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "acr_blob")
    for token in seen:
        assert token not in logged
        assert token not in str(caught.value) + repr(caught.value)


@pytest.mark.parametrize("field", ["token", "access_token"])
def test_either_token_field_and_no_expires_in(
    token_registry: Deployment, blob_factory: BlobFactory, repository: str, field: str
) -> None:
    """Docker token servers may answer `token`, `access_token` or both, with or without
    `expires_in`."""
    digest, data = blob_factory(token_registry, 10)
    server = token_registry.token_server
    assert server is not None
    server.token_field = field
    server.omit_expires_in = True
    clock = FakeClock()
    with BlobClient(
        token_registry.url, RegistryAuth(BasicCredential(*TOKEN_AUTH), clock=clock)
    ) as c:
        assert c.download_blob(repository, digest).readall() == data
        # No expires_in: the JWT's exp (the server's 300 s) decides; an opaque token would get
        # 60 s (test_auth_faults covers that).
        clock.now = 200
        c.download_blob(repository, digest).readall()
        assert server.count() == 1
        clock.now = 300
        c.download_blob(repository, digest).readall()
    assert server.count() == 2


def test_acr_tokens_are_renewed_before_they_expire(
    acr_registry: Deployment,
    fresh_token_server: TokenServer,
    blob_factory: BlobFactory,
    repository: str,
) -> None:
    digest, _ = blob_factory(acr_registry, 10)
    clock = FakeClock()
    credential = FakeAadCredential(AAD_TOKEN)
    with BlobClient(acr_registry.url, RegistryAuth(credential, clock=clock)) as client:
        client.download_blob(repository, digest).readall()
        # ACR answers no expires_in: the lifetimes come from the JWTs' exp claims.
        clock.now = (fresh_token_server.jwt_lifetime or fresh_token_server.expires_in) + 1
        client.download_blob(repository, digest).readall()
        assert fresh_token_server.count("/oauth2/exchange") == 1
        assert fresh_token_server.count("/oauth2/token") == 2
        clock.now = 3 * 3600 + 1  # the refresh token's own exp
        client.download_blob(repository, digest).readall()
    assert fresh_token_server.count("/oauth2/exchange") == 2
    assert len(credential.scopes) == 2


# ---------------------------------------------------------------------------------------------
# Which repository a request is for: the paths come from the spec's builders.

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("path", "repository"),
    [
        (f"/v2/prod/bash/blobs/{DIGEST}", "prod/bash"),
        ("/v2/prod/bash/blobs/uploads/", "prod/bash"),
        ("/v2/prod/bash/manifests/latest", "prod/bash"),
        (f"/v2/a/b/c/manifests/{DIGEST}", "a/b/c"),
        ("/v2/prod/bash/tags/list", "prod/bash"),
        ("/v2/prod/bash/tags/list?n=10&last=v1", "prod/bash"),
        ("/v2/", ""),
        ("/v2/prod/bash", ""),
        ("/oauth2/token", ""),
        ("/v1/prod/bash/blobs/x", ""),
        ("/other/v2/prod/blobs/x", ""),
    ],
)
def test_the_repository_of_a_request(path: str, repository: str) -> None:
    from acr_blob.auth import _repository

    assert _repository(httpx.Request("GET", f"https://r.test{path}")) == repository


def test_the_repository_of_every_path_the_spec_builds() -> None:
    from urllib.parse import unquote

    from acr_blob.auth import _repository
    from acr_blob_api.api.blob import check_blob_exists, get_blob
    from acr_blob_api.api.manifest import check_manifest_exists, get_manifest
    from acr_blob_api.api.tag import list_tags

    built = [
        get_blob._get_kwargs(name="prod/bash", digest=DIGEST),
        check_blob_exists._get_kwargs(name="prod/bash", digest=DIGEST),
        get_manifest._get_kwargs(name="prod/bash", reference="5.2"),
        check_manifest_exists._get_kwargs(name="prod/bash", reference=DIGEST),
        list_tags._get_kwargs(name="prod/bash", n=10),
    ]
    for kwargs in built:
        # The overlay sends paths unquoted (slashes literal), as registries expect them.
        request = httpx.Request(kwargs["method"], "https://r.test" + unquote(kwargs["url"]))
        assert _repository(request) == "prod/bash", kwargs["url"]


def test_a_token_learned_on_a_blob_goes_with_its_manifests_and_tags() -> None:
    seen: list[tuple[str, str | None]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        authorization = request.headers.get("Authorization")
        seen.append((request.url.path, authorization))
        if request.url.path == "/token":
            return httpx.Response(200, json={"token": request.url.params["scope"]})
        repository = request.url.path.split("/")[3]  # /v2/prod/<repository>/...
        scope = f"repository:prod/{repository}:pull"
        if authorization == f"Bearer {scope}":
            return httpx.Response(200)
        challenge = f'Bearer realm="https://r.test/token",service="r.test",scope="{scope}"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    with httpx.Client(
        transport=httpx.MockTransport(handle), auth=RegistryAuth(), base_url="https://r.test"
    ) as client:
        for path in (
            f"/v2/prod/bash/blobs/{DIGEST}",
            "/v2/prod/bash/manifests/latest",
            "/v2/prod/bash/tags/list",
            "/v2/prod/zsh/manifests/latest",
        ):
            assert client.get(path).status_code == 200
    bash, zsh = "Bearer repository:prod/bash:pull", "Bearer repository:prod/zsh:pull"
    assert seen == [
        (f"/v2/prod/bash/blobs/{DIGEST}", None),
        ("/token", None),
        (f"/v2/prod/bash/blobs/{DIGEST}", bash),
        # Same repository: its token goes at once, without a second challenge.
        ("/v2/prod/bash/manifests/latest", bash),
        ("/v2/prod/bash/tags/list", bash),
        # Another repository has not been challenged yet: nothing is sent.
        ("/v2/prod/zsh/manifests/latest", None),
        ("/token", None),
        ("/v2/prod/zsh/manifests/latest", zsh),
    ]


def test_the_overlay_spells_no_registry_path() -> None:
    """Paths come from spec/ through the generated builders; docstrings may mention them."""
    import ast

    found = []
    for source in sorted((Path(__file__).parent.parent / "overlay" / "acr_blob").glob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and ("/v2/" in node.value or "/oauth2" in node.value)
            ):
                found.append(f"{source.name}:{node.lineno}: {node.value!r}")
    assert not found
